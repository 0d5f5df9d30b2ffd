"""Training keeps the best epoch, names its columns, and hands both on through the checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rnnedge.modeling.data import Series, load_sunspots, synthetic  # noqa: E402
from rnnedge.modeling.models import ModelConfig  # noqa: E402
from rnnedge.modeling.train import (  # noqa: E402
    TrainConfig,
    fingerprint,
    load_checkpoint,
    save_checkpoint,
    train,
)

pytestmark = pytest.mark.torch


def _val_loss(res) -> float:  # the validation loss of the weights the result holds
    from rnnedge.modeling.data import make_windows

    tc = res.train_config
    x, y = make_windows(
        res.normalizer.transform(res.val_values).astype(np.float32),
        tc.window,
        target_index=tc.target_index,
    )
    res.model.eval()
    with torch.inference_mode():
        pred, _ = res.model(torch.from_numpy(x))
    return float(torch.nn.functional.mse_loss(pred, torch.from_numpy(y)))


def test_best_epoch_weights_are_kept_and_training_stops_early() -> None:
    series = load_sunspots()
    tc = TrainConfig(epochs=40, window=16, lr=3e-2, patience=3, seed=1)
    res = train(series, ModelConfig(cell="gru", hidden_size=8), tc)
    losses = [h["val_loss"] for h in res.history]
    assert res.best_epoch == int(np.argmin(losses)) + 1
    assert len(losses) < 40  # stopped: 3 epochs without improvement came before epoch 40
    assert len(losses) - res.best_epoch == 3
    assert _val_loss(res) == pytest.approx(min(losses), rel=1e-5)
    assert res.metrics()["best_epoch"] == res.best_epoch


def test_contract_names_features_targets_time_and_fingerprint(tmp_path: Path) -> None:
    base = synthetic(300, features=3, seed=4)
    series = Series(
        base.values,
        ("unemp", "infl", "rate"),
        "macro.csv",
        time_column="year",
        time=tuple(str(1900 + i) for i in range(300)),
    )
    tc = TrainConfig(epochs=2, window=8, target_index=(1,))
    res = train(series, ModelConfig(input_size=3, output_size=1, hidden_size=4), tc)
    c = res.contract
    assert c is not None
    assert c.features == ("unemp", "infl", "rate") and c.targets == ("infl",)
    assert c.time_column == "year" and c.horizon == 1
    assert c.fingerprint == fingerprint(series) != fingerprint(synthetic(300, features=3, seed=5))
    ckpt = load_checkpoint(save_checkpoint(tmp_path / "m.pt", res))
    assert ckpt.contract == c and ckpt.window == 8
    assert ckpt.val_values is not None
    np.testing.assert_array_equal(ckpt.val_values, series.values[-60:])
