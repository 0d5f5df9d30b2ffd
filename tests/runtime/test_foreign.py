"""rnnedge.runtime.foreign: recurrent contracts recovered from ONNX files other tools wrote.

The fixtures are committed files made by `tests/fixtures/make_fixtures.py`; these tests need
numpy + onnxruntime only.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from rnnedge.errors import InputError
from rnnedge.runtime.backends.ort import session_tensor_specs
from rnnedge.runtime.foreign import (
    detect_spec,
    extra_inputs,
    parse_state_arg,
    resolve_spec,
    state_batch_axis,
)
from rnnedge.spec import SPEC_KEY, StatePair, TensorSpec
from rnnedge.tools import inspect as foreign
from rnnedge.tools.inspect import describe

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def session(name: str) -> Any:
    path = FIXTURES / name
    assert path.is_file(), f"{path} missing; run tests/fixtures/make_fixtures.py"
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def specs(name: str) -> tuple[list[TensorSpec], list[TensorSpec]]:
    s = session(name)
    return session_tensor_specs(s.get_inputs()), session_tensor_specs(s.get_outputs())


def t(name: str, *shape: int | str, dtype: str = "float32") -> TensorSpec:
    return TensorSpec(name, dtype, tuple(shape))


DATA = t("x", "batch", "seq", 3)
OUT = t("y", "batch", "seq", 2)


def pairs_of(inputs: list[TensorSpec], outputs: list[TensorSpec]) -> list[tuple[str, str]]:
    return [(p.input, p.output) for p in detect_spec(inputs, outputs).state_pairs]


# --- fixtures: detection --------------------------------------------------------------------------


def test_fixtures_are_foreign_and_small() -> None:
    for name in ("foreign_lstm", "foreign_gru_state", "foreign_extra_input", "foreign_ambiguous"):
        path = FIXTURES / f"{name}.onnx"
        assert path.stat().st_size < 50_000
        assert SPEC_KEY not in session(path.name).get_modelmeta().custom_metadata_map


def test_lstm_fixture_pairs_axes_and_time_major() -> None:
    spec = detect_spec(*specs("foreign_lstm.onnx"), source="foreign_lstm")
    assert spec.state_pairs == [StatePair("h0", "hn", 1), StatePair("c0", "cn", 1)]
    assert (spec.data_input, spec.data_output) == ("input", "output")
    assert spec.batch_first is False  # 'batch' is dim 1 of input, as in the states
    assert (spec.seq_axis, spec.batch_axis) == (0, 1)
    assert spec.cell is None and spec.hidden_size is None
    assert spec.producer == {"detected": "rnnedge.foreign"}
    assert spec.streamable
    assert extra_inputs(spec) == []


def test_gru_fixture_batch_first_with_state_to_stateN() -> None:
    spec = detect_spec(*specs("foreign_gru_state.onnx"))
    assert spec.state_pairs == [StatePair("state", "stateN", 1)]
    assert (spec.data_input, spec.data_output) == ("x", "y")
    assert spec.batch_first is True
    assert (spec.seq_axis, spec.batch_axis) == (1, 0)


def test_extra_input_fixture_reports_gain() -> None:
    spec = detect_spec(*specs("foreign_extra_input.onnx"))
    assert spec.state_pairs == [StatePair("state", "stateN", 1)]
    assert spec.data_input == "x"
    assert extra_inputs(spec) == [TensorSpec("gain", "float32", (1,))]


def test_ambiguous_fixture_is_refused_with_the_fix() -> None:
    with pytest.raises(InputError, match="ambiguous") as info:
        detect_spec(*specs("foreign_ambiguous.onnx"), source="amb.onnx")
    msg = str(info.value)
    assert "'h_out'" in msg and "'hN'" in msg and "state_names" in msg and "amb.onnx" in msg


def test_ambiguous_fixture_loads_with_explicit_state_names() -> None:
    spec = detect_spec(*specs("foreign_ambiguous.onnx"), state_names={"h": "hN"})
    assert spec.state_pairs == [StatePair("h", "hN", 1)]
    assert spec.data_output == "y"  # h_out is neither state nor first output


def test_state_names_override_detection() -> None:
    spec = detect_spec(*specs("foreign_lstm.onnx"), state_names={"c0": "cn"})
    assert [(p.input, p.output) for p in spec.state_pairs] == [("c0", "cn")]
    assert [x.name for x in extra_inputs(spec)] == ["h0"]
    assert spec.data_output == "output"
    assert detect_spec(*specs("foreign_lstm.onnx"), state_names={}).state_pairs == []


def test_state_names_unknown_name_lists_the_graph() -> None:
    with pytest.raises(InputError, match="names no graph input 'h'") as info:
        detect_spec(*specs("foreign_lstm.onnx"), state_names={"h": "hn"})
    assert "inputs: input(seq, batch, 3), h0(1, batch, 4), c0(1, batch, 4)" in str(info.value)
    assert "outputs: output(seq, batch, 4), hn" in str(info.value)
    with pytest.raises(InputError, match="output 'h_n'"):
        detect_spec(*specs("foreign_lstm.onnx"), state_names={"h0": "h_n"})


def test_state_names_that_cannot_be_carried_are_refused() -> None:
    inputs, outputs = [DATA, t("h0", 1, "b", 4)], [OUT, t("hn", 1, "b", 5), t("h2", 4)]
    with pytest.raises(InputError, match=r"h0:hn cannot be carried \(axis 2 is 4 vs 5\)"):
        detect_spec(inputs, outputs, state_names={"h0": "hn"})
    with pytest.raises(InputError, match=r"cannot be carried \(rank 3 vs 1\)"):
        detect_spec(inputs, outputs, state_names={"h0": "h2"})
    with pytest.raises(InputError, match="state_names names 'hn' twice"):
        detect_spec(*specs("foreign_lstm.onnx"), state_names={"h0": "hn", "c0": "hn"})


# --- rules on synthetic graphs --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("inp", "out"),
    [
        ("h0", "hn"),
        ("state0", "stateN"),
        ("h_0", "h_n"),
        ("h", "hn"),
        ("h", "h_n"),
        ("mem", "mem_out"),
        ("mem", "memout"),
        ("mem", "new_mem"),
        ("mem", "next_mem"),
        ("h_in", "h_out"),
        ("hin", "hout"),
        ("h_in", "hout"),
        ("in_state", "out_state"),
    ],
)
def test_each_naming_rule_pairs(inp: str, out: str) -> None:
    inputs = [DATA, t(inp, 1, "batch", 8)]
    outputs = [OUT, t("decoy", 1, "batch", 8), t(out, 1, "batch", 8)]
    assert pairs_of(inputs, outputs) == [(inp, out)]


def test_earlier_rule_wins_and_pairs_keep_graph_order() -> None:
    inputs = [DATA, t("c0", 1, "b", 4), t("h0", 1, "b", 4)]
    outputs = [OUT, t("hn", 1, "b", 4), t("h0_out", 1, "b", 4), t("cn", 1, "b", 4)]
    assert pairs_of(inputs, outputs) == [("c0", "cn"), ("h0", "hn")]


def test_shape_must_match_to_pair() -> None:
    outputs = [OUT, t("hn", 1, "batch", 5)]
    assert pairs_of([DATA, t("h0", 1, "batch", 4)], outputs) == []  # fixed dim differs
    assert pairs_of([DATA, t("h0", "batch", 4)], outputs) == []  # rank differs
    assert pairs_of([DATA, t("h0", 1, "b", 5, dtype="float16")], outputs) == []  # dtype
    assert pairs_of([DATA, t("h0", 1, "n", 5)], outputs) == [("h0", "hn")]  # names may differ


def test_shape_filter_resolves_what_names_alone_would_not() -> None:
    inputs = [DATA, t("h", 2, "batch", 4)]
    outputs = [OUT, t("h_out", 1, "batch", 4), t("hN", 2, "batch", 4)]
    assert pairs_of(inputs, outputs) == [("h", "hN")]


def test_two_inputs_claiming_one_output_is_ambiguous() -> None:
    inputs = [DATA, t("h0", 1, "b", 4), t("h", 1, "b", 4)]
    with pytest.raises(InputError, match=r"output 'hn' is ambiguous.*'h0' and 'h'"):
        detect_spec(inputs, [OUT, t("hn", 1, "b", 4)])


def test_batch_axis_of_states() -> None:
    assert state_batch_axis(t("h", 1, "batch", 4)) == 1
    assert state_batch_axis(t("h", "batch", 1, 4)) == 0
    assert state_batch_axis(t("h", 2, 3, 4)) == 1
    assert state_batch_axis(t("h", "a", "b", 4)) == 1
    assert state_batch_axis(t("h", 3, 4)) == 0
    assert state_batch_axis(t("h", 4, "batch")) == 1
    spec = detect_spec([DATA, t("h", "B", 1, 4)], [OUT, t("h_out", "B", 1, 4)])
    assert spec.state_pairs[0].batch_axis == 0


@pytest.mark.parametrize(
    ("data_shape", "state_shape", "expected"),
    [
        (("N", "T", 3), (1, "N", 4), True),
        (("T", "N", 3), (1, "N", 4), False),
        ((7, "T", 3), (1, 7, 4), True),  # fixed batch found by value
        (("T", 7, 3), (1, 7, 4), False),
        ((1, 1, 3), (1, 1, 4), True),  # both dims equal: default
        (("P", "M", 3), (1, "N", 4), True),  # batch name not found: default
    ],
)
def test_batch_first_inference(
    data_shape: tuple[int | str, ...], state_shape: tuple[int | str, ...], expected: bool
) -> None:
    inputs = [t("x", *data_shape), t("h0", *state_shape)]
    spec = detect_spec(inputs, [OUT, t("hn", *state_shape)])
    assert spec.batch_first is expected
    forced = detect_spec(inputs, [OUT, t("hn", *state_shape)], batch_first=not expected)
    assert forced.batch_first is (not expected)


def test_stateless_graph_defaults_batch_first() -> None:
    spec = detect_spec([DATA], [OUT])
    assert spec.state_pairs == [] and spec.batch_first and not spec.streamable


def test_data_input_is_first_rank3_non_state() -> None:
    inputs = [t("lengths", "batch"), t("h0", 1, "b", 4), t("feats", "b", "s", 3)]
    spec = detect_spec(inputs, [t("hn", 1, "b", 4), OUT])
    assert (spec.data_input, spec.data_output) == ("feats", "y")
    assert [x.name for x in extra_inputs(spec)] == ["lengths"]


def test_named_data_tensors_are_never_states() -> None:
    inputs, outputs = [t("x", "b", "s", 4)], [t("x_out", "b", "s", 4)]
    with pytest.raises(InputError, match="no non-state numeric input"):
        detect_spec(inputs, outputs)  # x -> x_out looks like a state
    spec = detect_spec(inputs, outputs, data_input="x")
    assert (spec.data_input, spec.data_output, spec.state_pairs) == ("x", "x_out", [])


def test_missing_data_tensors_say_what_exists() -> None:
    with pytest.raises(InputError, match=r"inputs: feats\(\), h0\(1, b, 4\)"):
        detect_spec([t("feats"), t("h0", 1, "b", 4)], [OUT, t("hn", 1, "b", 4)])
    with pytest.raises(InputError, match="every output is a state"):
        detect_spec([DATA, t("h0", 1, "b", 4)], [t("hn", 1, "b", 4)])
    with pytest.raises(InputError, match="data input 'z' is not in the graph"):
        detect_spec([DATA], [OUT], data_input="z")
    with pytest.raises(InputError, match="data output 'z' is not in the graph"):
        detect_spec([DATA], [OUT], data_output="z")
    inputs, outputs = [DATA, t("h0", 1, "b", 4)], [OUT, t("hn", 1, "b", 4)]
    with pytest.raises(InputError, match="data output 'hn' is also named as a state"):
        detect_spec(inputs, outputs, state_names={"h0": "hn"}, data_output="hn")
    spec = detect_spec(inputs, outputs, data_output="hn")  # a named data output is no state
    assert (spec.data_output, spec.state_pairs) == ("hn", [])


# --- parse_state_arg ------------------------------------------------------------------------------


def test_parse_state_arg_good() -> None:
    assert parse_state_arg("h0:hn,c0:cn") == {"h0": "hn", "c0": "cn"}
    assert parse_state_arg(" h0 : hn , c0:cn ") == {"h0": "hn", "c0": "cn"}
    assert parse_state_arg(["h0:hn", "c0:cn"]) == {"h0": "hn", "c0": "cn"}
    assert list(parse_state_arg("c0:cn,h0:hn")) == ["c0", "h0"]


@pytest.mark.parametrize(
    "bad", ["", "h0", "h0:", ":hn", "h0:hn:x", "h0:hn,", "h0=hn", "h0:hn,h0:cn", "h0:hn,c0:hn"]
)
def test_parse_state_arg_bad(bad: str) -> None:
    with pytest.raises(InputError, match=r"e\.g\. --state h0:hn,c0:cn"):
        parse_state_arg(bad)


# --- describe / resolve_spec ----------------------------------------------------------------------


def test_describe_foreign_lstm() -> None:
    d = describe(session("foreign_lstm.onnx"), ops=["LSTM(lstm, hidden_size=4)"], source="m")
    assert d["inputs"][0] == {
        "name": "input",
        "dtype": "float32",
        "shape": ["seq", "batch", 3],
        "dynamic_axes": [0, 1],
    }
    assert [o["name"] for o in d["outputs"]] == ["output", "hn", "cn"]
    assert d["outputs"][1]["dynamic_axes"] == [1]
    assert d["spec_origin"] == "detected" and d["spec_error"] is None
    assert d["spec"]["data_input"] == "input" and d["spec"]["batch_first"] is False
    assert (d["spec"]["seq_axis"], d["spec"]["batch_axis"]) == (0, 1)
    assert d["spec"]["streamable"] is True and d["spec"]["cell"] is None
    assert d["state_pairs"] == [
        {"input": "h0", "output": "hn", "batch_axis": 1},
        {"input": "c0", "output": "cn", "batch_axis": 1},
    ]
    assert d["extra_inputs"] == [] and d["ops"] == ["LSTM(lstm, hidden_size=4)"]
    assert d["ops_note"] is None


def test_describe_extra_and_ambiguous_and_override() -> None:
    d = describe(session("foreign_extra_input.onnx"), ops=[])
    assert [x["name"] for x in d["extra_inputs"]] == ["gain"]
    assert d["extra_inputs"][0]["shape"] == [1]
    amb = describe(session("foreign_ambiguous.onnx"))
    assert amb["spec"] is None and amb["spec_origin"] is None and "ambiguous" in amb["spec_error"]
    assert amb["state_pairs"] == [] and amb["ops"] is None
    fixed = describe(session("foreign_ambiguous.onnx"), state_names={"h": "h_out"})
    assert fixed["state_pairs"] == [{"input": "h", "output": "h_out", "batch_axis": 1}]


def test_describe_notes_missing_onnx(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(foreign, "is_available", lambda module: module != "onnx")
    assert describe(session("foreign_lstm.onnx"), ops=[])["ops_note"] == foreign.NO_ONNX_NOTE
    assert describe(session("foreign_lstm.onnx"))["ops_note"] == foreign.NO_ONNX_NOTE


def test_rnn_ops_without_onnx_is_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(module: str, purpose: str) -> Any:
        raise foreign.RuntimeUnavailableError(f"{purpose} needs {module}")

    monkeypatch.setattr(foreign, "require", missing)
    assert foreign.rnn_ops(FIXTURES / "foreign_lstm.onnx") == []


def test_rnn_ops_lists_nodes() -> None:
    pytest.importorskip("onnx")
    assert foreign.rnn_ops(FIXTURES / "foreign_lstm.onnx") == [
        "LSTM(lstm, hidden_size=4, direction=forward)"
    ]
    assert foreign.rnn_ops(FIXTURES / "foreign_gru_state.onnx") == [
        "GRU(gru, hidden_size=5, direction=forward)"
    ]


class StoredSpecSession:
    """A session whose metadata holds an rnnedge spec, wrapping a real foreign session."""

    def __init__(self, inner: Any, spec_json: str) -> None:
        self.inner, self.meta = inner, {SPEC_KEY: spec_json}

    def get_inputs(self) -> Any:
        return self.inner.get_inputs()

    def get_outputs(self) -> Any:
        return self.inner.get_outputs()

    def get_modelmeta(self) -> Any:
        return type("Meta", (), {"custom_metadata_map": self.meta})()


def test_stored_spec_wins_over_detection() -> None:
    inner = session("foreign_lstm.onnx")
    stored = detect_spec(*specs("foreign_lstm.onnx"), state_names={"h0": "hn"})
    stored.cell, stored.producer = "lstm", {"rnnedge": "0.1.0"}
    fake = StoredSpecSession(inner, stored.to_json())
    d = describe(fake, ops=[], state_names={"c0": "cn"})
    assert d["spec_origin"] == "stored" and d["spec"]["cell"] == "lstm"
    assert d["state_pairs"] == [{"input": "h0", "output": "hn", "batch_axis": 1}]
    assert [x["name"] for x in d["extra_inputs"]] == ["c0"]
    assert resolve_spec(fake, state_names={"c0": "cn"}).cell == "lstm"


def test_resolve_spec_detects_for_foreign_models() -> None:
    spec = resolve_spec(session("foreign_ambiguous.onnx"), state_names={"h": "hN"})
    assert spec.state_pairs == [StatePair("h", "hN", 1)]


def test_module_imports_neither_onnx_nor_torch() -> None:
    code = (
        "import sys, rnnedge.runtime.foreign; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('onnx', 'torch')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- the detected pairing is the right one --------------------------------------------------------


def test_streaming_foreign_lstm_in_chunks_matches_one_pass() -> None:
    sess = session("foreign_lstm.onnx")
    spec = detect_spec(
        session_tensor_specs(sess.get_inputs()), session_tensor_specs(sess.get_outputs())
    )
    rng = np.random.default_rng(0)
    batch, seq = 2, 9
    data_shape = [0, 0, 3]
    data_shape[spec.seq_axis], data_shape[spec.batch_axis] = seq, batch
    x = rng.standard_normal(data_shape).astype(np.float32)
    assert x.shape == (seq, batch, 3)

    def random_state(name: str) -> np.ndarray:  # non-zero, so a swapped h/c pairing shows
        shape = [batch if isinstance(d, str) else d for d in spec.input(name).shape]
        return rng.standard_normal(shape).astype(np.float32)

    state = {p.input: random_state(p.input) for p in spec.state_pairs}
    names = [o.name for o in sess.get_outputs()]

    def step(chunk: np.ndarray, carried: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(names, sess.run(names, {spec.data_input: chunk, **carried}), strict=True))

    full = step(x, state)
    pieces = []
    for chunk in np.split(x, [4], axis=spec.seq_axis):
        out = step(chunk, state)
        pieces.append(out[spec.data_output])
        state = {p.input: out[p.output] for p in spec.state_pairs}
    np.testing.assert_allclose(
        np.concatenate(pieces, axis=spec.seq_axis), full[spec.data_output], atol=1e-6
    )
    for p in spec.state_pairs:
        np.testing.assert_allclose(state[p.input], full[p.output], atol=1e-6)
