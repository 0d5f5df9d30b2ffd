"""`rnnedge bench`: latency of every runner available here over a sweep of shapes.

Every runner sees the same inputs at the same shapes in the same run, so the ratios it prints
(speedup vs eager PyTorch and vs ONNX Runtime with default settings) compare like with like.
Runners are measured shape by shape, in turn, so a slow drift of the machine is spread over
all of them instead of being charged to one.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rnnedge.errors import InputError
from rnnedge.fileio import atomic_write_text
from rnnedge.runtime.backends.base import Runner
from rnnedge.runtime.inputs import parse_positive_ints
from rnnedge.spec import RnnSpec
from rnnedge.tools import bench
from rnnedge.tools import render as report

CHECKPOINT_SUFFIXES = (".pt", ".pth")
BASE_RUNNERS = ("eager", "ort-raw", "rnnedge")


def add_bench_parser(sub: Any) -> None:
    """Add the `bench` subcommand to the `rnnedge` subparsers."""
    p = sub.add_parser(
        "bench", help="measure latency: eager PyTorch vs ONNX Runtime vs rnnedge",
        description="Time every runner available here (eager PyTorch, ONNX Runtime with "
        "default settings = ort-raw, rnnedge's tuned ONNX Runtime, GPU runtimes when "
        "present) over batch sizes and sequence lengths, plus one streaming step, and print "
        "p50/p90 with each runner's speedup over eager and over ort-raw from the same run.")
    p.add_argument("model", help="a .pt checkpoint from `rnnedge train` (exported to a "
                   "temporary verified ONNX file) or an .onnx file")
    p.add_argument("--checkpoint", help="for an .onnx MODEL: the checkpoint it was exported "
                   "from, for the eager baseline (without it: ONNX runners only)")
    p.add_argument("--seq-lens", default="1,16,64,256,1024",
                   help="sequence lengths (1,16,64,256,1024)")
    p.add_argument("--batches", default="1,8", help="batch sizes (1,8)")
    p.add_argument("--budget-s", type=float, default=bench.DEFAULT_BUDGET_S,
                   help=f"time spent measuring each point ({bench.DEFAULT_BUDGET_S})")
    p.add_argument("--warmup", type=int, default=bench.DEFAULT_WARMUP,
                   help=f"untimed calls before each point ({bench.DEFAULT_WARMUP})")
    p.add_argument("--retries", type=int, default=2,
                   help="re-measure a point up to this many times while other processes "
                   "disturb it (2)")
    p.add_argument("--runtime", action="append", metavar="NAME",
                   help="only this runner, repeatable: eager, ort-raw, rnnedge, or a "
                   "registered runtime (default: all available)")
    p.add_argument("--no-stream", action="store_true", help="skip the streaming-step point")
    p.add_argument("--tune", action="store_true", help="tune ONNX Runtime settings for this "
                   "model and machine first and write MODEL.onnx.tuning.json next to it")
    p.add_argument("--tune-budget-s", type=float, default=0.15,
                   help="time per candidate setting while tuning (0.15)")
    p.add_argument("--exporter", default="torchscript", choices=["torchscript", "dynamo"],
                   help="exporter for a .pt MODEL (torchscript)")
    p.add_argument("--markdown", metavar="PATH", help="also write the results as markdown")
    p.add_argument("--plot", metavar="PATH.png", help="also plot latency vs seq_len (log-log)")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.set_defaults(handler=cmd_bench)


def _say(text: str) -> None:
    print(f"rnnedge bench: {text}", file=sys.stderr, flush=True)


@dataclass
class _Entry:
    """A runner to build (lazily, in `with`), what it is, and the settings it runs with."""

    factory: Callable[[], Runner]
    description: str
    settings: Any = None


def _eager_module(checkpoint: str, spec: RnnSpec) -> Any:
    """The checkpoint's module in the ONNX file's layout (a time-major export needs one)."""
    from rnnedge.modeling.models import ModelConfig, SequenceModel, stateful_wrapper
    from rnnedge.modeling.train import load_checkpoint

    model = load_checkpoint(checkpoint).model
    if model.config.batch_first != spec.batch_first:
        cfg = ModelConfig.from_dict({**model.config.to_dict(), "batch_first": spec.batch_first})
        flipped = SequenceModel(cfg)
        flipped.load_state_dict(model.state_dict())
        model = flipped.eval()
    return stateful_wrapper(model)


def _export(checkpoint: str, folder: Path, exporter: str) -> Path:
    import torch

    from rnnedge.exporters.onnx import example_for, export
    from rnnedge.modeling.train import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    model = ckpt.model
    x = example_for(model.config.batch_first, model.config.input_size)
    out = folder / (Path(checkpoint).stem + ".onnx")
    with torch.no_grad():
        export(model, x, out, exporter=exporter, normalization=ckpt.normalization)
    return out


def _read_spec(onnx_path: Path) -> RnnSpec:
    from rnnedge.runtime.backends.ort import OrtCpuRunner
    from rnnedge.runtime.foreign import resolve_spec

    with OrtCpuRunner(onnx_path) as r:
        return resolve_spec(r.session, source=str(onnx_path))


def _check_same_model(eager: Runner, onnx_path: Path, spec: RnnSpec) -> None:
    """Ratios against eager mean nothing if the checkpoint is not the file's source."""
    from rnnedge.runtime.backends.ort import OrtCpuRunner
    from rnnedge.verify.parity import check_parity

    with eager, OrtCpuRunner(onnx_path) as ort_runner:
        rep = check_parity(eager, [ort_runner], spec, [(1, 5), (2, 3)])
    if not rep.ok:
        raise InputError(f"--checkpoint does not produce what '{onnx_path}' computes "
                         f"({rep.describe_failures(1)}); pass the checkpoint it was exported "
                         "from")


