"""Capability markers that skip with the reason, and fail instead where a GPU is required.

Markers (registered in pyproject.toml): `torch`, `ray` and `serving` need their package
importable (serving: nvidia-pytriton); `gpu` needs an NVIDIA GPU, seen as a `/dev/nvidia*`
device, a GPU listed by `nvidia-smi`, or `torch.cuda.is_available()`; `tensorrt` needs a GPU
and the real `tensorrt` module (a folder named tensorrt on sys.path does not count).

A skipped GPU test reads as green, so on a machine that must test the GPU set
`RNNEDGE_REQUIRE_GPU=1`: then every `gpu`- or `tensorrt`-marked test that skips — by marker,
`pytest.skip` or `importorskip` — is reported as failed, with the reason it skipped.

`NVIDIA_TF32_OVERRIDE` defaults to 0 here, before any test starts CUDA: cuDNN's RNN kernels use
TF32 on Ampere and later whatever ONNX Runtime's `use_tf32` or torch's flags say, and fp32
parity means fp32. A run that sets it explicitly keeps its own value.
"""

from __future__ import annotations

import functools
import glob
import importlib.util
import os
import shutil
import subprocess
from collections.abc import Callable, Generator

import pytest

os.environ.setdefault("NVIDIA_TF32_OVERRIDE", "0")

REQUIRE_GPU = "RNNEDGE_REQUIRE_GPU"
GPU_MARKERS = ("gpu", "tensorrt")


def _module(name: str) -> bool:
    """Importable as installed code; a bare folder of that name (namespace package) is not."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return False
    return spec is not None and spec.origin not in (None, "namespace")


@functools.cache
def gpu() -> str | None:
    """None when an NVIDIA GPU is usable here, else why not (cheapest evidence first)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU"
    if glob.glob("/dev/nvidia[0-9]*"):
        return None
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
            if out.returncode == 0 and "GPU" in out.stdout:
                return None
        except (OSError, subprocess.TimeoutExpired):
            pass
    if _module("torch"):
        import torch

        if torch.cuda.is_available():
            return None
    return (
        "no NVIDIA GPU here (no /dev/nvidia* device, nvidia-smi lists none, "
        "torch.cuda.is_available() is False or torch is missing)"
    )


@functools.cache
def tensorrt() -> str | None:
    if not _module("tensorrt"):
        return "the tensorrt module is not installed (pip install 'rnnedge[tensorrt]')"
    return gpu()


def _needs(module: str, install: str) -> Callable[[], str | None]:
    @functools.cache
    def check() -> str | None:
        return None if _module(module) else f"{module} is not installed ({install})"

    return check


CAPABILITIES: dict[str, Callable[[], str | None]] = {
    "torch": _needs("torch", "pip install 'rnnedge[export]'"),
    "gpu": gpu,
    "tensorrt": tensorrt,
    "ray": _needs("ray", "pip install 'rnnedge[ray]'"),
    "serving": _needs("pytriton", "pip install 'rnnedge[serving]'"),
}


def gpu_required() -> bool:
    return os.environ.get(REQUIRE_GPU, "").strip() not in ("", "0")


def pytest_report_header(config: pytest.Config) -> str:
    required = f"; {REQUIRE_GPU}=1: skipped GPU tests fail" if gpu_required() else ""
    return f"rnnedge: NVIDIA_TF32_OVERRIDE={os.environ.get('NVIDIA_TF32_OVERRIDE')}{required}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for name, missing in CAPABILITIES.items():
            if item.get_closest_marker(name) is None:
                continue
            why = missing()
            if why is not None:
                item.add_marker(pytest.mark.skip(reason=f"{name}: {why}"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    """With RNNEDGE_REQUIRE_GPU=1, a GPU test that skipped is a failure, with its reason."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if not (report.skipped and gpu_required() and not hasattr(report, "wasxfail")):
        return
    if not any(item.get_closest_marker(m) for m in GPU_MARKERS):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = (
        f"{REQUIRE_GPU}=1 says this machine must test the GPU, but this test skipped: {reason}"
    )
