"""The data a reduced precision is judged on, checked before any file is touched, and scoring.

A reduced-precision file cannot be judged element-wise (int8 moves outputs by ~1e-3 by
design), so it is judged by the task metric on validation data: the same forecast error the
model was trained to reduce, in the data's own units, over the same windows `rnnedge train`
scored it on. Everything that could make that judgement meaningless (wrong shape, too few
values, NaN) is refused up front with what was given and what is needed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnedge.errors import InputError
from rnnedge.runtime.backends.base import Runner
from rnnedge.spec import RnnSpec

#: fewest scored values validation data must give (below that the metric is noise)
MIN_VALUES = 32

Metric = Callable[[np.ndarray, np.ndarray], float]


def mse(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean squared error over every scored value (the training loss, in data units)."""
    diff = np.asarray(pred, dtype=np.float64) - np.asarray(true, dtype=np.float64)
    return float(np.mean(diff * diff))


def metric_name(metric: Metric, name: str | None = None) -> str:
    return name or getattr(metric, "__name__", None) or type(metric).__name__


@dataclass(frozen=True)
class Validation:
    """Data the gate scores on: `x` in the model's layout and `y` like its output, both in
    data units (the file's stored normalization is applied by the runtime), the first
    `warmup` steps of each sequence left out of the score (the model starts from zero state).
    `batch_first` says the arrays' layout when it is known (windows made here are batch-first);
    None means the model's own layout.
    """

    x: np.ndarray
    y: np.ndarray
    warmup: int = 0
    source: str = "validation data"
    batch_first: bool | None = None

    @classmethod
    def from_values(
        cls,
        values: np.ndarray,
        window: int,
        *,
        target_index: Sequence[int] = (0,),
        warmup: int | None = None,
        source: str = "validation rows",
    ) -> Validation:
        """Next-step windows over raw rows (T, F), as `rnnedge train` scores its model
        (warm-up: a quarter of the window, as training uses)."""
        from rnnedge.modeling.data import make_windows

        x, y = make_windows(np.asarray(values, dtype=np.float64), window, target_index=target_index)
        return cls(x, y, window // 4 if warmup is None else warmup, source, batch_first=True)

    @classmethod
    def from_checkpoint(cls, checkpoint: Any, source: str = "checkpoint") -> Validation:
        """The validation split a checkpoint from `rnnedge train` carries (`load_checkpoint`)."""
        values = getattr(checkpoint, "val_values", None)
        window = getattr(checkpoint, "window", None)
        norm = getattr(checkpoint, "normalization", None)
        if values is None or window is None:
            raise InputError(
                f"{source} carries no validation split (written by an older "
                "rnnedge train); retrain it, or pass validation=(x, y) / --data"
            )
        targets = tuple(norm.target_index) if norm is not None else (0,)
        return cls.from_values(
            values, int(window), target_index=targets, source=f"{source} validation split"
        )


def as_validation(validation: Any) -> Validation:
    """A `Validation` from one, or from an (x, y) pair."""
    if isinstance(validation, Validation):
        return validation
    if validation is None:
        raise InputError(
            "a reduced precision is judged on validation data and none was "
            "given; pass validation=(x, y), --data, or a checkpoint from "
            "`rnnedge train` (it carries its validation split)"
        )
    if not isinstance(validation, (tuple, list)) or len(validation) != 2:
        raise InputError(
            f"validation must be a pair (x, y) of arrays, got {type(validation).__name__}"
        )
    try:
        return Validation(
            np.asarray(validation[0], dtype=np.float64), np.asarray(validation[1], dtype=np.float64)
        )
    except (TypeError, ValueError) as exc:
        raise InputError(f"validation (x, y) must be numeric arrays ({exc})") from exc


def check_validation(v: Validation, spec: RnnSpec) -> Validation:
    """Shape, length and finiteness checks; returns x as float32 and y as float64."""
    x = np.asarray(v.x, dtype=np.float32)
    y = np.asarray(v.y, dtype=np.float64)
    if v.batch_first is not None and v.batch_first != spec.batch_first and x.ndim == y.ndim == 3:
        x, y = np.ascontiguousarray(x.swapaxes(0, 1)), np.ascontiguousarray(y.swapaxes(0, 1))
    x_spec = spec.input(spec.data_input)
    features = x_spec.shape[-1] if len(x_spec.shape) == 3 else None
    layout = "(batch, seq_len, features)" if spec.batch_first else "(seq_len, batch, features)"
    if x.ndim != 3 or (isinstance(features, int) and x.shape[2] != features):
        raise InputError(
            f"{v.source}: x has shape {tuple(x.shape)}; this model expects "
            f"{layout} with features={features}"
        )
    if y.ndim != 3 or y.shape[:2] != x.shape[:2]:
        raise InputError(
            f"{v.source}: y has shape {tuple(y.shape)}; expected the model's "
            f"output for x {tuple(x.shape)}: the same first two axes, then outputs"
        )
    if isinstance(v.warmup, bool) or not isinstance(v.warmup, int) or v.warmup < 0:
        raise InputError(f"{v.source}: warmup must be a whole number ≥ 0, got {v.warmup!r}")
    steps, batch = x.shape[spec.seq_axis], x.shape[spec.batch_axis]
    scored = max(steps - v.warmup, 0) * batch * y.shape[2]
    if scored < MIN_VALUES:
        raise InputError(
            f"{v.source} is too short: {batch} sequence(s) of {steps} steps, {v.warmup} "
            f"warm-up steps left out, give {scored} scored values; the gate needs "
            f"≥ {MIN_VALUES} (pass more or longer sequences)"
        )
    for name, arr in (("x", x), ("y", y)):
        if not np.isfinite(arr).all():
            raise InputError(
                f"{v.source}: {name} holds NaN or Inf values; the gate needs "
                "finite data (clean or drop those rows)"
            )
    return Validation(x, y, v.warmup, v.source, spec.batch_first)


def predict(runner: Runner, spec: RnnSpec, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(full pass, streamed one step at a time or None) in data units, through `Model`.

    Both paths are scored because they differ under dynamic int8: activations are quantized
    with a scale taken over each call's inputs, so a stream's one-step calls round differently
    from one call over the whole sequence.
    """
    from rnnedge.runtime.model import Model

    with runner:
        model = Model(runner, spec)
        full, _ = model.run(x)
        streamed = None
        if spec.streamable:
            stream = model.stream(batch=x.shape[spec.batch_axis])
            steps = [
                stream.step(np.take(x, [t], axis=spec.seq_axis))
                for t in range(x.shape[spec.seq_axis])
            ]
            streamed = np.concatenate(steps, axis=spec.seq_axis).astype(np.float64)
    return np.asarray(full, dtype=np.float64), streamed


def score(metric: Metric, v: Validation, pred: np.ndarray, spec: RnnSpec, what: str) -> float:
    """The metric over the scored steps; a metric that fails or returns no number is refused."""
    if pred.shape != v.y.shape:
        raise InputError(
            f"{v.source}: y has shape {tuple(v.y.shape)} but the model outputs "
            f"{tuple(pred.shape)} for x {tuple(v.x.shape)}; pass targets shaped "
            "like the model's output"
        )
    keep = np.arange(v.warmup, pred.shape[spec.seq_axis])
    try:
        value = metric(
            np.take(pred, keep, axis=spec.seq_axis), np.take(v.y, keep, axis=spec.seq_axis)
        )
        return float(value)
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"the metric failed on {what} outputs ({exc.__class__.__name__}: "
            f"{exc}); it must take (pred, true) arrays and return a number"
        ) from exc
