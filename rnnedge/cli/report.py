"""`rnnedge report`: export, lint, parity, streaming and latency in one artifact.

The markdown + JSON + plot it writes is what a user attaches to a pull request: the evidence
that the exported file is right at every shape and runtime, and what it costs to run.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import time
from pathlib import Path
from typing import Any

import numpy as np

from rnnedge.errors import InputError
from rnnedge.runtime.inputs import parse_positive_ints
from rnnedge.tools import render as report
from rnnedge.verify.parity import ParityReport, check_parity, shape_grid

CHECKPOINT_SUFFIXES = (".pt", ".pth")


def add_report_parser(sub: Any) -> None:
    p = sub.add_parser(
        "report", help="export, lint, verify, stream and bench: one markdown + JSON report",
        description="Take a checkpoint (or a user module given as 'pkg.module:attr' or "
        "'file.py:attr'), export it to ONNX with verification, lint the graph, check parity "
        "on every runtime available here over a (batch, seq_len) grid, check streaming "
        "against one full pass, benchmark, and write report.md, report.json and latency.png.")
    p.add_argument("model", help="a .pt checkpoint, or pkg.module:attr / file.py:attr naming "
                   "an nn.Module (or a function returning one)")
    p.add_argument("-o", "--out-dir", default="runs/report", help="output folder (runs/report)")
    p.add_argument("--features", type=int, help="input features, for a user module")
    p.add_argument("--time-major", action="store_true",
                   help="a user module takes (seq_len, batch, features)")
    p.add_argument("--exporter", default="torchscript", choices=["torchscript", "dynamo"])
    p.add_argument("--batches", default="1,4", help="parity and bench batch sizes (1,4)")
    p.add_argument("--seq-lens", default="1,16,64,256",
                   help="parity and bench sequence lengths (1,16,64,256)")
    p.add_argument("--budget-s", type=float, default=0.2, help="bench time per point (0.2)")
    p.add_argument("--json", action="store_true", help="print the report's JSON on stdout")


def load_user_module(target: str) -> Any:
    """`pkg.mod:attr` or `path/file.py:attr` → an nn.Module (calling attr if it is a factory)."""
    where, sep, attr = target.rpartition(":")
    if not sep or not where or not attr:
        raise InputError(f"'{target}' is neither a .pt checkpoint nor 'module:attr'; e.g. "
                         "mypkg.models:build or models.py:Forecaster")
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise InputError(f"module file '{path}' does not exist")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as exc:
            raise InputError(f"cannot import '{where}': {exc}") from exc
    if not hasattr(module, attr):
        raise InputError(f"'{where}' has no attribute '{attr}'")
    obj = getattr(module, attr)
    import torch

    if not isinstance(obj, torch.nn.Module) and callable(obj):
        obj = obj()
    if not isinstance(obj, torch.nn.Module):
        raise InputError(f"'{target}' is a {type(obj).__name__}, expected an nn.Module")
    return obj.eval()


def _prepare(args: argparse.Namespace, out: Path) -> tuple[Any, Any, Any, str | None]:
    """(export result, eager reference module, graph module, checkpoint path or None)."""
    import torch

    from rnnedge.exporters.onnx import example_for, export

    if Path(args.model).suffix in CHECKPOINT_SUFFIXES:
        from rnnedge.cli.commands import _export_checkpoint
        from rnnedge.modeling.models import stateful_wrapper

        res, ckpt = _export_checkpoint(args.model, out / "model.onnx", args.exporter, None,
                                       False, True)
        return res, ckpt.model, stateful_wrapper(ckpt.model), args.model
    module = load_user_module(args.model)
    if not args.features:
        raise InputError("a user module needs --features (its input feature count)")
    x = example_for(not args.time_major, args.features)
    with torch.no_grad():
        res = export(module, x, out / "model.onnx", exporter=args.exporter,
                     batch_first=not args.time_major)
    return res, module, module, None


def _stream_check(path: Path, spec: Any) -> float | None:
    """Max |streamed − full| over chunkings 1, 7 and random, or None when it cannot stream."""
    from rnnedge.runtime.model import load

    if not spec.streamable:
        return None
    with load(path) as model:
        rng = np.random.default_rng(0)
        features = model.spec.input(spec.data_input).shape[2]
        steps = 50
        shape = (2, steps, features) if spec.batch_first else (steps, 2, features)
        x = rng.standard_normal(shape).astype(np.float32)
        full, _ = model.run(x, normalize=False)
        worst = 0.0
        axis = spec.seq_axis
        for sizes in ([1] * steps, [7] * 8, list(rng.integers(1, 12, size=steps))):
            stream = model.stream(batch=2, normalize=False)
            parts, i = [], 0
            for n in sizes:
                if i >= steps:
                    break
                parts.append(stream.step(np.take(x, range(i, min(i + int(n), steps)),
                                                 axis=axis)))
                i += int(n)
            worst = max(worst, float(np.abs(np.concatenate(parts, axis=axis) - full).max()))
    return worst


def _parity(path: Path, graph_module: Any, spec: Any, shapes: list[tuple[int, int]]
            ) -> ParityReport:
    from rnnedge.modeling.torch_runner import TorchRunner
    from rnnedge.runtime.backends.base import availability
    from rnnedge.runtime.model import load

    names = [n for n, why in availability().items() if why is None and n != "torch"]
    models = [load(path, n, tuned=False) for n in names]
    try:
        with TorchRunner(graph_module, [t.name for t in spec.inputs],
                         [t.name for t in spec.outputs]) as ref:
            return check_parity(ref, [m.runner for m in models], spec, shapes)
    finally:
        for m in models:
            m.close()


def cmd_report(args: argparse.Namespace) -> int:
    from rnnedge.cli.bench import add_bench_parser, bench_data
    from rnnedge.fileio import atomic_write_text
    from rnnedge.tools.lint import lint

    start = time.perf_counter()
    out = Path(args.out_dir)
    batches = parse_positive_ints(args.batches, "--batches")
    seq_lens = parse_positive_ints(args.seq_lens, "--seq-lens")
    res, eager, graph_module, checkpoint = _prepare(args, out)
    spec = res.spec
    findings = lint(res.path)
    parity = _parity(res.path, graph_module, spec, shape_grid(batches, seq_lens))
    stream_diff = _stream_check(res.path, spec)
    parser = argparse.ArgumentParser()
    add_bench_parser(parser.add_subparsers())
    bench_args = parser.parse_args(["bench", str(res.path), "--batches", args.batches,
                                    "--seq-lens", args.seq_lens, "--budget-s",
                                    str(args.budget_s)]
                                   + (["--checkpoint", checkpoint] if checkpoint else []))
    bench = bench_data(bench_args, eager_module=None if checkpoint else eager)
    report.plot_bench(bench, str(out / "latency.png"))
    data = {
        "model": args.model, "onnx": res.path, "exporter": res.exporter, "opset": res.opset,
        "spec": {k: v for k, v in vars(spec).items() if k not in ("inputs", "outputs")},
        "inputs": spec.inputs, "outputs": spec.outputs,
        "export_verification_max_abs": res.parity.max_abs() if res.parity else None,
        "lint": findings, "parity": {"ok": parity.ok, "comparisons": parity.comparisons},
        "stream_vs_full_max_abs": stream_diff, "bench": bench,
        "seconds": time.perf_counter() - start,
    }
    text = report.pull_request_markdown(data, parity)
    atomic_write_text(out / "report.md", text)
    atomic_write_text(out / "report.json", report.to_json(data) + "\n")
    if args.json:
        print(report.to_json(data))
    else:
        print(text)
        print(f"\nwrote {out / 'report.md'}, {out / 'report.json'}, {out / 'latency.png'}")
    parity.raise_if_failed()
    return 0
