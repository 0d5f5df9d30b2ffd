"""What each `rnnedge` subcommand does; heavy imports happen inside the commands."""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rnnedge.cli.bench import cmd_bench  # noqa: F401 (dispatched by name)
from rnnedge.cli.report import cmd_report  # noqa: F401 (dispatched by name)
from rnnedge.cli.serving import cmd_serve, cmd_triton  # noqa: F401 (dispatched by name)
from rnnedge.errors import InputError
from rnnedge.runtime.inputs import parse_positive_ints
from rnnedge.tools import render as report
from rnnedge.verify.parity import TOLERANCES, ParityReport, check_parity, shape_grid


def _progress(epoch: int, epochs: int, train_loss: float, val_loss: float) -> None:
    every = max(1, epochs // 10)
    line = f"epoch {epoch:>4}/{epochs}  train loss {train_loss:.4f}  val loss {val_loss:.4f}"
    if sys.stderr.isatty():
        end = "\n" if epoch == epochs else ""
        print("\r" + line, end=end, file=sys.stderr, flush=True)
    elif epoch % every == 0 or epoch == epochs:
        print(line, file=sys.stderr, flush=True)


def _series(args: argparse.Namespace) -> Any:
    from rnnedge.modeling import data

    cols = [c.strip() for c in args.columns.split(",")] if args.columns else None
    if args.data == "sunspots":
        return data.load_sunspots()
    if args.data == "synthetic":
        return data.synthetic(1000, features=len(cols or [0]))
    return data.load_csv(args.data, cols)


def _train(args: argparse.Namespace, series: Any, target: int = 0) -> Any:
    from rnnedge.modeling.models import ModelConfig
    from rnnedge.modeling.train import TrainConfig, train

    mc = ModelConfig(cell=args.cell, input_size=series.values.shape[1],
                     hidden_size=args.hidden_size, num_layers=args.num_layers,
                     dropout=args.dropout, output_size=1)
    tc = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                     window=args.window, val_fraction=args.val_fraction, seed=args.seed,
                     target_index=(target,))
    return train(series, mc, tc, progress=None if args.json else _progress)


def _metrics_lines(res: Any) -> list[str]:
    m = res.metrics()
    return [
        f"trained {res.model_config.cell} {res.model_config.num_layers}x"
        f"{res.model_config.hidden_size} for {res.train_config.epochs} epochs in "
        f"{report.fmt(res.seconds)} s",
        f"validation MSE {report.fmt(m['val_mse'])} vs persistence "
        f"{report.fmt(m['persistence_mse'])} (skill {report.fmt(100 * m['skill'])}%)",
    ]


def cmd_train(args: argparse.Namespace) -> int:
    from rnnedge.modeling.train import save_checkpoint

    series = _series(args)
    target = 0
    if args.target:
        if args.target not in series.columns:
            raise InputError(f"--target '{args.target}' is not among the columns used "
                             f"{list(series.columns)}")
        target = series.columns.index(args.target)
    res = _train(args, series, target)
    path = save_checkpoint(args.output, res)
    if args.json:
        print(report.to_json({"checkpoint": path, **res.metrics(), "history": res.history}))
    else:
        print("\n".join([*_metrics_lines(res), f"checkpoint written to {path}"]))
    return 0


def _export_checkpoint(ckpt_path: str, out: Path, exporter: str, opset: int | None,
                       time_major: bool, verify: bool) -> Any:
    import torch

    from rnnedge.exporters.onnx import example_for, export
    from rnnedge.modeling.models import ModelConfig, SequenceModel
    from rnnedge.modeling.train import load_checkpoint

    ckpt = load_checkpoint(ckpt_path)
    model = ckpt.model
    if time_major:
        cfg = ModelConfig.from_dict({**model.config.to_dict(), "batch_first": False})
        tm = SequenceModel(cfg)
        tm.load_state_dict(model.state_dict())
        model = tm.eval()
    x = example_for(model.config.batch_first, model.config.input_size)
    with torch.no_grad():
        return export(model, x, out, exporter=exporter, opset=opset,
                      normalization=ckpt.normalization, verify=verify), ckpt


