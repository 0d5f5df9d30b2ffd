"""TensorRT engines as a runner, and ONNX Runtime's TensorRT provider options.

The runner loads plans; it never builds one. Building is layer 2's job
(`rnnedge.exporters.tensorrt`), reached through a *loader*: a callable that returns a plan
path, such as `EngineFromOnnx(onnx, batch=..., seq_len=...)`, called when the runner is
activated (Polygraphy's runner/loader split). A plan is loaded only after its manifest
(`trt_plan.Manifest`) matches the running TensorRT and GPU, and inputs are checked against
the stored optimization profile before anything runs, so an out-of-range length is refused
with the range instead of a TensorRT error code. IO is by tensor name (`set_input_shape`,
`set_tensor_address`, `execute_async_v3`) on one CUDA stream; device memory comes from
cuda-python (the `tensorrt` extra) or, without it, from torch.
"""

from __future__ import annotations

import mmap
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rnnedge._optional import require
from rnnedge.errors import DeviceError, InputError, ModelFileError, RuntimeUnavailableError
from rnnedge.runtime.backends.base import Feeds, Runner, describe_feeds
from rnnedge.runtime.backends.ort import open_session
from rnnedge.runtime.backends.ortdist import cuda_device_missing
from rnnedge.runtime.backends.trt_plan import (
    Manifest,
    Profile,
    check_profile,
    collecting_logger,
    cudart,
    environment,
    has_cuda_python,
    manifest_path,
    module_present,
    profile_violations,
    require_tensorrt,
    stale_reason,
)
from rnnedge.spec import TensorSpec

__all__ = [
    "TRT_EP",
    "TensorRTRunner",
    "check_profile",
    "format_shapes",
    "linked_tensorrt_major",
    "open_trt_session",
    "ort_trt_options",
    "ort_trt_providers",
    "profile_violations",
]

TRT_EP = "TensorrtExecutionProvider"
#: a loader: called once when the runner activates, returns the path of a plan to load
PlanLoader = Callable[[], "str | os.PathLike[str]"]


def format_shapes(profiles: Mapping[str, Profile], which: int) -> str:
    """`x:1x1x1,h0:2x1x128` — ORT's TensorRT provider syntax for one of min/opt/max."""
    return ",".join(
        f"{name}:{'x'.join(str(d) for d in shapes[which])}" for name, shapes in profiles.items()
    )


def ort_trt_options(
    profiles: Mapping[str, Profile],
    *,
    fp16: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    device_id: int = 0,
    workspace_gb: float | None = None,
) -> dict[str, str]:
    """Options for ONNX Runtime's `TensorrtExecutionProvider` with explicit profiles.

    Explicit min/opt/max shapes give one engine for the whole range; without them the
    provider rebuilds its engine each time it meets a shape outside what it has seen.
    """
    opts = {
        "device_id": str(device_id),
        "trt_fp16_enable": "True" if fp16 else "False",
        "trt_profile_min_shapes": format_shapes(profiles, 0),
        "trt_profile_opt_shapes": format_shapes(profiles, 1),
        "trt_profile_max_shapes": format_shapes(profiles, 2),
    }
    if cache_dir is not None:
        opts.update(
            {
                "trt_engine_cache_enable": "True",
                "trt_engine_cache_path": str(cache_dir),
                "trt_timing_cache_enable": "True",
                "trt_timing_cache_path": str(cache_dir),
            }
        )
    if workspace_gb is not None:
        opts["trt_max_workspace_size"] = str(int(workspace_gb * (1 << 30)))
    return opts


def ort_trt_providers(
    profiles: Mapping[str, Profile], *, allow_tf32: bool = False, **options: Any
) -> list[Any]:
    """Providers for `InferenceSession`: TensorRT first, CUDA then CPU for what it leaves.

    The CUDA provider takes what TensorRT leaves, so it gets `use_tf32=0` like `ort-cuda`
    (its default is TF32 on, which costs fp32 parity); TensorRT's own fp32 layers use TF32
    unless `NVIDIA_TF32_OVERRIDE=0` is set when the engine is built.
    """
    trt_opts = ort_trt_options(profiles, **options)
    cuda_opts = {"device_id": trt_opts["device_id"], "use_tf32": "1" if allow_tf32 else "0"}
    return [(TRT_EP, trt_opts), ("CUDAExecutionProvider", cuda_opts), "CPUExecutionProvider"]


