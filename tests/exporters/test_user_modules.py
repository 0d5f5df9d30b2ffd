"""A user's own module: its own names, its own state layout, and `y, _ = self.gru(x)` made
streamable.

Lifted files are checked with raw ONNX Runtime against the *original* module, not the
exporter's wrapper: a zero initial state must give the original's outputs, and two halves with
the state carried by hand must give what the original gives in one pass.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

import rnnedge
from rnnedge.errors import InputError, UnsupportedModelError

pytestmark = pytest.mark.torch

RNNS = {"gru": nn.GRU, "lstm": nn.LSTM, "rnn": nn.RNN}


class WithState(nn.Module):
    """Takes and returns its state in PyTorch's layout (layers, batch, hidden)."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(2, 8, batch_first=True)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.rnn(x, h)


class BatchFirstState(nn.Module):
    """Keeps its state as (batch, layers, hidden), as many user modules do."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(2, 8, num_layers=2, batch_first=True)
        self.head = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, h = self.rnn(x, state.transpose(0, 1).contiguous())
        return self.head(y), h.transpose(0, 1)


class Plain(nn.Module):
    """The most common module: the RNN's final state is dropped."""

    def __init__(self, cell: str, num_layers: int, batch_first: bool) -> None:
        super().__init__()
        self.rnn = RNNS[cell](3, 8, num_layers=num_layers, batch_first=batch_first)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.rnn(x)
        return self.head(y)


def _seq(
    batch: int, seq_len: int, features: int = 2, batch_first: bool = True, seed: int = 0
) -> torch.Tensor:
    shape = (batch, seq_len, features) if batch_first else (seq_len, batch, features)
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _made(cls: type[nn.Module], *args: object) -> nn.Module:
    torch.manual_seed(0)
    return cls(*args).eval()


def test_state_names_work_with_default_names(tmp_path: Path) -> None:
    path = tmp_path / "s.onnx"
    res = rnnedge.export(
        _made(WithState), (_seq(3, 7), torch.zeros(1, 3, 8)), path, state_names=[("h", "h_out")]
    )
    assert [t.name for t in res.spec.inputs] == ["x", "h"]  # forward()'s own parameter names
    assert [t.name for t in res.spec.outputs] == ["y", "h_out"]
    assert res.spec.state_pairs[0].batch_axis == 1
    assert res.spec.input("h").shape == (1, "batch", 8)
    m = rnnedge.load(path)
    xs = _seq(2, 10, seed=1).numpy()
    full, _ = m.run(xs)
    stream = m.stream(batch=2)
    parts = [stream.step(xs[:, :4]), stream.step(xs[:, 4:])]
    np.testing.assert_allclose(np.concatenate(parts, axis=1), full, atol=1e-6)


def test_a_state_parameter_named_otherwise_takes_the_given_name(tmp_path: Path) -> None:
    res = rnnedge.export(
        _made(BatchFirstState),
        (_seq(3, 7), torch.zeros(3, 2, 8)),
        tmp_path / "r.onnx",
        state_names=[("h", "h_out", 0)],
    )
    assert [t.name for t in res.spec.inputs] == ["x", "h"]
    assert [t.name for t in res.spec.outputs] == ["y", "h_out"]


@pytest.mark.parametrize("how", ["triple", "mapping", "guessed"])
def test_batch_first_state_can_be_declared(tmp_path: Path, how: str) -> None:
    kwargs: dict[str, object] = {
        "triple": {"state_names": [("state", "state_out", 0)]},
        "mapping": {"state_names": [("state", "state_out")], "state_batch_axis": {"state": 0}},
        "guessed": {"state_names": [("state", "state_out")]},  # only axis 0 matches batch 3
    }[how]
    model = _made(BatchFirstState)
    path = tmp_path / "bf.onnx"
    res = rnnedge.export(model, (_seq(3, 7), torch.zeros(3, 2, 8)), path, **kwargs)
    assert [(p.input, p.output, p.batch_axis) for p in res.spec.state_pairs] == [
        ("state", "state_out", 0)
    ]
    assert res.spec.input("state").shape == ("batch", 2, 8)
    assert res.spec.output("state_out").shape == ("batch", 2, 8)
    assert res.parity is not None and res.parity.ok
    assert {c.batch for c in res.parity.comparisons} >= {1, 5}
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x, h = _seq(5, 11, seed=2), 0.3 * torch.randn(5, 2, 8)
    with torch.no_grad():
        expected = [t.numpy() for t in model(x, h)]
    got = sess.run(None, {"x": x.numpy(), "state": h.numpy()})
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, atol=1e-5)