def _tuning(args: argparse.Namespace, onnx_path: Path, spec: RnnSpec,
            shapes: list[tuple[int, int]], keep: bool, notes: list[str]) -> dict[str, Any] | None:
    from rnnedge.runtime import tuned as tn
    from rnnedge.tools import tune


    if not args.tune:
        found, why = tn.read_tuning(onnx_path)
        if found is None:
            notes.append(f"rnnedge runs untuned (ORT defaults): {why}; run with --tune")
        return found

    def progress(cls: str, label: str, p50: float) -> None:
        _say(f"tune {cls} {label}: p50 {report.fmt(1e3 * p50)} ms")

    result = tune.tune(onnx_path, shapes, budget_s=args.tune_budget_s, spec=spec,
                     progress=progress)
    if keep:
        path = tune.write_tuning(onnx_path, result)
        notes.append(f"tuning written to {path}")
    else:
        notes.append("tuning used for this run only: MODEL is a checkpoint exported to a "
                     "temporary file; export it and bench the .onnx to keep a tuning file")
    return result


def _entries(args: argparse.Namespace, onnx_path: Path, spec: RnnSpec, eager_module: Any,
             tuning: dict[str, Any] | None, skipped: dict[str, str]) -> dict[str, _Entry]:
    from rnnedge.runtime.backends.base import availability, runner_class
    from rnnedge.runtime.backends.ort import OrtCpuRunner
    from rnnedge.runtime.tuned import TunedOrtRunner

    names_in = [t.name for t in spec.inputs]
    names_out = [t.name for t in spec.outputs]
    out: dict[str, _Entry] = {}
    if eager_module is not None:
        import torch

        from rnnedge.modeling.torch_runner import TorchRunner

        out["eager"] = _Entry(lambda: TorchRunner(eager_module, names_in, names_out),
                              f"eager PyTorch {torch.__version__} on CPU",
                              {"torch_threads": torch.get_num_threads()})
        if torch.cuda.is_available():  # its own copy: activating moves a module in place
            cuda_module = copy.deepcopy(eager_module)
            out["eager-cuda"] = _Entry(
                lambda: TorchRunner(cuda_module, names_in, names_out, device="cuda"),
                f"eager PyTorch on {torch.cuda.get_device_name(0)}", {"device": "cuda"})
    out["ort-raw"] = _Entry(lambda: OrtCpuRunner(onnx_path, settings={}),
                            "ONNX Runtime CPU, default session options", {})
    classes = {k: {"settings": v["settings"], "batch_split": v["batch_split"]}
               for k, v in (tuning or {}).get("classes", {}).items()}
    out["rnnedge"] = _Entry(lambda: TunedOrtRunner(onnx_path, tuning, spec),
                            "rnnedge ONNX Runtime CPU, " + ("tuned per shape class"
                                                            if tuning else "untuned"),
                            classes)
    for name, why in availability().items():
        if name in ("torch", "ort-cpu"):
            continue
        if why is not None:
            skipped[name] = why
            continue
        cls = runner_class(name)
        out[name] = _Entry(lambda cls=cls: cls(onnx_path), f"registered runtime {name}")
    if args.runtime:
        unknown = [n for n in args.runtime if n not in out and n not in skipped]
        if unknown:
            raise InputError(f"--runtime {', '.join(unknown)} is not available here; "
                             f"available: {', '.join(out)}")
        for name in list(out):
            if name not in args.runtime:
                del out[name]
    return out


