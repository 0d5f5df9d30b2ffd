"""ONNX → TensorRT engine, with optimization profiles from batch and length ranges.

The builder side of TensorRT: `build_engine` parses an ONNX file, builds a plan for the
profiles the ranges give and writes `model.plan` with its manifest (`model.plan.json`, see
`rnnedge.runtime.backends.trt_plan`); `ensure_engine` reuses a cached plan only when every
manifest field matches; `EngineFromOnnx` wraps that as a loader for `TensorRTRunner`, so the
runtime (layer 1) runs plans without ever importing this module.

Precision per TensorRT major version: 10.x builds weakly typed networks where `fp16` is the
`BuilderFlag.FP16` hint; 11.x builds strongly typed networks only, where precision comes from
the ONNX tensor types, so `fp16` is refused there with the way to get an fp16-typed ONNX.
Nothing here imports tensorrt until a build is asked for.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rnnedge.errors import ExportError, InputError, ModelFileError, RuntimeUnavailableError
from rnnedge.fileio import atomic_write_bytes, sha256_file
from rnnedge.runtime.backends.trt_plan import (
    COMPARED,
    ENVIRONMENT,
    Manifest,
    Profile,
    Range,
    Shape,
    cache_decision,
    check_profile,
    check_range,
    collecting_logger,
    environment,
    manifest_path,
    module_present,
    profiles_from_ranges,
    require_tensorrt,
    stale_reason,
    trt_major,
)
from rnnedge.spec import RnnSpec

__all__ = [
    "COMPARED",
    "ENVIRONMENT",
    "PRECISIONS",
    "EngineFromOnnx",
    "Manifest",
    "Profile",
    "Range",
    "Shape",
    "build_engine",
    "builder_settings",
    "cache_decision",
    "check_precision",
    "check_profile",
    "check_range",
    "default_plan_path",
    "ensure_engine",
    "manifest_path",
    "module_present",
    "profiles_from_ranges",
    "spec_for_file",
    "stale_reason",
    "trt_major",
    "wanted_manifest",
]

PRECISIONS = ("fp32", "fp16", "typed")


def spec_for_file(onnx_path: Path) -> RnnSpec:
    from rnnedge.runtime.backends.ort import open_session
    from rnnedge.runtime.foreign import resolve_spec

    return resolve_spec(open_session(onnx_path), source=str(onnx_path))


def wanted_manifest(
    trt: Any,
    onnx_path: Path,
    profiles: dict[str, Profile],
    precision: str,
    builder: dict[str, Any],
    device_id: int = 0,
) -> Manifest:
    """The manifest a build of `onnx_path` with these settings would get here, now."""
    env = environment(trt, device_id)
    return Manifest(
        env["tensorrt_version"],
        env["gpu_name"],
        env["compute_capability"],
        env["cuda_version"],
        sha256_file(onnx_path),
        profiles,
        precision,
        builder,
        datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def builder_settings(
    trt: Any, precision: str, workspace_gb: float, allow_tf32: bool
) -> dict[str, Any]:
    """The builder settings a plan depends on, as recorded in its manifest."""
    return {
        "workspace_gb": float(workspace_gb),
        "strongly_typed": precision == "typed" or trt_major(trt) >= 11,
        "tf32": bool(allow_tf32),
    }


def _parser_error(err: Any) -> str:
    """One parser error as `description (node name, op)`; older bindings only have str()."""
    try:
        node = err.node_name() if hasattr(err, "node_name") else err.node()
        op = f", {err.node_operator()}" if hasattr(err, "node_operator") else ""
        return f"{err.desc()} (node {node}{op})"
    except (AttributeError, TypeError):
        return str(err)


def check_precision(trt: Any, precision: str) -> None:
    if precision not in PRECISIONS:
        raise InputError(f"precision '{precision}' is not one of {PRECISIONS}")
    if precision == "fp16" and trt_major(trt) >= 11:
        raise InputError(
            f"TensorRT {trt.__version__} builds strongly typed networks only: BuilderFlag.FP16 "
            "is gone and precision comes from the ONNX tensor types. Convert the model to an "
            "fp16-typed ONNX (rnnedge.runtime.backends.ort_cuda.convert_fp16(src, dst)) and build "
            "that file with precision='typed'"
        )


def build_engine(
    onnx_path: str | os.PathLike[str],
    plan_path: str | os.PathLike[str],
    *,
    batch: Any = (1, 1, 1),
    seq_len: Any = (1, 64, 1024),
    precision: str = "fp32",
    timing_cache: str | os.PathLike[str] | None = None,
    workspace_gb: float = 2.0,
    allow_tf32: bool = False,
    spec: RnnSpec | None = None,
    device_id: int = 0,
) -> Path:
    """Build a TensorRT engine for an ONNX file and write `plan` + `plan.json` atomically.

    Args:
        batch, seq_len: (min, opt, max) ranges; the profile covers exactly these.
        precision: "fp32" (as typed, no reduced precision), "fp16" (TensorRT 10's FP16
            builder flag; refused on 11), or "typed" (a strongly typed network: precision from
            the ONNX types, e.g. a file from `convert_fp16`).
        timing_cache: a file to read tactic timings from and write them back to; builds of
            related models get much faster.
        workspace_gb: the builder's workspace memory pool limit.
        allow_tf32: keep TensorRT's default TF32 for fp32 layers (off: fp32 parity).
        spec: the model's recurrent contract; read from the file when None.

    Raises:
        InputError: bad ranges or precision, or inputs the profile cannot cover.
        ExportError: the parser or builder failed; their messages are listed.
    """
    trt = require_tensorrt("building a TensorRT engine")
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    if trt_major(trt) < 10:
        raise RuntimeUnavailableError(f"rnnedge needs TensorRT ≥ 10, found {trt.__version__}")
    check_precision(trt, precision)
    if not onnx_path.is_file():
        raise ModelFileError(f"model file '{onnx_path}' does not exist (expected an .onnx file)")
    profiles = profiles_from_ranges(spec or spec_for_file(onnx_path), batch, seq_len)
    settings = builder_settings(trt, precision, workspace_gb, allow_tf32)
    logger = collecting_logger(trt)
    builder = trt.Builder(logger)
    flags = 0
    if settings["strongly_typed"] and trt_major(trt) == 10:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ExportError(
            f"TensorRT's ONNX parser rejected '{onnx_path}': "
            f"{'; '.join(errors) or 'no error recorded'}"
        )
    names = [network.get_input(i).name for i in range(network.num_inputs)]
    if sorted(names) != sorted(profiles):
        raise InputError(
            f"the network's inputs {names} differ from the profile's "
            f"{sorted(profiles)}; pass the spec that belongs to this file"
        )
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    if not allow_tf32 and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profiles.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    cache = None
    if timing_cache is not None:
        cache_file = Path(timing_cache)
        cache = config.create_timing_cache(cache_file.read_bytes() if cache_file.is_file() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    manifest = wanted_manifest(trt, onnx_path, profiles, precision, settings, device_id)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(
            f"TensorRT built no engine for '{onnx_path}': "
            f"{' | '.join(logger.messages[-5:]) or 'no message logged'}"
        )
    manifest_path(plan_path).unlink(missing_ok=True)  # a plan is never left beside a stale one
    atomic_write_bytes(plan_path, bytes(serialized))
    manifest.write(manifest_path(plan_path))
    if cache is not None and timing_cache is not None:
        atomic_write_bytes(Path(timing_cache), bytes(config.get_timing_cache().serialize()))
    return plan_path


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

    Args:
        onnx_path: the model.
        plan_path: where the plan lives; `default_plan_path` when None.
        **build: `build_engine` keyword arguments (batch, seq_len, precision, device_id, …).

    Returns (plan path, reused, reason): the reason names the field that forced a rebuild.
    """
    trt = require_tensorrt("building a TensorRT engine")
    onnx_path = Path(onnx_path)
    precision = build.get("precision", "fp32")
    if not onnx_path.is_file():
        raise ModelFileError(f"model file '{onnx_path}' does not exist (expected an .onnx file)")
    plan = Path(plan_path) if plan_path else default_plan_path(onnx_path, precision)
    check_precision(trt, precision)
    profiles = profiles_from_ranges(
        build.get("spec") or spec_for_file(onnx_path),
        build.get("batch", (1, 1, 1)),
        build.get("seq_len", (1, 64, 1024)),
    )
    settings = builder_settings(
        trt, precision, build.get("workspace_gb", 2.0), build.get("allow_tf32", False)
    )
    wanted = wanted_manifest(
        trt, onnx_path, profiles, precision, settings, int(build.get("device_id", 0))
    )
    try:
        on_disk = Manifest.read(manifest_path(plan)) if plan.is_file() else None
    except ModelFileError as exc:  # an unreadable manifest is a reason to rebuild
        return build_engine(onnx_path, plan, **build), False, str(exc)
    reuse, reason = cache_decision(on_disk, wanted)
    if reuse:
        return plan, True, reason
    return build_engine(onnx_path, plan, **build), False, reason


