"""Which ONNX Runtime wheels are installed, which one `import onnxruntime` really loads, and why.

Every ONNX Runtime wheel (`onnxruntime`, `onnxruntime-gpu`, `onnxruntime-directml`, …) installs
the same module, `onnxruntime`. Installed into one site directory, the last one installed
overwrites the others' files and pip still lists all of them, so a machine can show
`onnxruntime-gpu` in `pip list` while `CUDAExecutionProvider` is gone. Installed into different
directories, the first on `sys.path` shadows the rest. This module tells these cases apart from
package metadata alone (no import needed), so `ort-cuda` can say why it is unavailable, and what
to run to fix it, before any session is created.

It also finds what the CUDA provider needs around it: the lib folders of the `nvidia-*` wheels
wherever the `nvidia` namespace package lives (`preload_dlls()` only looks beside onnxruntime,
so a `pip install --target` tree misses them), and a one-node model that proves the provider
loads before a real model is opened on it.
"""

from __future__ import annotations

import glob
import importlib.metadata
import importlib.util
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

#: distributions that install the `onnxruntime` module, most common first
ORT_DISTRIBUTIONS: tuple[str, ...] = (
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-directml",
    "onnxruntime-openvino",
    "onnxruntime-rocm",
    "onnxruntime-migraphx",
    "onnxruntime-cann",
    "onnxruntime-training",
    "onnxruntime-silicon",
    "ort-nightly",
    "ort-nightly-gpu",
)
#: the distributions that carry the CUDA execution provider
GPU_DISTRIBUTIONS: tuple[str, ...] = ("onnxruntime-gpu", "ort-nightly-gpu")
GPU_FIX = "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu"


@dataclass(frozen=True)
class DistRecord:
    """One installed distribution: its version and the site directory holding its files."""

    name: str
    version: str
    location: str | None


@dataclass(frozen=True)
class ModuleInfo:
    """What `import onnxruntime` resolves to: its site directory, and (if imported) more."""

    location: str | None
    version: str | None = None
    providers: tuple[str, ...] | None = None
    error: str | None = None


Lookup = Callable[[str], DistRecord | None]
Probe = Callable[[bool], ModuleInfo]


def installed(name: str) -> DistRecord | None:
    """The installed distribution `name` from package metadata, or None."""
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return None
    try:
        location: str | None = os.path.normpath(str(dist.locate_file("")))
    except (OSError, NotImplementedError):
        location = None
    return DistRecord(name, dist.version, location)


def probe_module(import_module: bool = True) -> ModuleInfo:
    """Where `onnxruntime` would be imported from; its version and providers if imported."""
    try:
        spec = importlib.util.find_spec("onnxruntime")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin:
        return ModuleInfo(None, error="the onnxruntime module is not importable")
    # .../site-packages/onnxruntime/__init__.py -> .../site-packages
    location = os.path.normpath(str(Path(spec.origin).parent.parent))
    if not import_module:
        return ModuleInfo(location)
    try:
        import onnxruntime as ort
    except Exception as exc:  # a half-overwritten install fails in many ways
        return ModuleInfo(location, error=f"{type(exc).__name__}: {exc}")
    return ModuleInfo(
        location, getattr(ort, "__version__", None), tuple(ort.get_available_providers())
    )


@dataclass(frozen=True)
class OrtDist:
    """The diagnosis: installed ORT distributions, the one imported, and what is wrong."""

    distributions: dict[str, DistRecord]
    module: ModuleInfo
    active: str | None
    conflict: str | None

    @property
    def module_version(self) -> str | None:
        return self.module.version

    @property
    def providers(self) -> tuple[str, ...] | None:
        return self.module.providers

    @property
    def gpu_installed(self) -> list[str]:
        return [n for n in self.distributions if n in GPU_DISTRIBUTIONS]

    @property
    def has_cuda_provider(self) -> bool | None:
        """Whether CUDA is listed; None when the module was not imported."""
        if self.module.providers is None:
            return None
        return "CUDAExecutionProvider" in self.module.providers

    def installed_text(self) -> str:
        """`onnxruntime 1.32.0 (CPU), onnxruntime-gpu 1.31.1` for messages."""
        parts = []
        for rec in self.distributions.values():
            kind = " (CPU)" if rec.name == "onnxruntime" else ""
            parts.append(f"{rec.name} {rec.version}{kind}")
        return ", ".join(parts) or "no ONNX Runtime distribution"

    def gpu_problem(self) -> str | None:
        """Why the CUDA provider cannot come from this install, from metadata alone."""
        gpu = self.gpu_installed
        if not gpu:
            return (
                f"runtime 'ort-cuda' needs onnxruntime-gpu; installed: "
                f"{self.installed_text()}; install it with: {GPU_FIX}"
            )
        if self.conflict:
            return self.conflict
        if self.active is not None and self.active not in GPU_DISTRIBUTIONS:
            where = self.distributions[gpu[0]].location
            return (
                f"{gpu[0]} is installed in {where}, but `import onnxruntime` loads "
                f"{self.active} from {self.module.location}, which comes first on sys.path; "
                f"remove one of them: {GPU_FIX}"
            )
        return None

    def describe(self) -> str:
        """One line for reports: distributions, imported module, providers, problem."""
        text = f"installed: {self.installed_text()}"
        if self.active:
            text += f"; imported: {self.active} from {self.module.location}"
        if self.module.version:
            text += f" (version {self.module.version})"
        if self.module.providers is not None:
            text += f"; providers: {', '.join(self.module.providers)}"
        if self.module.error:
            text += f"; import: {self.module.error}"
        if self.conflict:
            text += f"; CONFLICT: {self.conflict}"
        return text


