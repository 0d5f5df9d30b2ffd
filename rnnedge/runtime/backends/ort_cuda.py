"""ONNX Runtime on CUDA: a GPU runner that never lands on the CPU unnoticed.

ONNX Runtime has three quiet ways off the GPU, and this runner closes each: a CUDA provider
library that cannot load (missing CUDA/cuDNN libraries) leaves the session on the CPU provider
with only a log line, so a one-node probe session must run on CUDA before the model is opened
(and the model's session is refused unless CUDA is its first provider); the Python wrapper
retries a failed session on the CPU and prints the error to stdout, so sessions are made with
`enable_fallback=0`; nodes the CUDA provider has no kernel for (GRU with
`linear_before_reset=0`, LSTM with peepholes) go to the CPU provider, so the placement is
recorded and read back, and reported. The probe also keeps fp16 models off the CPU provider,
whose graph optimizations crash ONNX Runtime on fp16 RNNs at `ORT_ENABLE_ALL`; CUDA sessions
are made at `extended`, since level 99 adds only CPU layout transforms. Streaming with the
state on the GPU lives in `cuda_step`.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import threading
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rnnedge._optional import is_available, require
from rnnedge.errors import DeviceError, InputError, ModelFileError, RuntimeUnavailableError
from rnnedge.fileio import atomic_write
from rnnedge.runtime.backends.base import Feeds
from rnnedge.runtime.backends.cuda_step import GRAPH_ID_KEY, CudaStepSession, device_failure
from rnnedge.runtime.backends.ort import OrtErrors, OrtRunner, open_session
from rnnedge.runtime.backends.ortdist import (
    GPU_FIX,
    cuda_device_missing,
    diagnose,
    nvidia_lib_dirs,
    preload_calls,
    probe_model,
)
from rnnedge.spec import RnnSpec

__all__ = [
    "CUDA_EP",
    "CudaStepSession",
    "OrtCudaRunner",
    "convert_fp16",
    "cpu_placed",
    "cuda_settings",
    "placement",
    "placement_problem",
]

CUDA_EP = "CUDAExecutionProvider"
SKIP_GRAPH = "-1"  # the `gpu_graph_id` that runs without capturing or replaying a graph
NO_CPU_FALLBACK = "session.disable_cpu_ep_fallback"
RECORD_PLACEMENT = "session.record_ep_graph_assignment_info"
#: provider options that have their own argument, which is the one way to set them
OWN_ARGUMENT = {"device_id": "device_id", "use_tf32": "use_tf32", "enable_cuda_graph": "cuda_graph"}
#: ops whose place on the CPU provider costs real time (not shape bookkeeping)
HEAVY_OPS = frozenset({"LSTM", "GRU", "RNN", "MatMul", "Gemm", "Conv", "Einsum"})
LIBS_HINT = (
    "ONNX Runtime most likely could not load its CUDA provider library because the CUDA "
    "runtime, cuBLAS or cuDNN 9 libraries it links against were not found: install the nvidia-* "
    "wheels for onnxruntime-gpu's CUDA major version, `import torch` (built for the same CUDA) "
    "first, or put their lib folders on LD_LIBRARY_PATH"
)
CPU_KERNEL_HINT = (
    "the CUDA provider has no kernel for them as they are (e.g. GRU with "
    "linear_before_reset=0, LSTM with peepholes); re-export the model so they "
    "fit (torch's GRU exports linear_before_reset=1)"
)


def _creating(exc: Exception) -> DeviceError | None:
    return device_failure(exc, "creating the CUDA session")


def _running(exc: Exception) -> DeviceError | None:
    return device_failure(exc, "running the model")


def cuda_settings(settings: Mapping[str, Any] | None, cpu_nodes: bool) -> dict[str, Any]:
    """Session settings for a CUDA session: `extended` unless asked, placement recorded.

    `ORT_ENABLE_ALL` adds only the CPU provider's layout transforms over `extended`, and those
    crash ONNX Runtime on fp16 RNNs; `cpu_nodes=False` makes a node left to the CPU provider
    fail session creation.
    """
    out = dict(settings or {})
    out.setdefault("graph_optimization_level", "extended")
    config = {**dict(out.get("config", {})), RECORD_PLACEMENT: "1"}
    if not cpu_nodes:
        config[NO_CPU_FALLBACK] = "1"
    out["config"] = config
    return out


def placement(session: Any) -> dict[str, list[str]]:
    """Provider name → its nodes as `op name`, as ONNX Runtime assigned them.

    Empty when the session was made without `session.record_ep_graph_assignment_info`.
    """
    read = getattr(session, "get_provider_graph_assignment_info", None)
    out: dict[str, list[str]] = {}
    if read is None:
        return out
    try:
        subgraphs = read()
    except Exception:  # not recorded for this session: nothing to report
        return out
    for subgraph in subgraphs:
        nodes = out.setdefault(str(subgraph.ep_name), [])
        nodes += [f"{n.op_type} {n.name}".strip() for n in subgraph.get_nodes()]
    return out


def cpu_placed(assigned: Mapping[str, list[str]], heavy_only: bool = False) -> list[str]:
    """The nodes on the CPU provider; with `heavy_only`, only those doing real arithmetic."""
    nodes = list(assigned.get("CPUExecutionProvider", []))
    return [n for n in nodes if n.split(" ")[0] in HEAVY_OPS] if heavy_only else nodes


def placement_problem(assigned: Mapping[str, list[str]], cpu_nodes: bool) -> str | None:
    """What to say about nodes on the CPU inside a CUDA session, or None when there are none.

    With `cpu_nodes=False` any such node is the problem; with True, only heavy ones are worth
    a warning (ONNX Runtime keeps some shape arithmetic on the CPU on purpose).
    """
    nodes = cpu_placed(assigned, heavy_only=cpu_nodes)
    if not nodes:
        return None
    listed = ", ".join(nodes[:8]) + (f" and {len(nodes) - 8} more" if len(nodes) > 8 else "")
    allow = "" if cpu_nodes else ", or allow them with cpu_nodes=True"
    return (
        f"{len(nodes)} node(s) run on the CPU provider inside this CUDA session, each "
        f"costing a copy across PCIe: {listed}; {CPU_KERNEL_HINT}{allow}"
    )


class OrtCudaRunner(OrtRunner):
    """ONNX Runtime on `CUDAExecutionProvider`, refusing every quiet way onto the CPU.

    Args:
        model: path to (or bytes of) an ONNX file.
        settings: session settings, as for `ort-cpu`; the optimization level defaults to
            "extended" here (see `cuda_settings`).
        session: an existing session (it must already run on CUDA).
        device_id: the CUDA device.
        cuda_graph: enable CUDA graph capture for this session (see `step_session`).
        use_tf32: let cuBLAS use TF32; off by default because it costs fp32 parity (errors
            near 1e-3). cuDNN's RNN kernels ignore this option: only `NVIDIA_TF32_OVERRIDE=0`
            in the environment before CUDA starts keeps them in fp32 on Ampere and later.
        cpu_nodes: allow nodes the CUDA provider lacks to run on the CPU provider (reported in
            `cpu_nodes_placed`, heavy ones with a RuntimeWarning); False refuses the session
            and lists them.
        io_binding: `infer` binds inputs as device OrtValues and outputs on the device; False
            uses plain `session.run`.
        provider_options: further CUDA provider options, passed through; `device_id`,
            `use_tf32` and `enable_cuda_graph` are refused here, since each has its argument
            (a graph enabled behind `cuda_graph`'s back would be replayed by plain `infer`
            for every shape, with wrong results).
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
        clash = sorted(k for k in (provider_options or {}) if str(k) in OWN_ARGUMENT)
        if clash:
            args = ", ".join(f"{k} → {OWN_ARGUMENT[k]}=" for k in clash)
            raise InputError(
                f"provider_options sets {clash}, which have their own arguments "
                f"({args}); pass them as arguments of OrtCudaRunner instead"
            )
        self.device_id = int(device_id)
        self.cuda_graph = bool(cuda_graph)
        self.use_tf32 = bool(use_tf32)
        self.cpu_nodes = bool(cpu_nodes)
        self.io_binding = bool(io_binding)
        self.provider_options = dict(provider_options or {})
        self.preload_log = ""
        self.placement: dict[str, list[str]] = {}
        self.cpu_nodes_placed: list[str] = []
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
            return (
                f"the imported onnxruntime {dist.module_version} lists no {CUDA_EP} "
                f"(providers: {listed}); reinstall it: {GPU_FIX}"
            )
        return None

    def cuda_options(self) -> dict[str, str]:
        """The CUDA provider options this runner asks for, as ONNX Runtime's strings."""
        opts = {"device_id": str(self.device_id), "use_tf32": "1" if self.use_tf32 else "0"}
        if self.cuda_graph:
            opts["enable_cuda_graph"] = "1"
        opts.update({str(k): str(v) for k, v in self.provider_options.items()})
        return opts

    def _preload(self, ort: Any) -> None:
        """Load CUDA/cuDNN from the nvidia-* wheels before any session, keeping what it said.

        `preload_dlls()` looks only beside onnxruntime; the nvidia namespace package's own
        folders are then passed one by one, which finds them for a `--target` install too.
        """
        preload = getattr(ort, "preload_dlls", None)
        if preload is None:
            return
        out = io.StringIO()
        calls: list[dict[str, Any]] = [{}]
        calls += [
            {"cuda": cuda, "cudnn": cudnn, "directory": folder}
            for folder, cuda, cudnn in preload_calls(nvidia_lib_dirs())
        ]
        for kwargs in calls:
            try:
                with contextlib.redirect_stdout(out):
                    preload(**kwargs)
            except Exception as exc:  # best effort: the probe session is what decides
                out.write(f"preload_dlls({kwargs}) failed: {type(exc).__name__}: {exc}\n")
        self.preload_log = " ".join(out.getvalue().split())

    def _not_on_cuda(self, ort: Any, active: list[str], what: str) -> RuntimeUnavailableError:
        built = list(ort.get_available_providers())
        if CUDA_EP not in built:
            why = (
                f"this onnxruntime {ort.__version__} has no CUDA provider (built with "
                f"{', '.join(built)}); {GPU_FIX}"
            )
        else:
            log = f"; preload_dlls said: {self.preload_log[:300]}" if self.preload_log else ""
            why = LIBS_HINT + log
        return RuntimeUnavailableError(
            f"runtime 'ort-cuda' asked for {CUDA_EP} but {what} runs on "
            f"{', '.join(active) or 'nothing'}: {why}"
        )

    def _probe(self, ort: Any) -> None:
        """Open the one-node probe on CUDA alone; refuse before the model if CUDA is not live."""
        options = {k: v for k, v in self.cuda_options().items() if k != "enable_cuda_graph"}
        try:
            probe = open_session(
                probe_model(),
                [(CUDA_EP, options)],
                cuda_settings({"graph_optimization_level": "basic"}, True),
                fallback=False,
                rule=_creating,
            )
        except ModelFileError as exc:
            raise RuntimeUnavailableError(
                f"runtime 'ort-cuda' could not open a one-node probe model on {CUDA_EP} "
                f"({exc.__cause__ or exc}); {LIBS_HINT}"
            ) from exc
        active = list(probe.get_providers())
        if not active or active[0] != CUDA_EP:
            raise self._not_on_cuda(ort, active, "a one-node probe session")

    def _explain(self, exc: ModelFileError) -> Exception:
        """Turn ORT's session errors that are about CUDA, not the file, into their own words."""
        cause = str(exc.__cause__ or exc).strip()
        first = cause.splitlines()[0][:300] if cause else type(exc).__name__
        if "graph capture" in cause.lower() or "cuda graph" in cause.lower():
            return RuntimeUnavailableError(
                f"CUDA graphs need every node on the CUDA provider and no control flow "
                f"(If/Loop/Scan), and ONNX Runtime refused this model: {first}; open it with "
                "cuda_graph=False"
            )
        if "fallback" in cause.lower() and "cpu" in cause.lower():
            nodes = self._cpu_nodes_of_model()
            listed = f": {', '.join(nodes[:8])}" if nodes else ""
            return RuntimeUnavailableError(
                f"nodes of this model would run on the CPU provider{listed}, which "
                f"cpu_nodes=False forbids ({first}); {CPU_KERNEL_HINT}, or allow them with "
                "cpu_nodes=True"
            )
        return exc

    def _cpu_nodes_of_model(self) -> list[str]:
        """Which nodes go to the CPU: a second session allowed to place them, at `basic`."""
        try:
            session = open_session(
                self.model,
                [(CUDA_EP, self.cuda_options()), "CPUExecutionProvider"],
                cuda_settings({**self.settings, "graph_optimization_level": "basic"}, True),
                fallback=False,
                rule=_creating,
            )
        except ModelFileError:
            return []
        return cpu_placed(placement(session))

    def _activate_impl(self) -> None:
        ort = require("onnxruntime", "the ONNX Runtime CUDA runner")
        self._ort = ort
        if self.session is None:
            self._preload(ort)
            self._probe(ort)
            providers: list[Any] = [(CUDA_EP, self.cuda_options())]
            if self.cpu_nodes:
                providers.append("CPUExecutionProvider")
            try:
                self.session = open_session(
                    self.model,
                    providers,
                    cuda_settings(self.settings, self.cpu_nodes),
                    fallback=False,
                    rule=_creating,
                )
            except ModelFileError as exc:
                raise self._explain(exc) from exc
        active = list(self.session.get_providers())
        if not active or active[0] != CUDA_EP:
            self.session = None
            raise self._not_on_cuda(ort, active, "the session")
        disable = getattr(self.session, "disable_fallback", None)
        if disable is not None:  # a failing CUDA run must raise, not re-run on the CPU
            disable()
        self.placement = placement(self.session)
        self.cpu_nodes_placed = cpu_placed(self.placement)
        problem = placement_problem(self.placement, self.cpu_nodes)
        if problem and not self.cpu_nodes:
            self.session = None
            raise RuntimeUnavailableError(problem)
        if problem:
            warnings.warn(problem, RuntimeWarning, stacklevel=3)
        super()._activate_impl()
        self._run_options = None
        if self.cuda_graph:  # plain `infer` calls neither capture nor replay a graph
            self._run_options = ort.RunOptions()
            self._run_options.add_run_config_entry(GRAPH_ID_KEY, SKIP_GRAPH)

    def _infer_impl(self, feeds: Feeds) -> dict[str, np.ndarray]:
        assert self.session is not None
        ort = self._ort
        with OrtErrors(feeds=feeds, runtime="ONNX Runtime (CUDA)", rule=_running):
            if not self.io_binding and self._run_options is None:
                values = self.session.run(self._outputs, dict(feeds))
            else:
                binding = self.session.io_binding()
                for name, value in feeds.items():
                    arr = np.ascontiguousarray(value)
                    binding.bind_ortvalue_input(
                        name, ort.OrtValue.ortvalue_from_numpy(arr, "cuda", self.device_id)
                    )
                for name in self._outputs:
                    binding.bind_output(name, "cuda", self.device_id)
                self.session.run_with_iobinding(binding, self._run_options)
                values = binding.copy_outputs_to_cpu()
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
        return CudaStepSession(
            self.session,
            spec,
            batch,
            chunk_len,
            extra=extra,
            device=("cuda", self.device_id),
            graph_ids=ids,
        )


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
    return atomic_write(dst, lambda tmp: onnx.save(model, str(tmp)))


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
