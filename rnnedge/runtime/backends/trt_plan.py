"""What loading a TensorRT plan needs, without the builder: profiles, the manifest, the GPU.

An engine (`model.plan`) is only valid for the TensorRT version and the GPU it was built on,
and only for input shapes inside its optimization profile; none of that is recorded in the
plan in a form one can check before loading it. So every plan has a manifest beside it
(`model.plan.json`): TensorRT, GPU, compute capability, CUDA, the ONNX file's sha256, the
profiles, precision and builder settings. The runtime reads it here to refuse a stale plan
with the field that changed and to refuse out-of-profile shapes with the range; the builder
(`rnnedge.exporters.tensorrt`) writes it and decides cache reuse with the same functions.
Nothing here imports tensorrt or cuda-python until it is asked for.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from rnnedge._optional import is_available, require
from rnnedge.errors import InputError, ModelFileError, RuntimeUnavailableError
from rnnedge.fileio import atomic_write_bytes
from rnnedge.spec import RnnSpec

Shape = tuple[int, ...]
Profile = tuple[Shape, Shape, Shape]
Range = tuple[int, int, int]
MANIFEST_FORMAT = 1
#: fields that make a plan what it is; `created` only says when
COMPARED = (
    "format",
    "tensorrt_version",
    "gpu_name",
    "compute_capability",
    "cuda_version",
    "onnx_sha256",
    "precision",
    "profiles",
    "builder",
)
ENVIRONMENT = ("tensorrt_version", "gpu_name", "compute_capability", "cuda_version")


def check_range(what: str, value: Any) -> Range:
    """A (min, opt, max) triple of positive ints with min ≤ opt ≤ max, or an InputError."""
    try:
        lo, opt, hi = (int(v) for v in value)
        if any(int(v) != v for v in value):
            raise ValueError
    except (TypeError, ValueError):
        raise InputError(
            f"{what} range must be three integers (min, opt, max), got {value!r}"
        ) from None
    if lo < 1:
        raise InputError(f"{what} range {(lo, opt, hi)}: min must be ≥ 1")
    if not lo <= opt <= hi:
        raise InputError(f"{what} range {(lo, opt, hi)}: expected min ≤ opt ≤ max")
    return lo, opt, hi


def profiles_from_ranges(
    spec: RnnSpec, batch: Any = (1, 1, 1), seq_len: Any = (1, 64, 1024)
) -> dict[str, Profile]:
    """Min/opt/max shapes for every graph input, from batch and sequence-length ranges.

    The data input takes batch and seq_len on the spec's own axes (batch-first or
    time-major); each state input takes batch on its pair's `batch_axis`; every other dim
    must be fixed in the spec, since a profile cannot guess it.
    """
    b, t = check_range("batch", batch), check_range("seq_len", seq_len)
    state_axes = {p.input: p.batch_axis for p in spec.state_pairs}
    profiles: dict[str, Profile] = {}
    for tensor in spec.inputs:
        ranged: dict[int, Range] = {}
        if tensor.name == spec.data_input:
            ranged = {spec.batch_axis: b, spec.seq_axis: t}
        elif tensor.name in state_axes:
            ranged = {state_axes[tensor.name]: b}
        shapes: list[list[int]] = [[], [], []]
        for axis, dim in enumerate(tensor.shape):
            if axis in ranged:
                values: tuple[int, ...] = ranged[axis]
            elif isinstance(dim, int):
                values = (dim, dim, dim)
            else:
                raise InputError(
                    f"input '{tensor.name}' has symbolic dim '{dim}' at axis {axis}, which is "
                    "neither its batch nor its seq_len axis; a profile needs it fixed"
                )
            for k in range(3):
                shapes[k].append(values[k])
        profiles[tensor.name] = (tuple(shapes[0]), tuple(shapes[1]), tuple(shapes[2]))
    return profiles


@dataclass
class Manifest:
    """What a plan was built from and for; stored as JSON beside it."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    cuda_version: str
    onnx_sha256: str
    profiles: dict[str, Profile]
    precision: str
    builder: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    format: int = MANIFEST_FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "manifest") -> Manifest:
        """Parse a manifest; anything malformed is a broken file, named as such."""
        try:
            d = json.loads(text)
            known = {f.name for f in fields(cls)}
            d = {k: v for k, v in d.items() if k in known}
            d["profiles"] = {
                str(name): tuple(tuple(int(x) for x in s) for s in shapes)
                for name, shapes in d["profiles"].items()
            }
            manifest = cls(**d)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ModelFileError(
                f"{source}: not a valid rnnedge engine manifest "
                f"({type(exc).__name__}: {exc}); rebuild the engine"
            ) from exc
        if any(len(p) != 3 for p in manifest.profiles.values()):
            raise ModelFileError(f"{source}: profiles must hold (min, opt, max) shapes")
        return manifest

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Manifest | None:
        """The manifest at `path`, or None when there is none."""
        p = Path(path)
        if not p.is_file():
            return None
        return cls.from_json(p.read_text(encoding="utf-8"), str(p))

    def write(self, path: str | os.PathLike[str]) -> Path:
        return atomic_write_bytes(Path(path), self.to_json().encode("utf-8"))


def manifest_path(plan: str | os.PathLike[str]) -> Path:
    """`model.plan` → `model.plan.json`."""
    p = Path(plan)
    return p.with_name(p.name + ".json")


def _differences(
    have: Mapping[str, Any], want: Mapping[str, Any], keys: Any, prefix: str = ""
) -> list[str]:
    """`field differs: plan has A, wanted B`, one per differing key, nested dicts by key."""
    out = []
    for key in keys:
        a, b = have.get(key), want.get(key)
        if a == b:
            continue
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            sub = list(dict.fromkeys([*a, *b]))
            out += _differences(a, b, sub, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key} differs: plan has {a!r}, wanted {b!r}")
    return out


