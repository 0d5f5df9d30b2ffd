"""Reduced precision as a gated choice: int8 or bf16 only where the forecast stays as good.

On a batch-1 recurrent model rnnedge's fp32 already runs at 0.75–0.86 of the floor set by
re-reading the recurrent weights every step, so fewer bytes per weight is the lever left:
ONNX Runtime's dynamic int8 (LSTM → `DynamicQuantizeLSTM`) ran an LSTM 1×512 3.3× faster, and
OpenVINO in bf16 a GRU 2×256 batch 64 1.86× faster. Such a file is judged by the task metric
on validation data (`rnnedge.exporters.validation`), whole sequences and streamed one step at
a time: it is written only when both stay within `margin` (relative) of what the fp32 file
scores on the same data, and when no output moved by more than a loose sanity bound (a broken
graph the metric might average away). Otherwise nothing is written and the error carries both
figures.

What each precision means here:
* int8: `onnxruntime.quantization.quantize_dynamic`, per-tensor and per-channel weights both
  tried and the better kept. LSTM and MatMul weights become int8; GRU and plain RNN weights
  stay fp32 (ONNX Runtime has no dynamic-quantized GRU/RNN op), which the result notes.
* bf16: applied by OpenVINO when it compiles the model, so the file stays fp32 and its spec
  records bf16 as the execution precision on the "openvino" runtime.
* auto: every precision that passes the gate here, timed in interleaved rounds on this machine,
  the fastest kept (fp32 unless another is faster by `AUTO_MIN_GAIN`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from rnnedge._optional import is_available, require
from rnnedge.errors import InputError, ModelFileError, QualityError
from rnnedge.exporters import validation as _validation
from rnnedge.exporters.validation import (
    Metric,
    Validation,
    as_validation,
    check_validation,
    mse,
    predict,
    score,
)
from rnnedge.fileio import atomic_write
from rnnedge.runtime.backends.base import Runner
from rnnedge.runtime.backends.openvino import OpenVINORunner, bf16_support, require_bf16
from rnnedge.runtime.backends.ort import OrtCpuRunner
from rnnedge.runtime.onnxscan import stored_spec
from rnnedge.spec import SPEC_KEY, PrecisionRecord, RnnSpec

__all__ = [
    "DEFAULT_MARGIN",
    "PRECISIONS",
    "Candidate",
    "PrecisionRefusedError",
    "PrecisionResult",
    "Validation",
    "check_precision",
    "mse",
    "quantize",
]

PRECISIONS = ("fp32", "int8", "bf16", "auto")
#: allowed relative worsening of the metric (1 %: validation MSE within 1 % of fp32's)
DEFAULT_MARGIN = 0.01
#: element-wise sanity bound: max |reduced − fp32| as a fraction of the fp32 outputs' range
SANITY_FRACTION = 0.1
#: a reduced precision must be this much faster than fp32 for `auto` to prefer it
AUTO_MIN_GAIN = 0.05


class PrecisionRefusedError(QualityError):
    """A reduced-precision file would forecast worse than fp32 by more than the margin."""

    def __init__(self, message: str, *, fp32_value: float, value: float, margin: float) -> None:
        super().__init__(message)
        self.fp32_value, self.value, self.margin = fp32_value, value, margin


@dataclass
class Candidate:
    """One precision tried: its metric (whole sequences and streamed), its distance from fp32
    element-wise, whether it passed and why not."""

    precision: str
    runtime: str
    scheme: str
    path: Path | None
    value: float = math.nan
    stream_value: float | None = None
    max_abs_diff: float = 0.0
    passed: bool = False
    reason: str = ""
    seconds: float | None = None


@dataclass
class PrecisionResult:
    """What the gate decided and wrote: the file, its record, every candidate and why."""

    path: Path
    record: PrecisionRecord
    candidates: list[Candidate] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def precision(self) -> str:
        return self.record.precision

    def moved_to(self, path: Path) -> None:
        """Point at `path` after the written file was renamed there (by `export`)."""
        for c in self.candidates:
            if c.path == self.path:
                c.path = path
        self.path = path


def check_precision(precision: str) -> str:
    """The precision name, or an error listing the known ones."""
    if precision not in PRECISIONS:
        raise InputError(
            f"precision '{precision}' is not known; expected one of {', '.join(PRECISIONS)}"
        )
    return precision


def default_out(onnx_path: str | os.PathLike[str], precision: str) -> Path:
    """`model.int8.onnx` beside `model.onnx`."""
    p = Path(onnx_path)
    return p.with_name(f"{p.stem}.{precision}{p.suffix or '.onnx'}")


def _change(value: float, fp32_value: float) -> float:
    return PrecisionRecord("", "", 0.0, fp32_value, value).relative_change


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """The quantizer advises pre-processing through the root logger on every call."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def _int8_files(src: Path, folder: Path, stack: contextlib.ExitStack) -> list[Candidate]:
    """Per-tensor and per-channel dynamic int8 versions of `src`, in temporary files beside
    the output that `stack` removes when it closes (the chosen one is copied out first)."""
    quantization = require("onnxruntime.quantization", "int8 quantization")
    require("onnx", "int8 quantization")
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for scheme, per_channel in (
        ("dynamic-int8-per-tensor", False),
        ("dynamic-int8-per-channel", True),
    ):
        tmp = folder / f".{src.stem}.{scheme}.{os.getpid()}.tmp.onnx"
        stack.callback(tmp.unlink, missing_ok=True)
        with _quiet_quantizer():
            quantization.quantize_dynamic(
                src, tmp, per_channel=per_channel, weight_type=quantization.QuantType.QInt8
            )
        out.append(Candidate("int8", "ort-cpu", scheme, tmp))
    return out


