"""The capability markers of tests/conftest.py: skip with a reason, or fail where a GPU is required.

A GPU run that skips every GPU test exits 0 and reads as green; with RNNEDGE_REQUIRE_GPU=1 such
a skip must fail. These tests run pytest on a small suite in a subprocess, with this project's
conftest, and read each test's outcome from its JUnit report. The GPU is hidden from those runs
(CUDA_VISIBLE_DEVICES=""), so they expect the same outcomes on any machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests import conftest

ROOT = Path(__file__).resolve().parents[2]
SUITE = """
import os
import pytest

@pytest.mark.gpu
def test_gpu_marked():
    pass

@pytest.mark.tensorrt
def test_tensorrt_marked():
    pass

def test_unmarked_skip():
    pytest.skip("nothing to do with a GPU")

@pytest.mark.torch
def test_torch_marked():
    pass

def test_tf32_is_off_unless_set():
    assert os.environ["NVIDIA_TF32_OVERRIDE"] == os.environ.get("EXPECT_TF32", "0")
"""


#: a GPU test that the markers let through but that skips itself (importorskip, pytest.skip):
#: the GPU is declared present, as it would be on a GPU machine lacking onnxruntime-gpu
INNER_SKIP = """
import sys
import pytest

sys.modules["conftest"].CAPABILITIES["gpu"] = lambda: None

@pytest.mark.gpu
def test_gpu_marked_skips_inside():
    pytest.importorskip("no_such_gpu_package_for_rnnedge")
"""


def _run(tmp_path: Path, suite: str = SUITE, **env: str) -> dict[str, str]:
    """Run a small suite; each test name mapped to passed/skipped/failed/error."""
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_suite.py").write_text(suite)
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nmarkers =\n    gpu: x\n    tensorrt: x\n    torch: x\n    ray: x\n"
        "    serving: x\n"
    )
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RNNEDGE_REQUIRE_GPU", "NVIDIA_TF32_OVERRIDE")
    }
    report = tmp_path / f"report-{len(list(tmp_path.glob('report-*')))}.xml"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--junitxml={report}",
            str(tmp_path),
        ],
        cwd=tmp_path,
        env={**clean, "CUDA_VISIBLE_DEVICES": "", "PYTHONDONTWRITEBYTECODE": "1", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    outcomes = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("skipped", "failure", "error")]
        outcomes[case.get("name", "")] = {
            "skipped": "skipped",
            "failure": "failed",
            "error": "error",
        }.get(kinds[0] if kinds else "", "passed")
    return outcomes


def test_gpu_tests_skip_with_a_reason_where_the_gpu_is_missing(tmp_path: Path) -> None:
    got = _run(tmp_path)
    assert got["test_gpu_marked"] == got["test_tensorrt_marked"] == "skipped"
    assert got["test_unmarked_skip"] == "skipped"
    assert _run(tmp_path, INNER_SKIP) == {"test_gpu_marked_skips_inside": "skipped"}
    has_torch = conftest.CAPABILITIES["torch"]() is None
    assert got["test_torch_marked"] == ("passed" if has_torch else "skipped")
    assert got["test_tf32_is_off_unless_set"] == "passed"


def test_a_skipped_gpu_test_fails_when_the_gpu_is_required(tmp_path: Path) -> None:
    got = _run(tmp_path, RNNEDGE_REQUIRE_GPU="1", NVIDIA_TF32_OVERRIDE="1", EXPECT_TF32="1")
    # a marker skip happens at setup, so it fails there (reported as an error)
    assert got["test_gpu_marked"] == got["test_tensorrt_marked"] == "error"
    assert got["test_unmarked_skip"] == "skipped"  # only GPU tests are held to it
    assert got["test_tf32_is_off_unless_set"] == "passed"  # an explicit value is kept
    inner = _run(tmp_path, INNER_SKIP, RNNEDGE_REQUIRE_GPU="1")
    assert inner == {"test_gpu_marked_skips_inside": "failed"}


def test_the_ort_cuda_contract_case_is_part_of_a_gpu_run() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--collect-only",
            "-m",
            "gpu",
            "tests/runtime/test_contract.py",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "test_runner_contract[ort-cuda]" in out.stdout, out.stdout + out.stderr
    assert "test_runner_contract[ort-cpu]" not in out.stdout


@pytest.mark.skipif(conftest.gpu() is None, reason="this machine has a GPU")
def test_the_reason_says_what_was_looked_for() -> None:
    why = conftest.gpu() or ""
    assert "/dev/nvidia" in why and "nvidia-smi" in why and "torch.cuda" in why
