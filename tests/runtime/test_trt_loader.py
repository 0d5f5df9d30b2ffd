"""The TensorRT runner's loader contract and ONNX Runtime's TensorRT provider, without a GPU.

The runtime (layer 1) loads plans and never imports the builder; building happens in a loader
from `rnnedge.exporters.tensorrt`. These tests pin that split, the refusals that replace the
old `build=` mapping (whose `device_id` key raised a TypeError), and the check that a session
asked to run on TensorRT really does.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rnnedge.errors import InputError, RuntimeUnavailableError
from rnnedge.exporters import tensorrt as trt_export
from rnnedge.exporters.tensorrt import EngineFromOnnx
from rnnedge.runtime.backends import trt_plan
from rnnedge.runtime.backends.tensorrt import (
    TRT_EP,
    TensorRTRunner,
    linked_tensorrt_major,
    open_trt_session,
)
from rnnedge.runtime.backends.trt_plan import profiles_from_ranges
from rnnedge.runtime.foreign import resolve_spec

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "foreign_lstm.onnx"
NO_TRT = pytest.mark.skipif(trt_plan.module_present("tensorrt"), reason="tensorrt is installed")


def test_an_onnx_file_without_a_loader_is_refused_naming_the_loader() -> None:
    with pytest.raises(
        InputError,
        match=r"ONNX file.*loader=rnnedge\.exporters\.tensorrt\."
        r"EngineFromOnnx",
    ):
        TensorRTRunner(FIXTURE)
    with pytest.raises(InputError, match="EngineFromOnnx"):
        TensorRTRunner("MODEL.ONNX")
    assert TensorRTRunner("model.plan").loader is None  # a plan needs no loader


def test_a_loader_can_be_the_model_or_a_keyword() -> None:
    loader = EngineFromOnnx(FIXTURE, batch=(1, 2, 4), seq_len=(1, 8, 32))
    alone = TensorRTRunner(loader)
    assert alone.loader is loader and alone.model == FIXTURE
    keyword = TensorRTRunner(FIXTURE, loader=loader)
    assert keyword.loader is loader and not keyword.active
    with pytest.raises(InputError, match="two loaders"):
        TensorRTRunner(loader, loader=loader)


def test_device_id_goes_to_the_loader_once_and_must_match_the_runner() -> None:
    """The old `build={"device_id": 1}` mapping raised TypeError (device_id given twice)."""
    build = {"device_id": 1, "batch": (1, 2, 4), "seq_len": (1, 8, 32)}
    loader = EngineFromOnnx(FIXTURE, **build)
    assert loader.build["device_id"] == 1 and loader.device_id == 1
    TensorRTRunner(FIXTURE, loader=loader, device_id=1)
    with pytest.raises(
        InputError, match="builds for CUDA device 1 but the runner runs on device 0"
    ):
        TensorRTRunner(FIXTURE, loader=loader)


@NO_TRT
def test_activating_through_a_loader_without_tensorrt_says_what_to_install() -> None:
    loader = EngineFromOnnx(FIXTURE, device_id=1, batch=(1, 2, 4))
    runner = TensorRTRunner(FIXTURE, loader=loader, device_id=1)
    with pytest.raises(RuntimeUnavailableError, match=r"rnnedge\[tensorrt\]"):
        runner.activate()
    with pytest.raises(RuntimeUnavailableError, match="tensorrt"):
        loader()  # the loader itself is what builds, and it refuses the same way
    assert not runner.active and loader.reused is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch": (0, 1, 2)}, "min must be ≥ 1"),
        ({"seq_len": (4, 2, 8)}, "min ≤ opt ≤ max"),
        ({"precision": "int8"}, "not one of"),
    ],
)
def test_the_loader_checks_its_arguments_when_made(kwargs: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        EngineFromOnnx(FIXTURE, **kwargs)


def test_the_builder_reexports_the_plan_side_unchanged() -> None:
    for name in (
        "Manifest",
        "manifest_path",
        "profiles_from_ranges",
        "cache_decision",
        "stale_reason",
        "check_range",
        "module_present",
        "trt_major",
        "COMPARED",
    ):
        assert getattr(trt_export, name) is getattr(trt_plan, name), name


def test_the_runtime_never_imports_the_builder() -> None:
    code = (
        "import sys, rnnedge.runtime.backends.tensorrt, rnnedge.runtime.backends.trt_plan\n"
        "print(sorted(m for m in sys.modules if m.startswith('rnnedge.exporters')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_linked_tensorrt_major_is_read_from_the_provider_library(tmp_path: Path) -> None:
    lib = tmp_path / "libonnxruntime_providers_tensorrt.so"
    lib.write_bytes(b"\x7fELF\x00" + b"\x00" * 64 + b"libnvinfer.so.10\x00libcudart.so.13\x00")
    assert linked_tensorrt_major(lib) == 10
    lib.write_bytes(b"\x7fELF\x00no such name here")
    assert linked_tensorrt_major(lib) is None
    assert linked_tensorrt_major(tmp_path / "missing.so") is None


@NO_TRT
def test_a_session_that_is_not_on_tensorrt_is_refused(capfd: pytest.CaptureFixture[str]) -> None:
    """Without TensorRT, ORT drops its TensorRT provider (or never had one) and runs on CUDA or
    the CPU; the session must be refused, saying which of the two happened."""
    from rnnedge.runtime.backends.ort import open_session

    spec = resolve_spec(open_session(FIXTURE))
    profiles = profiles_from_ranges(spec, batch=(1, 1, 2), seq_len=(1, 4, 8))
    with pytest.raises(
        RuntimeUnavailableError,
        match=rf"asked for {TRT_EP} but the session "
        r"runs on .*(no TensorRT provider|links "
        r"TensorRT)",
    ):
        open_trt_session(FIXTURE, profiles)
    assert "Falling back" not in capfd.readouterr().out
