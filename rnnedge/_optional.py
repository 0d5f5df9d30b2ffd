"""Optional dependencies: checked without importing them, imported only where used.

`import rnnedge` must stay light (numpy + onnxruntime), so torch, onnx and TensorRT are looked
up with `importlib.util.find_spec` and imported through `require`, which turns a missing
package into an error that names the smallest extra bringing it (exit code 5 on the CLI).
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from rnnedge.errors import RuntimeUnavailableError

# top-level module name -> (smallest pip extra that provides it, distribution to mention)
EXTRAS: dict[str, tuple[str, str]] = {
    "torch": ("export", "torch==2.13.0"),
    "onnx": ("onnx", "onnx"),
    "onnxscript": ("export", "onnxscript"),
    "onnxruntime": ("cpu", "onnxruntime"),
    "tensorrt": ("tensorrt", "tensorrt"),
    "cuda": ("tensorrt", "cuda-python"),
    "openvino": ("openvino", "openvino"),
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


def install_hint(module: str, extra: str | None = None) -> str:
    """The pip command that brings `module`: `extra` when given, else the smallest one."""
    known_extra, dist = EXTRAS.get(module.split(".")[0], ("", module))
    extra = extra or known_extra
    return f"pip install 'rnnedge[{extra}]'" if extra else f"pip install {dist}"


def require(module: str, purpose: str, *, extra: str | None = None) -> ModuleType:
    """Import `module`, or raise an error that says what needs it and how to install it.

    Args:
        module: The module to import, e.g. "torch" or "tritonclient.grpc.model_config_pb2".
        purpose: What needs it, in the user's words ("rnnedge lint"); starts the message.
        extra: The extra to name instead of the module's own, when the caller needs more
            than this one package from it (`rnnedge export` needs torch *and* onnx: "export").

    Raises:
        RuntimeUnavailableError: The module is not installed, or is installed but fails to
            import (a broken build, a missing shared library).
    """
    dist = EXTRAS.get(module.split(".")[0], ("", module))[1]
    hint = install_hint(module, extra)
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise RuntimeUnavailableError(
            f"{purpose} needs the Python package '{dist}', which is not importable here "
            f"({exc.__class__.__name__}: {exc}); install it with: {hint}"
        ) from exc
    except Exception as exc:  # installed, but importing it fails (OSError from a CUDA lib...)
        first = (str(exc).splitlines() or [""])[0][:300]
        raise RuntimeUnavailableError(
            f"{purpose} needs the Python package '{dist}', which is installed but fails to "
            f"import ({exc.__class__.__name__}: {first}); reinstall it with: {hint}"
        ) from exc
