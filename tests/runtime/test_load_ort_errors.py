"""ONNX Runtime's exceptions reach users through one translator (`OrtErrors`), typed and
worded the same wherever rnnedge called ORT: loading, `Model.run`, a stream's bound step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import rnnedge
from rnnedge.errors import DeviceError, InputError, ModelFileError, RnnEdgeError, StreamError
from rnnedge.runtime.backends.ort import OrtCpuRunner, OrtErrors, open_session

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
LSTM = FIXTURES / "foreign_lstm.onnx"  # time-major (seq, batch, 3), h0/c0 (1, batch, 4)


def test_a_file_that_is_not_onnx_names_the_file_and_what_it_is_not(tmp_path: Path) -> None:
    path = tmp_path / "notes.onnx"
    path.write_text("these are notes, not a model")
    with pytest.raises(ModelFileError) as err:
        rnnedge.load(path)
    text = str(err.value)
    assert "'" + str(path) + "' could not be loaded as an ONNX model" in text
    assert "INVALID_PROTOBUF" in text and "not an ONNX protobuf" in text
    assert "\n" not in text
    assert type(err.value.__cause__).__name__ == "InvalidProtobuf"  # ORT's own, kept as cause


def test_bytes_that_are_not_onnx_are_a_model_file_error() -> None:
    with pytest.raises(ModelFileError, match=r"'<bytes>' could not be loaded.*not an ONNX"):
        open_session(b"\x00\x01 not a protobuf")


def test_refused_inputs_show_what_was_fed() -> None:
    with OrtCpuRunner(LSTM) as runner:
        wrong = {
            "input": np.zeros((2, 1, 4), np.float32),
            "h0": np.zeros((1, 1, 4), np.float32),
            "c0": np.zeros((1, 1, 4), np.float32),
        }
        with pytest.raises(
            InputError,
            match=r"ONNX Runtime refused the inputs input\(2, 1, 4\) "
            r"float32, h0\(1, 1, 4\) float32.*INVALID_ARGUMENT",
        ):
            runner.infer(wrong)
        with pytest.raises(InputError, match=r"refused the inputs input\(2, 1, 3\).*missing"):
            runner.infer({"input": np.zeros((2, 1, 3), np.float32)})  # ORT's ValueError


def test_model_run_goes_through_the_same_translator() -> None:
    model = rnnedge.load(LSTM)
    with pytest.raises(InputError, match=r"refused the inputs input\(2, 1, 3\) float64"):
        model.infer({"input": np.zeros((2, 1, 3), np.float64), **model.initial_state(1)})


def test_rnnedge_errors_and_non_ort_failures_pass_unchanged() -> None:
    errors = OrtErrors(feeds={})
    for exc in (StreamError("closed"), MemoryError(), KeyboardInterrupt()):
        with pytest.raises(type(exc)) as caught, errors:
            raise exc
        assert caught.value is exc


def _device_rule(exc: Exception) -> RnnEdgeError | None:
    return DeviceError(f"the GPU failed: {exc}") if "CUDA failure" in str(exc) else None


def test_a_callers_rule_comes_first_and_the_shared_rules_catch_the_rest() -> None:
    errors = OrtErrors(feeds={}, runtime="ONNX Runtime (CUDA)", rule=_device_rule)
    with pytest.raises(DeviceError, match="CUDA failure 2: out of memory"), errors:
        raise RuntimeError("CUDA failure 2: out of memory")
    with (
        pytest.raises(InputError, match=r"^ONNX Runtime \(CUDA\) refused the inputs : bad"),
        errors,
    ):
        raise ValueError("bad")
    with pytest.raises(DeviceError, match=r"while loading: .*INVALID_PROTOBUF"):
        open_session(b"not a model", rule=lambda exc: DeviceError(f"while loading: {exc}"))


def test_feeds_are_described_only_when_something_failed() -> None:
    calls: list[int] = []

    def feeds() -> dict[str, np.ndarray]:
        calls.append(1)
        return {"x": np.zeros((1, 2), np.float32)}

    errors = OrtErrors(feeds=feeds, runtime="ONNX Runtime (CUDA)")
    for _ in range(3):
        with errors:
            pass
    assert calls == []
    with (
        pytest.raises(
            InputError,
            match=r"^ONNX Runtime \(CUDA\) refused the inputs "
            r"x\(1, 2\) float32: boom$",
        ),
        errors,
    ):
        raise RuntimeError("boom")
    assert calls == [1]


def _gather_model(path: Path) -> Path:
    """A streamable graph ORT refuses at run time for some values: y = table[int(x)] (out of
    range for x ≥ 3), state h0 -> hn = h0 + 1."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    f = TensorProto.FLOAT
    table = numpy_helper.from_array(np.array([10.0, 20.0, 30.0], np.float32), "table")
    one = numpy_helper.from_array(np.ones((1,), np.float32), "one")
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["x"], ["idx"], to=TensorProto.INT64),
            helper.make_node("Gather", ["table", "idx"], ["y"]),
            helper.make_node("Add", ["h0", "one"], ["hn"]),
        ],
        "gather",
        [
            helper.make_tensor_value_info("x", f, ["batch", "seq_len", 1]),
            helper.make_tensor_value_info("h0", f, [1, "batch", 2]),
        ],
        [
            helper.make_tensor_value_info("y", f, ["batch", "seq_len", 1]),
            helper.make_tensor_value_info("hn", f, [1, "batch", 2]),
        ],
        [table, one],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def test_a_bound_stream_step_that_ort_refuses_keeps_the_state(tmp_path: Path) -> None:
    model = rnnedge.load(_gather_model(tmp_path / "gather.onnx"))
    stream = model.stream(batch=1)
    np.testing.assert_array_equal(stream.step(np.full((1, 1, 1), 1.0, np.float32)), [[[20.0]]])
    assert stream._core.bound  # the next chunk of this shape runs through the bindings
    before = stream.state
    with pytest.raises(
        InputError,
        match=r"ONNX Runtime refused the inputs x\(1, 1, 1\) float32, "
        r"h0\(1, 1, 2\) float32: .*out of",
    ):
        stream.step(np.full((1, 1, 1), 7.0, np.float32))
    after = stream.state
    assert all(np.array_equal(after[k], before[k]) for k in before)
    np.testing.assert_array_equal(stream.step(np.zeros((1, 1, 1), np.float32)), [[[10.0]]])
    np.testing.assert_array_equal(stream.state["h0"], np.full((1, 1, 2), 2.0, np.float32))
