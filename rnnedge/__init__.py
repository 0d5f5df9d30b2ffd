"""rnnedge: recurrent PyTorch models to ONNX Runtime and TensorRT, proven equal to eager.

Importing this package loads numpy only; torch and onnx are imported where they are used.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "export", "load"]


def export(*args: Any, **kwargs: Any) -> Any:
    """Export a PyTorch module to ONNX and verify it; see `rnnedge.exporters.onnx.export`."""
    from rnnedge.exporters.onnx import export as _export

    return _export(*args, **kwargs)


def load(*args: Any, **kwargs: Any) -> Any:
    """Load an ONNX model for inference; see `rnnedge.runtime.load`."""
    from rnnedge.runtime.model import load as _load

    return _load(*args, **kwargs)
