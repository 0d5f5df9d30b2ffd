"""Latency statistics, the timing loop (on a fake clock), tuning files and bench rendering.

Nothing here checks how fast anything is: only that the numbers are computed, kept and shown
correctly, so these tests hold on any machine, loaded or not.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rnnedge.spec import RnnSpec, StatePair, TensorSpec
from rnnedge.tools import bench
from rnnedge.tools import render as report
from rnnedge.tools.bench import BenchPoint, LatencyStats, add_ratios, measure, merge_rounds

SAMPLES = [0.010, 0.012, 0.011, 0.050, 0.013, 0.009, 0.011, 0.012, 0.014, 0.010]


# --- LatencyStats ---------------------------------------------------------------------------
def test_stats_from_samples_match_numpy_and_statistics() -> None:
    s = LatencyStats.from_samples(SAMPLES)
    assert s.samples == len(SAMPLES)
    assert s.min == min(SAMPLES) and s.max == max(SAMPLES)
    for name, q in (("p50", 50), ("p90", 90), ("p99", 99)):
        assert getattr(s, name) == pytest.approx(float(np.percentile(SAMPLES, q)))
    assert s.p50 == pytest.approx(statistics.median(SAMPLES))
    assert s.mean == pytest.approx(statistics.fmean(SAMPLES))
    assert s.stdev == pytest.approx(statistics.stdev(SAMPLES))
    assert s.min <= s.p50 <= s.p90 <= s.p99 <= s.max
    assert isinstance(s.latencies, np.ndarray) and s.latencies.dtype == np.float64
    assert list(s.latencies) == SAMPLES  # every sample kept, in order


def test_stats_single_sample_and_empty() -> None:
    s = LatencyStats.from_samples([0.5])
    assert (s.samples, s.p50, s.p99, s.stdev) == (1, 0.5, 0.5, 0.0)
    with pytest.raises(ValueError, match="no latency samples"):
        LatencyStats.from_samples([])


def test_throughput_counts_sequences_and_steps_at_the_median() -> None:
    s = LatencyStats.from_samples([0.02, 0.02, 0.02])
    tp = s.throughput(batch=8, seq_len=64)
    assert tp.sequences_per_s == pytest.approx(8 / 0.02)
    assert tp.steps_per_s == pytest.approx(8 * 64 / 0.02)


def test_to_dict_is_numbers_without_the_samples() -> None:
    d = LatencyStats.from_samples(SAMPLES).to_dict()
    assert set(d) == {"samples", "min", "p50", "p90", "p99", "max", "mean", "stdev"}
    assert all(isinstance(v, (int, float)) for v in d.values())


# --- measure on a fake clock -----------------------------------------------------------------
class FakeClock:
    """Time advances only when the measured function runs: `step` seconds per call."""

    def __init__(self, step: float = 0.1) -> None:
        self.now = 0.0
        self.step = step
        self.events: list[str] = []

    def __call__(self) -> float:
        return self.now

    def fn(self) -> None:
        self.events.append("call")
        self.now += self.step

    def sync(self) -> None:
        self.events.append("sync")


def test_measure_honours_warmup_and_repeat() -> None:
    clock = FakeClock()
    s = measure(clock.fn, warmup=4, repeat=7, clock=clock)
    assert s.samples == 7
    assert clock.events.count("call") == 4 + 7
    assert s.latencies == pytest.approx([0.1] * 7)


def test_measure_synchronizes_once_after_every_call_inside_the_timing() -> None:
    clock = FakeClock()
    s = measure(clock.fn, warmup=2, repeat=5, synchronize=clock.sync, clock=clock)
    assert clock.events == ["call", "sync"] * (2 + 5)
    assert s.samples == 5


def test_measure_sync_time_is_counted() -> None:
    clock = FakeClock(step=0.0)

    def slow_sync() -> None:  # a device still busy: the wait belongs to the call
        clock.now += 0.25

    s = measure(clock.fn, warmup=0, repeat=3, synchronize=slow_sync, clock=clock)
    assert s.p50 == pytest.approx(0.25)


def test_measure_respects_the_budget() -> None:
    clock = FakeClock(step=0.125)  # exact in binary: the count does not hinge on rounding
    s = measure(clock.fn, warmup=0, budget_s=1.0, clock=clock)
    assert s.samples == 8
    assert float(s.latencies.sum()) == pytest.approx(1.0)


def test_measure_budget_still_takes_min_samples_and_repeat_caps_it() -> None:
    clock = FakeClock(step=5.0)
    assert measure(clock.fn, warmup=0, budget_s=1.0, min_samples=3, clock=clock).samples == 3
    clock = FakeClock(step=0.001)
    assert measure(clock.fn, warmup=0, budget_s=10.0, repeat=4, clock=clock).samples == 4


def test_measure_default_budget_and_bad_repeat() -> None:
    clock = FakeClock(step=0.01)
    s = measure(clock.fn, warmup=0, clock=clock)
    assert s.samples == pytest.approx(bench.DEFAULT_BUDGET_S / 0.01, abs=1)
    with pytest.raises(ValueError, match="repeat"):
        measure(clock.fn, repeat=0, clock=clock)


def test_measure_clean_retries_while_disturbed(monkeypatch: pytest.MonkeyPatch) -> None:
    loads = iter([0.9, 0.5, 0.02])

    class FakeLoad:
        def __enter__(self) -> FakeLoad:
            return self

        def __exit__(self, *exc: object) -> None:
            self.other_cores = next(loads)

    monkeypatch.setattr(bench, "CpuLoad", FakeLoad)
    calls = []
    stats, load = bench.measure_clean(
        lambda: calls.append(1), retries=2, settle_s=0, warmup=0, repeat=2
    )
    assert load == 0.02 and stats.samples == 2 and len(calls) == 6


def test_wait_quiet_returns_once_others_are_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = iter([0.9, 0.6, 0.01, 0.8])

    class FakeLoad:
        def __enter__(self) -> FakeLoad:
            return self

        def __exit__(self, *exc: object) -> None:
            self.other_cores = next(seen)

    monkeypatch.setattr(bench, "CpuLoad", FakeLoad)
    assert bench.wait_quiet(60, window_s=0) == 0.01
    assert bench.wait_quiet(0, window_s=0) == 0.8  # out of time: the load last seen


def test_cpu_load_reports_a_non_negative_number_or_none() -> None:
    with bench.CpuLoad() as load:
        sum(range(10_000))
    assert load.other_cores is None or load.other_cores >= 0.0


# --- points, ratios, results -----------------------------------------------------------------
def _point(
    runner: str, p50: float, batch: int = 1, seq_len: int = 16, kind: str = "sequence"
) -> BenchPoint:
    return BenchPoint(runner, batch, seq_len, LatencyStats.from_samples([p50] * 3), kind)


def test_ratios_are_speedups_against_baselines_at_the_same_shape() -> None:
    pts = [
        _point("eager", 0.010),
        _point("ort-raw", 0.005),
        _point("rnnedge", 0.004),
        _point("rnnedge", 0.002, seq_len=1),
        _point("eager", 0.001, kind="stream_step"),
        _point("rnnedge", 0.0005, kind="stream_step"),
    ]
    add_ratios(pts)
    eager, raw, tuned, lone, s_eager, s_tuned = pts
    assert eager.vs_eager == pytest.approx(1.0) and raw.vs_eager == pytest.approx(2.0)
    assert tuned.vs_eager == pytest.approx(2.5) and tuned.vs_ort_raw == pytest.approx(1.25)
    assert lone.vs_eager is None and lone.vs_ort_raw is None  # no baseline at that shape
    assert s_tuned.vs_eager == pytest.approx(2.0) and s_tuned.vs_ort_raw is None
    assert s_eager.vs_eager == pytest.approx(1.0)


def test_merge_rounds_pools_samples_and_keeps_worst_load() -> None:
    a, b = LatencyStats.from_samples([1.0, 2.0]), LatencyStats.from_samples([3.0])
    merged, load = merge_rounds([(a, 0.01), (b, 0.3)])
    assert merged.samples == 3 and merged.p50 == 2.0 and load == 0.3
    assert merge_rounds([(a, None)])[1] is None


def test_run_interleaved_measures_every_callable_each_round() -> None:
    order: list[str] = []
    out = bench.run_interleaved(
        {"a": lambda: order.append("a"), "b": lambda: order.append("b")},
        rounds=2,
        budget_s=0.002,
        warmup=0,
    )
    assert set(out) == {"a", "b"}
    assert all(stats.samples >= 6 for stats, _ in out.values())  # ≥ 3 per round
    first_b = order.index("b")
    assert "a" in order[first_b:]  # a ran again after b: rounds interleave


def _result() -> dict[str, Any]:
    pts = [
        _point("eager", 0.010),
        _point("ort-raw", 0.005),
        _point("rnnedge", 0.004),
        _point("eager", 0.001, kind="stream_step", seq_len=1),
        _point("rnnedge", 0.0005, kind="stream_step", seq_len=1),
    ]
    pts[1].other_load = 0.5
    add_ratios(pts)
    res = bench.BenchResult(
        "m.onnx",
        {"cell": "lstm"},
        bench.environment(),
        {
            "eager": {"description": "eager", "settings": {"t": 2}},
            "ort-raw": {"description": "raw", "settings": {}},
            "rnnedge": {"description": "tuned", "settings": {"b1-long": {}}},
        },
        pts,
        skipped={"ort-cuda": "no GPU"},
        notes=["a note"],
    )
    return res.to_dict()


def test_result_dict_is_json_with_points_and_environment() -> None:
    data = json.loads(report.to_json(_result()))
    assert {"model", "environment", "runners", "points", "skipped", "notes"} <= set(data)
    env = data["environment"]
    assert env["cores"] >= 1 and env["cpu_model"] and env["versions"]["numpy"]
    p = data["points"][2]
    assert p["runner"] == "rnnedge" and p["latency_s"]["p50"] == pytest.approx(0.004)
    assert p["vs_eager"] == pytest.approx(2.5) and p["vs_ort_raw"] == pytest.approx(1.25)
    assert p["steps_per_s"] == pytest.approx(16 / 0.004)
    assert data["points"][1]["noisy"] is True and p["noisy"] is False


def test_bench_markdown_and_text_structure() -> None:
    data = _result()
    md = report.bench_markdown(data)
    lines = md.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| runner"))
    assert lines[header + 1].startswith("|---")
    rows = [line for line in lines[header + 2 :] if line.startswith("|")]
    assert len(rows) == len(data["points"])
    assert "2.50×" in rows[2] and "1.25×" in rows[2]
    assert all(row.count("|") == len(report.BENCH_HEADERS) + 1 for row in rows)
    assert "- skipped ort-cuda: no GPU" in md and "- note: a note" in md
    text = report.bench_text(data)
    assert "p50 ms" in text and "stream_step" in text and "machine:" in text


def test_matrix_markdown_structure() -> None:
    stats = LatencyStats.from_samples([0.01, 0.012]).to_dict()
    runner = {"latency_s": stats, "settings": {}, "noisy": False}
    matrix = {
        "environment": bench.environment(),
        "notes": ["n1"],
        "workloads": [
            {
                "name": "w1",
                "description": "d",
                "runners": {
                    "eager": runner,
                    "ort-raw": runner,
                    "rnnedge": {**runner, "label": "t1"},
                },
                "vs_eager": 1.0,
                "vs_ort_raw": 1.0,
                "vs_best_baseline": 1.0,
                "target": 1.2,
                "met": False,
            }
        ],
    }
    md = report.matrix_markdown(matrix)
    assert "| w1 |" in md and "NOT met" in md and "### w1: d" in md and "- n1" in md


# --- tuning ---------------------------------------------------------------------------------
ort = pytest.importorskip("onnxruntime")
from rnnedge.runtime import tuned as tn  # noqa: E402
from rnnedge.tools import tune  # noqa: E402


def _tuning_for(model: Path) -> dict[str, Any]:
    return {
        "format": tn.TUNING_FORMAT,
        "created": "2026-01-01T00:00:00",
        **tn.machine_key(),
        "onnx_sha256": tn.sha256_file(model),
        "classes": {
            "b1-short": {"settings": {"intra_op_num_threads": 1}, "batch_split": 1},
            "b1-long": {"settings": {"intra_op_num_threads": 2}, "batch_split": 1},
            "bN-long": {
                "settings": {"intra_op_num_threads": 1, "config": {tn.SPIN: "0"}},
                "batch_split": 2,
            },
        },
    }


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not really onnx, but hashed all the same")
    return path


def test_tuning_round_trip_is_atomic(model_file: Path) -> None:
    tuning = _tuning_for(model_file)
    written = tune.write_tuning(model_file, tuning)
    assert written == model_file.parent / "model.onnx.tuning.json"
    assert sorted(p.name for p in model_file.parent.iterdir()) == [
        "model.onnx",
        "model.onnx.tuning.json",
    ]  # no temporary file left behind
    assert tn.load_tuning(model_file) == tuning
    assert tn.read_tuning(model_file) == (tuning, None)


def test_stale_tuning_is_ignored_with_the_reason(model_file: Path) -> None:
    tune.write_tuning(model_file, _tuning_for(model_file))
    model_file.write_bytes(b"a re-exported model")
    got, why = tn.read_tuning(model_file)
    assert got is None and "sha256" in why
    assert tn.load_tuning(model_file) is None


@pytest.mark.parametrize("key", ["onnxruntime", "cpu_model", "cores"])
def test_tuning_from_another_machine_or_ort_is_ignored(model_file: Path, key: str) -> None:
    tuning = _tuning_for(model_file)
    tuning[key] = "something else"
    tune.write_tuning(model_file, tuning)
    got, why = tn.read_tuning(model_file)
    assert got is None and key in why


def test_missing_or_broken_tuning(model_file: Path) -> None:
    got, why = tn.read_tuning(model_file)
    assert got is None and "no tuning file" in why
    tn.tuning_path(model_file).write_text("{not json")
    got, why = tn.read_tuning(model_file)
    assert got is None and "unreadable" in why
    tn.tuning_path(model_file).write_text(json.dumps({"format": "other/9"}))
    assert "format" in tn.read_tuning(model_file)[1]


def test_shape_classes_and_settings_for(model_file: Path) -> None:
    t = _tuning_for(model_file)
    assert tn.shape_class(1, 1) == "b1-short" and tn.shape_class(1, tn.SHORT_MAX) == "b1-short"
    assert tn.shape_class(1, tn.SHORT_MAX + 1) == "b1-long"
    assert tn.shape_class(8, 4) == "bN-short" and tn.shape_class(2, 1024) == "bN-long"
    assert tn.settings_for(t, 1, 1) == {"intra_op_num_threads": 1}
    assert tn.settings_for(t, 1, 256) == {"intra_op_num_threads": 2}
    assert tn.settings_for(t, 64, 128)["config"] == {tn.SPIN: "0"}
    assert tn.split_for(t, 64, 128) == 2 and tn.split_for(t, 1, 256) == 1
    # bN-short was not tuned: the tuned class of the same batch group stands in
    assert tn.settings_for(t, 8, 4) == tn.settings_for(t, 8, 400)
    assert tn.settings_for(None, 1, 1) == {} and tn.split_for(None, 8, 8) == 1
    got = tn.settings_for(t, 64, 128)
    got["config"]["x"] = "y"  # a copy: callers cannot change the tuning
    assert "x" not in t["classes"]["bN-long"]["settings"]["config"]


def test_candidates_cover_the_grid_and_split_only_batches() -> None:
    grid = tune.candidates(64, splittable=False, cores=2)
    assert grid[0] == {"label": "ort-defaults", "settings": {}, "batch_split": 1}
    assert len(grid) == 2 * 2 * 2 * 2  # the grid, less the point that is ORT's default
    assert len({c["label"] for c in grid}) == len(grid)
    assert all(c["batch_split"] == 1 for c in grid)
    bn = tune.candidates(64, splittable=True, cores=2)
    assert {c["batch_split"] for c in bn} == {1, 2, 4}
    assert all(c["settings"]["intra_op_num_threads"] == 1 for c in bn if c["batch_split"] > 1)
    assert [c for c in bn if c["batch_split"] == 1] == grid
    # batch 1 gets no parallel mode and no spinning (tests/tools/test_tune_quiet.py)
    assert tune.candidates(1, splittable=True, cores=2) == [c for c in grid if tune.allowed(c, 1)]


def test_representative_shapes_one_per_class() -> None:
    reps = tune.representative_shapes(
        [(1, 1), (1, 16), (1, 64), (1, 256), (1, 1024), (8, 1), (8, 64), (8, 256), (2, 256)]
    )
    assert reps == {"b1-short": (1, 1), "b1-long": (1, 256), "bN-short": (8, 1), "bN-long": (8, 64)}


def _spec(batch_first: bool, extra: bool = False) -> RnnSpec:
    x = ("batch", "seq_len", 3) if batch_first else ("seq_len", "batch", 3)
    inputs = [TensorSpec("x", "float32", x), TensorSpec("h0", "float32", (2, "batch", 4))]
    if extra:
        inputs.append(TensorSpec("mask", "float32", ("batch",)))
    return RnnSpec(
        inputs=inputs,
        outputs=[
            TensorSpec("y", "float32", (*x[:2], 1)),
            TensorSpec("hn", "float32", (2, "batch", 4)),
        ],
        data_input="x",
        data_output="y",
        state_pairs=[StatePair("h0", "hn", 1)],
        batch_first=batch_first,
    )


@pytest.mark.parametrize("batch_first", [True, False])
def test_split_and_join_keep_batch_rows_in_order(batch_first: bool) -> None:
    spec = _spec(batch_first)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 7, 3) if batch_first else (7, 5, 3)).astype(np.float32)
    feeds = {"x": x, "h0": rng.standard_normal((2, 5, 4)).astype(np.float32)}
    parts = tn.split_feeds(spec, feeds, 2)
    assert [p["h0"].shape[1] for p in parts] == [3, 2]
    # an identity "model": y = x[..., :1], hn = h0, run per part then joined
    outs = [{"y": p["x"][..., :1], "hn": p["h0"]} for p in parts]
    joined = tn.join_outputs(spec, outs)
    np.testing.assert_array_equal(joined["y"], x[..., :1])
    np.testing.assert_array_equal(joined["hn"], feeds["h0"])
    assert tn.splittable(spec) and not tn.splittable(_spec(batch_first, extra=True))