def _recurrent_ops_quantized(path: Path) -> bool:
    onnx = require("onnx", "int8 quantization")
    graph = onnx.load(str(path), load_external_data=False).graph
    return any(n.op_type == "DynamicQuantizeLSTM" for n in graph.node)


def _write_with_spec(src: Path, out: Path, spec: RnnSpec) -> Path:
    """Copy `src` to `out` atomically with `spec` in its metadata (replacing the old one)."""
    onnx = require("onnx", "writing the precision record")
    model = onnx.load(str(src))
    kept = [(e.key, e.value) for e in model.metadata_props if e.key != SPEC_KEY]
    del model.metadata_props[:]
    for key, value in [*kept, (SPEC_KEY, spec.to_json())]:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return atomic_write(out, lambda p: onnx.save(model, str(p)))


def _runner(c: Candidate, spec: RnnSpec) -> Runner:
    assert c.path is not None
    if c.runtime == "openvino":
        return OpenVINORunner(c.path, precision="bf16", spec=spec)
    return OrtCpuRunner(c.path)


def _judge(
    c: Candidate,
    spec: RnnSpec,
    v: Validation,
    metric: Metric,
    fp32_value: float,
    fp32_pred: np.ndarray,
    margin: float,
) -> Candidate:
    """Score `c` on the validation data and decide whether it passes the gate."""
    full, streamed = predict(_runner(c, spec), spec, v.x)
    c.value = score(metric, v, full, spec, c.scheme)
    c.stream_value = None if streamed is None else score(metric, v, streamed, spec, c.scheme)
    c.max_abs_diff = max(
        float(np.abs(p - fp32_pred).max()) for p in (full, streamed) if p is not None
    )
    span = float(fp32_pred.max() - fp32_pred.min()) or 1.0
    problems = []
    for what, value in (("whole sequences", c.value), ("streamed", c.stream_value)):
        if value is None:
            continue
        if not math.isfinite(value):
            problems.append(f"{what}: the metric is {value}")
        elif _change(value, fp32_value) > margin:
            problems.append(
                f"{what}: {value:.6g} vs fp32 {fp32_value:.6g} ({_change(value, fp32_value):+.2%})"
            )
    if c.max_abs_diff > SANITY_FRACTION * span:
        problems.append(
            f"an output moved by {c.max_abs_diff:.3g}, over {SANITY_FRACTION:g} of "
            f"the fp32 outputs' range {span:.3g}"
        )
    c.passed, c.reason = not problems, "; ".join(problems)
    return c


