"""Spec round trips, parity judgement, input validation and rendering: numpy + ORT only."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rnnedge.errors import EXIT_CODES, InputError, ModelFileError, ParityError
from rnnedge.runtime.inputs import check_sequence, check_state
from rnnedge.spec import Normalization, RnnSpec, StatePair, TensorSpec
from rnnedge.tools.render import fmt, jsonable, parity_rows, table
from rnnedge.verify.parity import (
    TOLERANCES,
    Comparison,
    ParityReport,
    compare_arrays,
    compare_outputs,
    default_grid,
    make_feeds,
)

FP32 = TOLERANCES["fp32"]


def _spec(batch_first: bool = True) -> RnnSpec:
    x_shape = ("batch", "seq_len", 2) if batch_first else ("seq_len", "batch", 2)
    return RnnSpec(
        inputs=[
            TensorSpec("x", "float32", x_shape),
            TensorSpec("h0", "float32", (1, "batch", 4)),
            TensorSpec("c0", "float32", (1, "batch", 4)),
        ],
        outputs=[
            TensorSpec("y", "float32", (*x_shape[:2], 1)),
            TensorSpec("hn", "float32", (1, "batch", 4)),
            TensorSpec("cn", "float32", (1, "batch", 4)),
        ],
        data_input="x",
        data_output="y",
        state_pairs=[StatePair("h0", "hn", 1), StatePair("c0", "cn", 1)],
        batch_first=batch_first,
        cell="lstm",
        num_layers=1,
        hidden_size=4,
        normalization=Normalization((1.0, 2.0), (3.0, 4.0), (0,)),
    )


def test_spec_json_round_trip() -> None:
    spec = _spec()
    again = RnnSpec.from_json(spec.to_json())
    assert again == spec
    assert again.streamable and again.seq_axis == 1 and again.batch_axis == 0


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.pop("inputs"),
        lambda d: d.update(data_input="nope"),
        lambda d: d.update(cell="transformer"),
        lambda d: d.update(state_pairs=[{"input": "h0", "output": "missing"}]),
        lambda d: d.update(format=99),
    ],
)
def test_broken_specs_are_model_file_errors(mutate) -> None:
    d = json.loads(_spec().to_json())
    mutate(d)
    with pytest.raises(ModelFileError):
        RnnSpec.from_json(json.dumps(d), "m.onnx")


def test_spec_that_is_not_json() -> None:
    with pytest.raises(ModelFileError, match="not a valid rnnedge spec"):
        RnnSpec.from_json("{not json", "m.onnx")


def test_exit_codes_are_distinct() -> None:
    codes = [c for n, c in EXIT_CODES.items() if n != "RnnEdgeError"]
    assert len(codes) == len(set(codes)) and 1 not in codes and 2 not in codes


def test_default_grid_goes_shorter_and_longer_than_the_example() -> None:
    grid = default_grid(3, 7)
    lens = {t for _, t in grid}
    assert {1, 7, 17} <= lens and 3 in lens
    assert {b for b, _ in grid} >= {1, 5, 3}


def test_make_feeds_follow_layout_and_state_batch_axis() -> None:
    rng = np.random.default_rng(0)
    feeds = make_feeds(_spec(batch_first=False), 5, 9, rng)
    assert feeds["x"].shape == (9, 5, 2)
    assert feeds["h0"].shape == (1, 5, 4) and feeds["c0"].shape == (1, 5, 4)
    assert np.abs(feeds["h0"]).sum() > 0  # a zero state would not test state plumbing


def test_compare_arrays_uses_atol_plus_rtol() -> None:
    e = np.array([1.0, 100.0], np.float32)
    assert compare_arrays(e, e + np.array([5e-6, 5e-3], np.float32), FP32)[2]
    assert not compare_arrays(e, e + np.array([5e-4, 0], np.float32), FP32)[2]
    max_abs, _, ok, detail = compare_arrays(e, e[:1], FP32)
    assert not ok and math.isinf(max_abs) and "shape" in detail
    assert not compare_arrays(e, np.array([np.nan, 100.0], np.float32), FP32)[2]


def test_report_collects_every_failure_then_raises_once() -> None:
    rep = ParityReport("torch", FP32)
    exp = {"y": np.zeros((1, 2, 1), np.float32)}
    rep.comparisons += compare_outputs("ort-cpu", 1, 2, exp, {"y": exp["y"] + 1}, FP32)
    rep.comparisons += compare_outputs("ort-cpu", 1, 3, exp, RuntimeError("boom"), FP32)
    rep.comparisons += compare_outputs("ort-cpu", 1, 4, exp, {}, FP32)
    rep.comparisons += compare_outputs("ort-cpu", 2, 2, exp, exp, FP32)
    assert not rep.ok and len(rep.failures) == 3
    with pytest.raises(ParityError, match="3 of 4 comparisons") as info:
        rep.raise_if_failed()
    assert "boom" in str(info.value) and "output missing" in str(info.value)
    rows = parity_rows(rep)
    assert [r[-1] for r in rows] == ["FAIL", "FAIL", "FAIL", "pass"]


def test_check_sequence_errors_name_given_and_expected() -> None:
    spec = _spec()
    with pytest.raises(InputError, match=r"dtype int64; expected floating point"):
        check_sequence(np.zeros((1, 2, 2), np.int64), spec)
    with pytest.raises(InputError, match=r"shape \(2, 2\) \(rank 2\); expected rank 3"):
        check_sequence(np.zeros((2, 2), np.float32), spec)
    with pytest.raises(InputError, match=r"3 features .* expects 2"):
        check_sequence(np.zeros((1, 2, 3), np.float32), spec)
    with pytest.raises(InputError, match="empty"):
        check_sequence(np.zeros((1, 0, 2), np.float32), spec)
    bad = np.zeros((1, 4, 2), np.float32)
    bad[0, 3, 1] = np.inf
    with pytest.raises(InputError, match=r"\(0, 3, 1\)"):
        check_sequence(bad, spec)
    assert check_sequence(bad, spec, nan_policy="zero")[0, 3, 1] == 0
    bad[0, 2, 1] = 7.0
    assert check_sequence(bad, spec, nan_policy="ffill")[0, 3, 1] == 7.0
    assert check_sequence(np.zeros((1, 2, 2)), spec).dtype == np.float32


def test_check_state_shapes() -> None:
    spec = _spec()
    good = {"h0": np.zeros((1, 3, 4)), "c0": np.zeros((1, 3, 4))}
    assert check_state(good, spec, 3)["h0"].dtype == np.float32
    with pytest.raises(InputError, match=r"expected \(1, 2, 4\) for batch 2"):
        check_state(good, spec, 2)
    with pytest.raises(InputError, match="expected exactly"):
        check_state({"h0": good["h0"]}, spec, 3)


def test_rendering_keeps_numbers_until_the_end() -> None:
    assert fmt(1.5e-7) == "1.50e-07" and fmt(None) == "-" and fmt(float("inf")) == "inf"
    text = table(("a", "b"), [["x", 1.0], ["yy", 2.5]])
    assert text.splitlines()[0].startswith("a")
    assert jsonable({"v": float("nan"), "c": Comparison("r", 1, 1, "y", 0.0, 0.0, True)}) == {
        "v": "nan",
        "c": {
            "runner": "r",
            "batch": 1,
            "seq_len": 1,
            "output": "y",
            "max_abs": 0.0,
            "max_rel": 0.0,
            "ok": True,
            "detail": "",
        },
    }
