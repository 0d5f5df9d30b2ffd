"""ONNX Runtime on CUDA: a GPU runner that never lands on the CPU unnoticed, and GPU streaming.

ONNX Runtime drops to the CPU provider when its CUDA provider library cannot load (missing
CUDA/cuDNN libraries) and only logs it, so this runner checks `session.get_providers()` and
refuses a session that is not on CUDA. Streaming keeps the recurrent state on the GPU: two
preallocated state buffers swap roles every step, so `hn` never crosses PCIe, and with CUDA
graphs each step is one graph launch instead of one launch per kernel.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rnnedge._optional import is_available, require
from rnnedge.errors import InputError, ModelFileError, RuntimeUnavailableError, StreamError
from rnnedge.runtime.backends.base import Feeds
from rnnedge.runtime.backends.ort import OrtRunner, open_session, refused
from rnnedge.runtime.backends.ortdist import GPU_FIX, cuda_device_missing, diagnose
from rnnedge.runtime.inputs import check_sequence, check_state, state_shape
from rnnedge.spec import RnnSpec

CUDA_EP = "CUDAExecutionProvider"
GRAPH_ID_KEY = "gpu_graph_id"  # ORT run option: which captured CUDA graph a run uses
SKIP_GRAPH = "-1"  # ... and the value that runs without capturing or replaying
NO_CPU_FALLBACK = "session.disable_cpu_ep_fallback"
LIBS_HINT = (
    "ONNX Runtime most likely could not load its CUDA provider library because the CUDA "
    "runtime, cuBLAS or cuDNN 9 libraries it links against were not found: install the nvidia-* "
    "wheels for onnxruntime-gpu's CUDA major version, `import torch` (built for the same CUDA) "
    "first, or put their lib folders on LD_LIBRARY_PATH"
)


class OrtCudaRunner(OrtRunner):
    """ONNX Runtime on `CUDAExecutionProvider`, refusing a silent CPU fallback.

    Args:
        model: path to (or bytes of) an ONNX file.
        settings: session settings, as for `ort-cpu`.
        session: an existing session (it must already run on CUDA).
        device_id: the CUDA device.
        cuda_graph: enable CUDA graph capture for this session (see `step_session`).
        use_tf32: let cuBLAS/cuDNN use TF32; off by default because it costs fp32 parity
            (errors near 1e-3), which ONNX Runtime's own default (on) gives up silently.
        cpu_nodes: allow nodes the CUDA provider lacks to run on the CPU provider; False makes
            session creation fail instead, which also guards fp16 graphs (ORT's CPU provider
            crashes on an fp16 LSTM).
        io_binding: `infer` binds inputs as device OrtValues and outputs on the device; False
            uses plain `session.run`.
        provider_options: extra CUDA provider options, passed through.
    """

    name: ClassVar[str] = "ort-cuda"
    requires: ClassVar[tuple[str, ...]] = ("onnxruntime",)
    install_hint: ClassVar[str] = "pip install 'rnnedge[gpu]'"
    providers: ClassVar[tuple[str, ...]] = (CUDA_EP, "CPUExecutionProvider")

    def __init__(
        self,
        model: str | os.PathLike[str] | bytes,
        *,
        settings: Mapping[str, Any] | None = None,
        session: Any | None = None,
        device_id: int = 0,
        cuda_graph: bool = False,
        use_tf32: bool = False,
        cpu_nodes: bool = True,
        io_binding: bool = True,
        provider_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(model, settings=settings, session=session)
        self.device_id = int(device_id)
        self.cuda_graph = bool(cuda_graph)
        self.use_tf32 = bool(use_tf32)
        self.cpu_nodes = bool(cpu_nodes)
        self.io_binding = bool(io_binding)
        self.provider_options = dict(provider_options or {})
        self.preload_log = ""
        self._ort: Any = None
        self._run_options: Any = None
        self._graph_ids = itertools.count(1)
        self._graph_lock = threading.Lock()

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Metadata and device checks first; the module is imported only if they pass."""
        problem = diagnose(import_module=False).gpu_problem()
        if problem:
            return problem
        missing = cuda_device_missing()
        if missing:
            return missing
        dist = diagnose()
        if dist.module.error:
            return f"onnxruntime-gpu is installed but does not import ({dist.module.error})"
        if not dist.has_cuda_provider:
            listed = ", ".join(dist.providers or ())
            return (f"the imported onnxruntime {dist.module_version} lists no {CUDA_EP} "
                    f"(providers: {listed}); reinstall it: {GPU_FIX}")
        return None

    def cuda_options(self) -> dict[str, str]:
        """The CUDA provider options this runner asks for, as ONNX Runtime's strings."""
        opts = {"device_id": str(self.device_id), "use_tf32": "1" if self.use_tf32 else "0"}
        if self.cuda_graph:
            opts["enable_cuda_graph"] = "1"
        opts.update({str(k): str(v) for k, v in self.provider_options.items()})
        return opts

    def _preload(self, ort: Any) -> None:
        """Load CUDA/cuDNN from the nvidia-* wheels before the session, keeping its output."""
        preload = getattr(ort, "preload_dlls", None)
        if preload is None:
            return
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                preload()
        except Exception as exc:  # best effort: the provider check below is what decides
            out.write(f"preload_dlls failed: {type(exc).__name__}: {exc}")
        self.preload_log = " ".join(out.getvalue().split())

    def _explain(self, exc: ModelFileError) -> Exception:
        """Turn ORT's session errors that are about CUDA, not the file, into their own words."""
        cause = str(exc.__cause__ or exc).strip()
        first = cause.splitlines()[0][:300] if cause else type(exc).__name__
        if "graph capture" in cause.lower() or "cuda graph" in cause.lower():
            return RuntimeUnavailableError(
                f"CUDA graphs need every node on the CUDA provider and no control flow "
                f"(If/Loop/Scan), and ONNX Runtime refused this model: {first}; open it with "
                "cuda_graph=False")
        if "fallback" in cause.lower() and "cpu" in cause.lower():
            return RuntimeUnavailableError(
                f"nodes of this model would run on the CPU provider, which cpu_nodes=False "
                f"forbids ({first}); if every node should fit on CUDA, {LIBS_HINT}")
        return exc

    def _activate_impl(self) -> None:
        ort = require("onnxruntime", "the ONNX Runtime CUDA runner")
        self._ort = ort
        if self.session is None:
            self._preload(ort)
            settings = dict(self.settings)
            if not self.cpu_nodes:
                settings["config"] = {**dict(settings.get("config", {})), NO_CPU_FALLBACK: "1"}
            providers: list[Any] = [(CUDA_EP, self.cuda_options())]
            if self.cpu_nodes:
                providers.append("CPUExecutionProvider")
            try:
                self.session = open_session(self.model, providers, settings)
            except ModelFileError as exc:
                raise self._explain(exc) from exc
        active = list(self.session.get_providers())
        if not active or active[0] != CUDA_EP:
            self.session = None
            built = list(ort.get_available_providers())
            if CUDA_EP not in built:
                why = (f"this onnxruntime {ort.__version__} has no CUDA provider (built with "
                       f"{', '.join(built)}); {GPU_FIX}")
            else:
                log = f"; preload_dlls said: {self.preload_log[:300]}" if self.preload_log else ""
                why = LIBS_HINT + log
            raise RuntimeUnavailableError(
                f"runtime 'ort-cuda' asked for {CUDA_EP} but the session runs on "
                f"{', '.join(active) or 'nothing'}: {why}")
        disable = getattr(self.session, "disable_fallback", None)
        if disable is not None:  # a failing CUDA run must raise, not re-run on the CPU
            disable()
        super()._activate_impl()
        self._run_options = None
        if self.cuda_graph:  # plain `infer` calls neither capture nor replay a graph
            self._run_options = ort.RunOptions()
            self._run_options.add_run_config_entry(GRAPH_ID_KEY, SKIP_GRAPH)

    def _infer_impl(self, feeds: Feeds) -> dict[str, np.ndarray]:
        assert self.session is not None
        if not self.io_binding and self._run_options is None:
            return super()._infer_impl(feeds)
        ort = self._ort
        try:
            binding = self.session.io_binding()
            for name, value in feeds.items():
                arr = np.ascontiguousarray(value)
                binding.bind_ortvalue_input(
                    name, ort.OrtValue.ortvalue_from_numpy(arr, "cuda", self.device_id))
            for name in self._outputs:
                binding.bind_output(name, "cuda", self.device_id)
            self.session.run_with_iobinding(binding, self._run_options)
            values = binding.copy_outputs_to_cpu()
        except Exception as exc:
            raise refused(feeds, exc, "ONNX Runtime (CUDA)") from exc
        return dict(zip(self._outputs, values, strict=True))

    def reserve_graph_ids(self, count: int) -> list[int]:
        """Unique `gpu_graph_id`s: one captured graph per (buffers, shape), never shared."""
        with self._graph_lock:
            return [next(self._graph_ids) for _ in range(count)]

    def step_session(
        self,
        spec: RnnSpec | None = None,
        batch: int = 1,
        chunk_len: int = 1,
        *,
        extra: Mapping[str, np.ndarray] | None = None,
    ) -> CudaStepSession:
        """A stream whose state stays on this GPU; CUDA graphs when the runner has them."""
        self._check_active()
        if spec is None:
            from rnnedge.runtime.foreign import resolve_spec

            spec = resolve_spec(self.session, source=str(self.model)[:200])
        ids = self.reserve_graph_ids(2) if self.cuda_graph else None
        return CudaStepSession(self.session, spec, batch, chunk_len, extra=extra,
                               device=("cuda", self.device_id), graph_ids=ids)


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
        self._steps = 0
        self._cur = 0
        self._closed = False
        state_outs = {p.output for p in spec.state_pairs}
        self._other_outputs = [o.name for o in session.get_outputs()
                               if o.name != spec.data_output and o.name not in state_outs]
        if self.cuda_graph and self._other_outputs:
            raise StreamError(f"CUDA graph streaming binds every output at a fixed address; "
                              f"outputs {self._other_outputs} have no known shape")
        names = {spec.data_input, *(p.input for p in spec.state_pairs)}
        wanted = [i.name for i in session.get_inputs() if i.name not in names]
        extra = dict(extra or {})
        if sorted(extra) != sorted(wanted):
            raise StreamError(f"this model also needs inputs {wanted}; got extra={sorted(extra)}")
        self._extra = {k: self._value(np.ascontiguousarray(v)) for k, v in extra.items()}
        self._states = [{p.input: self._zeros(state_shape(spec, p.input, batch),
                                              spec.input(p.input).dtype)
                         for p in spec.state_pairs} for _ in range(2)]
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
            raise StreamError(f"'{spec.data_input}' has symbolic dims {declared} beyond batch "
                              "and seq_len; GPU streaming preallocates and needs them fixed")
        return tuple(dims)

    def _bind(self, shape: tuple[int, ...]) -> None:
        """(Re)create the chunk and output buffers for chunks of `shape`, and both bindings."""
        spec = self.spec
        x_spec = spec.input(spec.data_input)
        # the output's symbolic dims are sized from the input's dims of the same name
        x_dims = {d: shape[i] for i, d in enumerate(x_spec.shape) if isinstance(d, str)}
        declared = spec.output(spec.data_output).shape
        y_shape = (None if any(isinstance(d, str) and d not in x_dims for d in declared)
                   else tuple(x_dims.get(d, d) for d in declared))
        if y_shape is None and self.cuda_graph:
            raise StreamError(f"CUDA graph streaming needs the shape of '{spec.data_output}' "
                              f"({spec.output(spec.data_output).shape}) from the input's dims")
        self.chunk_shape = shape
        self._x = self._zeros(shape, x_spec.dtype)
        self._y = None if y_shape is None else self._zeros(
            y_shape, spec.output(spec.data_output).dtype)
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
            raise InputError(f"chunk has batch {x.shape[spec.batch_axis]} (shape "
                             f"{tuple(x.shape)}); this stream was opened with batch={self.batch}")
        with self._lock:
            self._check_open()
            if x.shape != self.chunk_shape:
                if self.cuda_graph:
                    raise StreamError(
                        f"chunk shape {tuple(x.shape)} differs from {self.chunk_shape}, the "
                        "shape this stream's CUDA graphs were captured at; open another "
                        "step_session for this chunk length, or use cuda_graph=False")
                self._bind(tuple(x.shape))
            self._x.update_inplace(x)
            k = self._cur
            try:
                self.session.run_with_iobinding(self._bindings[k], self._run_options[k])
            except Exception as exc:  # the current state set was only read: nothing changed
                msg = " ".join(str(exc).split())[:300]
                if self.cuda_graph:
                    raise RuntimeUnavailableError(
                        f"ONNX Runtime failed to capture or replay this stream's CUDA graph "
                        f"({msg}); stream without graphs (cuda_graph=False)") from exc
                raise InputError(f"ONNX Runtime refused this step ({msg})") from exc
            # the data output is bound first, so it is the binding's first output
            y = (self._bindings[k].get_outputs()[0] if self._y is None else self._y).numpy()
            self._cur = 1 - k
            self._steps += x.shape[spec.seq_axis]
        return np.array(y, copy=True)

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
                zeros = np.zeros(state_shape(self.spec, name, self.batch),
                                 dtype=np.dtype(self.spec.input(name).dtype))
                value.update_inplace(zeros)
            self._steps = 0

    def close(self) -> None:
        """Release the device buffers; later use is an error."""
        self._closed = True
        self._bindings, self._states, self._extra = [], [{}, {}], {}
        self._x = self._y = None


