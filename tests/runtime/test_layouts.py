"""Data inputs of every kind, from the fixture script's files: integer tokens (batch, seq_len),
audio (batch, samples) with a carried context and a scalar rate, frames (seq_len, features) with
no batch axis, and a rank-4 frame with every dim fixed and time on axis 2.

Each stream is compared with a hand-written onnxruntime loop (or a full pass), checks are
exact about dtype and rank, and a refused call leaves the stream as it was.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

import rnnedge
from rnnedge.errors import InputError, ModelFileError
from rnnedge.runtime.framing import CONTEXT_KEY, PENDING_KEY

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def load(name: str, **kwargs: Any) -> rnnedge.Model:
    return rnnedge.load(FIXTURES / f"foreign_{name}.onnx", **kwargs)


def raw(name: str) -> ort.InferenceSession:
    return ort.InferenceSession(
        str(FIXTURES / f"foreign_{name}.onnx"), providers=["CPUExecutionProvider"]
    )


def unchanged(stream: Any, call: Any, match: str) -> None:
    before, steps = stream.state, stream.steps
    with pytest.raises(InputError, match=match):
        call()
    after = stream.state
    assert after.keys() == before.keys() and stream.steps == steps
    assert all(np.array_equal(after[k], before[k]) for k in before)


# --- integer tokens (batch, seq_len), batch-first state (batch, 1, hidden) ----------------------


def test_tokens_run_and_stream_token_by_token() -> None:
    model = load("tokens")
    spec = model.spec
    assert (spec.data_layout, spec.batch_axis, spec.seq_axis) == ("BT", 0, 1)
    assert [(p.input, p.batch_axis) for p in spec.state_pairs] == [("h", 0)]
    assert model.initial_state(3)["h"].shape == (3, 1, 4)
    tokens = np.random.default_rng(0).integers(0, 11, size=(3, 9))
    full, state = model.run(tokens)
    assert full.shape == (3, 9, 4) and state["h"].shape == (3, 1, 4)
    stream = model.stream(batch=3)
    steps = [stream.step(tokens[:, t : t + 1]) for t in range(9)]
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-6)
    np.testing.assert_allclose(stream.state["h"], state["h"], atol=1e-6)
    as_int32, _ = model.run(tokens.astype(np.int32))
    np.testing.assert_array_equal(as_int32, full)
    listed, _ = model.run(tokens.tolist())
    np.testing.assert_array_equal(listed, full)


def test_tokens_refuse_floats_bools_and_out_of_range() -> None:
    model = load("tokens")
    tokens = np.array([[1, 2, 3]])
    for bad, why in [
        (tokens.astype(np.float32), "dtype float32; the model takes integers"),
        (tokens > 1, "dtype bool"),
        (np.array([[2**63]], dtype=np.uint64), "outside int64"),
        ([["1", "2"]], "dtype <U1"),
        (tokens[0], r"rank 1\); expected rank 2 \(batch, seq_len\)"),
    ]:
        with pytest.raises(InputError, match=why):
            model.run(bad)
    stream = model.stream()
    stream.step(tokens)
    unchanged(stream, lambda: stream.step(tokens.astype(np.float64)), "takes integers")


# --- audio (batch, samples): context carried, frames buffered, sr a rank-0 int64 ----------------


def audio_loop(x: np.ndarray, context: int, frame: int, sr: int = 16000) -> list[np.ndarray]:
    """What a project feeding this graph by hand does: each call the last `context` samples of
    the previous call's input (zeros at first) and `frame` new ones; state carried."""
    session = raw("audio")
    state = np.zeros((1, x.shape[0], 3), np.float32)
    carried = np.zeros((x.shape[0], context), np.float32)
    out = []
    for start in range(0, x.shape[1] - frame + 1, frame):
        fed = np.concatenate([carried, x[:, start : start + frame]], axis=1)
        prob, state = session.run(
            None, {"audio": fed, "state": state, "sr": np.array(sr, dtype=np.int64)}
        )
        out.append(prob)
        carried = fed[:, -context:]
    return out


def test_audio_detected_from_unnamed_dims() -> None:
    spec = load("audio").spec
    assert (spec.data_input, spec.data_output, spec.data_layout) == ("audio", "prob", "BT")
    assert [(p.input, p.batch_axis) for p in spec.state_pairs] == [("state", 1)]


