"""The tutorial forecaster done right: state from the input, a loop that learns, safe files."""

from __future__ import annotations

import pytest
import torch

from rnnedge.errors import InputError, ModelFileError
from rnnedge.modeling.data import load_sunspots, synthetic
from rnnedge.modeling.models import ModelConfig, SequenceModel
from rnnedge.modeling.train import TrainConfig, load_checkpoint, save_checkpoint, train

pytestmark = pytest.mark.torch


@pytest.mark.parametrize("cell", ["rnn_tanh", "rnn_relu", "lstm", "gru"])
@pytest.mark.parametrize("batch_first", [True, False])
def test_state_is_sized_from_the_input(cell, batch_first) -> None:
    cfg = ModelConfig(
        cell=cell,
        input_size=3,
        hidden_size=5,
        output_size=2,
        num_layers=2,
        bidirectional=True,
        dropout=0.1,
        batch_first=batch_first,
    )
    model = SequenceModel(cfg).eval()
    for batch in (1, 7):  # any batch, not one fixed by a global
        x = torch.randn((batch, 4, 3) if batch_first else (4, batch, 3))
        y, state = model(x)
        assert y.shape == ((batch, 4, 2) if batch_first else (4, batch, 2))
        h = state[0] if cell == "lstm" else state
        assert h.shape == (4, batch, 5)
        y2, _ = model(x, state)  # the returned state feeds straight back in
        assert y2.shape == y.shape


def test_bad_configs_are_refused() -> None:
    with pytest.raises(InputError, match="cell 'tcn'"):
        ModelConfig(cell="tcn")
    with pytest.raises(InputError, match="hidden_size"):
        ModelConfig(hidden_size=0)
    with pytest.raises(InputError, match="dropout"):
        ModelConfig(dropout=1.5)


def test_training_on_sunspots_beats_persistence(tmp_path) -> None:
    res = train(
        load_sunspots(), ModelConfig(cell="gru", hidden_size=16), TrainConfig(epochs=25, seed=1)
    )
    assert res.val_mse < 0.8 * res.persistence_mse
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    path = save_checkpoint(tmp_path / "m.pt", res)
    raw = torch.load(path, weights_only=True)  # no code is unpickled, ever
    assert raw["format"] == "rnnedge.checkpoint/1"
    ckpt = load_checkpoint(path)
    x = torch.randn(2, 9, 1)
    with torch.no_grad():
        torch.testing.assert_close(ckpt.model(x)[0], res.model.eval()(x)[0])
    assert ckpt.normalization == res.normalizer.to_spec()


def test_training_is_reproducible_with_a_seed() -> None:
    series = synthetic(300, seed=3)
    cfg, tc = ModelConfig(cell="lstm", hidden_size=8), TrainConfig(epochs=3, window=16, seed=5)
    a, b = train(series, cfg, tc), train(series, cfg, tc)
    assert a.history == b.history


def test_training_refuses_what_cannot_forecast() -> None:
    with pytest.raises(InputError, match="bidirectional"):
        train(synthetic(200), ModelConfig(bidirectional=True), TrainConfig(epochs=1))
    with pytest.raises(InputError, match="window"):
        train(synthetic(40), ModelConfig(), TrainConfig(epochs=1, window=32))
    with pytest.raises(InputError, match="input_size=2"):
        train(synthetic(200), ModelConfig(input_size=2), TrainConfig(epochs=1))


def test_checkpoint_errors(tmp_path) -> None:
    with pytest.raises(ModelFileError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(ModelFileError, match="not an rnnedge checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    torch.save(
        {
            "format": "rnnedge.checkpoint/1",
            "model_config": "{}",
            "state_dict": {"bogus": torch.zeros(1)},
        },
        tmp_path / "damaged.pt",
    )
    with pytest.raises(ModelFileError, match="damaged"):
        load_checkpoint(tmp_path / "damaged.pt")
