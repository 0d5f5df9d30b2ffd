"""The `rnnedge bench` sweep: every runner available here, the same inputs, the same run.

Every runner sees the same inputs at the same shapes in the same run, so the ratios (speedup
vs eager PyTorch and vs ONNX Runtime with default settings) compare like with like. Runners
are measured shape by shape, in turn, so a slow drift of the machine is spread over all of
them instead of being charged to one. The timing primitives are `rnnedge.tools.bench`; this
module decides what to run and assembles the result as plain data.
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rnnedge._optional import require
from rnnedge.errors import InputError, MachineBusyError
from rnnedge.runtime.backends.base import Runner
from rnnedge.spec import RnnSpec
from rnnedge.tools import bench
from rnnedge.tools.pipeline import is_checkpoint
from rnnedge.tools.render import fmt

#: runners every sweep knows besides the registered runtimes
BASE_RUNNERS = ("eager", "eager-cuda", "ort-raw", "rnnedge")

Say = Callable[[str], None]


@dataclass(frozen=True)
class BenchConfig:
    """What to measure and how long.

    Attributes:
        model: A `.pt`/`.pth` checkpoint (exported to a temporary verified ONNX file) or an
            `.onnx` file.
        checkpoint: For an `.onnx` model: the checkpoint it came from, for the eager baseline.
        shapes: (batch, seq_len) points of the sweep.
        budget_s: Time spent measuring each point.
        warmup: Untimed calls before each point.
        retries: Re-measurements of a point while other processes disturb it.
        runtimes: Only these runners (see `known_runners`); None runs all available.
        stream: Also time one streaming step per runner.
        tune: Tune ONNX Runtime settings first; for an `.onnx` model the tuning file is
            written next to it.
        tune_budget_s: Time per candidate setting while tuning.
        exporter: Exporter for a checkpoint model.
        load_options: `rnnedge.load`'s overrides for an `.onnx` model rnnedge did not write
            (`data_input`, `state_names`, `layout`, ...).
    """

    model: Path
    checkpoint: Path | None = None
    shapes: tuple[tuple[int, int], ...] = tuple(
        (b, t) for b in (1, 8) for t in (1, 16, 64, 256, 1024)
    )
    budget_s: float = bench.DEFAULT_BUDGET_S
    warmup: int = bench.DEFAULT_WARMUP
    retries: int = 2
    runtimes: tuple[str, ...] | None = None
    stream: bool = True
    tune: bool = False
    tune_budget_s: float = 0.15
    exporter: str = "torchscript"
    load_options: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class _Entry:
    """A runner to build (lazily), what it is, and the settings it runs with."""

    factory: Callable[[], Runner]
    description: str
    settings: Any = None


def known_runners() -> list[str]:
    """Every name `BenchConfig.runtimes` may hold (available here or not)."""
    from rnnedge.runtime.backends.base import registered

    return [*BASE_RUNNERS, *(n for n in registered() if n not in ("torch", "ort-cpu"))]


def _read_spec(onnx_path: Path, load_options: Mapping[str, Any]) -> RnnSpec:
    from rnnedge.runtime.backends.ort import OrtCpuRunner
    from rnnedge.runtime.foreign import resolve_spec

    with OrtCpuRunner(onnx_path) as r:
        return resolve_spec(r.session, source=str(onnx_path), **load_options)


def _check_same_model(eager: Runner, onnx_path: Path, spec: RnnSpec) -> None:
    """Ratios against eager mean nothing if the checkpoint is not the file's source."""
    from rnnedge.runtime.backends.ort import OrtCpuRunner
    from rnnedge.verify.parity import check_parity

    with eager, OrtCpuRunner(onnx_path) as ort_runner:
        rep = check_parity(eager, [ort_runner], spec, [(1, 5), (2, 3)])
    if not rep.ok:
        raise InputError(
            f"the checkpoint does not produce what '{onnx_path}' computes "
            f"({rep.describe_failures(1)}); give the checkpoint it was exported "
            "from"
        )


