"""`rnnedge.tools.lint` on hand-made bad graphs, a clean hand-made graph, and a real torch export.

Every bad graph here passes `onnx.checker`, which is the point: each test asserts the one
finding code that catches it, so removing that check makes the test fail.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from rnnedge.errors import InputError, ModelFileError  # noqa: E402
from rnnedge.spec import SPEC_KEY, RnnSpec, TensorSpec  # noqa: E402
from rnnedge.tools.lint import Finding, lint, worst  # noqa: E402

H, IN = 8, 4
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
Dims = list[int | str]


def _vi(name: str, shape: Dims) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(array, name)


def _rnn_weights(op: str, dirs: int = 1, inp: int = IN) -> list[onnx.TensorProto]:
    g = GATES[op]
    rng = np.random.default_rng(0)
    return [
        _init("W", rng.standard_normal((dirs, g * H, inp)).astype(np.float32)),
        _init("R", rng.standard_normal((dirs, g * H, H)).astype(np.float32)),
        _init("B", np.zeros((dirs, 2 * g * H), np.float32)),
    ]


def _model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    inits: list[onnx.TensorProto],
    opset: int = 17,
    spec: RnnSpec | None = None,
) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    if spec is not None:
        helper.set_model_props(model, {SPEC_KEY: spec.to_json()})
    onnx.checker.check_model(model)  # the checker accepts every graph in this file
    return model


def _rnn_node(op: str, x: str = "x", **attrs: object) -> onnx.NodeProto:
    return helper.make_node(op, [x, "W", "R", "B"], ["Y", "Y_h"], hidden_size=H, **attrs)


def _time_major_rnn(op: str, x_shape: Dims, **attrs: object) -> onnx.ModelProto:
    """x (seq, batch, in) straight into a layout=0 RNN node, outputs Y and Y_h."""
    dirs = 2 if attrs.get("direction") == "bidirectional" else 1
    return _model(
        [_rnn_node(op, **attrs)],
        [_vi("x", x_shape)],
        [_vi("Y", [x_shape[0], dirs, x_shape[1], H]), _vi("Y_h", [dirs, x_shape[1], H])],
        _rnn_weights(op, dirs),
    )


def _good_gru(spec: RnnSpec | None = None, **attrs: object) -> onnx.ModelProto:
    """Batch-first GRU the way the TorchScript exporter writes it: Transposes around layout 0."""
    attrs = {"linear_before_reset": 1, **attrs}
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
        _rnn_node("GRU", "xt", **attrs),
        helper.make_node("Squeeze", ["Y", "axis1"], ["ys"]),
        helper.make_node("Transpose", ["ys"], ["y"], perm=[1, 0, 2]),
    ]
    inits = [*_rnn_weights("GRU"), _init("axis1", np.array([1], np.int64))]
    outputs = [_vi("y", ["batch", "seq", H]), _vi("Y_h", [1, "batch", H])]
    return _model(nodes, [_vi("x", ["batch", "seq", IN])], outputs, inits, spec=spec)


def _gru_spec(**overrides: object) -> RnnSpec:
    spec = RnnSpec(
        inputs=[TensorSpec("x", "float32", ("batch", "seq", IN))],
        outputs=[TensorSpec("y", "float32", ("batch", "seq", H))],
        data_input="x",
        data_output="y",
        cell="gru",
        hidden_size=H,
        input_size=IN,
    )
    for key, value in overrides.items():
        setattr(spec, key, value)
    return spec


def codes(findings: list[Finding], severity: str | None = None) -> set[str]:
    return {f.code for f in findings if severity is None or f.severity == severity}


# --- bad graphs -------------------------------------------------------------------------------


def test_frozen_seq_on_time_major_lstm_input_is_rnn001() -> None:
    findings = lint(_time_major_rnn("LSTM", [7, "batch", IN]))
    (f,) = [f for f in findings if f.code == "RNN001"]
    assert f.severity == "error" and f.node == "x"
    assert "7" in f.message and "axis 0" in f.message  # seq axis traced through layout=0
    assert "torchscript" in f.fix


def test_frozen_seq_with_explicit_axes_is_rnn001() -> None:
    model = _time_major_rnn("LSTM", ["seq", 3, IN])
    assert "RNN001" not in codes(lint(model))  # traced: axis 0 is symbolic
    assert "RNN001" in codes(lint(model, seq_axis=1, batch_axis=0), "error")  # user says axis 1


def test_frozen_batch_is_rnn011_warning() -> None:
    findings = lint(_time_major_rnn("LSTM", ["seq", 3, IN]))
    assert "RNN011" in codes(findings, "warning")


def test_output_annotation_freezing_seq_is_rnn002() -> None:
    model = _good_gru()
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 7  # y: (batch, 7, H)
    findings = lint(model)
    assert "RNN002" in codes(findings, "warning")
    assert [f.node for f in findings if f.code == "RNN002"] == ["y"]  # Y_h is state, skipped


def test_gru_without_linear_before_reset_is_rnn005() -> None:
    findings = lint(_time_major_rnn("GRU", ["seq", "batch", IN], linear_before_reset=0))
    assert "RNN005" in codes(findings, "error")
    assert "RNN005" in codes(lint(_time_major_rnn("GRU", ["seq", "batch", IN])), "error")


def test_unrolled_matmul_chain_is_rnn004() -> None:
    nodes = [
        helper.make_node("MatMul", [src, "Wcell"], [dst])
        for src, dst in [("x", "h1"), ("h1", "h2"), ("h2", "h3"), ("h3", "y")]
    ]
    inits = [_init("Wcell", np.eye(IN, dtype=np.float32))]
    model = _model(nodes, [_vi("x", ["batch", IN])], [_vi("y", ["batch", IN])], inits)
    findings = lint(model)
    (f,) = [f for f in findings if f.code == "RNN004"]
    assert f.severity == "error" and f.node == "Wcell" and "4" in f.message
    assert "RNN010" in codes(findings, "warning")  # no recurrent node at all


def _reshape_into_lstm() -> onnx.ModelProto:
    nodes = [
        helper.make_node("Reshape", ["x", "shape"], ["xr"], name="bake"),
        _rnn_node("LSTM", "xr"),
    ]
    inits = [*_rnn_weights("LSTM", inp=H), _init("shape", np.array([7, -1, H], np.int64))]
    outputs = [_vi("Y", ["seq", 1, "batch", H])]
    return _model(nodes, [_vi("x", ["seq", "batch", H])], outputs, inits)


def test_baked_reshape_feeding_lstm_is_rnn003_by_heuristic() -> None:
    (f,) = [f for f in lint(_reshape_into_lstm()) if f.code == "RNN003"]
    assert f.severity == "error" and f.node == "bake" and "[7, -1, 8]" in f.message


def test_baked_reshape_is_rnn003_with_expected_seq_len() -> None:
    assert "RNN003" in codes(lint(_reshape_into_lstm(), expected_seq_len=7), "error")
    assert "RNN003" not in codes(lint(_reshape_into_lstm(), expected_seq_len=9))


def test_spec_disagreements_are_rnn006_rnn007_rnn012() -> None:
    bi = lint(_good_gru(spec=_gru_spec(bidirectional=True)))
    assert "RNN006" in codes(bi, "warning")
    layout = lint(_time_major_rnn("GRU", ["seq", "batch", IN], linear_before_reset=1, layout=0))
    assert "RNN007" in codes(layout, "info")  # no spec: layout only reported
    spec = _gru_spec(batch_first=False, cell="lstm")
    spec.inputs = [TensorSpec("x", "float32", ("seq", "batch", IN))]
    node = helper.make_node(
        "GRU", ["x", "W", "R", "B"], ["y"], hidden_size=H, linear_before_reset=1, layout=1
    )
    inputs, outputs = [_vi("x", ["batch", "seq", IN])], [_vi("y", ["batch", "seq", 1, H])]
    findings = lint(_model([node], inputs, outputs, _rnn_weights("GRU"), spec=spec))
    assert {"RNN007", "RNN012"} <= codes(findings, "warning")


def test_sequence_lens_and_versions_are_reported() -> None:
    node = helper.make_node("LSTM", ["x", "W", "R", "B", "lens"], ["Y"], hidden_size=H, name="lstm")
    model = _model(
        [node],
        [
            _vi("x", ["seq", "batch", IN]),
            helper.make_tensor_value_info("lens", TensorProto.INT32, ["batch"]),
        ],
        [_vi("Y", ["seq", 1, "batch", H])],
        _rnn_weights("LSTM"),
        opset=13,
    )
    findings = lint(model)
    (lens,) = [f for f in findings if f.code == "RNN008"]
    assert lens.severity == "info" and "graph input 'lens'" in lens.message
    assert "RNN009" in codes(findings, "warning")
    assert any(f.code == "RNN009" and "opset 13" in f.message for f in findings)
    assert "RNN010" in codes(findings, "info")


# --- clean graphs -----------------------------------------------------------------------------


def test_good_gru_has_no_errors_or_warnings() -> None:
    findings = lint(_good_gru())
    assert "error" not in {f.severity for f in findings}
    assert worst(findings) == "info"
    assert codes(findings) == {"RNN007", "RNN008", "RNN009", "RNN010"}
    assert not codes(lint(_good_gru(spec=_gru_spec()), expected_seq_len=7), "error")


@pytest.mark.filterwarnings("ignore")  # the TorchScript exporter's deprecation and tracer noise
def test_real_torchscript_lstm_export_is_clean(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from torch import nn

    class Forecaster(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.LSTM(IN, H, num_layers=2, batch_first=True)
            self.head = nn.Linear(H, 1)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            y, (h, c) = self.rnn(x)
            return self.head(y), h, c

    path = tmp_path / "lstm.onnx"
    axes = {"x": {0: "batch", 1: "seq"}, "y": {0: "batch", 1: "seq"}}
    axes |= {"h_n": {1: "batch"}, "c_n": {1: "batch"}}
    torch.onnx.export(
        Forecaster().eval(),
        (torch.randn(2, 7, IN),),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["x"],
        output_names=["y", "h_n", "c_n"],
        dynamic_axes=axes,
    )
    for findings in (lint(path), lint(str(path), expected_seq_len=7)):
        assert "error" not in {f.severity for f in findings}, findings
        assert "RNN002" not in codes(findings)
        assert sum(f.code == "RNN010" for f in findings) == 2  # one LSTM node per layer


# --- errors and API ---------------------------------------------------------------------------


def test_missing_file_raises_model_file_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.onnx"
    with pytest.raises(ModelFileError, match=r"nope\.onnx"):
        lint(path)


def test_corrupt_file_raises_model_file_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.onnx"
    path.write_bytes(np.random.default_rng(0).bytes(512))
    with pytest.raises(ModelFileError, match=r"junk\.onnx") as info:
        lint(path)
    assert "\n" not in str(info.value)


def test_unknown_data_input_raises_input_error() -> None:
    with pytest.raises(InputError, match="'nope'"):
        lint(_good_gru(), data_input="nope")


def test_worst_and_finding_validation() -> None:
    assert worst([]) is None
    info, err = Finding("info", "X", "", "m", ""), Finding("error", "X", "", "m", "")
    assert worst([info, err]) == "error"
    with pytest.raises(ValueError):
        Finding("fatal", "X", "", "m", "")


def test_importing_lint_does_not_import_onnx_or_torch() -> None:
    code = (
        "import sys, rnnedge; before = set(sys.modules); import rnnedge.tools.lint; "
        "new = set(sys.modules) - before; print(sorted(m for m in new "
        "if m.split('.')[0] in ('onnx', 'torch')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