def cmd_export(args: argparse.Namespace) -> int:
    out = Path(args.output) if args.output else Path(args.checkpoint).with_suffix(".onnx")
    res, _ = _export_checkpoint(args.checkpoint, out, args.exporter, args.opset,
                                args.time_major, not args.no_verify)
    info = {"path": res.path, "exporter": res.exporter, "opset": res.opset,
            "seconds": res.seconds, "verified": res.parity is not None,
            "max_abs_diff": res.parity.max_abs() if res.parity else None,
            "inputs": res.spec.inputs, "outputs": res.spec.outputs}
    if args.json:
        print(report.to_json(info))
        return 0
    print(f"wrote {res.path} ({res.exporter}, opset {res.opset}) in {report.fmt(res.seconds)} s")
    print("inputs : " + ", ".join(f"{t.name}{tuple(t.shape)}" for t in res.spec.inputs))
    print("outputs: " + ", ".join(f"{t.name}{tuple(t.shape)}" for t in res.spec.outputs))
    if res.parity:
        shapes = sorted({(c.batch, c.seq_len) for c in res.parity.comparisons})
        print(f"verified against eager PyTorch at {len(shapes)} (batch, seq_len) shapes "
              f"{shapes}: max abs diff {report.fmt(res.parity.max_abs())}")
    return 0


def _available_onnx_runtimes(requested: Sequence[str] | None) -> list[str]:
    from rnnedge.runtime.backends.base import availability, require_runner

    if requested:
        for name in requested:
            require_runner(name)
        return list(requested)
    return [n for n, why in availability().items() if why is None and n != "torch"]


def verify_file(model_module: Any, onnx_path: str | os.PathLike[str], runtimes: Sequence[str],
                shapes: Sequence[tuple[int, int]]) -> ParityReport:
    """Every runtime on the file vs eager PyTorch on the module it came from."""
    from rnnedge.modeling.models import stateful_wrapper
    from rnnedge.modeling.torch_runner import TorchRunner
    from rnnedge.runtime.model import load

    models = [load(onnx_path, name) for name in runtimes]
    try:
        spec = models[0].spec
        names_in = [t.name for t in spec.inputs]
        names_out = [t.name for t in spec.outputs]
        with TorchRunner(stateful_wrapper(model_module), names_in, names_out) as ref:
            return check_parity(ref, [m.runner for m in models], spec, shapes,
                                tolerance=TOLERANCES["fp32"])
    finally:
        for m in models:
            m.close()


def _print_parity(rep: ParityReport) -> None:
    print(report.table(report.PARITY_HEADERS, report.parity_rows(rep)))


def cmd_verify(args: argparse.Namespace) -> int:
    from rnnedge.modeling.train import load_checkpoint

    shapes = shape_grid(parse_positive_ints(args.batches, "--batches"),
                        parse_positive_ints(args.seq_lens, "--seq-lens"))
    ckpt = load_checkpoint(args.checkpoint)
    runtimes = _available_onnx_runtimes(args.runtime)
    rep = verify_file(ckpt.model, args.model, runtimes, shapes)
    if args.json:
        print(report.to_json({"ok": rep.ok, "comparisons": rep.comparisons}))
    else:
        _print_parity(rep)
    rep.raise_if_failed()
    return 0


def _state_arg(values: Sequence[str] | None) -> dict[str, str] | None:
    if not values:
        return None
    from rnnedge.runtime.foreign import parse_state_arg

    return parse_state_arg(",".join(values))


def _write_predictions(y: np.ndarray, columns: Sequence[str], out: str | None) -> None:
    """Per-step forecasts as CSV (stdout or file), .npy or .json, written atomically."""
    from rnnedge.fileio import atomic_write

    if out is None or out.endswith(".csv"):
        buf = io.StringIO()
        buf.write("step," + ",".join(f"forecast_{c}" for c in columns) + "\n")
        for i, row in enumerate(y):
            buf.write(f"{i}," + ",".join(repr(float(v)) for v in row) + "\n")
        if out is None:
            sys.stdout.write(buf.getvalue())
        else:
            atomic_write(Path(out), lambda p: p.write_text(buf.getvalue()))
    elif out.endswith(".npy"):
        def save_npy(p: Path) -> None:
            with open(p, "wb") as f:  # np.save(path) would append ".npy" to the temporary name
                np.save(f, y)

        atomic_write(Path(out), save_npy)
    elif out.endswith(".json"):
        text = json.dumps({"columns": list(columns), "forecast": y.tolist()})
        atomic_write(Path(out), lambda p: p.write_text(text))
    else:
        raise InputError(f"output '{out}' must end in .csv, .npy or .json")


