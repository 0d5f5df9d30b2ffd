"""Checkpoint → verified ONNX file → parity on every runtime here, as typed library calls.

The steps `rnnedge export`, `verify`, `demo`, `bench` and `report` share. Each takes a frozen
job dataclass (no argparse), imports torch only when it needs it (through `_optional`, so a
runtime-only install gets "install rnnedge[export]", exit 5) and writes files only through
the exporter's atomic path.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rnnedge._optional import require

if TYPE_CHECKING:
    from rnnedge.exporters.onnx import ExportResult
    from rnnedge.verify.parity import ParityReport

Shapes = tuple[tuple[int, int], ...]

#: what a file rnnedge is given is taken for by its suffix: a checkpoint, else an ONNX model
CHECKPOINT_SUFFIXES = (".pt", ".pth")


def is_checkpoint(path: str | os.PathLike[str]) -> bool:
    """Whether `path` names a checkpoint (by suffix) rather than an ONNX file or module."""
    return Path(path).suffix in CHECKPOINT_SUFFIXES


@dataclass(frozen=True)
class ExportJob:
    """Export an rnnedge checkpoint to ONNX.

    Attributes:
        checkpoint: A `.pt` written by `rnnedge train` (weights only, never unpickled code).
        output: Where the `.onnx` file goes; it appears only once verified (unless `verify`
            is off).
        exporter: "torchscript" or "dynamo".
        opset: ONNX opset; None takes the exporter's default.
        time_major: Export with (seq_len, batch, features) inputs instead of batch-first.
        verify: Run the file at other shapes against eager PyTorch before keeping it.
        precision: "fp32", or "int8"/"bf16"/"auto": the verified file then goes through the
            precision gate, judged on the checkpoint's own validation split.
        margin: How much worse (relative) the validation MSE may get than fp32's.
    """

    checkpoint: Path
    output: Path
    exporter: str = "torchscript"
    opset: int | None = None
    time_major: bool = False
    verify: bool = True
    precision: str = "fp32"
    margin: float = 0.01


@dataclass(frozen=True)
class VerifyJob:
    """Prove an ONNX file equals eager PyTorch on the checkpoint it came from.

    Attributes:
        model: The `.onnx` file.
        checkpoint: The checkpoint it was exported from.
        runtimes: Runtimes to check; None checks every available ONNX runtime.
        shapes: (batch, seq_len) pairs to compare at.
    """

    model: Path
    checkpoint: Path
    runtimes: tuple[str, ...] | None
    shapes: Shapes


def _in_layout(model: Any, batch_first: bool | None) -> Any:
    """`model` rebuilt with `batch_first` (same weights), or itself when it already fits."""
    from rnnedge.modeling.models import ModelConfig, SequenceModel

    if batch_first is None or model.config.batch_first == batch_first:
        return model
    cfg = ModelConfig.from_dict({**model.config.to_dict(), "batch_first": batch_first})
    flipped = SequenceModel(cfg)
    flipped.load_state_dict(model.state_dict())
    return flipped.eval()


def load_module(checkpoint: str | os.PathLike[str], batch_first: bool | None = None) -> Any:
    """The checkpoint's `SequenceModel`, rebuilt in another layout when `batch_first` says so
    (the eager twin of a file exported time-major).

    Raises:
        RuntimeUnavailableError: torch is not installed.
        ModelFileError: The file is missing, not a checkpoint, or carries pickled code.
    """
    require("torch", "reading a checkpoint", extra="export")
    from rnnedge.modeling.train import load_checkpoint

    return _in_layout(load_checkpoint(checkpoint).model, batch_first)


def export_checkpoint(job: ExportJob) -> ExportResult:
    """Export `job.checkpoint` with dynamic batch/seq_len axes and state as named tensors.

    Raises:
        RuntimeUnavailableError: torch or onnx is not installed.
        ModelFileError: The checkpoint is missing, corrupt or carries pickled code.
        UnsupportedModelError: The model cannot be exported correctly.
        ExportError: torch failed, or the file is wrong at shapes other than the example.
    """
    torch = require("torch", "exporting a checkpoint", extra="export")
    require("onnx", "exporting a checkpoint", extra="export")
    from rnnedge.exporters.onnx import example_for, export
    from rnnedge.modeling.train import load_checkpoint

    ckpt = load_checkpoint(job.checkpoint)
    model = _in_layout(ckpt.model, False if job.time_major else None)
    x = example_for(model.config.batch_first, model.config.input_size)
    with torch.no_grad():
        return export(
            model,
            x,
            job.output,
            exporter=job.exporter,
            opset=job.opset,
            normalization=ckpt.normalization,
            contract=ckpt.contract,
            verify=job.verify,
            **_gate(job, ckpt),
        )


def _gate(job: ExportJob, ckpt: Any) -> dict[str, Any]:
    """Precision-gate arguments for `export`: none for fp32, else the checkpoint's validation."""
    if job.precision == "fp32":
        return {}
    from rnnedge.exporters.validation import Validation

    return {
        "precision": job.precision,
        "margin": job.margin,
        "validation": Validation.from_checkpoint(ckpt, source=str(job.checkpoint)),
    }