def test_an_ambiguous_state_batch_axis_says_how_to_declare_it(tmp_path: Path) -> None:
    # batch 2 == layers 2: axis 1 is guessed (PyTorch's layout) and the module refuses it
    with pytest.raises(
        InputError,
        match=r"Expected hidden size.*declare it: "
        r"state_names=\[\('state', 'state_out', AXIS\)\]",
    ):
        rnnedge.export(
            _made(BatchFirstState),
            (_seq(2, 7), torch.zeros(2, 2, 8)),
            tmp_path / "a.onnx",
            state_names=[("state", "state_out")],
        )
    with pytest.raises(
        InputError,
        match=r"state 'state' has shape \(4, 3, 8\); none of its "
        r"axes match the example's batch 2",
    ):
        rnnedge.export(
            _made(BatchFirstState),
            (_seq(2, 7), torch.zeros(4, 3, 8)),
            tmp_path / "a.onnx",
            state_names=[("state", "state_out")],
        )
    assert not list(tmp_path.iterdir())


def test_bad_state_names_are_refused(tmp_path: Path) -> None:
    args = (_seq(3, 7), torch.zeros(1, 3, 8))
    with pytest.raises(InputError, match=r"state_batch_axis names \['g'\], which are not"):
        rnnedge.export(
            _made(WithState),
            args,
            tmp_path / "b.onnx",
            state_names=[("h", "h_out")],
            state_batch_axis={"g": 0},
        )
    with pytest.raises(InputError, match=r"gets batch axis 0 from state_names and 1 from"):
        rnnedge.export(
            _made(WithState),
            args,
            tmp_path / "b.onnx",
            state_names=[("h", "h_out", 0)],
            state_batch_axis={"h": 1},
        )
    with pytest.raises(InputError, match=r"state inputs \['a', 'b'\] are not among"):
        rnnedge.export(
            _made(WithState),
            args,
            tmp_path / "b.onnx",
            state_names=[("a", "a_out"), ("b", "b_out")],
        )
    assert not list(tmp_path.iterdir())


CONFIGS = list(itertools.product(RNNS, (1, 2), (True, False)))


@pytest.mark.parametrize(("cell", "num_layers", "batch_first"), CONFIGS)
def test_lifted_module_equals_the_original(
    tmp_path: Path, cell: str, num_layers: int, batch_first: bool
) -> None:
    model = _made(Plain, cell, num_layers, batch_first)
    path = tmp_path / "lifted.onnx"
    res = rnnedge.export(
        model, _seq(2, 7, 3, batch_first), path, streamable=True, batch_first=batch_first
    )
    kinds = ["h", "c"] if cell == "lstm" else ["h"]
    assert [(p.input, p.output, p.batch_axis) for p in res.lifted] == [
        (f"{k}0", f"{k}n", 1) for k in kinds
    ]
    assert res.spec.streamable and res.spec.num_layers == num_layers
    assert res.spec.input("h0").shape == (num_layers, "batch", 8)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = _seq(3, 20, 3, batch_first, seed=4)
    with torch.no_grad():
        expected = model(x).numpy()
    zeros = {f"{k}0": np.zeros((num_layers, 3, 8), np.float32) for k in kinds}
    full = sess.run(None, {"x": x.numpy(), **zeros})
    np.testing.assert_allclose(full[0], expected, atol=1e-5)
    seq_axis = 1 if batch_first else 0
    first, second = np.split(x.numpy(), [9], axis=seq_axis)
    part1 = sess.run(None, {"x": first, **zeros})
    carried = {f"{k}0": part1[1 + i] for i, k in enumerate(kinds)}
    part2 = sess.run(None, {"x": second, **carried})
    np.testing.assert_allclose(
        np.concatenate([part1[0], part2[0]], axis=seq_axis), expected, atol=1e-5
    )


def test_lifting_through_dynamo_and_rnnedge_streams(tmp_path: Path) -> None:
    model = _made(Plain, "lstm", 2, True)
    path = tmp_path / "dyn.onnx"
    res = rnnedge.export(model, _seq(2, 7, 3), path, streamable=True, exporter="dynamo")
    assert res.parity is not None and res.parity.ok
    m = rnnedge.load(path)
    xs = _seq(1, 12, 3, seed=5).numpy()
    with torch.no_grad():
        expected = model(torch.from_numpy(xs)).numpy()
    stream = m.stream(batch=1)
    parts = [stream.step(xs[:, i : i + 3]) for i in range(0, 12, 3)]
    np.testing.assert_allclose(np.concatenate(parts, axis=1), expected, atol=1e-5)


