"""Stateful streaming: feed a sequence chunk by chunk and get what one full pass would give.

A `Stream` owns only its state; the model (and its ONNX Runtime session) is shared, so many
streams — in many threads — can run over one loaded file. Every check happens before the
runtime is called and the new state is stored only after it returned, so a bad call leaves
the stream exactly as it was.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from rnnedge.errors import InputError, StreamError
from rnnedge.runtime.inputs import check_extra, check_sequence, check_state
from rnnedge.runtime.step import FastNormalizer, StepSession

if TYPE_CHECKING:
    from rnnedge.runtime.model import Model


class Stream:
    """One live sequence (or a batch of them, advancing together) over a shared model.

    Args:
        model: a loaded `Model` whose spec carries state pairs and is unidirectional.
        batch: sequences advanced together; every chunk must have this batch size.
        nan_policy: "raise" (default), "zero" or "ffill" for non-finite inputs.
        extra: values for the graph's non-state, non-data inputs, fixed for the stream.
        normalize: apply the model's stored normalization (in data units in and out).
    """

    def __init__(
        self,
        model: Model,
        batch: int = 1,
        *,
        nan_policy: str = "raise",
        extra: Mapping[str, np.ndarray] | None = None,
        normalize: bool = True,
    ) -> None:
        if not isinstance(batch, int) or batch < 1:
            raise InputError(f"stream batch must be a positive integer, got {batch!r}")
        self.model = model
        self.spec = model.spec
        self.batch = batch
        self.nan_policy = nan_policy
        self.normalize = normalize and model.normalizer is not None
        self.extra = check_extra(extra, self.spec)
        self._core = StepSession(model.runner, self.spec, batch, self.extra)
        self._norm = FastNormalizer(model.normalizer) if self.normalize else None
        self._ffill = nan_policy == "ffill"
        self._carry: np.ndarray | None = None  # last input step (data units), for ffill
        self._steps = 0
        self._closed = False
        self._lock = threading.Lock()

    @property
    def steps(self) -> int:
        """Time steps consumed since the start or the last reset."""
        return self._steps

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def state(self) -> dict[str, np.ndarray]:
        """A copy of the current state by state-input name, safe to store and restore later."""
        with self._lock:
            self._check_open()
            return self._core.state

    @state.setter
    def state(self, value: Mapping[str, np.ndarray]) -> None:
        self._check_open()
        checked = check_state(value, self.spec, self.batch)
        assert checked is not None
        with self._lock:
            self._check_open()
            self._core.set_state(checked)

    def reset(self) -> None:
        """Back to the zero state, as at creation."""
        self._check_open()
        with self._lock:
            self._check_open()
            self._core.reset()
            self._carry = None
            self._steps = 0

    def close(self) -> None:
        """Drop the state; any later use is an error rather than a silent restart."""
        with self._lock:
            self._closed = True
            self._core.close()
            self._carry = None

    def _check_open(self) -> None:
        if self._closed:
            raise StreamError("this stream is closed; open a new one with model.stream()")

    def step(self, chunk: Any) -> np.ndarray:
        """Advance by a chunk of ≥ 1 steps in the model's layout; returns its per-step outputs."""
        core = self._core
        with self._lock:  # one stream is one sequence: its steps must not interleave
            if self._closed:
                self._check_open()
            # a chunk shaped like the last good one, all finite, skips the full checks
            x = core.fast_input(chunk)
            if x is None:
                x = self._checked(chunk)
            spec = self.spec
            last = np.take(x, -1, axis=spec.seq_axis).copy() if self._ffill else None
            norm = self._norm
            if norm is not None:
                x = norm.transform(x)
            y = core.run(x)
            self._steps += x.shape[spec.seq_axis]
            self._carry = last
        if norm is not None:
            y = norm.inverse_targets(y)
        return y

    def _checked(self, chunk: Any) -> np.ndarray:
        """The full checks (and NaN policy) for a chunk the fast path did not take."""
        spec = self.spec
        carry = self._carry if self._ffill else None
        x = check_sequence(chunk, spec, "chunk", self.nan_policy, carry=carry)
        if x.shape[spec.batch_axis] != self.batch:
            raise InputError(
                f"chunk has batch {x.shape[spec.batch_axis]} (shape {tuple(x.shape)}); this "
                f"stream was opened with batch={self.batch}"
            )
        return x
