"""Token models: `nn.Embedding` + GRU/LSTM on `(batch, seq_len)` integer ids, exported as is.

Each file is checked here again, independently of the export's own verification: raw ONNX
Runtime at lengths and batches the export never saw, with ids across the whole vocabulary,
against eager PyTorch. The tagger is also streamed token by token through `rnnedge.load`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

import rnnedge
from rnnedge.errors import InputError

pytestmark = pytest.mark.torch

VOCAB, CLASSES, TAGS = 50, 4, 6


class Classifier(nn.Module):
    """Embedding + GRU, the last step's hidden state → class logits."""

    def __init__(self, batch_first: bool = True) -> None:
        super().__init__()
        self.batch_first = batch_first
        self.emb = nn.Embedding(VOCAB, 8, padding_idx=0)
        self.gru = nn.GRU(8, 16, num_layers=2, batch_first=batch_first)
        self.head = nn.Linear(16, CLASSES)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        y, _ = self.gru(self.emb(tokens))
        return self.head(y[:, -1] if self.batch_first else y[-1])


class Tagger(nn.Module):
    """Embedding + LSTM, one tag's logits per token."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 8)
        self.lstm = nn.LSTM(8, 16, batch_first=True)
        self.head = nn.Linear(16, TAGS)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        y, _ = self.lstm(self.emb(tokens))
        return self.head(y)


class CastsInside(nn.Module):
    """Takes float ids and casts them itself: the shape probe must still feed valid ids."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 8)
        self.gru = nn.GRU(8, 16, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gru(self.emb(x.long()))[0]


def _tokens(
    batch: int, seq_len: int, seed: int = 0, dtype: torch.dtype = torch.int64
) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (batch, seq_len), generator=gen).to(dtype)


def _module(cls: type[nn.Module], **kwargs: bool) -> nn.Module:
    torch.manual_seed(0)
    return cls(**kwargs).eval()