def _tuning(
    cfg: BenchConfig, onnx_path: Path, spec: RnnSpec, keep: bool, notes: list[str], say: Say
) -> dict[str, Any] | None:
    from rnnedge.runtime import tuned
    from rnnedge.tools import tune

    if not cfg.tune:
        found, why = tuned.read_tuning(onnx_path)
        if found is None:
            notes.append(
                f"rnnedge runs untuned (ORT defaults): {why}; tune it with "
                "`rnnedge bench MODEL.onnx --tune`"
            )
        return found

    def progress(cls: str, label: str, p50: float) -> None:
        say(f"tune {cls} {label}: p50 {fmt(1e3 * p50)} ms")

    try:
        result = tune.tune(
            onnx_path, cfg.shapes, budget_s=cfg.tune_budget_s, spec=spec, progress=progress
        )
    except MachineBusyError as exc:  # a tuning measured under load would mislead: bench as is
        notes.append(f"not tuned: {exc}; benched with the settings already in place")
        found, _ = tuned.read_tuning(onnx_path)
        return found
    if keep:
        notes.append(f"tuning written to {tune.write_tuning(onnx_path, result)}")
    else:
        notes.append(
            "tuning used for this run only: MODEL is a checkpoint exported to a "
            "temporary file; export it and bench the .onnx to keep a tuning file"
        )
    return result


def _eager_entries(module: Any, names_in: list[str], names_out: list[str]) -> dict[str, _Entry]:
    torch = require("torch", "the eager PyTorch baseline", extra="export")
    from rnnedge.modeling.torch_runner import TorchRunner

    out = {
        "eager": _Entry(
            lambda: TorchRunner(module, names_in, names_out),
            f"eager PyTorch {torch.__version__} on CPU",
            {"torch_threads": torch.get_num_threads()},
        )
    }
    if torch.cuda.is_available():  # its own copy: activating moves a module in place
        cuda_module = copy.deepcopy(module)
        out["eager-cuda"] = _Entry(
            lambda: TorchRunner(cuda_module, names_in, names_out, device="cuda"),
            f"eager PyTorch on {torch.cuda.get_device_name(0)}",
            {"device": "cuda"},
        )
    return out


def _entries(
    cfg: BenchConfig,
    onnx_path: Path,
    spec: RnnSpec,
    eager_module: Any,
    tuning: dict[str, Any] | None,
    skipped: dict[str, str],
) -> dict[str, _Entry]:
    from rnnedge.runtime.backends.base import availability, runner_class
    from rnnedge.runtime.backends.ort import OrtCpuRunner
    from rnnedge.runtime.tuned import TunedOrtRunner

    names_in = [t.name for t in spec.inputs]
    names_out = [t.name for t in spec.outputs]
    out: dict[str, _Entry] = {}
    if eager_module is not None:
        out.update(_eager_entries(eager_module, names_in, names_out))
    out["ort-raw"] = _Entry(
        lambda: OrtCpuRunner(onnx_path, settings={}),
        "ONNX Runtime CPU, default session options",
        {},
    )
    classes = {
        k: {"settings": v["settings"], "batch_split": v["batch_split"]}
        for k, v in (tuning or {}).get("classes", {}).items()
    }
    out["rnnedge"] = _Entry(
        lambda: TunedOrtRunner(onnx_path, tuning, spec),
        "rnnedge ONNX Runtime CPU, " + ("tuned per shape class" if tuning else "untuned"),
        classes,
    )
    for name, why in availability().items():
        if name in ("torch", "ort-cpu"):
            continue
        if why is not None:
            skipped[name] = why
            continue
        cls = runner_class(name)
        out[name] = _Entry(lambda cls=cls: cls(onnx_path), f"registered runtime {name}")
    if cfg.runtimes:
        unknown = [n for n in cfg.runtimes if n not in out and n not in skipped]
        if unknown:
            raise InputError(
                f"runner {', '.join(unknown)} is not available here; available: {', '.join(out)}"
            )
        out = {name: entry for name, entry in out.items() if name in cfg.runtimes}
    return out


def _measure_all(
    cfg: BenchConfig, entries: dict[str, _Entry], spec: RnnSpec, skipped: dict[str, str], say: Say
) -> list[bench.BenchPoint]:
    from rnnedge.verify.parity import make_feeds

    runners: dict[str, Runner] = {}
    for name, entry in entries.items():
        try:
            runners[name] = entry.factory().activate()
        except Exception as exc:  # an optional backend failing to start must not stop the rest
            skipped[name] = f"could not start: {(str(exc).splitlines() or [''])[0][:200]}"
    points: list[bench.BenchPoint] = []
    try:
        for b, t in cfg.shapes:
            feeds = make_feeds(spec, b, t, np.random.default_rng(b * 100_003 + t))
            for name, runner in runners.items():
                stats, load = bench.measure_clean(
                    lambda runner=runner, feeds=feeds: runner.infer(feeds),
                    budget_s=cfg.budget_s,
                    warmup=cfg.warmup,
                    synchronize=runner.synchronize,
                    retries=cfg.retries,
                )
                points.append(bench.BenchPoint(name, b, t, stats, other_load=load))
                say(
                    f"{name} batch={b} seq_len={t}: p50 {fmt(1e3 * stats.p50)} ms, "
                    f"p90 {fmt(1e3 * stats.p90)} ms (n={stats.samples})"
                )
        if cfg.stream and spec.streamable:
            for name, runner in runners.items():
                step = bench.stream_step_call(runner, spec, np.random.default_rng(7))
                stats, load = bench.measure_clean(
                    step,
                    budget_s=cfg.budget_s,
                    warmup=cfg.warmup,
                    retries=cfg.retries,
                    synchronize=runner.synchronize,
                )
                points.append(bench.BenchPoint(name, 1, 1, stats, "stream_step", load))
                say(f"{name} stream step: p50 {fmt(1e3 * stats.p50)} ms")
    finally:
        for runner in runners.values():
            runner.deactivate()
    bench.add_ratios(points)
    return points