def _worst(c: Candidate) -> float:
    values = [c.value] + ([c.stream_value] if c.stream_value is not None else [])
    return max(v if math.isfinite(v) else math.inf for v in values)


def quantize(
    onnx_path: str | os.PathLike[str],
    precision: str,
    validation: Validation | tuple[Any, Any] | None,
    *,
    metric: Metric = mse,
    metric_name: str | None = None,
    margin: float = DEFAULT_MARGIN,
    out: str | os.PathLike[str] | None = None,
    auto_shape: tuple[int, int] | None = None,
    auto_rounds: int = 5,
    label: str | None = None,
) -> PrecisionResult:
    """Write a reduced-precision version of an fp32 file, only if the forecast holds up.

    Args:
        onnx_path: an fp32 .onnx file with an rnnedge spec (as `rnnedge export` writes).
        precision: "fp32" (record the metric only), "int8", "bf16" or "auto".
        validation: (x, y) in data units, x in the model's layout and y shaped like its
            output, or a `Validation` (e.g. `Validation.from_checkpoint(ckpt)`).
        metric: (pred, true) → a number where lower is better; mean squared error by default.
        metric_name: the name stored in the spec; the function's name by default.
        margin: how much worse (relative) than fp32 the metric may get; 0.01 = 1 %.
        out: where the file goes; `model.<precision>.onnx` beside the input by default (for
            "auto", the precision chosen). May be `onnx_path` itself.
        auto_shape: (batch, seq_len) that "auto" times at; one validation sequence by default.
        auto_rounds: interleaved timing rounds for "auto".

    Raises:
        InputError: unknown precision, bad margin, validation data of the wrong shape, too
            short or not finite, or a metric that is not finite on fp32's outputs.
        RuntimeUnavailableError: bf16 on a CPU without native bf16, or a package missing.
        PrecisionRefusedError: no candidate kept the metric within the margin (both figures
            in the message); nothing was written.
    """
    check_precision(precision)
    if (
        isinstance(margin, bool)
        or not isinstance(margin, (int, float))
        or not math.isfinite(margin)
        or margin < 0
    ):
        raise InputError(f"margin must be a finite number ≥ 0 (0.01 = 1 %), got {margin!r}")
    src = Path(onnx_path)
    if precision == "bf16":
        require_bf16("precision 'bf16'")
        require("openvino", "precision 'bf16' (run by OpenVINO)")
    spec = stored_spec(src)
    if spec is None:
        raise ModelFileError(f"'{src}' carries no rnnedge spec; export it with rnnedge first")
    if spec.precision is not None and spec.precision.precision != "fp32":
        raise InputError(
            f"'{src}' is already {spec.precision.precision}; pass the fp32 file it was made from"
        )
    v = check_validation(as_validation(validation), spec)
    name = _validation.metric_name(metric, metric_name)
    fp32 = Candidate("fp32", "ort-cpu", "fp32", src)
    fp32_pred, _ = predict(_runner(fp32, spec), spec, v.x)
    fp32.value = score(metric, v, fp32_pred, spec, "fp32")
    if not math.isfinite(fp32.value):
        raise InputError(
            f"the metric '{name}' returned {fp32.value} on the fp32 model's "
            f"outputs over {v.source}; it must return a finite number"
        )
    fp32.passed = True
    notes: list[str] = []
    folder = Path(out).parent if out is not None else src.parent
    with contextlib.ExitStack() as stack:
        cands = [fp32] if precision in ("fp32", "auto") else []
        if precision in ("int8", "auto"):
            int8 = _int8_files(src, folder, stack)
            cands += int8
            if not _recurrent_ops_quantized(int8[0].path):  # type: ignore[arg-type]
                notes.append(
                    f"{spec.cell or 'this model'}: recurrent weights stay fp32 in "
                    "the int8 file (ONNX Runtime has no dynamic-quantized GRU/RNN "
                    "op); only MatMul/Gemm weights became int8"
                )
        if precision == "bf16" or (
            precision == "auto" and bf16_support() and is_available("openvino")
        ):
            cands.append(Candidate("bf16", "openvino", "openvino-bf16", src))
        elif precision == "auto":
            notes.append(
                "bf16 not tried: "
                + (
                    "no native bf16 on this CPU"
                    if not bf16_support()
                    else "openvino is not installed"
                )
            )
        for c in cands[1:] if cands and cands[0] is fp32 else cands:
            _judge(c, spec, v, metric, fp32.value, fp32_pred, margin)
        passing = [c for c in cands if c.passed]
        if not passing:
            best = min(cands, key=_worst)
            raise PrecisionRefusedError(
                f"{precision} refused for '{label or src}': {name} on {v.source} is "
                f"{best.value:.6g} "
                f"({best.scheme}) vs {fp32.value:.6g} in fp32 "
                f"({_change(best.value, fp32.value):+.2%}), where at most {margin:+.2%} is "
                "allowed; "
                + "; ".join(f"{c.scheme}: {c.reason}" for c in cands)
                + "; nothing was written (keep fp32, or pass a larger margin)",
                fp32_value=fp32.value,
                value=best.value,
                margin=margin,
            )
        chosen = (
            _fastest(passing, spec, v, auto_shape, auto_rounds)
            if precision == "auto"
            else min(passing, key=_worst)
        )
        record = PrecisionRecord(
            chosen.precision,
            name,
            float(margin),
            fp32.value,
            chosen.value,
            execution=None if chosen.precision == "fp32" else chosen.precision,
            runtime=chosen.runtime,
            scheme=chosen.scheme + (" (auto)" * (precision == "auto")),
            stream_value=chosen.stream_value,
        )
        out_path = Path(out) if out is not None else default_out(src, chosen.precision)
        assert chosen.path is not None
        written = _write_with_spec(chosen.path, out_path, replace(spec, precision=record))
    for c in cands:
        c.path = written if c is chosen else None
    return PrecisionResult(written, record, cands, notes)


