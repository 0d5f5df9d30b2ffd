"""The GPU benchmark's machinery, on the CPU: rows on disk as measured, math labels, targets.

A device call that hits its limit returns only what is already in its output folder, so rows
must reach disk one by one; fp32 rows must not be TF32 rows; a target must be judged from the
rows and say which part of a step to attack. The `cpu` phase (N concurrent streams on rnnedge's
CPU runtime, W6 on the CPU) runs here for real, in a small size.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "gpu"
sys.path.insert(0, str(BENCH))

import gpu_common as gc  # noqa: E402
import gpu_report as report  # noqa: E402


def test_each_row_is_on_disk_before_the_next_is_measured(tmp_path: Path) -> None:
    """A writer killed mid-phase (SIGKILL, as `timeout -s KILL` would) leaves its rows."""
    code = (
        f"import os, signal, sys; sys.path.insert(0, {str(BENCH)!r})\n"
        "import gpu_common as gc\n"
        f"rows = gc.Rows({str(tmp_path / 'out.jsonl')!r}, {str(tmp_path / 'st.jsonl')!r},"
        " phase='torch')\n"
        "rows.add({'case': 'first', 'p50_us': 1.5})\n"
        "rows.add({'case': 'second', 'p50_us': float('nan')})\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == -9
    for name in ("out.jsonl", "st.jsonl"):
        rows = gc.read_rows(tmp_path / name)
        assert [r["case"] for r in rows] == ["first", "second"]
        assert rows[0]["phase"] == "torch" and rows[0]["p50_us"] == 1.5
    with open(tmp_path / "out.jsonl", "a") as f:
        f.write('{"case": "torn')  # a line cut by the kill is skipped, not fatal
    assert len(gc.read_rows(tmp_path / "out.jsonl")) == 2


def test_fp32_rows_need_tf32_off_and_tf32_rows_need_it_on() -> None:
    assert gc.math_mode("fp32", {"NVIDIA_TF32_OVERRIDE": "0"}) == "fp32"
    with pytest.raises(RuntimeError, match="mislabelled"):
        gc.math_mode("fp32", {})
    assert gc.math_mode("tf32", {}) == "tf32"
    with pytest.raises(RuntimeError, match="mislabelled"):
        gc.math_mode("tf32", {"NVIDIA_TF32_OVERRIDE": "0"})
    assert gc.math_mode("fp16", {}) == gc.math_mode("fp16", {"NVIDIA_TF32_OVERRIDE": "0"})


def test_a_failing_case_is_recorded_and_the_others_are_still_timed(tmp_path: Path) -> None:
    rows = gc.Rows(tmp_path / "rows.jsonl", phase="cpu")
    x = np.arange(6, dtype=np.float32).reshape(2, 3, 1)

    def broken() -> gc.Stepper:
        raise RuntimeError("CUDA failure 2: out of memory")

    cases = [
        gc.Case("doubles", {"runtime": "numpy"}, lambda: lambda c: 2 * c),
        gc.Case("off by one", {"runtime": "numpy"}, lambda: lambda c: 2 * c + 1),
        gc.Case("broken", {"runtime": "numpy"}, broken),
    ]
    out = gc.run_group(
        {"workload": "toy", "streams": 2},
        cases,
        [x[:, t : t + 1] for t in range(3)],
        2 * x,
        x[:, :1],
        0.01,
        rows,
    )
    by = {r["case"]: r for r in out}
    assert by["doubles"]["max_abs_diff"] == 0 and by["off by one"]["max_abs_diff"] == 1
    assert by["doubles"]["p50_us"] > 0 and by["doubles"]["stream_steps_per_s"] > 0
    assert "out of memory" in by["broken"]["error"] and "p50_us" not in by["broken"]
    assert len(gc.read_rows(tmp_path / "rows.jsonl")) == 3


def _row(
    case: str,
    p50: float,
    workload: str = "W5",
    math: str = "fp32",
    streams: int | None = None,
    **extra: object,
) -> dict:
    return {
        "phase": "ort",
        "workload": workload,
        "case": case,
        "math": math,
        "streams": streams,
        "p50_us": p50,
        **extra,
    }


def test_targets_are_judged_from_one_phase_and_name_the_part_to_attack() -> None:
    rows = [
        _row(report.FLOOR, 20.0, split={"copy_in_us": 5, "gpu_us": 10, "copy_out_us": 5}),
        _row(
            report.ORT_GRAPH,
            60.0,
            split={"copy_in_us": 6, "gpu_us": 48, "copy_out_us": 6},
            gpu_time={"device_us_per_call": 9.0},
        ),
        _row("torch eager CUDA", 240.0),
        _row("ort-cuda, IO binding", 900.0, "W6"),
        _row("torch eager cuDNN", 1000.0, "W6"),
        _row(report.ORT_GRAPH, 100.0, streams=1024, stream_steps_per_s=1.0e7),
        _row("rnnedge CPU stream", 1e4, streams=1024, runtime="ort-cpu", stream_steps_per_s=1.0e5),
        {**_row(report.ORT_GRAPH, 20.0), "phase": "tf32"},
    ]  # another phase: not used
    got = {t["target"]: t for t in report.targets(rows)}
    floor = got["W5 ORT CUDA graph vs torch CUDA-graph floor"]
    assert floor["measured"] == 3.0 and floor["met"] is False
    assert floor["note"].startswith("attack: gpu (+38.0 µs over the floor)")
    assert "GPU busy 9.0 µs of a 60.0 µs step" in floor["note"]
    eager = got["W5 ORT CUDA graph speedup over eager CUDA"]
    assert eager["measured"] == 4.0 and eager["met"] is True
    assert got["W6 ORT CUDA speedup over eager cuDNN, fp32"]["met"] is True
    assert got["W6 ORT CUDA speedup over eager cuDNN, fp16"]["note"] == "not measured"
    streams = got["1024 streams, ORT CUDA graph vs the CPU runtime (stream-steps/s)"]
    assert streams["measured"] == 100.0 and streams["met"] is True


@pytest.mark.torch
def test_the_cpu_phase_runs_here_and_the_report_says_what_was_not_measured(tmp_path: Path) -> None:
    out, state = tmp_path / "out", tmp_path / "state"
    common = [sys.executable, str(BENCH / "bench_gpu.py"), "--out", str(out), "--state", str(state)]
    run = subprocess.run(
        [*common, "--phase", "cpu", "--quick", "--streams", "1,4", "--seconds", "0.05"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    rows = gc.read_rows(out / "rows.jsonl")
    assert rows == gc.read_rows(state / "rows.jsonl")
    assert rows[0]["kind"] == "environment" and rows[0]["phase"] == "cpu"
    streams = [r for r in rows if r.get("streams")]
    assert sorted(r["streams"] for r in streams) == [1, 4]
    for r in streams:
        assert r["runtime"] == "ort-cpu" and r["max_abs_diff"] < 1e-5, r
        assert r["stream_steps_per_s"] == pytest.approx(r["batch"] / (r["p50_us"] / 1e6))
    w6 = [r for r in rows if r.get("workload") == "W6-quick"]
    assert {r["runtime"] for r in w6} == {"ort-cpu", "torch"} and all(r["quick"] for r in w6)
    assert len({r["threads"] for r in w6}) == 1  # both sides get the same cores
    done = subprocess.run(
        [*common, "--phase", "report", "--pytest", "not run here"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    text = (out / "result.md").read_text()
    assert "TensorRT could not be installed" in text and "not measured" in text
    result = json.loads((out / "result.json").read_text())
    assert all(t["met"] is None for t in result["targets"])  # no GPU rows: nothing judged
