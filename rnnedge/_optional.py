"""Optional dependencies: checked without importing them, imported only where used.

`import rnnedge` must stay light (numpy + onnxruntime), so torch, onnx and TensorRT are looked
up with `importlib.util.find_spec` and imported through `require`, which turns a missing
package into an error that names the extra to install.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from rnnedge.errors import RuntimeUnavailableError

# module name -> (pip extra that provides it, distribution to mention)
_EXTRAS: dict[str, tuple[str, str]] = {
    "torch": ("export", "torch==2.13.0"),
    "onnx": ("export", "onnx"),
    "onnxscript": ("export", "onnxscript"),
    "onnxruntime": ("cpu", "onnxruntime"),
    "tensorrt": ("tensorrt", "tensorrt"),
    "cuda": ("tensorrt", "cuda-python"),
    "matplotlib": ("plot", "matplotlib"),
    "pytriton": ("serving", "nvidia-pytriton"),
    "tritonclient": ("triton", "tritonclient[grpc]"),
    "ray": ("ray", "ray[data]"),
    "pyarrow": ("ray", "pyarrow"),
}


def is_available(module: str) -> bool:
    """True when `module` can be imported, without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return False
    # a bare folder of that name (e.g. tests/tensorrt on sys.path) is a namespace package
    # with no origin, not an installed module
    return spec is not None and spec.origin is not None


def require(module: str, purpose: str) -> ModuleType:
    """Import `module`, or raise an error that says what needs it and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra, dist = _EXTRAS.get(module.split(".")[0], ("", module))
        hint = f"pip install 'rnnedge[{extra}]'" if extra else f"pip install {dist}"
        raise RuntimeUnavailableError(
            f"{purpose} needs the Python package '{dist}', which is not importable here "
            f"({exc.__class__.__name__}: {exc}); install it with: {hint}"
        ) from exc
