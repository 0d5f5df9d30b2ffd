"""Both exporters over RNN/LSTM/GRU × layout × direction, verified at other lengths.

Each configuration must end one of two ways: the file is written and is right at shapes the
export never saw (checked again here, independently), or the export is refused with an
ExportError and no file is left. The known-bad cases are also exported *without*
verification to prove the file really is wrong, so these tests fail if detection is removed.
"""

from __future__ import annotations

import itertools

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

import rnnedge
from rnnedge.errors import ExportError, InputError, UnsupportedModelError
from rnnedge.modeling.models import ModelConfig, SequenceModel, stateful_wrapper
from rnnedge.runtime.backends.ort import read_spec

pytestmark = pytest.mark.torch

CELLS = ("rnn_tanh", "rnn_relu", "lstm", "gru")
CONFIGS = list(itertools.product(CELLS, (True, False), (False, True)))


def _model(cell: str, batch_first: bool, bidirectional: bool) -> SequenceModel:
    torch.manual_seed(0)
    cfg = ModelConfig(
        cell=cell,
        input_size=2,
        hidden_size=6,
        num_layers=2,
        batch_first=batch_first,
        bidirectional=bidirectional,
    )
    return SequenceModel(cfg).eval()


def _example(batch_first: bool, batch: int = 3, seq_len: int = 7) -> torch.Tensor:
    shape = (batch, seq_len, 2) if batch_first else (seq_len, batch, 2)
    return torch.randn(shape, generator=torch.Generator().manual_seed(1))


