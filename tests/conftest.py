"""Markers that skip themselves, with the reason, when a capability is absent."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess

import pytest


def _has_cuda_gpu() -> tuple[bool, str]:
    if shutil.which("nvidia-smi") is None:
        return False, "no NVIDIA GPU here (nvidia-smi not found)"
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"nvidia-smi failed: {exc}"
    if out.returncode != 0 or "GPU" not in out.stdout:
        return False, "nvidia-smi lists no GPU"
    return True, ""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_ok, gpu_why = _has_cuda_gpu()
    spec = importlib.util.find_spec("tensorrt")
    # tests/tensorrt/ is importable as a namespace package named "tensorrt": require a real one
    trt_ok = gpu_ok and spec is not None and spec.origin is not None
    trt_why = gpu_why or "the tensorrt module is not installed"
    for item in items:
        if item.get_closest_marker("gpu") and not gpu_ok:
            item.add_marker(pytest.mark.skip(reason=f"gpu: {gpu_why}"))
        if item.get_closest_marker("tensorrt") and not trt_ok:
            item.add_marker(pytest.mark.skip(reason=f"tensorrt: {trt_why}"))