@pytest.mark.parametrize("batch", [1, 2])
def test_audio_framed_stream_equals_the_loop(batch: int) -> None:
    x = np.random.default_rng(batch).standard_normal((batch, 16 * 13 + 5)).astype(np.float32)
    want = audio_loop(x, 8, 16)
    stream = load("audio").stream(batch=batch, context=8, frame=16, extra={"sr": 16000})
    pieces = [x[:, :3], x[:, 3:3], x[:, 3:40], x[:, 40:41], x[:, 41:]]
    outs = [stream.step(p) for p in pieces]
    assert outs[0].shape == outs[1].shape == (batch, 0, 1)  # no whole frame yet
    got = np.concatenate(outs, axis=1)
    assert got.shape == (batch, 13, 1)
    np.testing.assert_allclose(got, np.stack(want, axis=1), atol=1e-6, rtol=0)
    assert stream.state[PENDING_KEY].shape == (batch, 5) and stream.steps == 13 * 16


def test_audio_context_without_frames_is_one_call_per_chunk() -> None:
    x = np.random.default_rng(3).standard_normal((1, 64)).astype(np.float32)
    want = audio_loop(x, 4, 16)
    stream = load("audio").stream(context=4, extra={"sr": np.int64(16000)})
    got = [stream.step(x[:, i : i + 16]) for i in range(0, 64, 16)]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, atol=1e-6, rtol=0)


def test_audio_sample_rate_is_fed_as_a_scalar_and_checked_exactly() -> None:
    model = load("audio")
    x = np.random.default_rng(4).standard_normal((1, 32)).astype(np.float32)
    y, _ = model.run(x, extra={"sr": 8000})
    np.testing.assert_allclose(y, audio_loop(x, 0, 32, sr=8000)[0], atol=1e-6, rtol=0)
    assert y.max() < 1.0  # sr's rank (0) is added by the graph: (1,) would show as ≥ 1
    for sr, why in [
        (16000.0, "dtype float64; the model takes integers"),
        ("16000", "is a str"),
        (np.array([16000]), r"shape \(1,\) \(rank 1\)"),
        (True, "dtype bool"),
        ([[16000]], "rank 2"),
    ]:
        with pytest.raises(InputError, match=why):
            model.stream(context=8, frame=16, extra={"sr": sr})
        with pytest.raises(InputError, match=why):
            model.run(x, extra={"sr": sr})
    with pytest.raises(
        InputError,
        match=r"extra inputs given: \['rate'\]; the model needs "
        r"exactly \['sr'\]",
    ):
        model.run(x, extra={"rate": 16000})
    with pytest.raises(InputError, match="extra must map input names"):
        model.run(x, extra=16000)


def test_audio_state_restores_the_context_and_the_buffer() -> None:
    model = load("audio")
    x = np.random.default_rng(5).standard_normal((2, 200)).astype(np.float32)
    first = model.stream(batch=2, context=8, frame=16, extra={"sr": 16000})
    first.step(x[:, :70])
    saved = first.state
    assert set(saved) == {"state", CONTEXT_KEY, PENDING_KEY}
    assert saved[CONTEXT_KEY].shape == (2, 8) and saved[PENDING_KEY].shape == (2, 6)
    rest = first.step(x[:, 70:])
    second = model.stream(batch=2, context=8, frame=16, extra={"sr": 16000})
    second.step(x[:, :33])
    second.state = saved
    np.testing.assert_array_equal(second.step(x[:, 70:]), rest)
    for bad, why in [
        ({**saved, CONTEXT_KEY: saved[CONTEXT_KEY][:, :7]}, "carries float32"),
        ({**saved, PENDING_KEY: np.zeros((2, 16), np.float32)}, "0..15 steps"),
        ({k: v for k, v in saved.items() if k != PENDING_KEY}, "lacks"),
        ({**saved, "state": saved["state"][:, :1]}, r"expected \(1, 2, 3\)"),
        ({**saved, CONTEXT_KEY: [[None] * 8] * 2}, "dtype object"),
    ]:
        unchanged(second, lambda bad=bad: setattr(second, "state", bad), why)


def test_audio_bad_chunks_leave_the_stream_as_it_was() -> None:
    stream = load("audio").stream(batch=2, context=8, frame=16, extra={"sr": 16000})
    x = np.random.default_rng(6).standard_normal((2, 40)).astype(np.float32)
    stream.step(x[:, :20])
    unchanged(stream, lambda: stream.step(x[:1]), "batch 1 .* batch=2")
    unchanged(stream, lambda: stream.step(x[:, None]), "rank 3")
    unchanged(stream, lambda: stream.step(x.astype(np.int64)), "dtype int64")
    unchanged(stream, lambda: stream.step([[1.0, 2.0], [3.0]]), "cannot be read as an array")
    poisoned = x.copy()
    poisoned[1, 30] = np.inf
    unchanged(stream, lambda: stream.step(poisoned), "Inf")