def test_module_passing_its_own_zero_state_is_lifted(tmp_path: Path) -> None:
    class Tutorial(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(3, 8, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h0 = torch.zeros(1, x.size(0), 8)
            y, _ = self.lstm(x, (h0, torch.zeros_like(h0)))
            return y[:, -1]

    res = rnnedge.export(_made(Tutorial), _seq(2, 6, 3), tmp_path / "t.onnx", streamable=True)
    assert [p.input for p in res.lifted] == ["h0", "c0"]
    assert res.spec.outputs[0].shape == ("batch", 8)


def test_without_streamable_the_graph_keeps_the_module_signature(tmp_path: Path) -> None:
    res = rnnedge.export(_made(Plain, "gru", 1, True), _seq(2, 7, 3), tmp_path / "p.onnx")
    assert [t.name for t in res.spec.inputs] == ["x"] and res.lifted == []
    assert not res.spec.streamable


class Loop(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(3, 8, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, ys = None, []
        for t in range(x.shape[1]):
            y, h = self.gru(x[:, t : t + 1], h)
            ys.append(y)
        return torch.cat(ys, 1)


class Branches(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(3, 8, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, h = self.gru(x)
        if h.abs().max() > 0.5:
            y = 2 * y
        return y


class MeanOverTime(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(3, 8, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gru(x)[0].mean(dim=1)


class LearnedStart(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(3, 8, batch_first=True)
        self.h0 = nn.Parameter(torch.ones(1, 1, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gru(x, self.h0.expand(1, x.shape[0], 8).contiguous())[0]


class Bidirectional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(3, 8, batch_first=True, bidirectional=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lstm(x)[0]


class NoRnn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


ACCEPT = (
    r"accept and return the state: def forward\(self, x, h=None\): y, h = "
    r"self\.gru\(x, h\); return self\.head\(y\), h"
)


@pytest.mark.parametrize(
    ("cls", "needle"),
    [
        (Loop, r"'gru' ran 7 times in one call at seq_len=7 .*" + ACCEPT),
        (Branches, r"into a Python value \(__bool__: an if/while.*torch\.where; " + ACCEPT),
        (
            LearnedStart,
            r"'gru' is given an initial state of the module's own that is not zero.*" + ACCEPT,
        ),
        (
            MeanOverTime,
            r"output 'y' over two chunks \(split after step 1\) with the state "
            r"carried differs from one pass .*mixes time steps outside its RNN",
        ),
        (Bidirectional, r"'lstm' is bidirectional: .* use bidirectional=False to stream"),
        (NoRnn, r"no nn\.RNN/nn\.LSTM/nn\.GRU submodule.*streamable=False"),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else "",
)
def test_modules_that_cannot_be_lifted_say_what_to_change(
    tmp_path: Path, cls: type[nn.Module], needle: str
) -> None:
    path = tmp_path / "no.onnx"
    with pytest.raises(UnsupportedModelError, match=needle):
        rnnedge.export(_made(cls), _seq(2, 7, 3), path, streamable=True)
    assert not list(tmp_path.iterdir())
    rnnedge.export(_made(cls), _seq(2, 7, 3), path, streamable=False, verify=False)
    assert path.exists()  # the same module still exports for whole sequences


def test_lstm_advice_names_both_states(tmp_path: Path) -> None:
    class LstmLoop(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc = nn.LSTM(3, 8, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([self.enc(x[:, :3])[0], self.enc(x[:, 3:])[0]], 1)

    with pytest.raises(
        UnsupportedModelError,
        match=r"'enc' ran 2 times.*y, \(h, c\) = self\.enc\(x, None if h is None "
        r"else \(h, c\)\); return self\.head\(y\), h, c",
    ):
        rnnedge.export(_made(LstmLoop), _seq(2, 7, 3), tmp_path / "l.onnx", streamable=True)


def test_frames_without_a_batch_axis_lift_a_state_without_one(tmp_path: Path) -> None:
    class Frames(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gru = nn.GRU(4, 8)  # unbatched: (frames, features) in, (layers, hidden) state
            self.head = nn.Linear(8, 2)

        def forward(self, frames: torch.Tensor) -> torch.Tensor:
            return self.head(self.gru(frames)[0])

    model = _made(Frames)
    path = tmp_path / "frames.onnx"
    res = rnnedge.export(model, torch.randn(9, 4), path, layout="TF", streamable=True)
    assert res.spec.batch_axis is None and res.spec.input("frames").shape == ("seq_len", 4)
    assert [(p.input, p.batch_axis) for p in res.spec.state_pairs] == [("h0", None)]
    assert res.spec.input("h0").shape == (1, 8)
    assert {c.batch for c in res.parity.comparisons} == {1}
    x = np.random.default_rng(0).standard_normal((12, 4)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    stream = rnnedge.load(path).stream()
    parts = [stream.step(x[:5]), stream.step(x[5:])]
    np.testing.assert_allclose(np.concatenate(parts, axis=0), expected, atol=1e-5)
