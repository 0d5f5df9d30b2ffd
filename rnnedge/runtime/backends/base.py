"""The Runner contract every backend follows, and the registry that finds them lazily.

Construction is cheap and never imports a heavy backend; `__enter__` does the heavy work
(session, engine, buffers). The registry maps names to "module:Class" strings so asking for
`ort-cpu` never imports torch, and asking for a missing backend says what is missing and what
is available here.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
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

        Returns the runner, so `runner = Cls(path).activate()` reads as one step.
        """
        if not self._active:
            self._activate_impl()
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
        pass

    def _input_specs_impl(self) -> list[TensorSpec]:  # pragma: no cover
        raise NotImplementedError

    def _output_names_impl(self) -> list[str]:  # pragma: no cover
        raise NotImplementedError

    def _infer_impl(self, feeds: Feeds) -> dict[str, np.ndarray]:  # pragma: no cover
        raise NotImplementedError


_REGISTRY: dict[str, str] = {}


def register(name: str, target: str) -> None:
    """Register `target` ("module:Class") under `name`; a duplicate name is a bug."""
    if name in _REGISTRY and _REGISTRY[name] != target:
        raise ValueError(f"runner name '{name}' already registered for {_REGISTRY[name]}")
    _REGISTRY[name] = target


def registered() -> list[str]:
    return list(_REGISTRY)


def runner_class(name: str) -> type[Runner]:
    """Import and return the runner class for `name`, with a helpful error when it can't be."""
    if name not in _REGISTRY:
        usable = [n for n, why in availability().items() if why is None]
        raise RuntimeUnavailableError(
            f"unknown runtime '{name}'; available here: {', '.join(usable) or 'none'} "
            f"(registered: {', '.join(_REGISTRY)})"
        )
    module_name, _, cls_name = _REGISTRY[name].partition(":")
    module = importlib.import_module(module_name)
    cls: type[Runner] = getattr(module, cls_name)
    return cls


def availability() -> dict[str, str | None]:
    """Every registered runtime mapped to None (usable here) or the reason it is not."""
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
        usable = [n for n, r in availability().items() if r is None]
        raise RuntimeUnavailableError(
            f"runtime '{name}' is not available here: {reason}; available: "
            f"{', '.join(usable) or 'none'}"
        )
    return cls


def describe_feeds(feeds: Mapping[str, Any]) -> str:
    """`x(1, 7, 2) float32, h0(...)` for error messages."""
    parts = []
    for k, v in feeds.items():
        arr = np.asarray(v)
        parts.append(f"{k}{tuple(arr.shape)} {arr.dtype}")
    return ", ".join(parts)


register("ort-cpu", "rnnedge.runtime.backends.ort:OrtCpuRunner")
register("torch", "rnnedge.modeling.torch_runner:TorchRunner")
register("ort-cuda", "rnnedge.runtime.backends.ort_cuda:OrtCudaRunner")
register("tensorrt", "rnnedge.runtime.backends.tensorrt:TensorRTRunner")
