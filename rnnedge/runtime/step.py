"""One stream step with as little work as possible around ONNX Runtime (numpy + onnxruntime only).

At batch 1 a small recurrent model does little arithmetic per step, so most of a step's time
is fixed cost per call and per kernel: Python around the call, output allocation, ORT's
executor, each kernel's set-up.
`benchmarks/step_ideas.py` times each idea below against the path it would replace, and
`benchmarks/stream_step.py` the whole step against raw `session.run` and eager PyTorch; the
figures are in `benchmarks/results/`. What pays off, in that order:

* Keep the state inside bound buffers. A `StepSession` makes two `IOBinding`s over the shared
  session that ping-pong between two sets of state buffers: a step reads the state from one
  set and writes the new state into the other. Nothing is converted, allocated or rebound per
  step; the chunk is copied into a bound input buffer and the output copied out of a bound
  one, so a run costs what ORT's executor costs. Rebinding every step, or carrying OrtValues
  through `run_with_ort_values`, is slower than plain `run`, and so is the public
  `run_with_iobinding(io, RunOptions())` (it probes the options for a graph-capture entry, and
  the miss raises in C++). A failed run leaves the current set untouched.
* Check a chunk of the shape already seen with one shape comparison and a finiteness check in
  plain Python, a fraction of what `check_sequence` costs; anything else takes the full
  checks, so errors and NaN policies are exactly the slow path's. `FastNormalizer` does the
  same float64 arithmetic as `Normalizer` for a handful of values without numpy's per-call
  cost.
* `STEP_SETTINGS`: one intra-op thread, no spinning, no CPU memory arena (waking a pool of
  threads costs more than it saves on kernels this small).

Not worth it: a graph specialized for single steps (each LSTM layer as Gemm/Sigmoid/Tanh/Mul
on [B, H] tensors instead of the LSTM op) runs within a few percent of the exported graph,
with or without IO binding: both do the same matrix-vector products once per step, and the
graph around them was never the cost. Graph optimization level, execution mode and memory
patterns move nothing measurable.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from rnnedge.runtime.backends.ort import OrtErrors
from rnnedge.runtime.inputs import zero_state
from rnnedge.spec import RnnSpec

#: ONNX Runtime settings for batch-1 step workloads, chosen with `benchmarks/step_ideas.py`:
#: one intra-op thread; spinning off so that raising the thread count later never leaves a core
#: busy-waiting; no CPU memory arena (a step's few small intermediates come cheaper from malloc
#: than from the arena).
STEP_SETTINGS: dict[str, Any] = {
    "intra_op_num_threads": 1,
    "execution_mode": "sequential",
    "graph_optimization_level": "all",
    "enable_cpu_mem_arena": False,
    "config": {"session.intra_op.allow_spinning": "0"},
}


#: up to this many values a chunk is checked for NaN/Inf in Python, beyond it by numpy
_SMALL = 16


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
        # C order without `ascontiguousarray`, which turns a rank-0 value into shape (1,)
        self.extra = {k: np.asarray(v, order="C") for k, v in (extra or {}).items()}
        self._pairs = list(spec.state_pairs)
        zeros = zero_state(spec, batch)
        # two buffers per state input; _cur says which holds the current state
        self._bufs = [[zeros[p.input], np.zeros_like(zeros[p.input])] for p in self._pairs]
        self._cur = 0
        self._can_bind = True  # False once the graph changes a state's shape or dtype
        self._session: Any | None = None  # the session the bindings belong to
        self._bindings: list[Any] | None = None  # run callables, one per ping-pong side
        self._keep: list[Any] = []
        self._shape: tuple[int, ...] | None = None  # the chunk shape buffers exist for
        self._xb: np.ndarray | None = None
        self._yb: np.ndarray | None = None
        self._flat: np.ndarray | None = None
        self._small = True  # few enough values to check for NaN/Inf in plain Python
        self._float = np.dtype(spec.input(spec.data_input).dtype).kind == "f"

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
        self._keep = []  # the IOBindings hold the session
        self._can_bind = False
        self._bufs = []
        self._xb = self._yb = self._flat = None
        self._shape = None

    def _store(self, i: int, slot: int, value: np.ndarray) -> None:
        buf = self._bufs[i][slot]
        if value.shape == buf.shape and value.dtype == buf.dtype:
            buf[...] = value
        else:  # the graph changed a state's shape/dtype: keep it, stop binding
            self._bufs[i][slot] = np.array(value)
            self._can_bind = False
            self._bindings = None

    # -- stepping -------------------------------------------------------------------------
    def fast_input(self, chunk: Any) -> np.ndarray | None:
        """`chunk` copied into the bound input buffer when it needs no further checks.

        That is: an ndarray with exactly the shape of the last chunk that passed the full
        checks, and either floats that are all finite after conversion to the model's dtype,
        or (a model taking integers) exactly the model's integer dtype. For anything else
        returns None, and the caller runs the full `check_sequence`.
        """
        if type(chunk) is not np.ndarray or chunk.shape != self._shape:
            return None
        xb = self._xb
        if not self._float:  # integer token ids: only the exact dtype, nothing to check
            if chunk.dtype != xb.dtype:  # type: ignore[union-attr]
                return None
            xb[...] = chunk  # type: ignore[index]
            return xb
        if chunk.dtype.kind == "f":
            xb[...] = chunk  # type: ignore[index]
            if self._small:  # no numpy call: a fraction of its cost, and no FP warnings
                if all(map(math.isfinite, self._flat.tolist())):  # type: ignore[union-attr]
                    return xb
            elif np.isfinite(self._flat).all():
                return xb
        return None

    def input_buffer(self, shape: tuple[int, ...]) -> np.ndarray | None:
        """The bound input buffer when chunks of `shape` run bound, for a caller that builds
        its chunk in place (a framed stream writes context and frame straight into it)."""
        if (
            self._bindings is not None
            and shape == self._shape
            and self.runner.session is self._session
        ):
            return self._xb
        return None

    def run(self, x: np.ndarray) -> np.ndarray:
        """Advance by the checked chunk `x` (model dtype); returns a fresh output array.

        The state moves on only when the runtime succeeded.
        """
        bindings = self._bindings
        if (
            bindings is not None
            and self.runner.session is self._session
            and (x is self._xb or x.shape == self._shape)
        ):
            if x is not self._xb:
                self._xb[...] = x  # type: ignore[index]
            k = self._cur
            try:
                bindings[k]()
            except Exception:  # nothing to pay on the hot path; ORT's error, translated:
                with OrtErrors(feeds=self._bound_feeds):
                    raise
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
        self._prepare(x, y)
        return y

    def _prepare(self, x: np.ndarray, y: np.ndarray) -> None:
        """Buffers (and, on ORT CPU, bindings) for chunks shaped like `x`."""
        if x.shape != self._shape or self._xb is None or self._xb.dtype != x.dtype:
            self._shape = tuple(x.shape)
            self._xb = np.empty(x.shape, x.dtype)
            self._flat = self._xb.reshape(-1)
            self._small = self._flat.size <= _SMALL
        self._bindings = None
        session = _bindable_session(self.runner) if self._can_bind else None
        if session is not None and y.dtype != object:
            self._yb = np.empty(y.shape, y.dtype)
            try:
                self._bindings = self._bind(session)
                self._session = session
            except Exception:  # an unusual graph or ORT build: the feed path still works
                self._bindings = None
                self._can_bind = False

    def _bind(self, session: Any) -> list[Any]:
        """Two zero-argument callables, each running one IOBinding of the ping-pong pair."""
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
        self._keep = bindings  # the Python IOBindings hold the OrtValues alive
        # The public `run_with_iobinding(io, run_options)` looks up a graph-capture entry that
        # a plain RunOptions lacks, and the C++ error it raises costs more than the whole
        # step; without run options it still costs a layer of Python. Call the C++ session
        # directly where it exists, with EP synchronization off (a no-op on the CPU provider).
        c_session = getattr(session, "_sess", None)
        c_bindings = [getattr(io, "_iobinding", None) for io in bindings]
        if hasattr(c_session, "run_with_iobinding") and all(b is not None for b in c_bindings):
            options = ort.RunOptions()
            options.add_run_config_entry("disable_synchronize_execution_providers", "1")
            run = c_session.run_with_iobinding
            return [functools.partial(run, b, options) for b in c_bindings]
        return [functools.partial(session.run_with_iobinding, io) for io in bindings]

    def _bound_feeds(self) -> dict[str, np.ndarray]:
        """What the bound run was fed, for an error message (the state is still unchanged)."""
        feeds: dict[str, np.ndarray] = {self.spec.data_input: self._xb}  # type: ignore[dict-item]
        for p, b in zip(self._pairs, self._bufs, strict=True):
            feeds[p.input] = b[self._cur]
        feeds.update(self.extra)
        return feeds


class FastNormalizer:
    """`Normalizer.transform` / `inverse_targets` (cast back to the array's dtype), same numbers.

    numpy's fixed cost per call dominates on a one-value array; for a handful of values the
    same float64 arithmetic in plain Python (its floats are IEEE doubles, `a - m` then `/ s`,
    `a * s` then `+ m`, no fused multiply-add), rounded once to the array's dtype, costs well
    under half as much (`benchmarks/step_ideas.py`, python_overhead). Larger arrays go to the
    wrapped normalizer.
    """

    def __init__(self, normalizer: Any) -> None:
        self.normalizer = normalizer
        self._mean = [float(v) for v in normalizer.mean]
        self._std = [float(v) for v in normalizer.std]
        t = list(normalizer.target_index)
        self._t_mean = [self._mean[i] for i in t]
        self._t_std = [self._std[i] for i in t]

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Standardized features, as `normalizer.transform(x).astype(x.dtype)`."""
        m, s = self._mean, self._std
        if x.size > _SMALL or x.dtype.kind != "f" or x.ndim == 0 or x.shape[-1] != len(m):
            return self.normalizer.transform(x).astype(x.dtype, copy=False)
        values = x.reshape(-1).tolist()
        if len(m) == 1:
            m0, s0 = m[0], s[0]
            out = [(v - m0) / s0 for v in values]
        else:
            n = len(m)
            out = [(v - m[i % n]) / s[i % n] for i, v in enumerate(values)]
        return np.array(out, dtype=x.dtype).reshape(x.shape)

    def inverse_targets(self, y: np.ndarray) -> np.ndarray:
        """Outputs in data units, as `normalizer.inverse_targets(y).astype(y.dtype)`."""
        m, s = self._t_mean, self._t_std
        if y.size > _SMALL or y.dtype.kind != "f" or y.ndim == 0 or y.shape[-1] != len(m):
            return self.normalizer.inverse_targets(y).astype(y.dtype, copy=False)
        values = y.reshape(-1).tolist()
        if len(m) == 1:
            m0, s0 = m[0], s[0]
            out = [v * s0 + m0 for v in values]
        else:
            n = len(m)
            out = [v * s[i % n] + m[i % n] for i, v in enumerate(values)]
        return np.array(out, dtype=y.dtype).reshape(y.shape)
