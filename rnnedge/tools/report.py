"""One artifact with the evidence for an exported model: export, lint, parity, streaming, latency.

What `rnnedge report` writes (report.md, report.json, latency.png and the model.onnx they
describe): what a user attaches to a pull request to show the file is right at every shape
and runtime, and what it costs to run. It takes an rnnedge checkpoint or any user module
named as `pkg.module:attr` / `file.py:attr`.
"""

from __future__ import annotations

import importlib
import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rnnedge._optional import require
from rnnedge.errors import InputError
from rnnedge.fileio import atomic_write_text
from rnnedge.tools import render
from rnnedge.tools.benchrun import BenchConfig, run_bench
from rnnedge.tools.pipeline import (
    ExportJob,
    export_checkpoint,
    is_checkpoint,
    onnx_runtimes,
    parity_on_runtimes,
    stream_vs_full,
)

if TYPE_CHECKING:
    from rnnedge.exporters.onnx import ExportResult
    from rnnedge.verify.parity import ParityReport

#: what a report folder holds once written
FILES = ("model.onnx", "report.md", "report.json", "latency.png")


@dataclass(frozen=True)
class ReportConfig:
    """What to report on and how thoroughly.

    Attributes:
        model: A `.pt` checkpoint, or `pkg.module:attr` / `path/file.py:attr` naming an
            `nn.Module` (or a function returning one).
        out_dir: Folder for `FILES`.
        features: Input features of a user module (a checkpoint knows its own).
        time_major: A user module takes (seq_len, batch, features).
        exporter: "torchscript" or "dynamo".
        shapes: (batch, seq_len) pairs for parity and the latency sweep.
        budget_s: Measuring time per latency point.
    """

    model: str
    out_dir: Path = Path("runs/report")
    features: int | None = None
    time_major: bool = False
    exporter: str = "torchscript"
    shapes: tuple[tuple[int, int], ...] = tuple((b, t) for b in (1, 4) for t in (1, 16, 64, 256))
    budget_s: float = 0.2


@dataclass
class Report:
    """The report as data (`data` is report.json), its markdown, and the parity verdict."""

    data: dict[str, Any]
    markdown: str
    parity: ParityReport
    files: tuple[Path, ...]


def load_user_module(target: str) -> Any:
    """`pkg.mod:attr` or `path/file.py:attr` → an nn.Module (calling attr if it is a factory).

    Raises:
        InputError: The target is malformed, cannot be imported, or is not a module.
    """
    where, sep, attr = target.rpartition(":")
    if not sep or not where or not attr:
        raise InputError(
            f"'{target}' is neither a .pt checkpoint nor 'module:attr'; e.g. "
            "mypkg.models:build or models.py:Forecaster"
        )
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise InputError(f"module file '{path}' does not exist")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise InputError(f"'{path}' cannot be loaded as a Python module")
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
    torch = require("torch", "loading a user module", extra="export")
    if not isinstance(obj, torch.nn.Module) and callable(obj):
        obj = obj()
    if not isinstance(obj, torch.nn.Module):
        raise InputError(f"'{target}' is a {type(obj).__name__}, expected an nn.Module")
    return obj.eval()


def _prepare(cfg: ReportConfig) -> tuple[ExportResult, Any, Path | None]:
    """(export result, module the graph's signature matches, checkpoint or None)."""
    torch = require("torch", "rnnedge report", extra="export")
    from rnnedge.exporters.onnx import example_for, export
    from rnnedge.modeling.models import stateful_wrapper
    from rnnedge.tools.pipeline import load_module

    out = cfg.out_dir / "model.onnx"
    if is_checkpoint(cfg.model):
        ckpt = Path(cfg.model)
        res = export_checkpoint(ExportJob(ckpt, out, exporter=cfg.exporter))
        return res, stateful_wrapper(load_module(ckpt)), ckpt
    module = load_user_module(cfg.model)
    if not cfg.features:
        raise InputError("a user module needs its input feature count (features)")
    x = example_for(not cfg.time_major, cfg.features)
    with torch.no_grad():
        res = export(module, x, out, exporter=cfg.exporter, batch_first=not cfg.time_major)
    return res, module, None


def _stream_check(path: Path, spec: Any) -> float | None:
    """Streamed vs full on random data (two sequences of 50 steps), or None if it can't."""
    if not spec.streamable:
        return None
    tensor = spec.input(spec.data_input)
    sizes = {"B": 2, "T": 50}
    shape = [sizes.get(a, d) for a, d in zip(spec.data_layout, tensor.shape, strict=True)]
    if not all(isinstance(d, int) for d in shape):
        return None  # a symbolic dim that is neither batch nor time: no shape to make up
    rng = np.random.default_rng(0)
    if np.dtype(tensor.dtype).kind in "iu":  # token ids: stay within any vocabulary
        x = rng.integers(0, 2, size=shape).astype(tensor.dtype)
    else:
        x = rng.standard_normal(shape).astype(tensor.dtype)
    return stream_vs_full(path, x, normalize=False)


def build_report(cfg: ReportConfig, *, say: Callable[[str], None] | None = None) -> Report:
    """Export (verified), lint, parity on every runtime, streaming, latency; write `FILES`.

    The files are written even when parity fails, so the failure can be read; call
    `report.parity.raise_if_failed()` to turn it into an error afterwards.

    Raises:
        RuntimeUnavailableError: torch, onnx or matplotlib is missing.
        InputError: The model target is malformed, or a user module lacks `features`.
        ExportError: The export is wrong at shapes other than the example.
    """
    require("torch", "rnnedge report", extra="export")
    require("onnx", "rnnedge report", extra="export")
    require("matplotlib", "rnnedge report's latency plot", extra="plot")
    from rnnedge.tools.lint import lint

    start = time.perf_counter()
    out = cfg.out_dir
    res, graph_module, checkpoint = _prepare(cfg)
    spec = res.spec
    findings = lint(res.path)
    parity = parity_on_runtimes(graph_module, res.path, onnx_runtimes(), cfg.shapes, tuned=False)
    stream_diff = _stream_check(Path(res.path), spec)
    bench = run_bench(
        BenchConfig(
            Path(res.path), checkpoint=checkpoint, shapes=cfg.shapes, budget_s=cfg.budget_s
        ),
        eager_module=None if checkpoint else graph_module,
        say=say,
    )
    render.plot_bench(bench, out / "latency.png")
    data = {
        "model": cfg.model,
        "onnx": res.path,
        "exporter": res.exporter,
        "opset": res.opset,
        "spec": {k: v for k, v in vars(spec).items() if k not in ("inputs", "outputs")},
        "inputs": spec.inputs,
        "outputs": spec.outputs,
        "export_verification_max_abs": res.parity.max_abs() if res.parity else None,
        "lint": findings,
        "parity": {"ok": parity.ok, "comparisons": parity.comparisons},
        "stream_vs_full_max_abs": stream_diff,
        "bench": bench,
        "seconds": time.perf_counter() - start,
    }
    text = render.pull_request_markdown(data, parity)
    atomic_write_text(out / "report.md", text)
    atomic_write_text(out / "report.json", render.to_json(data) + "\n")
    return Report(data, text, parity, tuple(out / name for name in FILES))
