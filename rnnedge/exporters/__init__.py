"""Exporters: PyTorch → ONNX (and ONNX → TensorRT engine where TensorRT is installed)."""