def convert_fp16(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    keep_io_types: bool = True,
) -> Path:
    """Write an fp16 copy of an ONNX file, inputs and outputs kept fp32 by default.

    Uses `onnxconverter_common` when installed, else the converter that ships inside
    onnxruntime (`onnxruntime.transformers.float16`); both need `onnx`. Their output lists
    the new Cast nodes out of order, which ONNX Runtime accepts but `onnx.checker` and
    TensorRT's parser do not, so the graph is sorted before it is checked and written.
    Metadata (the rnnedge spec) is kept.
    """
    onnx = require("onnx", "fp16 conversion")
    if is_available("onnxconverter_common"):
        from onnxconverter_common.float16 import convert_float_to_float16
    else:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise ModelFileError(f"model file '{src}' does not exist (expected an .onnx file)")
    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=keep_io_types)
    _toposort(model.graph)
    onnx.checker.check_model(model)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        onnx.save(model, str(tmp))
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst


def _toposort(graph: Any) -> None:
    """Reorder `graph.node` so every node comes after the producers of its inputs."""
    known = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in known for i in n.input)]
        if not ready:
            missing = sorted({i for n in pending for i in n.input if i not in known})[:5]
            raise ModelFileError(f"converted graph has a cycle or undefined inputs {missing}")
        for n in ready:
            known.update(n.output)
        ordered.extend(ready)
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
    copies = [type(n)() for n in ordered]
    for c, n in zip(copies, ordered, strict=True):
        c.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)