def _raw_check(
    module: nn.Module,
    path: Path,
    shapes: list[tuple[int, int]],
    time_major: bool = False,
    dtype: torch.dtype = torch.int64,
) -> float:
    """Raw onnxruntime at new shapes vs eager, ids over the whole vocabulary; max abs diff."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = [i for i in sess.get_inputs()]
    worst = 0.0
    for i, (batch, seq_len) in enumerate(shapes):
        x = _tokens(batch, seq_len, seed=10 + i, dtype=dtype)
        x[0, 0], x[-1, -1] = 0, VOCAB - 1  # both ends of the vocabulary
        x = x.T.contiguous() if time_major else x
        with torch.no_grad():
            expected = module(x).numpy()
        (got,) = sess.run(None, {inp.name: x.numpy()})
        assert got.shape == expected.shape
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_classifier_exports_with_int64_tokens_and_dynamic_axes(
    tmp_path: Path, exporter: str
) -> None:
    model = _module(Classifier)
    path = tmp_path / "cls.onnx"
    res = rnnedge.export(model, _tokens(3, 9), path, exporter=exporter)
    (x,) = res.spec.inputs
    assert (x.name, x.dtype, x.shape) == ("tokens", "int64", ("batch", "seq_len"))
    assert res.spec.layout == "BT" and res.spec.outputs[0].shape == ("batch", CLASSES)
    assert res.parity is not None and res.parity.ok
    seen = {(c.batch, c.seq_len) for c in res.parity.comparisons}
    assert {1, 21} <= {t for _, t in seen} and {1, 5} <= {b for b, _ in seen}
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].type == "tensor(int64)"
    assert _raw_check(model, path, [(1, 1), (2, 23), (7, 4)]) < 1e-5


def test_time_major_tokens_get_layout_tb(tmp_path: Path) -> None:
    model = _module(Classifier, batch_first=False)
    res = rnnedge.export(
        model, _tokens(3, 9).T.contiguous(), tmp_path / "tb.onnx", batch_first=False
    )
    assert res.spec.layout == "TB" and res.spec.batch_axis == 1 and res.spec.seq_axis == 0
    assert res.spec.inputs[0].shape == ("seq_len", "batch")
    assert _raw_check(model, tmp_path / "tb.onnx", [(1, 1), (4, 17)], time_major=True) < 1e-5


def test_int32_tokens_keep_their_dtype(tmp_path: Path) -> None:
    model = _module(Tagger)
    res = rnnedge.export(model, _tokens(2, 5, dtype=torch.int32), tmp_path / "i32.onnx")
    assert res.spec.inputs[0].dtype == "int32"
    assert _raw_check(model, tmp_path / "i32.onnx", [(3, 11)], dtype=torch.int32) < 1e-5


def test_module_casting_float_ids_itself_is_probed_with_valid_ids(tmp_path: Path) -> None:
    model = _module(CastsInside)
    res = rnnedge.export(model, _tokens(2, 6).float(), tmp_path / "cast.onnx")
    assert res.spec.inputs[0].dtype == "float32" and res.spec.layout == "BT"
    assert res.parity is not None and res.parity.ok
    assert _raw_check(model, tmp_path / "cast.onnx", [(3, 14)], dtype=torch.float32) < 1e-5


def test_tagger_is_verified_and_streams_token_by_token(tmp_path: Path) -> None:
    model = _module(Tagger)
    path = tmp_path / "tagger.onnx"
    res = rnnedge.export(model, _tokens(3, 9), path, streamable=True)
    assert [(p.input, p.output) for p in res.spec.state_pairs] == [("h0", "hn"), ("c0", "cn")]
    assert res.spec.outputs[0].shape == ("batch", "seq_len", TAGS)
    assert res.parity is not None and res.parity.ok
    tokens = _tokens(2, 15, seed=3)
    with torch.no_grad():
        expected = model(tokens).numpy()
    m = rnnedge.load(path)
    full, _ = m.run(tokens.numpy())
    np.testing.assert_allclose(full, expected, atol=1e-5)
    stream = m.stream(batch=2)
    steps = [stream.step(tokens.numpy()[:, t : t + 1]) for t in range(tokens.shape[1])]
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-6)


def test_rank2_float_samples_export_as_bt(tmp_path: Path) -> None:
    class Audio(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gru = nn.GRU(1, 8, batch_first=True)
            self.head = nn.Linear(8, 1)

        def forward(self, samples: torch.Tensor) -> torch.Tensor:
            y, _ = self.gru(samples.unsqueeze(-1))
            return self.head(y).squeeze(-1)

    model = _module(Audio)
    res = rnnedge.export(model, torch.randn(2, 32), tmp_path / "audio.onnx", streamable=True)
    assert res.spec.layout == "BT" and res.spec.inputs[0].dtype == "float32"
    assert res.spec.outputs[0].shape == ("batch", "seq_len")
    sess = ort.InferenceSession(str(tmp_path / "audio.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((3, 40)).astype(np.float32)
    h = np.zeros((1, 3, 8), np.float32)
    first = sess.run(None, {"samples": x[:, :25], "h0": h})
    second = sess.run(None, {"samples": x[:, 25:], "h0": first[1]})
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np.concatenate([first[0], second[0]], 1), expected, atol=1e-5)


def test_float_tokens_into_an_embedding_are_refused(tmp_path: Path) -> None:
    with pytest.raises(
        InputError,
        match=r"'emb' \(nn\.Embedding\) was given float32 values; "
        r"token ids must be integers",
    ):
        rnnedge.export(_module(Tagger), _tokens(2, 5).float(), tmp_path / "f.onnx")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("low", "high", "span"), [(0, VOCAB + 10, "ids must be in 0..49"), (-2, 5, r"span -\d+\.\.\d")]
)
def test_token_ids_out_of_the_embedding_are_refused(
    tmp_path: Path, low: int, high: int, span: str
) -> None:
    tokens = torch.randint(low, high, (2, 30), generator=torch.Generator().manual_seed(0))
    tokens[0, 0] = low
    with pytest.raises(InputError, match=span) as info:
        rnnedge.export(_module(Classifier), tokens, tmp_path / "r.onnx")
    assert "nn.Embedding(50, 8)" in str(info.value)
    assert not list(tmp_path.iterdir())


def test_layout_must_fit_the_example(tmp_path: Path) -> None:
    with pytest.raises(
        InputError,
        match=r"layout 'BTF' does not describe the example of shape "
        r"\(2, 5\)",
    ):
        rnnedge.export(_module(Tagger), _tokens(2, 5), tmp_path / "l.onnx", layout="BTF")
    with pytest.raises(InputError, match=r"rank 4.*pass layout="):
        rnnedge.export(_module(Tagger), torch.zeros(1, 2, 3, 4), tmp_path / "l.onnx")
