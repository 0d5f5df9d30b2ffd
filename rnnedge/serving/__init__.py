"""Serving recurrent models: a Triton repository writer and a local Triton server.

`triton_repo` writes a model repository for Triton's ONNX Runtime backend that keeps each
sequence's state on the server (sequence batcher + implicit state); `server` runs a real
Triton server (through `nvidia-pytriton`) whose Python model streams with the rnnedge runtime.
Both import their optional packages (onnx, tritonclient, pytriton) only when used.
"""

from __future__ import annotations
