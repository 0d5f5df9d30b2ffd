"""One stream step with as little work as possible around ONNX Runtime (numpy + onnxruntime only).

Measured on a 2-layer LSTM (hidden 128, batch 1, one step; `benchmarks/stream_step.py`), the
time of a step went to: ONNX Runtime's Python `run` (feed validation, numpy → OrtValue for every
input, a fresh output allocation and OrtValue → numpy for every output), rnnedge's own checks and
dict building around it, and the kernels. What pays off, in that order:

* Keep the state inside bound buffers. A `StepSession` makes two `IOBinding`s over the same
  session that ping-pong between two sets of state buffers: step k reads state from set A and
  writes the new state into set B, step k+1 the other way. No state is converted, allocated or
  rebound per step; the chunk is copied into a bound input buffer and the output is copied out
  of a bound one. Rebinding per step (or carrying OrtValues through `run_with_ort_values`) is
  slower than plain `run`; binding once is not. A failed run leaves the current set untouched.
* Validate a chunk of the shape already seen with one comparison and one dot product against
  zeros (NaN/Inf anywhere makes it non-zero); anything else goes through the full
  `check_sequence`, so errors and NaN policies are exactly those of the slow path.
* One intra-op thread (`STEP_SETTINGS`): a one-step LSTM has nothing worth splitting across
  threads, and a spinning worker thread competes with the caller for the core.

A graph specialized for single steps (each LSTM layer as Gemm/Sigmoid/Tanh/Mul on [B, H]
tensors instead of the LSTM op) measured within a few percent of the exported graph: the
matrix-vector products dominate, not the LSTM kernel's fixed cost, so no second graph is shipped.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rnnedge.errors import InputError
from rnnedge.runtimes.base import describe_feeds
from rnnedge.spec import RnnSpec
from rnnedge.validate import zero_state

#: ONNX Runtime settings for batch-1 step workloads, chosen by `benchmarks/stream_step.py`.
#: Spinning is off so that raising the thread count later never leaves a core busy-waiting.
STEP_SETTINGS: dict[str, Any] = {
    "intra_op_num_threads": 1,
    "execution_mode": "sequential",
    "graph_optimization_level": "all",
    "config": {"session.intra_op.allow_spinning": "0"},
}

#: What `tune_step_settings` tries by default: the step settings, then ORT's own defaults.
CANDIDATE_SETTINGS: tuple[dict[str, Any], ...] = (
    STEP_SETTINGS,
    {},
    {"intra_op_num_threads": 2, "config": {"session.intra_op.allow_spinning": "0"}},
)


def _bindable_session(runner: Any) -> Any | None:
    """The runner's ONNX Runtime session if it runs on the CPU provider alone, else None."""
    session = getattr(runner, "session", None)
    if session is None or not hasattr(session, "io_binding"):
        return None
    try:
        providers = list(session.get_providers())
    except Exception:
        return None
    return session if providers == ["CPUExecutionProvider"] else None