def test_whole_frames_take_the_in_place_path_with_the_same_checks() -> None:
    model = load("audio")
    x = np.random.default_rng(7).standard_normal((1, 16 * 6)).astype(np.float32)
    stream = model.stream(context=8, frame=16, extra={"sr": 16000})
    got = [stream.step(x[:, i : i + 16]) for i in range(0, 96, 16)]  # one frame per push
    np.testing.assert_allclose(
        np.concatenate(got, axis=1), np.stack(audio_loop(x, 8, 16), 1), atol=1e-6, rtol=0
    )
    poisoned = x[:, :16].copy()
    poisoned[0, 3] = np.nan
    unchanged(stream, lambda: stream.step(poisoned), "NaN")
    assert stream.step(x[:, :16]).shape == (1, 1, 1) and stream.steps == 7 * 16


def test_a_framing_that_cannot_fit_a_fixed_time_axis_is_refused_at_open() -> None:
    model = load("fixed")
    with pytest.raises(InputError, match="use frame=1"):
        model.stream(frame=2)
    with pytest.raises(InputError, match="no room"):
        model.stream(context=1)
    audio = load("audio")
    for kwargs, why in [
        ({"frame": 0}, "frame must be a whole number ≥ 1"),
        ({"frame": 2.0}, "frame must be a whole number"),
        ({"context": True, "frame": 16}, "context must be a whole number"),
        ({"context": 2**31 - 1, "frame": 16}, "more than 2,147,483,648"),
    ]:
        with pytest.raises(InputError, match=why):
            audio.stream(extra={"sr": 16000}, **kwargs)


# --- frames (seq_len, features) with no batch axis ----------------------------------------------


def test_frames_without_batch_axis() -> None:
    model = load("frames")
    spec = model.spec
    assert (spec.data_layout, spec.batch_axis) == ("TF", None)
    assert [p.batch_axis for p in spec.state_pairs] == [None, None]
    x = np.random.default_rng(7).standard_normal((11, 3)).astype(np.float32)
    full, state = model.run(x)
    assert full.shape == (11, 4) and state["h"].shape == (1, 1, 4)
    stream = model.stream()
    parts = [stream.step(x[:4]), stream.step(x[4:5]), stream.step(x[5:])]
    np.testing.assert_allclose(np.concatenate(parts), full, atol=1e-6)
    with pytest.raises(InputError, match=r"batch 1 only .* has no batch axis"):
        model.stream(batch=2)
    with pytest.raises(InputError, match=r"rank 3\); expected rank 2 \(seq_len, features=3\)"):
        model.run(x[None])


# --- every dim fixed, time on axis 2, a batch-first cache ---------------------------------------


def test_fixed_frames_with_time_on_axis_two() -> None:
    model = load("fixed")
    spec = model.spec
    assert (spec.data_layout, spec.seq_axis) == ("BFTC", 2)
    assert [(p.input, p.batch_axis) for p in spec.state_pairs] == [("cache", 0)]
    assert model.initial_state()["cache"].shape == (1, 5)
    frames = np.random.default_rng(8).standard_normal((1, 3, 4, 2)).astype(np.float32)
    session, cache, want = raw("fixed"), np.zeros((1, 5), np.float32), []
    for t in range(4):
        enh, cache = session.run(None, {"spec": frames[:, :, t : t + 1], "cache": cache})
        want.append(enh)
    stream = model.stream(frame=1)
    np.testing.assert_allclose(stream.step(frames), np.concatenate(want, axis=2), atol=1e-6)
    np.testing.assert_allclose(stream.state["cache"], cache, atol=1e-6)
    with pytest.raises(InputError, match="runs batch 1 only"):
        model.stream(batch=2)
    with pytest.raises(InputError, match="fixes the batch at 1"):
        model.run(np.repeat(frames[:, :, :1], 2, 0))
    plain = model.stream()
    unchanged(plain, lambda: plain.step(frames), "4 steps .* expects 1")
    unchanged(
        plain,
        lambda: setattr(plain, "state", {"cache": np.zeros((2, 5), np.float32)}),
        r"declared with batch 1 on axis 0; batch 2|expected \(1, 5\)",
    )


# --- overrides ----------------------------------------------------------------------------------


