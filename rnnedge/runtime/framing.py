"""Input carry and fixed frames for streams: the part of a streaming protocol that is not state.

Many audio models are called on exactly N new samples with the last M samples of the previous
call's input in front (zeros before the first call), their recurrent state carried as usual:
silero-vad feeds 64 + 512 samples at 16 kHz. That carried input is no graph output, so a
`Stream` keeps it here, along with the samples pushed but not yet making a whole frame; both
are part of the stream's `.state` (under `CONTEXT_KEY` and `PENDING_KEY`), so a saved state
is a complete checkpoint. Everything here is numpy slicing along the data input's time axis.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rnnedge.errors import InputError
from rnnedge.runtime.inputs import MAX_STATE_VALUES, as_array
from rnnedge.runtime.layouts import output_time_axis
from rnnedge.runtime.normalize import validate_finite
from rnnedge.spec import RnnSpec

#: `.state` keys of a framed stream, beside the graph's state inputs
CONTEXT_KEY = "rnnedge.context"
PENDING_KEY = "rnnedge.pending"


def _count(value: Any, what: str, low: int) -> int:
    if isinstance(value, np.integer):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 2**31 - 1:
        raise InputError(
            f"{what} must be a whole number ≥ {low} (samples along the data "
            f"input's time axis), got {value!r}"
        )
    return value


class Framer:
    """Carried context and buffered samples of one stream, and how calls are cut from them.

    Args:
        spec: the model's spec (data input layout and dtype).
        batch: the stream's batch size.
        context: M, samples of each call's input carried into the next call's front.
        frame: N, new samples per call; None feeds each pushed chunk as one call.
    """

    def __init__(self, spec: RnnSpec, batch: int, context: Any, frame: Any) -> None:
        self.context = _count(context, "context", 0)
        self.frame = None if frame is None else _count(frame, "frame", 1)
        data = spec.input(spec.data_input)
        self.t = spec.seq_axis
        b = spec.batch_axis
        shape = []
        for axis, dim in enumerate(data.shape):
            if axis == b:
                shape.append(batch)
            elif axis == self.t:
                shape.append(0)
            elif isinstance(dim, int):
                shape.append(dim)
            else:
                raise InputError(
                    f"context and frame need the data input's axes other than batch and time "
                    f"fixed; '{data.name}' {tuple(data.shape)} has '{dim}' on axis {axis}"
                )
        self.shape = tuple(shape)  # a chunk's shape with 0 steps
        self.dtype = np.dtype(data.dtype)
        per_step = int(np.prod([d for i, d in enumerate(shape) if i != self.t]))
        if (self.context + (self.frame or 0)) * per_step > MAX_STATE_VALUES:
            raise InputError(
                f"context {self.context} and frame {self.frame} would hold "
                f"{(self.context + (self.frame or 0)) * per_step:,} values, more than "
                f"{MAX_STATE_VALUES:,}; use fewer steps"
            )
        declared = data.shape[self.t]
        self.calls = declared if isinstance(declared, int) else None  # steps per call, fixed
        if self.calls is not None:
            need = self.calls - self.context
            if need < 1:
                raise InputError(
                    f"context {self.context} leaves no room for new steps in the "
                    f"{self.calls} steps per call '{data.name}' declares"
                )
            if self.frame is not None and self.frame != need:
                raise InputError(
                    f"context {self.context} + frame {self.frame} = {self.context + self.frame} "
                    f"steps per call, but '{data.name}' is declared with {self.calls} on its "
                    f"time axis {self.t}; use frame={need}"
                )
        self.out_axis = output_time_axis(spec)
        self._ctx = self._zeros(self.context)
        self._pending = self._zeros(0)
        # the common call (one whole frame pushed, nothing buffered) skips the general path:
        # its shapes and the slices that place context and frame in one call's input
        if self.frame is not None:
            self.frame_shape = self._zeros(self.frame).shape
            self.call_shape = self._zeros(self.context + self.frame).shape
            self._nothing = np.zeros(int(np.prod(self.frame_shape)), self.dtype)
            self.head = self._along_time(slice(0, self.context))
            self.body = self._along_time(slice(self.context, None))
            self.tail = self._along_time(slice(self.frame, None))

    def _along_time(self, part: slice) -> tuple[slice, ...]:
        index = [slice(None)] * len(self.shape)
        index[self.t] = part
        return tuple(index)

    def _zeros(self, steps: int) -> np.ndarray:
        shape = list(self.shape)
        shape[self.t] = steps
        return np.zeros(shape, self.dtype)

    def _cut(self, x: np.ndarray, start: int, stop: int | None) -> np.ndarray:
        return x[self._along_time(slice(start, stop))]

    # -- state ----------------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        return {CONTEXT_KEY: self._ctx.copy(), PENDING_KEY: self._pending.copy()}

    def check(self, state: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """The context and pending samples of a state mapping, checked against this framing."""
        ctx = as_array(state[CONTEXT_KEY], f"state '{CONTEXT_KEY}'")
        pending = as_array(state[PENDING_KEY], f"state '{PENDING_KEY}'")
        want = self._zeros(self.context).shape
        if ctx.shape != want or ctx.dtype.kind != self.dtype.kind:
            raise InputError(
                f"state '{CONTEXT_KEY}' is {ctx.dtype} {tuple(ctx.shape)}; this "
                f"stream carries {self.dtype} {want} (context={self.context})"
            )
        most = (self.frame or 1) - 1
        ok = (
            pending.ndim == len(self.shape)
            and pending.dtype.kind == self.dtype.kind
            and all(
                n == d
                for i, (n, d) in enumerate(zip(pending.shape, self.shape, strict=True))
                if i != self.t
            )
            and pending.shape[self.t] <= most
        )
        if not ok:
            raise InputError(
                f"state '{PENDING_KEY}' is {pending.dtype} {tuple(pending.shape)}; this stream "
                f"buffers {self.dtype} chunks shaped {self._zeros(0).shape} with 0..{most} steps"
            )
        ctx, pending = ctx.astype(self.dtype), pending.astype(self.dtype)
        if self.dtype.kind == "f":
            validate_finite(ctx, f"state '{CONTEXT_KEY}'")
            validate_finite(pending, f"state '{PENDING_KEY}'")
        return ctx, pending

    @property
    def empty(self) -> bool:
        """Whether no pushed steps wait for a whole frame."""
        return self._pending.shape[self.t] == 0

    def finite(self, frame: np.ndarray) -> bool:
        """Whether a float frame holds only finite values: its dot product with zeros is 0
        exactly then (NaN and ±Inf give NaN; no sum of zeros overflows), at a third of
        `np.isfinite(...).all()`'s cost. An Inf also raises numpy's "invalid value" warning,
        on a frame the full checks then refuse."""
        return math.isfinite(frame.reshape(-1).dot(self._nothing))

    def fill(self, buffer: np.ndarray, frame: np.ndarray) -> None:
        """Write one call's input (carried context, then `frame`) into `buffer` in place."""
        buffer[self.head] = self._ctx
        buffer[self.body] = frame

    def carry_from(self, buffer: np.ndarray) -> None:
        """Keep the last `context` steps of a call's input that ran."""
        self._ctx = buffer[self.tail].copy()

    def one(self, y: np.ndarray) -> np.ndarray:
        """One call's output as `join` shapes a single frame's."""
        if self.out_axis is not None:
            return y
        return np.expand_dims(y, min(self.t, y.ndim))

    def set(self, ctx: np.ndarray, pending: np.ndarray) -> None:
        self._ctx = np.ascontiguousarray(ctx)
        self._pending = np.ascontiguousarray(pending)

    def reset(self) -> None:
        self.set(self._zeros(self.context), self._zeros(0))

    # -- calls ----------------------------------------------------------------------------
    def feeds(self, x: np.ndarray) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """(inputs of each call, context after them, pending after them) for a checked chunk;
        nothing is changed until `set`, so a refused or failed call leaves the stream as is."""
        steps = x.shape[self.t]
        if self.frame is None:
            if self.calls is not None and steps + self.context != self.calls:
                raise InputError(
                    f"chunk has {steps} steps; with context {self.context} each call takes "
                    f"exactly {self.calls - self.context} new steps (the graph's time axis is "
                    f"fixed at {self.calls})"
                )
            if steps == 0:
                raise InputError("chunk has 0 steps; expected at least one")
            buf, pieces = x, [x]
            rest = self._pending
        else:
            buf = np.concatenate([self._pending, x], axis=self.t) if self._pending.size else x
            n = self.frame
            whole = buf.shape[self.t] // n
            pieces = [self._cut(buf, k * n, (k + 1) * n) for k in range(whole)]
            rest = np.ascontiguousarray(self._cut(buf, whole * n, None))
        ctx = self._ctx
        fed = []
        for piece in pieces:
            call = np.concatenate([ctx, piece], axis=self.t) if self.context else piece
            fed.append(np.ascontiguousarray(call))
            ctx = self._cut(call, call.shape[self.t] - self.context, None)
        return fed, np.ascontiguousarray(ctx), rest

    def join(
        self, outputs: Sequence[np.ndarray], empty: tuple[int, ...] | None, dtype: np.dtype | None
    ) -> np.ndarray:
        """One output per call, joined along the output's time axis (or stacked on a new axis
        where the input has its time axis, when the output has none)."""
        if self.frame is None and len(outputs) == 1:
            return outputs[0]
        if self.out_axis is not None:
            if outputs:
                return np.concatenate(outputs, axis=self.out_axis)
            shape = list(empty or ())
            shape[self.out_axis] = 0
            return np.empty(shape, dtype)
        axis = min(self.t, len(empty or outputs[0].shape))
        if outputs:
            return np.stack(outputs, axis=axis)
        shape = list(empty or ())
        shape.insert(axis, 0)
        return np.empty(shape, dtype)