def linked_tensorrt_major(library: str | os.PathLike[str]) -> int | None:
    """The TensorRT major version a provider library links (`libnvinfer.so.N`), or None.

    ONNX Runtime 1.31's TensorRT provider links TensorRT 10; with only TensorRT 11 installed it
    fails to load and the session runs on CUDA without a word, so a refusal names both.
    """
    try:
        with open(library, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            found = re.search(rb"libnvinfer\.so\.(\d+)", m)
            return int(found.group(1)) if found else None  # read before the map closes
    except (OSError, ValueError):
        return None


def _installed_tensorrt() -> str:
    """`tensorrt 10.7.0` for every installed distribution named tensorrt*, or 'none'."""
    import importlib.metadata

    found = sorted(
        {
            f"{d.metadata['Name']} {d.version}"
            for d in importlib.metadata.distributions()
            if str(d.metadata["Name"] or "").lower().startswith("tensorrt")
        }
    )
    return ", ".join(found) or "none"


def open_trt_session(
    model: str | os.PathLike[str] | bytes,
    profiles: Mapping[str, Profile],
    *,
    settings: Mapping[str, Any] | None = None,
    **options: Any,
) -> Any:
    """An ONNX Runtime session on its TensorRT provider, refused unless TensorRT really runs it.

    ONNX Runtime drops a TensorRT provider that cannot load (TensorRT missing, or another major
    than it links) and runs on CUDA or the CPU instead, logging only a warning; the Python
    wrapper also retries failed sessions on other providers. Neither is allowed here: the
    session is made without that retry and refused unless TensorRT is its first provider.

    Args:
        model: path to (or bytes of) the ONNX file.
        profiles: the (min, opt, max) shapes, from `trt_plan.profiles_from_ranges`.
        settings: session settings, as for `ort-cpu`.
        **options: `ort_trt_providers` options (fp16, cache_dir, device_id, allow_tf32, …).
    """
    ort = require("onnxruntime", "ONNX Runtime's TensorRT provider")
    session = open_session(model, ort_trt_providers(profiles, **options), settings, fallback=False)
    active = list(session.get_providers())
    if active and active[0] == TRT_EP:
        return session
    built = list(ort.get_available_providers())
    if TRT_EP not in built:
        why = (
            f"this onnxruntime {ort.__version__} has no TensorRT provider (built with "
            f"{', '.join(built)}); install onnxruntime-gpu"
        )
    else:
        lib = Path(ort.__file__).parent / "capi" / "libonnxruntime_providers_tensorrt.so"
        major = linked_tensorrt_major(lib)
        links = f"TensorRT {major}" if major is not None else "a TensorRT it names in its library"
        why = (
            f"its provider library links {links} (libnvinfer), which did not load; installed: "
            f"{_installed_tensorrt()}. Install that TensorRT major's libraries, or use the "
            "'tensorrt' runtime with plans built by rnnedge.exporters.tensorrt"
        )
    raise RuntimeUnavailableError(
        f"asked for {TRT_EP} but the session runs on {', '.join(active) or 'nothing'}: {why}"
    )


class _CudaPython:
    """Device memory and a stream through cuda-python's runtime API."""

    def __init__(self, device_id: int) -> None:
        self.rt = cudart()
        self._call(self.rt.cudaSetDevice(device_id))
        self.stream = self._call(self.rt.cudaStreamCreate())
        self.handle = int(self.stream)

    def _call(self, result: Any) -> Any:
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise DeviceError(
                f"a CUDA runtime call failed: {err}; the GPU may be out of memory "
                "or in an error state (check nvidia-smi), or restart the process"
            )
        return rest[0] if len(rest) == 1 else rest

    def alloc(self, nbytes: int) -> Any:
        return self._call(self.rt.cudaMalloc(max(nbytes, 1)))

    def ptr(self, mem: Any) -> int:
        return int(mem)

    def to_device(self, mem: Any, arr: np.ndarray) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call(
            self.rt.cudaMemcpyAsync(int(mem), arr.ctypes.data, arr.nbytes, kind, self.stream)
        )

    def to_host(self, arr: np.ndarray, mem: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call(
            self.rt.cudaMemcpyAsync(arr.ctypes.data, int(mem), arr.nbytes, kind, self.stream)
        )

    def synchronize(self) -> None:
        self._call(self.rt.cudaStreamSynchronize(self.stream))

    def free(self, mem: Any) -> None:
        self._call(self.rt.cudaFree(mem))

    def close(self) -> None:
        self._call(self.rt.cudaStreamDestroy(self.stream))


class _Torch:
    """Device memory and a stream through torch, for machines without cuda-python."""

    def __init__(self, device_id: int) -> None:
        self.torch = require("torch", "TensorRT device memory")
        self.device = self.torch.device("cuda", device_id)
        self.stream = self.torch.cuda.Stream(device=self.device)
        self.handle = int(self.stream.cuda_stream)

    def alloc(self, nbytes: int) -> Any:
        return self.torch.empty(max(nbytes, 1), dtype=self.torch.uint8, device=self.device)

    def ptr(self, mem: Any) -> int:
        return int(mem.data_ptr())

    def to_device(self, mem: Any, arr: np.ndarray) -> None:
        src = self.torch.from_numpy(arr.reshape(-1).view(np.uint8))
        with self.torch.cuda.stream(self.stream):
            mem[: arr.nbytes].copy_(src)

    def to_host(self, arr: np.ndarray, mem: Any) -> None:
        dst = self.torch.from_numpy(arr.reshape(-1).view(np.uint8))
        with self.torch.cuda.stream(self.stream):
            dst.copy_(mem[: arr.nbytes])

    def synchronize(self) -> None:
        self.stream.synchronize()

    def free(self, mem: Any) -> None:
        del mem

    def close(self) -> None:
        self.stream.synchronize()


class TensorRTRunner(Runner):
    """Runs a TensorRT plan, given as a path or produced by a loader when activated.

    Args:
        model: `model.plan` with its `model.plan.json` manifest; or a loader (a callable
            returning a plan path, e.g. `EngineFromOnnx`); or, with `loader`, the ONNX file the
            loader builds from (kept for messages). An `.onnx` path alone is refused: building
            is the loader's job.
        loader: called once by `activate()`; returns the plan to load.
        device_id: the CUDA device; a loader that says it builds for another one is refused.
    """

    name: ClassVar[str] = "tensorrt"
    requires: ClassVar[tuple[str, ...]] = ("tensorrt",)
    install_hint: ClassVar[str] = "pip install 'rnnedge[tensorrt]' on a machine with a GPU"

    def __init__(
        self,
        model: str | os.PathLike[str] | PlanLoader,
        *,
        loader: PlanLoader | None = None,
        device_id: int = 0,
    ) -> None:
        super().__init__()
        if callable(model) and not isinstance(model, (str, os.PathLike)):
            if loader is not None:
                raise InputError(
                    "TensorRTRunner got two loaders (as model and as loader=); pass one"
                )
            loader, model = model, getattr(model, "onnx_path", "<loader>")
        self.model = Path(model)  # type: ignore[arg-type]
        self.loader = loader
        self.device_id = int(device_id)
        if loader is None and self.model.suffix.lower() == ".onnx":
            raise InputError(
                f"'{self.model}' is an ONNX file; TensorRTRunner runs TensorRT plans. Give it a "
                "loader that builds (or reuses) the plan: TensorRTRunner(path, loader="
                "rnnedge.exporters.tensorrt.EngineFromOnnx(path, batch=(1, 2, 16), "
                "seq_len=(1, 64, 1024))), or build one first with build_engine(path, 'model.plan')"
            )
        built_for = getattr(loader, "device_id", None)
        if built_for is not None and int(built_for) != self.device_id:
            raise InputError(
                f"the loader builds for CUDA device {built_for} but the runner runs "
                f"on device {self.device_id}; give both the same device_id"
            )
        self.plan: Path | None = None
        self.manifest: Manifest | None = None
        self.build_reason = ""
        self._mem: dict[str, tuple[Any, int]] = {}

    @classmethod
    def unavailable_reason(cls) -> str | None:
        if not module_present("tensorrt"):
            return f"missing tensorrt ({cls.install_hint})"
        why = cuda_device_missing()
        if why:
            return why
        if not (has_cuda_python() or module_present("torch")):
            return "needs cuda-python (pip install 'rnnedge[tensorrt]') or torch for GPU memory"
        return None

    def _activate_impl(self) -> None:
        trt = require_tensorrt("the TensorRT runner")
        if self.loader is not None:
            self.plan = Path(self.loader())
            self.build_reason = str(getattr(self.loader, "reason", ""))
        else:
            self.plan = self.model
        if not self.plan.is_file():
            raise ModelFileError(
                f"engine file '{self.plan}' does not exist (expected a .plan "
                "written by rnnedge.exporters.tensorrt.build_engine)"
            )
        manifest = Manifest.read(manifest_path(self.plan))
        if manifest is None:
            raise ModelFileError(
                f"'{self.plan}' has no manifest '{manifest_path(self.plan).name}'"
                " beside it, so nothing says which TensorRT and GPU it is for; "
                "rebuild it with build_engine"
            )
        why = stale_reason(manifest, environment(trt, self.device_id))
        if why:
            raise RuntimeUnavailableError(
                f"engine '{self.plan}' was built for another environment ({why}); rebuild it here"
            )
        self.manifest = manifest
        self._dev = _CudaPython(self.device_id) if has_cuda_python() else _Torch(self.device_id)
        try:
            self._load(trt)
        except BaseException:
            self._dev.close()
            raise

    def _load(self, trt: Any) -> None:
        """Deserialize the plan and read its IO tensors by name."""
        assert self.plan is not None
        self._logger = collecting_logger(trt)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(self.plan.read_bytes())
        if self._engine is None:
            raise ModelFileError(
                f"TensorRT could not load '{self.plan}': "
                f"{' | '.join(self._logger.messages[-3:]) or 'no message'}"
            )
        self._context = self._engine.create_execution_context()
        engine = self._engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        is_in = {n: engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self._inputs = [n for n in names if is_in[n]]
        self._outputs = [n for n in names if not is_in[n]]
        self._dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        self._specs = [
            TensorSpec(
                n,
                self._dtypes[n].name,
                tuple(
                    d if d >= 0 else f"{n}_dim{i}" for i, d in enumerate(engine.get_tensor_shape(n))
                ),
            )
            for n in self._inputs
        ]

    def _deactivate_impl(self) -> None:
        for mem, _ in self._mem.values():
            self._dev.free(mem)
        self._mem.clear()
        self._dev.close()
        self._context = self._engine = self._runtime = None

    def _input_specs_impl(self) -> list[TensorSpec]:
        return list(self._specs)

    def _output_names_impl(self) -> list[str]:
        return list(self._outputs)

    def _buffer(self, name: str, nbytes: int) -> int:
        """The device buffer for `name`, grown when a larger shape needs more room."""
        mem, size = self._mem.get(name, (None, 0))
        if mem is None or size < nbytes:
            if mem is not None:
                self._dev.free(mem)
            mem, size = self._dev.alloc(nbytes), max(nbytes, 1)
            self._mem[name] = (mem, size)
        return self._dev.ptr(mem)

    def _infer_impl(self, feeds: Feeds) -> dict[str, np.ndarray]:
        missing = [n for n in self._inputs if n not in feeds]
        unknown = [n for n in feeds if n not in self._inputs]
        if missing or unknown:
            raise InputError(
                f"given {describe_feeds(feeds)}; this engine takes exactly {self._inputs}"
            )
        assert self.manifest is not None
        arrays = {n: np.ascontiguousarray(feeds[n], dtype=self._dtypes[n]) for n in self._inputs}
        check_profile(self.manifest.profiles, {n: a.shape for n, a in arrays.items()})
        ctx = self._context
        for name, arr in arrays.items():
            if not ctx.set_input_shape(name, arr.shape):
                raise InputError(f"TensorRT refused shape {arr.shape} for '{name}'")
            ptr = self._buffer(name, arr.nbytes)
            self._dev.to_device(self._mem[name][0], arr)
            ctx.set_tensor_address(name, ptr)
        out = {}
        for name in self._outputs:
            shape = tuple(int(d) for d in ctx.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise InputError(
                    f"TensorRT could not infer the shape of output '{name}' "
                    f"({shape}) from {describe_feeds(arrays)}"
                )
            out[name] = np.empty(shape, dtype=self._dtypes[name])
            ctx.set_tensor_address(name, self._buffer(name, out[name].nbytes))
        if not ctx.execute_async_v3(self._dev.handle):
            raise DeviceError(
                f"TensorRT failed to run {describe_feeds(feeds)}: "
                f"{' | '.join(self._logger.messages[-3:]) or 'no message'}"
            )
        for name, arr in out.items():
            self._dev.to_host(arr, self._mem[name][0])
        self._dev.synchronize()
        return out

    def synchronize(self) -> None:
        if self.active:
            self._dev.synchronize()
