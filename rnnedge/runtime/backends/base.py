"""The Runner contract every backend follows, and the registry that finds them lazily.

Construction is cheap and never imports a heavy backend; `activate()` does the heavy work
(session, engine, buffers). The registry maps names to "module:Class" strings plus what can be
checked without importing anything: the modules a backend needs (`importlib.util.find_spec`)
and files their packages must ship (the CUDA provider library inside `onnxruntime/capi`). So
`rnnedge.load` on a runtime-only install probes every backend statically and imports only the
one it runs; the detailed reasons (package metadata, provider lists) are read only for a
runtime that passed those checks or for a full listing (`availability`, `rnnedge runtimes`).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rnnedge._optional import is_available
from rnnedge.errors import RnnEdgeError, RuntimeUnavailableError
from rnnedge.spec import TensorSpec

Feeds = Mapping[str, np.ndarray]


class Runner:
    """Base of all runners: lifecycle checks here, backend work in the `_impl` methods."""

    name: ClassVar[str] = "runner"
    #: modules that must be importable for this runner to work at all
    requires: ClassVar[tuple[str, ...]] = ()
    #: a short install hint shown when `requires` is not met
    install_hint: ClassVar[str] = ""

    def __init__(self) -> None:
        self._active = False

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Why this runner cannot work here, or None. Must not import the backend."""
        missing = [m for m in cls.requires if not is_available(m)]
        if missing:
            return f"missing {', '.join(missing)} ({cls.install_hint})"
        return None

    def activate(self) -> Runner:
        """Do the heavy work (session, engine, buffers) once; a second call does nothing.

        A failed activation releases whatever it had taken before raising, so a caller never
        holds half a runner. Returns the runner, so `runner = Cls(path).activate()` reads as
        one step.
        """
        if not self._active:
            try:
                self._activate_impl()
            except BaseException:
                # the error being raised is the one to report; a release that trips over
                # the half-built state must not replace it
                with contextlib.suppress(Exception):
                    self._deactivate_impl()
                raise
            self._active = True
        return self

    def deactivate(self) -> None:
        """Release what `activate` took; safe to call twice or on a runner never activated."""
        if self._active:
            try:
                self._deactivate_impl()
            finally:
                self._active = False

    def __enter__(self) -> Runner:
        return self.activate()

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    @property
    def active(self) -> bool:
        return self._active

    def _check_active(self) -> None:
        if not self._active:
            raise RnnEdgeError(f"runner '{self.name}' is not active; use it in a `with` block")

    def input_specs(self) -> list[TensorSpec]:
        self._check_active()
        return self._input_specs_impl()

    def output_names(self) -> list[str]:
        self._check_active()
        return self._output_names_impl()

    def infer(self, feeds: Feeds) -> dict[str, np.ndarray]:
        """Run once; feeds and outputs by name, numpy in and out."""
        self._check_active()
        return self._infer_impl(feeds)

    def synchronize(self) -> None:
        """Wait for queued device work, so timings are honest; a no-op on CPU."""

    # -- backend hooks -------------------------------------------------------------------
    def _activate_impl(self) -> None:  # pragma: no cover - every runner overrides
        raise NotImplementedError

    def _deactivate_impl(self) -> None:
        """Release resources; also called after a failed `_activate_impl`, so it must cope
        with a half-built runner."""

    def _input_specs_impl(self) -> list[TensorSpec]:  # pragma: no cover
        raise NotImplementedError

    def _output_names_impl(self) -> list[str]:  # pragma: no cover
        raise NotImplementedError

    def _infer_impl(self, feeds: Feeds) -> dict[str, np.ndarray]:  # pragma: no cover
        raise NotImplementedError


@dataclass(frozen=True)
class Backend:
    """A registry entry: where the runner class lives, and what can be checked without it.

    Attributes:
        target: "module:Class", imported only when the runner is wanted.
        requires: modules that must be findable (`find_spec`, nothing imported).
        files: (module, glob) pairs: a file that module's package folder must hold, e.g.
            the CUDA provider library that only GPU builds of onnxruntime ship.
        install_hint: what to run when a check fails.
    """

    target: str
    requires: tuple[str, ...] = ()
    files: tuple[tuple[str, str], ...] = ()
    install_hint: str = ""


_REGISTRY: dict[str, Backend] = {}


def register(
    name: str,
    target: str,
    *,
    requires: tuple[str, ...] = (),
    files: tuple[tuple[str, str], ...] = (),
    install_hint: str = "",
) -> None:
    """Register `target` ("module:Class") under `name`; a duplicate name is a bug."""
    entry = Backend(target, tuple(requires), tuple(files), install_hint)
    if name in _REGISTRY and _REGISTRY[name] != entry:
        raise ValueError(f"runner name '{name}' already registered for {_REGISTRY[name].target}")
    _REGISTRY[name] = entry