def _export_temporary(checkpoint: Path, folder: Path, exporter: str) -> Path:
    from rnnedge.tools.pipeline import ExportJob, export_checkpoint

    job = ExportJob(checkpoint, folder / (checkpoint.stem + ".onnx"), exporter=exporter)
    return Path(export_checkpoint(job).path)


def run_bench(
    cfg: BenchConfig, *, eager_module: Any = None, say: Say | None = None
) -> dict[str, Any]:
    """Run the sweep and return it as plain data (`BenchResult.to_dict()`).

    Args:
        cfg: What to measure.
        eager_module: The eager baseline when there is no checkpoint (a user module whose
            signature the graph has); ignored when `cfg` names a checkpoint.
        say: Called with one line per measured point and step of the run.

    Raises:
        InputError: The model is missing, a checkpoint model also got `checkpoint`, a runner
            is not known here, the budget is not positive, or the checkpoint is not the
            file's source.
        RuntimeUnavailableError: torch is needed (a checkpoint) but not installed.
    """
    say = say or (lambda _line: None)
    if not (cfg.budget_s > 0 and np.isfinite(cfg.budget_s)):
        raise InputError(f"budget_s must be > 0, got {cfg.budget_s}")
    if not cfg.shapes:
        raise InputError("shapes is empty; give at least one (batch, seq_len)")
    model = Path(cfg.model)
    if not model.is_file():
        raise InputError(
            f"model '{model}' does not exist (expected a .pt checkpoint or an .onnx file)"
        )
    from_checkpoint = is_checkpoint(model)
    notes: list[str] = []
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="rnnedge-bench-") as tmp:
        if from_checkpoint:
            if cfg.checkpoint:
                raise InputError(
                    "a checkpoint is for an .onnx model; the model is already a checkpoint"
                )
            onnx_path, checkpoint = _export_temporary(model, Path(tmp), cfg.exporter), model
            say(f"exported {model} ({cfg.exporter}) to a temporary file, verified against eager")
        else:
            onnx_path, checkpoint = model, cfg.checkpoint
        spec = _read_spec(onnx_path, cfg.load_options)
        if checkpoint:
            from rnnedge.modeling.models import stateful_wrapper
            from rnnedge.tools.pipeline import load_module

            eager_module = stateful_wrapper(load_module(checkpoint, spec.batch_first))
        elif eager_module is None:
            skipped["eager"] = "no checkpoint given"
            notes.append("no checkpoint given: eager PyTorch not run, ratios vs eager omitted")
        tuning = _tuning(cfg, onnx_path, spec, not from_checkpoint, notes, say)
        entries = _entries(cfg, onnx_path, spec, eager_module, tuning, skipped)
        if "eager" in entries and not from_checkpoint:
            _check_same_model(entries["eager"].factory(), onnx_path, spec)
        points = _measure_all(cfg, entries, spec, skipped, say)
    result = bench.BenchResult(
        model=os.fspath(model),
        model_info={
            "cell": spec.cell,
            "num_layers": spec.num_layers,
            "hidden_size": spec.hidden_size,
            "input_size": spec.input_size,
            "batch_first": spec.batch_first,
            "onnx": os.fspath(onnx_path) if not from_checkpoint else "temporary export",
        },
        environment=bench.environment(),
        runners={
            n: {"description": e.description, "settings": e.settings}
            for n, e in entries.items()
            if n not in skipped
        },
        points=points,
        skipped=skipped,
        notes=notes,
        budget_s=cfg.budget_s,
        warmup=cfg.warmup,
    )
    return result.to_dict()