def cache_decision(on_disk: Manifest | None, wanted: Manifest) -> tuple[bool, str]:
    """(reuse, reason): reuse a cached plan only when every field but `created` matches."""
    if on_disk is None:
        return False, "no manifest beside the plan, so nothing says what it was built for"
    diffs = _differences(asdict(on_disk), asdict(wanted), COMPARED)
    if diffs:
        return False, "; ".join(diffs)
    return True, f"manifest matches (built {on_disk.created or 'at an unknown time'})"


def stale_reason(manifest: Manifest, environment: Mapping[str, str]) -> str | None:
    """Why a plan cannot run in `environment` (TensorRT, GPU, CUDA), or None."""
    diffs = _differences(asdict(manifest), environment, ENVIRONMENT)
    return "; ".join(diffs) or None


def device_info(device_id: int = 0) -> dict[str, str]:
    """GPU name, compute capability and CUDA runtime version, via cuda-python or torch.

    cuda-python (the `tensorrt` extra) is asked first, so the same machine always reports the
    same CUDA version and its plans do not look stale to one another.
    """
    if has_cuda_python():
        try:
            rt = cudart()
            err, prop = rt.cudaGetDeviceProperties(device_id)
            err2, version = rt.cudaRuntimeGetVersion()
            if int(err) == 0 and int(err2) == 0:
                name = prop.name.decode() if isinstance(prop.name, bytes) else str(prop.name)
                return {
                    "gpu_name": name.strip("\x00 "),
                    "compute_capability": f"{prop.major}.{prop.minor}",
                    "cuda_version": f"{version // 1000}.{(version % 1000) // 10}",
                }
        except ImportError:
            pass
    if module_present("torch"):
        torch = require("torch", "reading the GPU's properties")
        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(device_id)
            return {
                "gpu_name": torch.cuda.get_device_name(device_id),
                "compute_capability": f"{major}.{minor}",
                "cuda_version": str(torch.version.cuda),
            }
    raise RuntimeUnavailableError(
        "cannot read the GPU's properties: needs cuda-python (pip install 'rnnedge[tensorrt]') "
        "or torch with CUDA, and a visible GPU"
    )


def module_present(name: str) -> bool:
    """`name` is an installed module with code, not a bare directory on `sys.path`.

    A folder such as a test suite's `tests/tensorrt/` is found as a namespace package
    (no origin) once its parent is on `sys.path`; it must not count as TensorRT.
    """
    if not is_available(name):
        return False
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return False
    return spec is not None and spec.origin not in (None, "namespace")


def require_tensorrt(purpose: str) -> Any:
    """The real `tensorrt` module, or an error naming the extra; never a look-alike folder."""
    if not module_present("tensorrt"):
        raise RuntimeUnavailableError(
            f"{purpose} needs the Python package 'tensorrt', which is not installed here; "
            "install it with: pip install 'rnnedge[tensorrt]' (a machine with an NVIDIA GPU)"
        )
    return require("tensorrt", purpose)


def has_cuda_python() -> bool:
    """cuda-python's runtime bindings are importable (checked without importing them)."""
    return module_present("cuda.bindings") or module_present("cuda.cudart")


def cudart() -> Any:
    """cuda-python's runtime API: `cuda.bindings.runtime` (12.6+), else the old `cuda.cudart`."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        from cuda import cudart as runtime
    return runtime


def environment(trt: Any, device_id: int = 0) -> dict[str, str]:
    """The running TensorRT version and GPU, in manifest field names."""
    return {"tensorrt_version": str(trt.__version__), **device_info(device_id)}


def trt_major(trt: Any) -> int:
    return int(str(trt.__version__).split(".")[0])


def collecting_logger(trt: Any) -> Any:
    """A TensorRT logger that keeps warnings and errors, so failures can quote them."""

    class _Logger(trt.ILogger):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            keep = (
                trt.ILogger.Severity.INTERNAL_ERROR,
                trt.ILogger.Severity.ERROR,
                trt.ILogger.Severity.WARNING,
            )
            if severity in keep:
                self.messages.append(f"{getattr(severity, 'name', severity)}: {msg}")

    return _Logger()


def profile_violations(
    profiles: Mapping[str, Profile], shapes: Mapping[str, Sequence[int]]
) -> list[str]:
    """Every input whose shape falls outside the engine's profile, said with the range."""
    problems = []
    for name, shape in shapes.items():
        if name not in profiles:
            continue
        lo, _, hi = profiles[name]
        shape = tuple(int(d) for d in shape)
        if len(shape) != len(lo):
            problems.append(
                f"'{name}' has rank {len(shape)} (shape {shape}); the engine "
                f"expects rank {len(lo)}, between {lo} and {hi}"
            )
            continue
        bad = [
            f"dim {i} = {d} not in [{a}, {b}]"
            for i, (d, a, b) in enumerate(zip(shape, lo, hi, strict=True))
            if not a <= d <= b
        ]
        if bad:
            problems.append(
                f"'{name}' has shape {shape}, outside the engine's profile "
                f"{lo} … {hi} ({'; '.join(bad)})"
            )
    return problems


def check_profile(profiles: Mapping[str, Profile], shapes: Mapping[str, Sequence[int]]) -> None:
    """Refuse shapes outside the profile before TensorRT sees them."""
    problems = profile_violations(profiles, shapes)
    if problems:
        raise InputError(
            "; ".join(problems) + "; rebuild the engine with wider batch/seq_len "
            "ranges (rnnedge.exporters.tensorrt.build_engine)"
        )
