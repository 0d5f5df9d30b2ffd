"""TensorRT engines as a runner, and ONNX Runtime's TensorRT provider options.

A plan is loaded only after its manifest (see `rnnedge.exporters.tensorrt`) matches the
running TensorRT and GPU, and inputs are checked against the stored optimization profile
before anything runs, so an out-of-range length is refused with the range instead of a
TensorRT error code. IO is by tensor name (`set_input_shape`, `set_tensor_address`,
`execute_async_v3`) on one CUDA stream; device memory comes from cuda-python (the
`tensorrt` extra) or, without it, from torch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rnnedge._optional import require
from rnnedge.errors import InputError, ModelFileError, RuntimeUnavailableError
from rnnedge.exporters.tensorrt import (
    Manifest,
    Profile,
    build_engine,
    builder_settings,
    cache_decision,
    check_precision,
    collecting_logger,
    environment,
    has_cuda_python,
    manifest_path,
    module_present,
    profiles_from_ranges,
    require_tensorrt,
    spec_for_file,
    stale_reason,
    wanted_manifest,
)
from rnnedge.fileio import sha256_file
from rnnedge.runtime.backends.base import Feeds, Runner, describe_feeds
from rnnedge.runtime.backends.ortdist import cuda_device_missing
from rnnedge.spec import TensorSpec

TRT_EP = "TensorrtExecutionProvider"


def profile_violations(profiles: Mapping[str, Profile],
                       shapes: Mapping[str, Sequence[int]]) -> list[str]:
    """Every input whose shape falls outside the engine's profile, said with the range."""
    problems = []
    for name, shape in shapes.items():
        if name not in profiles:
            continue
        lo, _, hi = profiles[name]
        shape = tuple(int(d) for d in shape)
        if len(shape) != len(lo):
            problems.append(f"'{name}' has rank {len(shape)} (shape {shape}); the engine "
                            f"expects rank {len(lo)}, between {lo} and {hi}")
            continue
        bad = [f"dim {i} = {d} not in [{a}, {b}]"
               for i, (d, a, b) in enumerate(zip(shape, lo, hi, strict=True)) if not a <= d <= b]
        if bad:
            problems.append(f"'{name}' has shape {shape}, outside the engine's profile "
                            f"{lo} … {hi} ({'; '.join(bad)})")
    return problems


def check_profile(profiles: Mapping[str, Profile], shapes: Mapping[str, Sequence[int]]) -> None:
    """Refuse shapes outside the profile before TensorRT sees them."""
    problems = profile_violations(profiles, shapes)
    if problems:
        raise InputError("; ".join(problems) + "; rebuild the engine with wider batch/seq_len "
                         "ranges (rnnedge.exporters.tensorrt.build_engine)")


def format_shapes(profiles: Mapping[str, Profile], which: int) -> str:
    """`x:1x1x1,h0:2x1x128` — ORT's TensorRT provider syntax for one of min/opt/max."""
    return ",".join(f"{name}:{'x'.join(str(d) for d in shapes[which])}"
                    for name, shapes in profiles.items())


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
        opts.update({"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(cache_dir),
                     "trt_timing_cache_enable": "True", "trt_timing_cache_path": str(cache_dir)})
    if workspace_gb is not None:
        opts["trt_max_workspace_size"] = str(int(workspace_gb * (1 << 30)))
    return opts


def ort_trt_providers(profiles: Mapping[str, Profile], **options: Any) -> list[Any]:
    """Providers for `InferenceSession`: TensorRT first, CUDA then CPU for what it leaves."""
    trt_opts = ort_trt_options(profiles, **options)
    return [(TRT_EP, trt_opts), ("CUDAExecutionProvider", {"device_id": trt_opts["device_id"]}),
            "CPUExecutionProvider"]


def default_plan_path(onnx_path: Path, precision: str) -> Path:
    """Where plans built on demand are cached: `$RNNEDGE_CACHE` or `~/.cache/rnnedge`.

    The name carries the ONNX file's hash, so editing the model never picks up an old plan
    (the manifest would refuse it anyway) and the model's own folder is left alone.
    """
    root = Path(os.environ.get("RNNEDGE_CACHE") or Path.home() / ".cache" / "rnnedge")
    return root / "engines" / f"{onnx_path.stem}-{sha256_file(onnx_path)[:16]}.{precision}.plan"


def ensure_engine(
    onnx_path: str | os.PathLike[str],
    plan_path: str | os.PathLike[str] | None = None,
    **build: Any,
) -> tuple[Path, bool, str]:
    """Reuse the cached plan for `onnx_path` when its manifest matches, else build it.

    Returns (plan path, reused, reason): the reason names the field that forced a rebuild.
    """
    trt = require_tensorrt("building a TensorRT engine")
    onnx_path = Path(onnx_path)
    precision = build.get("precision", "fp32")
    if not onnx_path.is_file():
        raise ModelFileError(f"model file '{onnx_path}' does not exist (expected an .onnx file)")
    plan = Path(plan_path) if plan_path else default_plan_path(onnx_path, precision)
    check_precision(trt, precision)
    profiles = profiles_from_ranges(build.get("spec") or spec_for_file(onnx_path),
                                    build.get("batch", (1, 1, 1)),
                                    build.get("seq_len", (1, 64, 1024)))
    settings = builder_settings(trt, precision, build.get("workspace_gb", 2.0),
                                build.get("allow_tf32", False))
    wanted = wanted_manifest(trt, onnx_path, profiles, precision, settings,
                             int(build.get("device_id", 0)))
    try:
        on_disk = Manifest.read(manifest_path(plan)) if plan.is_file() else None
    except ModelFileError as exc:  # an unreadable manifest is a reason to rebuild
        return build_engine(onnx_path, plan, **build), False, str(exc)
    reuse, reason = cache_decision(on_disk, wanted)
    if reuse:
        return plan, True, reason
    return build_engine(onnx_path, plan, **build), False, reason