def _measure_all(args: argparse.Namespace, entries: dict[str, _Entry], spec: RnnSpec,
                 shapes: list[tuple[int, int]], skipped: dict[str, str]) -> list[bench.BenchPoint]:
    from rnnedge.verify.parity import make_feeds

    runners: dict[str, Runner] = {}
    for name, entry in entries.items():
        try:
            runners[name] = entry.factory().activate()
        except Exception as exc:  # an optional backend failing to start must not stop the rest
            skipped[name] = f"could not start: {(str(exc).splitlines() or [''])[0][:200]}"
    points: list[bench.BenchPoint] = []
    try:
        for b, t in shapes:
            feeds = make_feeds(spec, b, t, np.random.default_rng(b * 100_003 + t))
            for name, runner in runners.items():
                stats, load = bench.measure_clean(
                    lambda runner=runner, feeds=feeds: runner.infer(feeds), budget_s=args.budget_s,
                    warmup=args.warmup, synchronize=runner.synchronize, retries=args.retries)
                points.append(bench.BenchPoint(name, b, t, stats, other_load=load))
                _say(f"{name} batch={b} seq_len={t}: p50 {report.fmt(1e3 * stats.p50)} ms, "
                     f"p90 {report.fmt(1e3 * stats.p90)} ms (n={stats.samples})")
        if not args.no_stream and spec.streamable:
            for name, runner in runners.items():
                step = bench.stream_step_call(runner, spec, np.random.default_rng(7))
                stats, load = bench.measure_clean(step, budget_s=args.budget_s,
                                                  warmup=args.warmup, retries=args.retries,
                                                  synchronize=runner.synchronize)
                points.append(bench.BenchPoint(name, 1, 1, stats, "stream_step", load))
                _say(f"{name} stream step: p50 {report.fmt(1e3 * stats.p50)} ms")
    finally:
        for runner in runners.values():
            runner.deactivate()
    bench.add_ratios(points)
    return points


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the sweep and print (or write) the table, JSON, markdown and plot."""
    data = bench_data(args)
    if args.markdown:
        atomic_write_text(Path(args.markdown), report.bench_markdown(data))
    if args.plot:
        report.plot_bench(data, args.plot)
    print(report.to_json(data) if args.json else report.bench_text(data))
    return 0


def bench_data(args: argparse.Namespace, eager_module: Any = None) -> dict[str, Any]:
    """The sweep as plain data; `eager_module` is the baseline when there is no checkpoint."""
    shapes = list(dict.fromkeys((b, t) for b in parse_positive_ints(args.batches, "--batches")
                                for t in parse_positive_ints(args.seq_lens, "--seq-lens")))
    if args.budget_s <= 0:
        raise InputError(f"--budget-s must be > 0, got {args.budget_s}")
    model = Path(args.model)
    if not model.is_file():
        raise InputError(f"MODEL '{model}' does not exist (expected a .pt checkpoint or an "
                         ".onnx file)")
    notes: list[str] = []
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="rnnedge-bench-") as tmp:
        if model.suffix in CHECKPOINT_SUFFIXES:
            if args.checkpoint:
                raise InputError("--checkpoint is for an .onnx MODEL; MODEL is a checkpoint")
            _say(f"exporting {model} ({args.exporter}) and verifying it against eager")
            onnx_path, checkpoint = _export(str(model), Path(tmp), args.exporter), str(model)
        else:
            onnx_path, checkpoint = model, args.checkpoint
        spec = _read_spec(onnx_path)
        if eager_module is None and checkpoint:
            eager_module = _eager_module(checkpoint, spec)
        elif eager_module is None:
            skipped["eager"] = "no --checkpoint given"
            notes.append("no --checkpoint: eager PyTorch not run, ratios vs eager omitted")
        tuning = _tuning(args, onnx_path, spec, shapes, model.suffix == ".onnx", notes)
        entries = _entries(args, onnx_path, spec, eager_module, tuning, skipped)
        if "eager" in entries and model.suffix not in CHECKPOINT_SUFFIXES:
            _check_same_model(entries["eager"].factory(), onnx_path, spec)
        points = _measure_all(args, entries, spec, shapes, skipped)
    result = bench.BenchResult(
        model=str(model),
        model_info={"cell": spec.cell, "num_layers": spec.num_layers,
                    "hidden_size": spec.hidden_size, "input_size": spec.input_size,
                    "batch_first": spec.batch_first, "onnx": str(onnx_path)
                    if model.suffix == ".onnx" else "temporary export"},
        environment=bench.environment(),
        runners={n: {"description": e.description, "settings": e.settings}
                 for n, e in entries.items() if n not in skipped},
        points=points, skipped=skipped, notes=notes, budget_s=args.budget_s,
        warmup=args.warmup)
    return result.to_dict()