def cmd_run(args: argparse.Namespace) -> int:
    from rnnedge.modeling import data
    from rnnedge.runtime.inputs import check_sequence
    from rnnedge.runtime.model import load

    if args.chunk < 1:
        raise InputError(f"--chunk must be ≥ 1, got {args.chunk}")
    cols = [c.strip() for c in args.columns.split(",")] if args.columns else None
    series = data.load_csv(args.input, cols)
    with load(args.model, args.runtime, state_names=_state_arg(args.state)) as model:
        spec = model.spec
        x = series.values.astype(np.float32)
        x = x[None] if spec.batch_first else x[:, None]
        # the whole series at once, so NaN indices are the file's and ffill crosses chunks
        x = check_sequence(x, spec, "x", args.nan_policy)
        if args.stream:
            stream = model.stream(batch=1, nan_policy=args.nan_policy)
            steps = x.shape[spec.seq_axis]
            parts = [stream.step(np.take(x, range(i, min(i + args.chunk, steps)),
                                         axis=spec.seq_axis))
                     for i in range(0, steps, args.chunk)]
            y = np.concatenate(parts, axis=spec.seq_axis)
        else:
            y, _ = model.run(x, nan_policy=args.nan_policy)
        y = y[0] if spec.batch_first else y[:, 0]
        norm = spec.normalization
        names = ([series.columns[i] for i in norm.target_index]
                 if norm and max(norm.target_index) < len(series.columns)
                 else [f"y{i}" for i in range(y.shape[-1])])
    _write_predictions(y, names, args.output)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from rnnedge.runtime.backends.ort import open_session
    from rnnedge.tools.inspect import describe, rnn_ops

    session = open_session(args.model)
    info = describe(session, ops=rnn_ops(args.model), source=args.model,
                    state_names=_state_arg(args.state))
    if args.json:
        print(report.to_json(info))
        return 0
    print(report.inspect_text(info))
    return 0


def cmd_lint(args: argparse.Namespace) -> int:
    from rnnedge.tools.lint import lint, worst

    findings = lint(args.model, expected_seq_len=args.seq_len)
    if args.json:
        print(report.to_json({"findings": findings, "worst": worst(findings)}))
    else:
        rows = [[f.severity, f.code, f.node, f.message, f.fix] for f in findings]
        print(report.table(("severity", "code", "node", "finding", "fix"), rows))
    return 1 if worst(findings) == "error" else 0


def cmd_runtimes(args: argparse.Namespace) -> int:
    from rnnedge.runtime.backends.base import availability

    avail = availability()
    if args.json:
        print(report.to_json({n: {"available": r is None, "reason": r}
                              for n, r in avail.items()}))
    else:
        print(report.table(("runtime", "available", "why not"),
                           [[n, r is None, r or ""] for n, r in avail.items()]))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from rnnedge.modeling import data
    from rnnedge.modeling.train import save_checkpoint

    start = time.perf_counter()
    out = Path(args.out_dir)
    series = data.load_sunspots()
    if not args.json:
        print(f"rnnedge demo: {series.source}, {len(series.values)} points", flush=True)
    res = _train(args, series)
    ckpt = save_checkpoint(out / "model.pt", res)
    exp, _ = _export_checkpoint(str(ckpt), out / "model.onnx", args.exporter, None, False, True)
    runtimes = _available_onnx_runtimes(None)
    rep = verify_file(res.model, exp.path, runtimes, shape_grid([1, 4], [1, 7, 32, 100, 309]))
    stream_diff = _demo_stream_check(exp.path, series.values)
    wall = time.perf_counter() - start
    summary = {"series": series.source, **res.metrics(), "checkpoint": ckpt,
               "onnx": exp.path, "exporter": exp.exporter, "parity_ok": rep.ok,
               "parity_max_abs": {r: rep.max_abs(r) for r in rep.runners()},
               "stream_vs_full_max_abs": stream_diff, "wall_seconds": wall}
    if args.json:
        print(report.to_json(summary))
    else:
        print("\n".join(_metrics_lines(res)))
        print(f"exported {exp.path} ({exp.exporter}, opset {exp.opset}), verified at other "
              f"lengths: max abs diff {report.fmt(exp.parity.max_abs())}")
        print("parity against eager PyTorch:")
        _print_parity(rep)
        print(f"streaming chunk by chunk (1, 7, random) vs one full pass: max abs diff "
              f"{report.fmt(stream_diff)}")
        print(f"done in {report.fmt(wall)} s; artifacts in {out}/")
    rep.raise_if_failed()
    return 0


def _demo_stream_check(path: Path, values: np.ndarray) -> float:
    """Largest difference between streamed (several chunkings) and full-pass forecasts."""
    from rnnedge.runtime.model import load

    x = values.astype(np.float32)[None]
    with load(path) as model:
        full, _ = model.run(x)
        rng = np.random.default_rng(0)
        worst = 0.0
        for sizes in ([1] * x.shape[1], [7] * (x.shape[1] // 7 + 1),
                      list(rng.integers(1, 20, size=x.shape[1]))):
            stream = model.stream()
            parts, i = [], 0
            for n in sizes:
                if i >= x.shape[1]:
                    break
                parts.append(stream.step(x[:, i:i + int(n)]))
                i += int(n)
            worst = max(worst, float(np.abs(np.concatenate(parts, axis=1) - full).max()))
    return worst


def cmd_batch_infer(args: argparse.Namespace) -> int:
    from rnnedge.cli.batch_infer import cmd_batch_infer as run

    return run(args)