def _conflict(records: Sequence[DistRecord], module_location: str | None) -> str | None:
    """Two or more ORT wheels sharing the site directory the module is imported from."""
    shared = [r for r in records if r.location is not None and r.location == module_location]
    if len(shared) < 2:
        return None
    names = [r.name for r in shared]
    listing = ", ".join(f"{r.name} {r.version}" for r in shared)
    if any(n in GPU_DISTRIBUTIONS for n in names):
        fix = GPU_FIX
        effect = (
            "each overwrote the other's files in the one `onnxruntime` module, so "
            "CUDAExecutionProvider may be missing or broken"
        )
    else:
        fix = f"pip uninstall -y {' '.join(names)} && pip install <the one you want>"
        effect = "each overwrote the other's files in the one `onnxruntime` module"
    return f"{listing} are installed together in {module_location}: {effect}; fix: {fix}"


def diagnose(
    lookup: Lookup = installed,
    probe: Probe = probe_module,
    *,
    import_module: bool = True,
    names: Sequence[str] = ORT_DISTRIBUTIONS,
) -> OrtDist:
    """Diagnose the ONNX Runtime install.

    Args:
        lookup: distribution name -> `DistRecord` or None; injectable so every case can be
            tested without installing wheels.
        probe: resolves the `onnxruntime` module (and imports it when asked).
        import_module: import onnxruntime to list its providers; False keeps this to metadata.
        names: the distribution names to look for.
    """
    records = [r for r in (lookup(n) for n in names) if r is not None]
    module = probe(import_module)
    at_module = [r for r in records if r.location is not None and r.location == module.location]
    active = at_module[0].name if len(at_module) == 1 else None
    return OrtDist(
        {r.name: r for r in records}, module, active, _conflict(records, module.location)
    )


def cuda_device_missing() -> str | None:
    """Why no NVIDIA GPU is visible to this process, or None; cheap, spawns nothing.

    Looks at `CUDA_VISIBLE_DEVICES` and for the driver's device nodes (`/dev/nvidia0`,
    `/proc/driver/nvidia/gpus/*`, or WSL's `/dev/dxg`), so availability checks stay fast.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1", "none", "NoDevFiles"):
        return f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU from this process"
    nodes = glob.glob("/dev/nvidia[0-9]*") + glob.glob("/proc/driver/nvidia/gpus/*")
    if nodes or os.path.exists("/dev/dxg"):
        return None
    return "no NVIDIA GPU is visible here (no /dev/nvidia* device, no NVIDIA driver loaded)"


def nvidia_lib_dirs(locations: Sequence[str] | None = None) -> list[str]:
    """The `lib` folders of the nvidia-* wheels (CUDA runtime, cuBLAS, cuDNN, …).

    They live in the `nvidia` namespace package, which may span several site directories
    (the system's, a venv's, a `--target` folder on PYTHONPATH); every part of it is searched.

    Args:
        locations: the namespace package's folders; found with `importlib` when None.
    """
    if locations is None:
        try:
            spec = importlib.util.find_spec("nvidia")
        except (ImportError, ValueError):
            spec = None
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
    dirs: list[str] = []
    for location in locations:
        for lib in sorted(glob.glob(os.path.join(location, "*", "lib"))):
            if os.path.isdir(lib) and lib not in dirs:
                dirs.append(lib)
    return dirs


def preload_calls(dirs: Sequence[str]) -> list[tuple[str, bool, bool]]:
    """`(folder, cuda, cudnn)` for `onnxruntime.preload_dlls(cuda=, cudnn=, directory=folder)`.

    `preload_dlls(directory=...)` loads the libraries it knows by file name from that one
    folder, so each folder is asked only for what it holds; folders with the CUDA runtime or
    cuBLAS come first, since cuDNN loads against them.
    """
    calls = []
    for folder in dirs:
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        cuda = any(n.startswith(("libcudart.so", "libcublas")) for n in names)
        cudnn = any(n.startswith("libcudnn.so") for n in names)
        if cuda or cudnn:
            calls.append((folder, cuda, cudnn))
    return sorted(calls, key=lambda c: (not c[1], c[0]))


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes | int) -> bytes:
    """One protobuf field: an int as a varint (wire type 0), bytes length-delimited (type 2)."""
    if isinstance(payload, int):
        return _varint(number << 3) + _varint(payload)
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def probe_model() -> bytes:
    """A one-node ONNX model, `y = x + x` on float32[1], serialized without the onnx package.

    Opening it on the CUDA provider proves the provider's library and its CUDA/cuDNN
    dependencies load, at the cost of a few milliseconds, before a real model is opened: a
    failed provider would leave that model on the CPU provider, where fp16 RNNs crash ONNX
    Runtime inside session creation.
    """
    tensor_type = _field(1, _field(1, 1) + _field(2, _field(1, _field(1, 1))))  # float[1]

    def value_info(name: bytes) -> bytes:
        return _field(1, name) + _field(2, tensor_type)

    node = _field(1, b"x") + _field(1, b"x") + _field(2, b"y") + _field(4, b"Add")
    graph = (
        _field(1, node)
        + _field(2, b"cuda_probe")
        + _field(11, value_info(b"x"))
        + _field(12, value_info(b"y"))
    )
    return _field(1, 8) + _field(7, graph) + _field(8, _field(1, b"") + _field(2, 13))