def _time_runners(
    runners: Mapping[str, Runner], feeds: Mapping[str, np.ndarray], rounds: int, calls: int
) -> dict[str, float]:
    """Median seconds per call of each runner, measured in interleaved rounds."""
    samples: dict[str, list[float]] = {k: [] for k in runners}
    for r in runners.values():
        for _ in range(3):
            r.infer(feeds)
    clock = time.perf_counter
    for i in range(rounds):
        order = list(runners.items())
        for name, r in order if i % 2 == 0 else order[::-1]:
            for _ in range(calls):
                t0 = clock()
                r.infer(feeds)
                samples[name].append(clock() - t0)
    return {k: float(np.median(v)) for k, v in samples.items()}


def _fastest(
    passing: Sequence[Candidate],
    spec: RnnSpec,
    v: Validation,
    shape: tuple[int, int] | None,
    rounds: int,
) -> Candidate:
    """The passing candidate that runs fastest here (fp32 unless beaten by AUTO_MIN_GAIN)."""
    from rnnedge.verify.parity import make_feeds

    b, t = shape or (1, v.x.shape[spec.seq_axis])
    feeds = make_feeds(spec, b, t, np.random.default_rng(0), random_state=False)
    runners = {c.scheme: _runner(c, spec) for c in passing}
    with contextlib.ExitStack() as stack:
        for r in runners.values():
            stack.enter_context(r)
        times = _time_runners(runners, feeds, max(1, rounds), calls=10)
    for c in passing:
        c.seconds = times[c.scheme]
    best = min(passing, key=lambda c: times[c.scheme])
    fp32 = next((c for c in passing if c.precision == "fp32"), None)
    if fp32 is not None and times[best.scheme] * (1 + AUTO_MIN_GAIN) > times[fp32.scheme]:
        return fp32
    return best
