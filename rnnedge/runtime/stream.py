"""Stateful streaming: feed a sequence chunk by chunk and get what one full pass would give.

A `Stream` owns only its state; the model (and its ONNX Runtime session) is shared, so many
streams — in many threads — can run over one loaded file. Every check happens before the
runtime is called and the new state is stored only after it returned, so a bad call leaves
the stream exactly as it was.

A stream opened with `context=M` and/or `frame=N` follows a framed protocol (see
`rnnedge.runtime.framing`): pushed samples are buffered into N-step frames, each call gets the
last M steps of the previous call's input in front, and the carried input and the buffer are
part of `.state`. Without them, each chunk is one call through `StepSession`'s fast path.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from rnnedge.errors import InputError, StreamError
from rnnedge.runtime.framing import CONTEXT_KEY, PENDING_KEY, Framer
from rnnedge.runtime.inputs import batch_of, check_batch, check_extra, check_sequence, check_state
from rnnedge.runtime.step import FastNormalizer, StepSession

if TYPE_CHECKING:
    from rnnedge.runtime.model import Model


class Stream:
    """One live sequence (or a batch of them, advancing together) over a shared model.

    Args:
        model: a loaded `Model` whose spec carries state pairs and is unidirectional.
        batch: sequences advanced together; every chunk must have this batch size (1 for a
            graph whose data input has no batch axis, or fixes it).
        nan_policy: "raise" (default), "zero" or "ffill" for non-finite inputs.
        extra: values for the graph's non-state, non-data inputs, fixed for the stream, each
            of the declared dtype and rank (a sample rate of shape () is a plain integer).
        normalize: apply the model's stored normalization (in data units in and out).
        context: steps of each call's input carried to the front of the next call (zeros
            before the first); 0 carries nothing.
        frame: new steps per call: pushed chunks of any length are buffered and one output
            is returned per whole frame, joined along the output's time axis (stacked on a
            new one where the output has none). None: each chunk is one call.
    """

    def __init__(
        self,
        model: Model,
        batch: int = 1,
        *,
        nan_policy: str = "raise",
        extra: Mapping[str, Any] | None = None,
        normalize: bool = True,
        context: int = 0,
        frame: int | None = None,
    ) -> None:
        self.model = model
        self.spec = model.spec
        self.batch = check_batch(self.spec, batch)
        if nan_policy not in ("raise", "zero", "ffill"):
            raise InputError(f"nan_policy {nan_policy!r} is not one of raise, zero, ffill")
        self.nan_policy = nan_policy
        self.normalize = normalize and model.normalizer is not None
        self.extra = check_extra(extra, self.spec)
        framed = not (context == 0 and frame is None and not isinstance(context, bool))
        self._framer = Framer(self.spec, self.batch, context, frame) if framed else None
        self._core = StepSession(model.runner, self.spec, self.batch, self.extra)
        self._norm = FastNormalizer(model.normalizer) if self.normalize else None
        self._ffill = nan_policy == "ffill"
        self._carry: np.ndarray | None = None  # last input step (data units), for ffill
        self._steps = 0
        self._closed = False
        self._lock = threading.Lock()
        self._out_shape: tuple[tuple[int, ...], np.dtype] | None = None  # one call's output

    @property
    def steps(self) -> int:
        """Time steps consumed since the start or the last reset (a framed stream counts the
        new steps of the calls made, not the context or the samples still buffered)."""
        return self._steps

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def state(self) -> dict[str, np.ndarray]:
        """A copy of the current state by state-input name, safe to store and restore later;
        a framed stream adds its carried context and buffered samples."""
        with self._lock:
            self._check_open()
            state = self._core.state
            if self._framer is not None:
                state.update(self._framer.state())
            return state

    @state.setter
    def state(self, value: Mapping[str, Any]) -> None:
        self._check_open()
        if value is None or not isinstance(value, Mapping):
            raise InputError(
                f"stream state must be a mapping like stream.state returns, got "
                f"{type(value).__name__}"
            )
        framer = self._framer
        graph = dict(value)
        framing = None
        if framer is not None:
            missing = [k for k in (CONTEXT_KEY, PENDING_KEY) if k not in graph]
            if missing:
                raise InputError(
                    f"state lacks {missing}: a stream opened with context/frame "
                    "restores them with its state (take it from stream.state)"
                )
            framing = framer.check(graph)
            del graph[CONTEXT_KEY], graph[PENDING_KEY]
        checked = check_state(graph, self.spec, self.batch)
        with self._lock:
            self._check_open()
            self._core.set_state(checked or {})
            if framer is not None and framing is not None:
                framer.set(*framing)

    def reset(self) -> None:
        """Back to the zero state (and zero context, empty buffer), as at creation."""
        self._check_open()
        with self._lock:
            self._check_open()
            self._core.reset()
            if self._framer is not None:
                self._framer.reset()
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
        """Advance by a chunk of steps in the data input's layout; returns its outputs.

        A plain stream runs the chunk (≥ 1 steps) as one call and returns that call's output.
        A framed stream takes chunks of any length, and returns one output per whole frame.
        """
        if self._framer is not None:
            return self._push(chunk)
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

    def _checked(self, chunk: Any, free_time: bool = False) -> np.ndarray:
        """The full checks (and NaN policy) for a chunk the fast path did not take."""
        spec = self.spec
        carry = self._carry if self._ffill else None
        x = check_sequence(chunk, spec, "chunk", self.nan_policy, carry=carry, free_time=free_time)
        if batch_of(x, spec) != self.batch:
            raise InputError(
                f"chunk has batch {batch_of(x, spec)} (shape {tuple(x.shape)}); this "
                f"stream was opened with batch={self.batch}"
            )
        return x

    def _push(self, chunk: Any) -> np.ndarray:
        """A framed step: buffer, cut calls, run them, and commit all or nothing."""
        framer = self._framer
        assert framer is not None
        with self._lock:
            self._check_open()
            y = self._one_frame(chunk)
            if y is not None:
                return y
            x = self._framed_input(chunk)
            feeds, ctx, pending = framer.feeds(x)
            core, norm = self._core, self._norm
            saved = core.state if len(feeds) > 1 else None
            outputs = []
            try:
                for fed in feeds:
                    outputs.append(core.run(norm.transform(fed) if norm is not None else fed))
            except BaseException:
                if saved is not None and outputs:  # earlier calls of this chunk moved it
                    core.set_state(saved)
                raise
            if outputs:
                self._out_shape = (outputs[-1].shape, outputs[-1].dtype)
            elif self._out_shape is None:
                self._out_shape = self._probe()
            framer.set(ctx, pending)
            if x.shape[framer.t]:
                self._carry = np.take(x, -1, axis=framer.t).copy() if self._ffill else None
            self._steps += sum(f.shape[framer.t] for f in feeds) - framer.context * len(feeds)
        if norm is not None:
            outputs = [norm.inverse_targets(y) for y in outputs]
        shape, dtype = self._out_shape
        return framer.join(outputs, shape, dtype)

    def _one_frame(self, chunk: Any) -> np.ndarray | None:
        """The common framed call in place, or None for the general path: exactly one frame
        pushed, nothing buffered, finite values of the model's dtype, no NaN policy or
        normalization to apply, and the step session bound for the call's shape."""
        framer = self._framer
        assert framer is not None
        if (
            framer.frame is None
            or type(chunk) is not np.ndarray
            or chunk.shape != framer.frame_shape
            or chunk.dtype != framer.dtype
            or not framer.empty
            or self._norm is not None
            or self.nan_policy != "raise"
        ):
            return None
        buffer = self._core.input_buffer(framer.call_shape)
        if buffer is None:
            return None
        if framer.dtype.kind == "f" and not framer.finite(chunk):
            return None  # the full checks say what is wrong
        framer.fill(buffer, chunk)
        y = self._core.run(buffer)
        framer.carry_from(buffer)
        self._steps += framer.frame
        return framer.one(y)

    def _framed_input(self, chunk: Any) -> np.ndarray:
        """A pushed chunk, checked: any number of steps (0 included) when frames are cut."""
        framer = self._framer
        assert framer is not None
        if (
            type(chunk) is np.ndarray
            and chunk.dtype == framer.dtype
            and chunk.shape[: framer.t] == framer.shape[: framer.t]
            and chunk.shape[framer.t + 1 :] == framer.shape[framer.t + 1 :]
            and chunk.ndim == len(framer.shape)
            and (framer.dtype.kind != "f" or np.isfinite(chunk).all())
        ):
            return chunk
        return self._checked(chunk, free_time=True)

    def _probe(self) -> tuple[tuple[int, ...], np.dtype]:
        """One call's output shape, learned from a call on zeros whose state is thrown away
        (only needed when the first push of a framed stream makes no whole frame)."""
        framer = self._framer
        assert framer is not None
        spec = self.spec
        steps = framer.calls or (framer.context + (framer.frame or 1))
        shape = list(framer.shape)
        shape[framer.t] = steps
        feeds = {spec.data_input: np.zeros(shape, framer.dtype), **self._core.state, **self.extra}
        y = np.asarray(self.model.runner.infer(feeds)[spec.data_output])
        return y.shape, y.dtype