class _CudaPython:
    """Device memory and a stream through cuda-python's runtime API."""

    def __init__(self, device_id: int) -> None:
        from rnnedge.exporters.tensorrt import _cudart

        self.rt = _cudart()
        self._call(self.rt.cudaSetDevice(device_id))
        self.stream = self._call(self.rt.cudaStreamCreate())
        self.handle = int(self.stream)

    def _call(self, result: Any) -> Any:
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise RuntimeError(f"CUDA runtime call failed: {err}")
        return rest[0] if len(rest) == 1 else rest

    def alloc(self, nbytes: int) -> Any:
        return self._call(self.rt.cudaMalloc(max(nbytes, 1)))

    def ptr(self, mem: Any) -> int:
        return int(mem)

    def to_device(self, mem: Any, arr: np.ndarray) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call(self.rt.cudaMemcpyAsync(int(mem), arr.ctypes.data, arr.nbytes, kind,
                                           self.stream))

    def to_host(self, arr: np.ndarray, mem: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call(self.rt.cudaMemcpyAsync(arr.ctypes.data, int(mem), arr.nbytes, kind,
                                           self.stream))

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
    """Runs a TensorRT plan (or builds and caches one from an ONNX file).

    Args:
        model: `model.plan` with its `model.plan.json` manifest, or an `.onnx` file, for which
            a plan is built in the engine cache (`default_plan_path`), or reused from it when
            its manifest still matches.
        build: for an `.onnx` model: `build_engine` arguments (batch, seq_len, precision, …).
        device_id: the CUDA device.
    """

    name: ClassVar[str] = "tensorrt"
    requires: ClassVar[tuple[str, ...]] = ("tensorrt",)
    install_hint: ClassVar[str] = "pip install 'rnnedge[tensorrt]' on a machine with a GPU"

    def __init__(self, model: str | os.PathLike[str], *, build: Mapping[str, Any] | None = None,
                 device_id: int = 0) -> None:
        super().__init__()
        self.model = Path(model)
        self.build = {"batch": (1, 2, 16), "seq_len": (1, 64, 1024), **dict(build or {})}
        self.device_id = int(device_id)
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
        if self.model.suffix == ".onnx":
            self.plan, _, self.build_reason = ensure_engine(self.model, device_id=self.device_id,
                                                            **self.build)
        else:
            self.plan = self.model
        if not self.plan.is_file():
            raise ModelFileError(f"engine file '{self.plan}' does not exist (expected a .plan "
                                 "written by rnnedge.exporters.tensorrt.build_engine)")
        manifest = Manifest.read(manifest_path(self.plan))
        if manifest is None:
            raise ModelFileError(f"'{self.plan}' has no manifest '{manifest_path(self.plan).name}'"
                                 " beside it, so nothing says which TensorRT and GPU it is for; "
                                 "rebuild it with build_engine")
        why = stale_reason(manifest, environment(trt, self.device_id))
        if why:
            raise RuntimeUnavailableError(f"engine '{self.plan}' was built for another "
                                          f"environment ({why}); rebuild it here")
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
            raise ModelFileError(f"TensorRT could not load '{self.plan}': "
                                 f"{' | '.join(self._logger.messages[-3:]) or 'no message'}")
        self._context = self._engine.create_execution_context()
        engine = self._engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        is_in = {n: engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self._inputs = [n for n in names if is_in[n]]
        self._outputs = [n for n in names if not is_in[n]]
        self._dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        self._specs = [TensorSpec(n, self._dtypes[n].name, tuple(
            d if d >= 0 else f"{n}_dim{i}" for i, d in enumerate(engine.get_tensor_shape(n))))
            for n in self._inputs]

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
            raise InputError(f"given {describe_feeds(feeds)}; this engine takes exactly "
                             f"{self._inputs}")
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
                raise InputError(f"TensorRT could not infer the shape of output '{name}' "
                                 f"({shape}) from {describe_feeds(arrays)}")
            out[name] = np.empty(shape, dtype=self._dtypes[name])
            ctx.set_tensor_address(name, self._buffer(name, out[name].nbytes))
        if not ctx.execute_async_v3(self._dev.handle):
            raise InputError(f"TensorRT failed to run {describe_feeds(feeds)}: "
                             f"{' | '.join(self._logger.messages[-3:]) or 'no message'}")
        for name, arr in out.items():
            self._dev.to_host(arr, self._mem[name][0])
        self._dev.synchronize()
        return out

    def synchronize(self) -> None:
        if self.active:
            self._dev.synchronize()
