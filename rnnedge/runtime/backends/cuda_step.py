"""GPU streaming with ONNX Runtime: the recurrent state stays on the device between steps.

Two preallocated state buffers swap roles every step, so `hn` never crosses PCIe, and with
CUDA graphs each step is one graph launch instead of one launch per kernel. A failed step is
said as what it is: a CUDA failure (out of memory, an illegal address, a cuDNN or cuBLAS
status) is a `DeviceError`, not the inputs' fault, and a graph that cannot be captured or
replayed says to stream without graphs.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rnnedge._optional import require
from rnnedge.errors import (
    DeviceError,
    InputError,
    RnnEdgeError,
    RuntimeUnavailableError,
    StreamError,
)
from rnnedge.runtime.backends.ort import OrtErrors
from rnnedge.runtime.inputs import check_sequence, check_state, state_shape
from rnnedge.spec import RnnSpec

GRAPH_ID_KEY = "gpu_graph_id"  # ORT run option: which captured CUDA graph a run uses
#: what ONNX Runtime's CUDA provider (and the CUDA runtime, cuDNN, cuBLAS, its arena) say
#: when the device failed rather than the inputs
_DEVICE_FAILURE = re.compile(
    r"CUDA failure \d+|CUDA error|cudaError|CUDNN failure|CUDNN_STATUS_|CUBLAS failure|"
    r"CUBLAS_STATUS_|out of memory|illegal (memory )?(access|address|instruction)|"
    r"Failed to allocate memory|unspecified launch failure|misaligned address",
    re.IGNORECASE,
)
_GRAPH_FAILURE = re.compile(r"captur|cuda ?graph", re.IGNORECASE)


def _no_clock() -> int:
    return 0


def device_failure(exc: BaseException, doing: str) -> DeviceError | None:
    """`exc` as a `DeviceError` when ONNX Runtime reports a CUDA failure, else None."""
    msg = " ".join(str(exc).split())
    if not _DEVICE_FAILURE.search(msg):
        return None
    return DeviceError(
        f"the GPU failed while {doing}: {msg[:400]}; not the inputs' fault: for "
        "out of memory use a smaller batch or free the device, for an illegal "
        "address or a cuDNN/cuBLAS status restart the process (its CUDA context "
        "may be lost) and report it with the model if it repeats"
    )


class CudaStepSession:
    """Stream one batch of sequences with the state on the device between steps.

    Two IO bindings share the chunk and output buffers and cross-wire two state buffers:
    binding 0 reads state A and writes B, binding 1 reads B and writes A, so each step only
    alternates bindings: the state never leaves the device and no output aliases an input
    (ONNX Runtime runs a model several times while it captures a CUDA graph; with aliasing
    those warm-up runs would advance the state). With `graph_ids`, each binding is captured
    once as its own CUDA graph and then replayed, which needs fixed shapes: a chunk of
    another length is refused. `device=("cpu", 0)` runs the same bookkeeping on the CPU
    provider, which is how it is tested without a GPU.
    """

    def __init__(
        self,
        session: Any,
        spec: RnnSpec,
        batch: int = 1,
        chunk_len: int = 1,
        *,
        extra: Mapping[str, np.ndarray] | None = None,
        device: tuple[str, int] = ("cuda", 0),
        graph_ids: Sequence[int] | None = None,
    ) -> None:
        if not spec.streamable:
            raise StreamError("this model cannot stream: it is bidirectional or has no state")
        for what, value in (("batch", batch), ("chunk_len", chunk_len)):
            if not isinstance(value, int) or value < 1:
                raise InputError(f"{what} must be a positive integer, got {value!r}")
        self._ort = require("onnxruntime", "GPU streaming")
        self.session, self.spec, self.batch = session, spec, batch
        self.device_type, self.device_id = device
        self.cuda_graph = graph_ids is not None
        if self.cuda_graph and len(graph_ids or ()) != 2:
            raise InputError(f"a CUDA graph stream needs 2 graph ids, got {graph_ids!r}")
        self._lock = threading.Lock()
        #: set True to have each step record `last_split_ns`: (copy-in, run, copy-out) in ns,
        #: so a benchmark can say which part of a step to attack
        self.record_split = False
        self.last_split_ns: tuple[int, int, int] | None = None
        self._steps = 0
        self._cur = 0
        self._closed = False
        state_outs = {p.output for p in spec.state_pairs}
        self._other_outputs = [
            o.name
            for o in session.get_outputs()
            if o.name != spec.data_output and o.name not in state_outs
        ]
        if self.cuda_graph and self._other_outputs:
            raise StreamError(
                f"CUDA graph streaming binds every output at a fixed address; "
                f"outputs {self._other_outputs} have no known shape"
            )
        names = {spec.data_input, *(p.input for p in spec.state_pairs)}
        wanted = [i.name for i in session.get_inputs() if i.name not in names]
        extra = dict(extra or {})
        if sorted(extra) != sorted(wanted):
            raise StreamError(f"this model also needs inputs {wanted}; got extra={sorted(extra)}")
        self._extra = {k: self._value(np.ascontiguousarray(v)) for k, v in extra.items()}
        self._states = [
            {
                p.input: self._zeros(state_shape(spec, p.input, batch), spec.input(p.input).dtype)
                for p in spec.state_pairs
            }
            for _ in range(2)
        ]
        self._run_options = [None, None]
        if graph_ids is not None:
            for k, gid in enumerate(graph_ids):
                ro = self._ort.RunOptions()
                ro.add_run_config_entry(GRAPH_ID_KEY, str(int(gid)))
                self._run_options[k] = ro
        self._bind(self._chunk_shape(chunk_len))

    # -- device buffers -------------------------------------------------------------------
    def _value(self, arr: np.ndarray) -> Any:
        return self._ort.OrtValue.ortvalue_from_numpy(arr, self.device_type, self.device_id)

    def _zeros(self, shape: Sequence[int], dtype: Any) -> Any:
        return self._value(np.zeros(tuple(shape), dtype=np.dtype(dtype)))

    def _chunk_shape(self, chunk_len: int) -> tuple[int, ...]:
        spec = self.spec
        declared = spec.input(spec.data_input).shape
        dims: list[Any] = list(declared)
        dims[spec.batch_axis], dims[spec.seq_axis] = self.batch, chunk_len
        if not all(isinstance(d, int) for d in dims):
            raise StreamError(
                f"'{spec.data_input}' has symbolic dims {declared} beyond batch "
                "and seq_len; GPU streaming preallocates and needs them fixed"
            )
        return tuple(dims)

    def _bind(self, shape: tuple[int, ...]) -> None:
        """(Re)create the chunk and output buffers for chunks of `shape`, and both bindings."""
        spec = self.spec
        x_spec = spec.input(spec.data_input)
        # the output's symbolic dims are sized from the input's dims of the same name
        x_dims = {d: shape[i] for i, d in enumerate(x_spec.shape) if isinstance(d, str)}
        declared = spec.output(spec.data_output).shape
        y_shape = (
            None
            if any(isinstance(d, str) and d not in x_dims for d in declared)
            else tuple(x_dims.get(d, d) for d in declared)
        )
        if y_shape is None and self.cuda_graph:
            raise StreamError(
                f"CUDA graph streaming needs the shape of '{spec.data_output}' "
                f"({spec.output(spec.data_output).shape}) from the input's dims"
            )
        self.chunk_shape = shape
        self._x = self._zeros(shape, x_spec.dtype)
        self._y = (
            None if y_shape is None else self._zeros(y_shape, spec.output(spec.data_output).dtype)
        )
        self._bindings = []
        for k in range(2):
            b = self.session.io_binding()
            b.bind_ortvalue_input(spec.data_input, self._x)
            for name, value in self._extra.items():
                b.bind_ortvalue_input(name, value)
            for p in spec.state_pairs:
                b.bind_ortvalue_input(p.input, self._states[k][p.input])
            if self._y is None:
                b.bind_output(spec.data_output, self.device_type, self.device_id)
            else:
                b.bind_ortvalue_output(spec.data_output, self._y)
            for p in spec.state_pairs:
                b.bind_ortvalue_output(p.output, self._states[1 - k][p.input])
            for name in self._other_outputs:
                b.bind_output(name, self.device_type, self.device_id)
            self._bindings.append(b)

    # -- stream API -----------------------------------------------------------------------
    @property
    def steps(self) -> int:
        return self._steps

    def _check_open(self) -> None:
        if self._closed:
            raise StreamError("this GPU stream is closed; open a new one with step_session()")

    def step(self, chunk: Any) -> np.ndarray:
        """Advance by one chunk (model layout, this stream's batch); returns its outputs."""
        self._check_open()
        spec = self.spec
        x = check_sequence(chunk, spec, "chunk")
        if x.shape[spec.batch_axis] != self.batch:
            raise InputError(
                f"chunk has batch {x.shape[spec.batch_axis]} (shape "
                f"{tuple(x.shape)}); this stream was opened with batch={self.batch}"
            )
        with self._lock:
            self._check_open()
            if x.shape != self.chunk_shape:
                if self.cuda_graph:
                    raise StreamError(
                        f"chunk shape {tuple(x.shape)} differs from {self.chunk_shape}, the "
                        "shape this stream's CUDA graphs were captured at; open another "
                        "step_session for this chunk length, or use cuda_graph=False"
                    )
                self._bind(tuple(x.shape))
            k = self._cur
            clock = time.perf_counter_ns if self.record_split else _no_clock
            try:
                t0 = clock()
                self._x.update_inplace(x)
                t1 = clock()
                self.session.run_with_iobinding(self._bindings[k], self._run_options[k])
                t2 = clock()
                # the data output is bound first, so it is the binding's first output
                y = (self._bindings[k].get_outputs()[0] if self._y is None else self._y).numpy()
                y = np.array(y, copy=True)
            except Exception:  # the current state set was only read: nothing changed
                with OrtErrors(
                    feeds=lambda: {spec.data_input: x},
                    rule=self._failed,
                    runtime="ONNX Runtime (CUDA)",
                ):
                    raise
            if self.record_split:
                self.last_split_ns = (t1 - t0, t2 - t1, clock() - t2)
            self._cur = 1 - k
            self._steps += x.shape[spec.seq_axis]
        return y

    def _failed(self, exc: Exception) -> RnnEdgeError | None:
        """What only a CUDA stream can tell about a failed step: a CUDA graph problem or a
        device failure; None leaves the rest (a refusal of the inputs) to `OrtErrors`."""
        msg = " ".join(str(exc).split())[:300]
        if self.cuda_graph and _GRAPH_FAILURE.search(msg):
            return RuntimeUnavailableError(
                f"ONNX Runtime failed to capture or replay this stream's CUDA graph ({msg}); "
                "stream without graphs (cuda_graph=False)"
            )
        device = device_failure(exc, "running a stream step")
        if device is not None:
            return device
        if self.cuda_graph:
            return RuntimeUnavailableError(
                f"ONNX Runtime failed to run this stream's CUDA graph ({msg}); stream without "
                "graphs (cuda_graph=False)"
            )
        return None

    @property
    def state(self) -> dict[str, np.ndarray]:
        """A host copy of the current state, by state-input name."""
        self._check_open()
        with self._lock:
            return {n: np.array(v.numpy(), copy=True) for n, v in self._states[self._cur].items()}

    @state.setter
    def state(self, value: Mapping[str, np.ndarray]) -> None:
        self._check_open()
        checked = check_state(value, self.spec, self.batch)
        assert checked is not None
        with self._lock:
            for name, arr in checked.items():
                self._states[self._cur][name].update_inplace(arr)

    def reset(self) -> None:
        """Back to the zero state, on the device."""
        self._check_open()
        with self._lock:
            for name, value in self._states[self._cur].items():
                zeros = np.zeros(
                    state_shape(self.spec, name, self.batch),
                    dtype=np.dtype(self.spec.input(name).dtype),
                )
                value.update_inplace(zeros)
            self._steps = 0

    def close(self) -> None:
        """Release the device buffers; later use is an error."""
        self._closed = True
        self._bindings, self._states, self._extra = [], [{}, {}], {}
        self._x = self._y = None