class EngineFromOnnx:
    """A loader for `TensorRTRunner`: the plan for an ONNX file, built or reused from cache.

    Polygraphy's split: the runner takes a callable that returns a plan, so the runtime never
    imports the builder and this class decides when a build happens. Arguments are checked
    here, when the loader is made; calling it does the build (`ensure_engine`) and returns
    the plan's path, and afterwards `reused` and `reason` say whether the cache served it.

    Args:
        onnx_path: the model to build from.
        plan_path: where the plan goes; the engine cache (`default_plan_path`) when None.
        batch, seq_len: (min, opt, max) ranges of the optimization profile.
        precision: "fp32", "fp16" (TensorRT 10) or "typed"; see `build_engine`.
        timing_cache, workspace_gb, allow_tf32, spec: as for `build_engine`.
        device_id: the CUDA device the plan is built for (and must run on).
    """

    def __init__(
        self,
        onnx_path: str | os.PathLike[str],
        plan_path: str | os.PathLike[str] | None = None,
        *,
        batch: Any = (1, 2, 16),
        seq_len: Any = (1, 64, 1024),
        precision: str = "fp32",
        timing_cache: str | os.PathLike[str] | None = None,
        workspace_gb: float = 2.0,
        allow_tf32: bool = False,
        spec: RnnSpec | None = None,
        device_id: int = 0,
    ) -> None:
        if precision not in PRECISIONS:
            raise InputError(f"precision '{precision}' is not one of {PRECISIONS}")
        self.onnx_path = Path(onnx_path)
        self.plan_path = Path(plan_path) if plan_path is not None else None
        self.device_id = int(device_id)
        self.build: dict[str, Any] = {
            "batch": check_range("batch", batch),
            "seq_len": check_range("seq_len", seq_len),
            "precision": precision,
            "timing_cache": timing_cache,
            "workspace_gb": float(workspace_gb),
            "allow_tf32": bool(allow_tf32),
            "spec": spec,
            "device_id": self.device_id,
        }
        self.reused: bool | None = None
        self.reason = ""

    def __call__(self) -> Path:
        plan, self.reused, self.reason = ensure_engine(self.onnx_path, self.plan_path, **self.build)
        return plan

    def __repr__(self) -> str:
        return (
            f"EngineFromOnnx('{self.onnx_path}', batch={self.build['batch']}, "
            f"seq_len={self.build['seq_len']}, precision='{self.build['precision']}', "
            f"device_id={self.device_id})"
        )