def registered() -> list[str]:
    return list(_REGISTRY)


def _package_folder(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    locations = list(spec.submodule_search_locations or ()) if spec is not None else []
    return Path(locations[0]) if locations else None


def probe(name: str) -> str | None:
    """Why runtime `name` cannot work here from static checks alone, or None if it may.

    Imports nothing and reads no package metadata: a None here still leaves the runner's own
    `unavailable_reason` to say the final word (see `usable`).
    """
    entry = _REGISTRY.get(name)
    if entry is None:
        return f"unknown runtime '{name}'"
    hint = f" ({entry.install_hint})" if entry.install_hint else ""
    missing = [m for m in entry.requires if not is_available(m)]
    if missing:
        return f"missing {', '.join(missing)}{hint}"
    for module, pattern in entry.files:
        folder = _package_folder(module)
        if folder is None or not any(folder.glob(pattern)):
            return f"the installed {module} has no {pattern}{hint}"
    return None


def runner_class(name: str) -> type[Runner]:
    """Import and return the runner class for `name`, with a helpful error when it can't be."""
    if name not in _REGISTRY:
        usable_here = [n for n, why in availability().items() if why is None]
        raise RuntimeUnavailableError(
            f"unknown runtime '{name}'; available here: {', '.join(usable_here) or 'none'} "
            f"(registered: {', '.join(_REGISTRY)})"
        )
    module_name, _, cls_name = _REGISTRY[name].target.partition(":")
    module = importlib.import_module(module_name)
    cls: type[Runner] = getattr(module, cls_name)
    return cls


def usable(name: str) -> str | None:
    """Why runtime `name` cannot work here, or None; imports its runner only when the static
    checks pass, so a missing backend costs a file lookup, not an import."""
    why = probe(name)
    if why is not None:
        return why
    try:
        return runner_class(name).unavailable_reason()
    except ImportError as exc:  # a broken backend must not break the others
        return f"import failed: {exc}"


def availability() -> dict[str, str | None]:
    """Every registered runtime mapped to None (usable here) or the detailed reason it is not.

    Asks every runner class (importing rnnedge's backend modules, never the heavy packages
    they wrap), so a listing explains each absence in full; `usable` is the cheap check.
    """
    out: dict[str, str | None] = {}
    for name in _REGISTRY:
        try:
            out[name] = runner_class(name).unavailable_reason()
        except ImportError as exc:  # a broken backend must not break the others
            out[name] = f"import failed: {exc}"
    return out


def require_runner(name: str) -> type[Runner]:
    """The runner class for `name`, refusing (with what is available) when it can't run here."""
    cls = runner_class(name)
    reason = cls.unavailable_reason()
    if reason is not None:
        usable_here = [n for n, r in availability().items() if r is None]
        raise RuntimeUnavailableError(
            f"runtime '{name}' is not available here: {reason}; available: "
            f"{', '.join(usable_here) or 'none'}"
        )
    return cls


def describe_feeds(feeds: Mapping[str, Any]) -> str:
    """`x(1, 7, 2) float32, h0(...)` for error messages."""
    parts = []
    for k, v in feeds.items():
        arr = np.asarray(v)
        parts.append(f"{k}{tuple(arr.shape)} {arr.dtype}")
    return ", ".join(parts)


_ORT = ("onnxruntime",)
register(
    "ort-cpu",
    "rnnedge.runtime.backends.ort:OrtCpuRunner",
    requires=_ORT,
    install_hint="pip install 'rnnedge[cpu]'",
)
register(
    "torch",
    "rnnedge.modeling.torch_runner:TorchRunner",
    requires=("torch",),
    install_hint="pip install torch==2.13.0",
)
register(
    "ort-cuda",
    "rnnedge.runtime.backends.ort_cuda:OrtCudaRunner",
    requires=_ORT,
    files=(("onnxruntime", "capi/*onnxruntime_providers_cuda.*"),),
    install_hint="pip install 'rnnedge[gpu]'",
)
register(
    "tensorrt",
    "rnnedge.runtime.backends.tensorrt:TensorRTRunner",
    requires=("tensorrt",),
    install_hint="pip install 'rnnedge[tensorrt]' on a machine with a GPU",
)
register(
    "openvino",
    "rnnedge.runtime.backends.openvino:OpenVINORunner",
    requires=("openvino",),
    install_hint="pip install 'rnnedge[openvino]'",
)