class StepSession:
    """Runs one stream's chunks over a shared runner, its state kept between calls.

    Not thread-safe on its own: the owner (a `Stream`) serializes calls with its lock. Many
    StepSessions may share one runner/session from many threads.

    Args:
        runner: an active runner; an ONNX Runtime CPU session gets bound buffers, any other
            runner is called through `runner.infer` with a feed dict.
        spec: the model's spec (state pairs, data input/output names).
        batch: sequences advanced together.
        extra: values for the graph's non-state, non-data inputs, fixed for the session.
    """

    def __init__(
        self,
        runner: Any,
        spec: RnnSpec,
        batch: int,
        extra: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        self.runner = runner
        self.spec = spec
        self.batch = batch
        self.extra = {k: np.ascontiguousarray(v) for k, v in (extra or {}).items()}
        self._pairs = list(spec.state_pairs)
        zeros = zero_state(spec, batch)
        # two buffers per state input; _cur says which holds the current state
        self._bufs = [[zeros[p.input], np.zeros_like(zeros[p.input])] for p in self._pairs]
        self._cur = 0
        self._session = _bindable_session(runner)
        self._bindings: list[Any] | None = None
        self._shape: tuple[int, ...] | None = None  # the chunk shape buffers exist for
        self._xb: np.ndarray | None = None
        self._yb: np.ndarray | None = None
        self._flat: np.ndarray | None = None
        self._zeros: np.ndarray | None = None

    @property
    def bound(self) -> bool:
        """Whether chunks of the last shape run through bound buffers (the fast path)."""
        return self._bindings is not None

    # -- state ----------------------------------------------------------------------------
    @property
    def state(self) -> dict[str, np.ndarray]:
        """Copies of the current state by state-input name."""
        k = self._cur
        return {p.input: b[k].copy() for p, b in zip(self._pairs, self._bufs, strict=True)}

    def set_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Replace the state with already-checked arrays (see `validate.check_state`)."""
        for i, p in enumerate(self._pairs):
            self._store(i, self._cur, state[p.input])

    def reset(self) -> None:
        self.set_state(zero_state(self.spec, self.batch))

    def close(self) -> None:
        """Drop bindings and buffers; the session itself belongs to the runner."""
        self._bindings = None
        self._session = None
        self._bufs = []
        self._xb = self._yb = self._flat = self._zeros = None
        self._shape = None

    def _store(self, i: int, slot: int, value: np.ndarray) -> None:
        buf = self._bufs[i][slot]
        if value.shape == buf.shape and value.dtype == buf.dtype:
            buf[...] = value
        else:  # the graph changed a state's shape/dtype: keep it, stop binding
            self._bufs[i][slot] = np.array(value)
            self._bindings = None
            self._session = None

    # -- stepping -------------------------------------------------------------------------
    def fast_input(self, chunk: Any) -> np.ndarray | None:
        """`chunk` copied into the bound input buffer when it needs no further checks.

        That is: an ndarray of floats with exactly the shape of the last chunk that passed
        the full checks, and only finite values after conversion to the model's dtype. For
        anything else returns None, and the caller runs the full `check_sequence`.
        """
        if type(chunk) is np.ndarray and chunk.shape == self._shape and chunk.dtype.kind == "f":
            xb = self._xb
            assert xb is not None and self._flat is not None
            xb[...] = chunk
            if self._flat.dot(self._zeros) == 0:  # 0·NaN and 0·Inf are NaN
                return xb
        return None

    def run(self, x: np.ndarray) -> np.ndarray:
        """Advance by the checked chunk `x` (model dtype); returns a fresh output array.

        The state moves on only when the runtime succeeded.
        """
        bindings = self._bindings
        if (
            bindings is not None
            and x.shape == self._shape
            and self.runner.session is self._session
        ):
            if x is not self._xb:
                self._xb[...] = x  # type: ignore[index]
            k = self._cur
            try:
                self._session.run_with_iobinding(bindings[k])
            except Exception as exc:
                raise self._refused(exc, x) from exc
            self._cur = 1 - k
            return self._yb.copy()  # type: ignore[union-attr]
        return self._run_feeds(x)

    def _run_feeds(self, x: np.ndarray) -> np.ndarray:
        """The general path: a feed dict through the runner; learns shapes for binding."""
        k = self._cur
        spec = self.spec
        feeds = {spec.data_input: x}
        for p, b in zip(self._pairs, self._bufs, strict=True):
            feeds[p.input] = b[k]
        feeds.update(self.extra)
        out = self.runner.infer(feeds)
        nxt = 1 - k
        for i, p in enumerate(self._pairs):
            self._store(i, nxt, np.asarray(out[p.output]))
        self._cur = nxt
        y = np.asarray(out[spec.data_output])
        if self.runner is not None and getattr(self.runner, "session", None) is not None:
            if self._session is None and self._bindings is None and self._shape is None:
                self._session = _bindable_session(self.runner)
            elif self.runner.session is not self._session and self._session is not None:
                self._session = _bindable_session(self.runner)  # the runner was reopened
        self._prepare(x, y)
        return y

    def _prepare(self, x: np.ndarray, y: np.ndarray) -> None:
        """Buffers (and, on ORT CPU, bindings) for chunks shaped like `x`."""
        if x.shape != self._shape or self._xb is None or self._xb.dtype != x.dtype:
            self._shape = tuple(x.shape)
            self._xb = np.empty(x.shape, x.dtype)
            self._flat = self._xb.reshape(-1)
            self._zeros = np.zeros(self._flat.size, x.dtype)
        self._bindings = None
        if self._session is not None and isinstance(y, np.ndarray) and y.dtype != object:
            self._yb = np.empty(y.shape, y.dtype)
            try:
                self._bindings = self._bind(self._session)
            except Exception:  # an unusual graph or ORT build: the feed path still works
                self._bindings = None
                self._session = None

    def _bind(self, session: Any) -> list[Any]:
        import onnxruntime as ort

        value = ort.OrtValue.ortvalue_from_numpy  # shares the numpy buffer on CPU
        spec = self.spec
        bindings = []
        for k in (0, 1):
            io = session.io_binding()
            io.bind_ortvalue_input(spec.data_input, value(self._xb))
            for name, arr in self.extra.items():
                io.bind_ortvalue_input(name, value(arr))
            io.bind_ortvalue_output(spec.data_output, value(self._yb))
            for p, b in zip(self._pairs, self._bufs, strict=True):
                io.bind_ortvalue_input(p.input, value(b[k]))
                io.bind_ortvalue_output(p.output, value(b[1 - k]))
            bindings.append(io)
        return bindings

    def _refused(self, exc: Exception, x: np.ndarray) -> InputError:
        feeds = {self.spec.data_input: x}
        for p, b in zip(self._pairs, self._bufs, strict=True):
            feeds[p.input] = b[self._cur]
        msg = str(exc).strip().replace("\n", " ")
        return InputError(f"ONNX Runtime refused the inputs {describe_feeds(feeds)}: {msg[:400]}")


def time_steps(core: StepSession, chunk: np.ndarray, steps: int) -> list[int]:
    """Per-step wall times (ns) of `fast_input` + `run` on `chunk`, after one full-path step."""
    from rnnedge.validate import check_sequence

    core.run(check_sequence(chunk, core.spec, "chunk"))
    clock = time.perf_counter_ns
    times = []
    for _ in range(steps):
        t0 = clock()
        x = core.fast_input(chunk)
        core.run(x if x is not None else check_sequence(chunk, core.spec, "chunk"))
        times.append(clock() - t0)
    return times


def tune_step_settings(
    path: str,
    *,
    batch: int = 1,
    candidates: Sequence[Mapping[str, Any]] = CANDIDATE_SETTINGS,
    steps: int = 2000,
    rounds: int = 3,
) -> tuple[dict[str, Any], dict[str, float]]:
    """Time one-step chunks under each candidate settings here; return the fastest and all.

    Candidates are timed in interleaved rounds so drift in machine load hits them alike;
    the score is the median step time in µs. Loading is done by `rnnedge.runtime.load`.
    """
    from rnnedge.runtime import load

    models = [load(path, settings=dict(c)) for c in candidates]
    try:
        spec = models[0].spec
        shape = [1, 1, spec.input(spec.data_input).shape[2]]
        shape[spec.batch_axis] = batch
        chunk = np.zeros(shape, dtype=spec.input(spec.data_input).dtype)
        cores = [StepSession(m.runner, m.spec, batch) for m in models]
        samples: list[list[int]] = [[] for _ in cores]
        for _ in range(rounds):
            for core, acc in zip(cores, samples, strict=True):
                acc.extend(time_steps(core, chunk, steps // rounds))
        scores = {}
        for c, acc in zip(candidates, samples, strict=True):
            acc.sort()
            scores[repr(dict(c))] = acc[len(acc) // 2] / 1e3
        best = min(range(len(candidates)), key=lambda i: scores[repr(dict(candidates[i]))])
        return dict(candidates[best]), scores
    finally:
        for m in models:
            m.close()
