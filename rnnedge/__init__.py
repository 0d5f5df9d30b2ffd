"""rnnedge: recurrent PyTorch models to ONNX Runtime and TensorRT, proven equal to eager.

The public surface is `__all__`: `load` and `Model`/`Stream` to run a model (numpy +
onnxruntime), `export` to make one (torch), and the errors, each with its own exit code.
Names are imported on first use, so `import rnnedge` costs next to nothing and an app that
only loads models never imports the export side.
"""

from __future__ import annotations

import importlib as _importlib
import typing as _typing

__version__ = "0.1.0"

# public name -> module that defines it; imported on first access (PEP 562)
_LAZY: dict[str, str] = {
    "load": "rnnedge.runtime.model",
    "Model": "rnnedge.runtime.model",
    "Stream": "rnnedge.runtime.stream",
    "export": "rnnedge.exporters.onnx",
    "RnnEdgeError": "rnnedge.errors",
    "DeviceError": "rnnedge.errors",
    "InputError": "rnnedge.errors",
    "ModelFileError": "rnnedge.errors",
    "RuntimeUnavailableError": "rnnedge.errors",
    "UnsupportedModelError": "rnnedge.errors",
    "ExportError": "rnnedge.errors",
    "ParityError": "rnnedge.errors",
    "StreamError": "rnnedge.errors",
    "QualityError": "rnnedge.errors",
    "MachineBusyError": "rnnedge.errors",
}

__all__ = [
    "DeviceError",
    "ExportError",
    "InputError",
    "MachineBusyError",
    "Model",
    "ModelFileError",
    "ParityError",
    "QualityError",
    "RnnEdgeError",
    "RuntimeUnavailableError",
    "Stream",
    "StreamError",
    "UnsupportedModelError",
    "__version__",
    "export",
    "load",
]

if _typing.TYPE_CHECKING:  # what type checkers and IDEs see; at run time `__getattr__` provides it
    from rnnedge.errors import (
        DeviceError,
        ExportError,
        InputError,
        MachineBusyError,
        ModelFileError,
        ParityError,
        QualityError,
        RnnEdgeError,
        RuntimeUnavailableError,
        StreamError,
        UnsupportedModelError,
    )
    from rnnedge.exporters.onnx import export
    from rnnedge.runtime.model import Model, load
    from rnnedge.runtime.stream import Stream


def __getattr__(name: str) -> _typing.Any:
    """Import a public name from its module on first access, then keep it here."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rnnedge' has no attribute '{name}'")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
