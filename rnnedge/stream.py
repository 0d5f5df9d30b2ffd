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
from rnnedge.validate import check_sequence, check_state, zero_state

if TYPE_CHECKING:
    from rnnedge.runtime import Model


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
        self.extra = {k: np.asarray(v) for k, v in (extra or {}).items()}
        self._state = zero_state(self.spec, batch)
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
        self._check_open()
        return {k: v.copy() for k, v in self._state.items()}

    @state.setter
    def state(self, value: Mapping[str, np.ndarray]) -> None:
        self._check_open()
        checked = check_state(value, self.spec, self.batch)
        assert checked is not None
        with self._lock:
            self._state = {k: v.copy() for k, v in checked.items()}

    def reset(self) -> None:
        """Back to the zero state, as at creation."""
        self._check_open()
        with self._lock:
            self._state = zero_state(self.spec, self.batch)
            self._carry = None
            self._steps = 0

    def close(self) -> None:
        """Drop the state; any later use is an error rather than a silent restart."""
        self._closed = True
        self._state = {}
        self._carry = None

    def _check_open(self) -> None:
        if self._closed:
            raise StreamError("this stream is closed; open a new one with model.stream()")

    def step(self, chunk: Any) -> np.ndarray:
        """Advance by a chunk of ≥ 1 steps in the model's layout; returns its per-step outputs."""
        self._check_open()
        spec = self.spec
        carry = self._carry if self.nan_policy == "ffill" else None
        x = check_sequence(chunk, spec, "chunk", self.nan_policy, carry=carry)
        if x.shape[spec.batch_axis] != self.batch:
            raise InputError(
                f"chunk has batch {x.shape[spec.batch_axis]} (shape {tuple(x.shape)}); this "
                f"stream was opened with batch={self.batch}"
            )
        last = np.take(x, -1, axis=spec.seq_axis).copy() if self.nan_policy == "ffill" else None
        norm = self.model.normalizer if self.normalize else None
        if norm is not None:
            x = norm.transform(x).astype(x.dtype, copy=False)
        with self._lock:  # one stream is one sequence: its steps must not interleave
            self._check_open()
            feeds = {spec.data_input: x, **self._state, **self.extra}
            out = self.model.runner.infer(feeds)
            self._state = {p.input: out[p.output] for p in spec.state_pairs}
            self._steps += x.shape[spec.seq_axis]
            self._carry = last
        y = out[spec.data_output]
        if norm is not None:
            y = norm.inverse_targets(y).astype(y.dtype, copy=False)
        return y