def _independent_check(model: SequenceModel, path, batch_first: bool) -> float:
    """Run the file at new (batch, seq_len) with raw onnxruntime vs eager; return max diff."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    wrapper = stateful_wrapper(model)
    worst = 0.0
    for batch, seq_len in ((1, 1), (2, 19), (5, 40)):
        x = _example(batch_first, batch, seq_len)
        state = model.initial_state(x)
        state = state if isinstance(state, tuple) else (state,)
        state = tuple(torch.randn_like(s) for s in state)
        with torch.no_grad():
            expected = [t.numpy() for t in wrapper(x, *state)]
        names = [i.name for i in sess.get_inputs()]
        got = sess.run(
            None, dict(zip(names, [x.numpy(), *[s.numpy() for s in state]], strict=True))
        )
        for g, e in zip(got, expected, strict=True):
            assert g.shape == e.shape
            worst = max(worst, float(np.abs(g - e).max()))
    return worst


@pytest.mark.parametrize(("cell", "batch_first", "bidirectional"), CONFIGS)
def test_torchscript_exports_every_configuration_correctly(
    tmp_path, cell, batch_first, bidirectional
) -> None:
    model = _model(cell, batch_first, bidirectional)
    path = tmp_path / "m.onnx"
    res = rnnedge.export(model, _example(batch_first), path, exporter="torchscript")
    assert path.exists()
    assert res.parity is not None and res.parity.ok
    assert {c.seq_len for c in res.parity.comparisons} >= {1, 7, 17}
    assert _independent_check(model, path, batch_first) < 1e-5
    names = [t.name for t in res.spec.inputs], [t.name for t in res.spec.outputs]
    expected = (
        (["x", "h0", "c0"], ["y", "hn", "cn"]) if cell == "lstm" else (["x", "h0"], ["y", "hn"])
    )
    assert names == expected
    x_shape = res.spec.input("x").shape
    assert x_shape[:2] == (("batch", "seq_len") if batch_first else ("seq_len", "batch"))


@pytest.mark.parametrize(("cell", "batch_first", "bidirectional"), CONFIGS[::2] + CONFIGS[1::2])
def test_dynamo_export_is_either_proven_or_refused(
    tmp_path, cell, batch_first, bidirectional
) -> None:
    if cell == "rnn_relu":
        pytest.skip("same dynamo path as rnn_tanh; kept out to bound the suite's time")
    model = _model(cell, batch_first, bidirectional)
    path = tmp_path / "m.onnx"
    try:
        res = rnnedge.export(model, _example(batch_first), path, exporter="dynamo")
    except ExportError as exc:
        assert not path.exists()
        assert not list(tmp_path.glob("*.tmp"))
        assert "exporter='torchscript'" in str(exc)
        return
    assert res.parity is not None and res.parity.ok
    assert _independent_check(model, path, batch_first) < 1e-5


def test_dynamo_frozen_rnn_is_caught_and_really_is_wrong(tmp_path) -> None:
    model = _model("rnn_tanh", True, False)
    unverified = tmp_path / "unverified.onnx"
    rnnedge.export(model, _example(True), unverified, exporter="dynamo", verify=False)
    sess = ort.InferenceSession(str(unverified), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape[1] == 7  # the seq axis was frozen at the example length
    with pytest.raises(ExportError, match=r"seq_len axis of 'x' frozen at 7"):
        rnnedge.export(model, _example(True), tmp_path / "m.onnx", exporter="dynamo")
    assert not (tmp_path / "m.onnx").exists()


class CellLoop(nn.Module):
    """The tutorial-style Python loop over LSTMCell that exporters unroll."""

    def __init__(self) -> None:
        super().__init__()
        self.cell = nn.LSTMCell(2, 8)
        self.head = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = x.new_zeros(x.shape[0], 8)
        c = x.new_zeros(x.shape[0], 8)
        outs = []
        for t in range(x.shape[1]):
            h, c = self.cell(x[:, t], (h, c))
            outs.append(self.head(h))
        return torch.stack(outs, 1), h


def test_unrolled_cell_loop_is_caught_and_really_is_wrong(tmp_path) -> None:
    torch.manual_seed(0)
    model = CellLoop().eval()
    x = _example(True)
    unverified = tmp_path / "unverified.onnx"
    rnnedge.export(model, x, unverified, exporter="torchscript", verify=False)
    sess = ort.InferenceSession(str(unverified), providers=["CPUExecutionProvider"])
    longer = torch.randn(3, 12, 2)
    with torch.no_grad():
        expected_h = model(longer)[1].numpy()
    got_h = sess.run(None, {"x": longer.numpy()})[1]
    assert np.abs(got_h - expected_h).max() > 1e-2  # silently wrong: stopped after 7 steps
    with pytest.raises(ExportError, match=r"unrolls it to the example length|loops over cell"):
        rnnedge.export(model, x, tmp_path / "m.onnx", exporter="torchscript")
    assert not (tmp_path / "m.onnx").exists()
    assert not list(tmp_path.glob(".*.tmp"))


def test_proj_size_is_refused_by_both_exporters(tmp_path) -> None:
    class Proj(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.LSTM(2, 8, proj_size=4, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.rnn(x)[0]

    for exporter in ("torchscript", "dynamo"):
        with pytest.raises(UnsupportedModelError, match="proj_size=4"):
            rnnedge.export(Proj(), _example(True), tmp_path / "p.onnx", exporter=exporter)
    assert not (tmp_path / "p.onnx").exists()


def test_user_module_exports_with_probed_output_axes(tmp_path) -> None:
    class LastStep(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.GRU(2, 8, batch_first=True)
            self.head = nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.rnn(x)[0][:, -1])

    res = rnnedge.export(LastStep().eval(), _example(True), tmp_path / "u.onnx")
    assert res.spec.outputs[0].shape == ("batch", 3)
    assert res.parity is not None and res.parity.ok


def test_user_module_with_named_state_pairs(tmp_path) -> None:
    class WithState(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.GRU(2, 8, batch_first=True)

        def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.rnn(x, h)

    x, h = _example(True), torch.zeros(1, 3, 8)
    res = rnnedge.export(
        WithState().eval(),
        (x, h),
        tmp_path / "s.onnx",
        input_names=["x", "h"],
        output_names=["y", "h_out"],
        state_names=[("h", "h_out")],
    )
    assert [(p.input, p.output) for p in res.spec.state_pairs] == [("h", "h_out")]
    model = rnnedge.load(tmp_path / "s.onnx")
    stream = model.stream()
    xs = np.random.default_rng(0).standard_normal((1, 10, 2)).astype(np.float32)
    parts = [stream.step(xs[:, :4]), stream.step(xs[:, 4:])]
    full, _ = model.run(xs)
    np.testing.assert_allclose(np.concatenate(parts, axis=1), full, atol=1e-6)


def test_spec_is_stored_in_the_file(tmp_path) -> None:
    from rnnedge.spec import Normalization

    norm = Normalization((10.0, 1.0), (2.0, 3.0), (0,))
    model = _model("gru", True, False)
    rnnedge.export(model, _example(True), tmp_path / "g.onnx", normalization=norm)
    sess = ort.InferenceSession(str(tmp_path / "g.onnx"), providers=["CPUExecutionProvider"])
    spec = read_spec(sess)
    assert spec is not None
    assert (spec.cell, spec.num_layers, spec.hidden_size) == ("gru", 2, 6)
    assert spec.normalization == norm
    assert spec.producer["exporter"] == "torchscript"
    assert spec.producer["torch"].startswith("2.")


def test_bad_export_arguments(tmp_path) -> None:
    model = _model("gru", True, False)
    with pytest.raises(InputError, match=r"exporter 'tf'"):
        rnnedge.export(model, _example(True), tmp_path / "a.onnx", exporter="tf")
    with pytest.raises(InputError, match="rank 3"):
        rnnedge.export(model, torch.randn(3, 2), tmp_path / "a.onnx")
    with pytest.raises(InputError, match=r"nn\.Module"):
        rnnedge.export(object(), _example(True), tmp_path / "a.onnx")