def onnx_runtimes(requested: Sequence[str] | None = None) -> list[str]:
    """`requested` once each is known to work here; by default every available runtime that
    `rnnedge.load` opens (the ONNX Runtime ones; torch is the reference they are held to).

    Raises:
        RuntimeUnavailableError: A requested runtime is unknown or not available here.
    """
    from rnnedge.runtime.backends.base import availability, require_runner, runner_class
    from rnnedge.runtime.backends.ort import OrtRunner

    if requested:
        for name in requested:
            require_runner(name)
        return list(requested)
    return [
        n
        for n, why in availability().items()
        if why is None and issubclass(runner_class(n), OrtRunner)
    ]


def parity_on_runtimes(
    reference: Any,
    onnx_path: str | os.PathLike[str],
    runtimes: Sequence[str],
    shapes: Sequence[tuple[int, int]],
    *,
    tuned: bool = True,
) -> ParityReport:
    """Every runtime in `runtimes` on the file against eager PyTorch on `reference`.

    Args:
        reference: The module whose signature the graph has: for an rnnedge `SequenceModel`,
            its `stateful_wrapper`; for a user module, the module itself.
        onnx_path: The exported file.
        runtimes: Registered runtime names (see `onnx_runtimes`).
        shapes: (batch, seq_len) pairs.
        tuned: Let `load` apply a tuning file found beside the model.
    """
    from rnnedge.modeling.torch_runner import TorchRunner
    from rnnedge.runtime.model import load
    from rnnedge.verify.parity import check_parity

    models = []
    try:
        for name in runtimes:
            models.append(load(onnx_path, name, tuned=tuned))
        spec = models[0].spec
        with TorchRunner(
            reference, [t.name for t in spec.inputs], [t.name for t in spec.outputs]
        ) as ref:
            return check_parity(ref, [m.runner for m in models], spec, shapes)
    finally:
        for m in models:
            m.close()


def verify_onnx(job: VerifyJob) -> ParityReport:
    """Parity of `job.model` on each runtime against the checkpoint, over `job.shapes`.

    Raises:
        RuntimeUnavailableError: torch or a requested runtime is not available here.
        ModelFileError: The model or checkpoint cannot be read.
    """
    require("torch", "verifying against eager PyTorch", extra="export")
    from rnnedge.modeling.models import stateful_wrapper

    runtimes = onnx_runtimes(job.runtimes)
    module = load_module(job.checkpoint)
    return parity_on_runtimes(stateful_wrapper(module), job.model, runtimes, job.shapes)


def stream_vs_full(
    onnx_path: str | os.PathLike[str], x: np.ndarray, *, normalize: bool = True, seed: int = 0
) -> float | None:
    """Largest |streamed − one full pass| over chunkings of 1, of 7 and of random sizes.

    Args:
        onnx_path: The model file.
        x: One batch of sequences in the model's layout.
        normalize: Apply the normalization stored in the model (False for raw inputs).
        seed: Seed of the random chunk sizes.

    Returns:
        The difference, or None when the model cannot stream (no state, bidirectional).
    """
    from rnnedge.runtime.model import load

    with load(onnx_path) as model:
        spec = model.spec
        if not spec.streamable:
            return None
        axis, steps = spec.seq_axis, x.shape[spec.seq_axis]
        full, _ = model.run(x, normalize=normalize)
        rng = np.random.default_rng(seed)
        worst = 0.0
        for sizes in (
            [1] * steps,
            [7] * (steps // 7 + 1),
            [int(n) for n in rng.integers(1, 20, size=steps)],
        ):
            stream = model.stream(batch=x.shape[spec.batch_axis], normalize=normalize)
            parts, i = [], 0
            for n in sizes:
                if i >= steps:
                    break
                parts.append(stream.step(np.take(x, range(i, min(i + n, steps)), axis=axis)))
                i += n
            worst = max(worst, float(np.abs(np.concatenate(parts, axis=axis) - full).max()))
    return worst