def test_overrides_replace_each_guess() -> None:
    swapped = load("fixed", layout="BTFC")  # time on axis 1 instead: 3 steps per call
    assert (swapped.spec.data_layout, swapped.spec.seq_axis) == ("BTFC", 1)
    model = load("tokens", state_names=[("h", "h_out", 0)])
    assert [(p.input, p.output, p.batch_axis) for p in model.spec.state_pairs] == [
        ("h", "h_out", 0)
    ]
    no_axis = load("fixed", state_batch_axis={"cache": None})
    assert no_axis.spec.state_pairs[0].batch_axis is None
    named = load("audio", data_input="audio", data_output="prob", state_names={"state": "stateN"})
    assert named.spec.data_layout == "BT"
    assert not load("frames", state_names={}).spec.streamable


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        (
            {"data_input": "nope"},
            r"data input 'nope' is not in the graph; it has inputs: "
            r"tokens\(batch, seq_len\), h\(batch, 1, 4\)",
        ),
        ({"data_output": "h"}, "data output 'h' is not in the graph"),
        ({"state_names": {"h": "nope"}}, "names no graph output 'nope'"),
        ({"state_batch_axis": {"nope": 0}}, r"state_batch_axis names \['nope'\]"),
        ({"state_batch_axis": {"h": 5}}, r"expected an axis 0..2 of its shape"),
        ({"layout": "BTF"}, "has 3 axes; the data input has rank 2"),
        ({"layout": "bt"}, "capital letters"),
        ({"layout": 5}, "layout must be the data input's axes as letters"),
        ({"batch_first": "yes"}, "batch_first must be True, False or None"),
        ({"state_names": "h:h_out"}, "state_names must map state inputs to outputs"),
        ({"state_names": [("h",)]}, r"items must be \(input, output\)"),
        ({"settings": "x"}, "settings must be a mapping"),
    ],
)
def test_bad_overrides_are_refused_naming_the_graph(kwargs: dict[str, Any], why: str) -> None:
    with pytest.raises(InputError, match=why):
        load("tokens", **kwargs)


def test_a_state_axis_that_leaves_a_dynamic_dim_says_which_option() -> None:
    model = load("tokens", state_batch_axis={"h": 1})
    with pytest.raises(
        InputError,
        match=r"symbolic dim 'batch' at axis 0 .* "
        r"state_batch_axis=\{'h': 0\} \(--state h:h_out@0\)",
    ):
        model.stream()


def _with_spec(tmp_path: Path, mutate: Any = None) -> Path:
    onnx = pytest.importorskip("onnx")
    from rnnedge.runtime.backends.ort import session_tensor_specs
    from rnnedge.runtime.foreign import detect_spec
    from rnnedge.spec import SPEC_KEY

    session = raw("lstm")
    spec = detect_spec(
        session_tensor_specs(session.get_inputs()), session_tensor_specs(session.get_outputs())
    )
    spec.producer = {"rnnedge": "test"}
    if mutate is not None:
        mutate(spec)
    model = onnx.load(str(FIXTURES / "foreign_lstm.onnx"))
    onnx.helper.set_model_props(model, {SPEC_KEY: spec.to_json()})
    path = tmp_path / "stored.onnx"
    onnx.save(model, str(path))
    return path


def test_a_stored_spec_wins_but_named_tensors_must_exist(tmp_path: Path) -> None:
    path = _with_spec(tmp_path)
    model = rnnedge.load(path, state_names={"c0": "cn"}, layout="TBF")
    assert [p.input for p in model.spec.state_pairs] == ["h0", "c0"]
    assert model.spec.producer == {"rnnedge": "test"}
    with pytest.raises(InputError, match="state input 'zz' is not a graph input"):
        rnnedge.load(path, state_names={"zz": "cn"})


def test_a_stored_spec_contradicting_its_graph_is_a_broken_file(tmp_path: Path) -> None:
    from rnnedge.spec import TensorSpec

    def as_float64(spec: Any) -> None:
        spec.inputs[0] = TensorSpec("input", "float64", spec.inputs[0].shape)

    with pytest.raises(
        ModelFileError, match="'input' is float64 in the spec, float32 in the graph"
    ):
        rnnedge.load(_with_spec(tmp_path, as_float64))


# --- hostile values for streams ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("batch", "why"),
    [
        (True, "positive integer, got True"),
        (1.5, "positive integer"),
        ("2", "positive integer"),
        (0, "positive integer"),
        (10**9, "zero state would hold 8,000,000,000 values"),
        (2**63, "zero state would hold"),
    ],
)
def test_stream_batch_values_are_refused(batch: Any, why: str) -> None:
    with pytest.raises(InputError, match=why):
        load("lstm").stream(batch=batch)


def test_stream_state_none_and_odd_keys_are_refused() -> None:
    stream = load("lstm").stream()
    unchanged(stream, lambda: setattr(stream, "state", None), "must be a mapping")
    state = stream.state
    unchanged(
        stream,
        lambda: setattr(stream, "state", {None: state["h0"], "c0": state["c0"]}),
        "expected exactly",
    )
    deep: Any = 0.0
    for _ in range(70):
        deep = [deep]
    unchanged(
        stream,
        lambda: setattr(stream, "state", {"h0": deep, "c0": state["c0"]}),
        "cannot be read as an array",
    )
    assert np.asarray(load("lstm").stream(batch=np.int64(2)).state["h0"]).shape == (1, 2, 4)
