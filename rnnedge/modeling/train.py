"""The classic Adam + MSE loop, made reproducible, and a checkpoint that holds no code.

A checkpoint is a plain dict of tensors and JSON strings, so it loads with
`torch.load(..., weights_only=True)`: opening a checkpoint never runs code from the file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rnnedge.errors import InputError, ModelFileError
from rnnedge.fileio import atomic_write
from rnnedge.modeling.data import Normalizer, Series, make_windows, split
from rnnedge.modeling.models import ModelConfig, SequenceModel
from rnnedge.spec import DataContract, Normalization

CHECKPOINT_FORMAT = "rnnedge.checkpoint/1"

#: called after each epoch with (epoch, epochs, train_loss, val_loss)
Progress = Callable[[int, int, float, float], None]


@dataclass(frozen=True)
class TrainConfig:
    """Knobs of the loop; defaults train the demo forecaster in seconds on 2 cores."""

    epochs: int = 60
    batch_size: int = 32
    lr: float = 5e-3
    window: int = 32
    stride: int = 1
    val_fraction: float = 0.2
    seed: int = 0
    target_index: tuple[int, ...] = (0,)
    clip_grad_norm: float = 1.0
    #: stop after this many epochs without a better validation loss (0: never stop early)
    patience: int = 10

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "window", "stride"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise InputError(f"lr must be a finite number > 0, got {self.lr}")
        if int(self.patience) < 0:
            raise InputError(f"patience must be ≥ 0, got {self.patience}")

    @property
    def warmup(self) -> int:
        """Leading steps of each window left out of evaluation: the RNN starts from zero state."""
        return self.window // 4


@dataclass
class TrainResult:
    """The trained model with the numbers that show it learned something."""

    model: SequenceModel
    normalizer: Normalizer
    model_config: ModelConfig
    train_config: TrainConfig
    history: list[dict[str, float]] = field(default_factory=list)
    val_mse: float = math.nan
    persistence_mse: float = math.nan
    seconds: float = 0.0
    source: str = ""
    #: the epoch whose weights were kept (lowest validation loss)
    best_epoch: int = 0
    #: what the columns mean, stored in the checkpoint and then in the ONNX spec
    contract: DataContract | None = None
    #: the raw validation rows (data units), kept so precision can be judged on them later
    val_values: np.ndarray | None = None

    @property
    def skill(self) -> float:
        """1 - MSE / persistence MSE: above 0 only when the model beats "no change"."""
        return 1.0 - self.val_mse / self.persistence_mse if self.persistence_mse > 0 else math.nan

    def metrics(self) -> dict[str, float]:
        return {
            "val_mse": self.val_mse,
            "persistence_mse": self.persistence_mse,
            "skill": self.skill,
            "train_seconds": self.seconds,
            "best_epoch": self.best_epoch,
            "epochs_run": len(self.history),
        }


def fingerprint(series: Series) -> str:
    """A short hash of the training data (values and column names), to tell data sets apart."""
    h = hashlib.sha256()
    h.update(json.dumps(list(series.columns)).encode())
    h.update(np.ascontiguousarray(series.values, dtype="<f8").tobytes())
    return "sha256:" + h.hexdigest()[:16]


def _windows(values: np.ndarray, cfg: TrainConfig, what: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        return make_windows(values, cfg.window, stride=cfg.stride, target_index=cfg.target_index)
    except InputError as exc:
        raise InputError(f"{what} split: {exc}; use a smaller --window or more data") from exc


def evaluate(
    model: SequenceModel, x: np.ndarray, y: np.ndarray, normalizer: Normalizer, warmup: int
) -> tuple[float, float]:
    """(model MSE, persistence MSE) in the data's own units, past the warm-up steps.

    Persistence predicts that the next value equals the current one: a model that cannot
    beat it has learned nothing useful.
    """
    model.eval()
    with torch.inference_mode():
        pred, _ = model(torch.from_numpy(x))
    pred_u = normalizer.inverse_targets(pred.numpy())[:, warmup:]
    true_u = normalizer.inverse_targets(y)[:, warmup:]
    persist_u = normalizer.inverse_targets(x[..., list(normalizer.target_index)])[:, warmup:]
    return (float(np.mean((pred_u - true_u) ** 2)), float(np.mean((persist_u - true_u) ** 2)))


def train(
    series: Series,
    model_config: ModelConfig | None = None,
    train_config: TrainConfig | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """Fit a next-step forecaster with Adam + MSE on a chronological train/validation split."""
    tc = train_config or TrainConfig()
    values = np.asarray(series.values, dtype=np.float64)
    mc = model_config or ModelConfig(input_size=values.shape[1], output_size=len(tc.target_index))
    if mc.input_size != values.shape[1]:
        raise InputError(
            f"model input_size={mc.input_size} but the series has "
            f"{values.shape[1]} columns {list(series.columns)}"
        )
    if mc.output_size != len(tc.target_index):
        raise InputError(
            f"model output_size={mc.output_size} but {len(tc.target_index)} target "
            f"columns were chosen"
        )
    if mc.bidirectional:
        raise InputError(
            "a bidirectional model sees the future it must forecast; train a "
            "unidirectional one (bidirectional models can still be exported)"
        )
    start = time.perf_counter()
    torch.manual_seed(tc.seed)
    rng = np.random.default_rng(tc.seed)
    try:
        train_raw, val_raw = split(values, tc.val_fraction, min_len=tc.window + 1)
    except InputError as exc:
        raise InputError(f"{exc}, or a window shorter than {tc.window}") from exc
    normalizer = Normalizer.fit(train_raw, tc.target_index)
    xt, yt = _windows(normalizer.transform(train_raw).astype(np.float32), tc, "train")
    xv, yv = _windows(normalizer.transform(val_raw).astype(np.float32), tc, "validation")
    if not mc.batch_first:
        raise InputError(
            "training uses batch-first windows; train with batch_first=True and "
            "export time-major by rebuilding the model if needed"
        )
    model = SequenceModel(mc)
    optim = torch.optim.Adam(model.parameters(), lr=tc.lr)
    loss_fn = nn.MSELoss()
    targets = tuple(series.columns[i] for i in normalizer.target_index)
    contract = DataContract(
        tuple(series.columns), targets, 1, series.time_column, fingerprint=fingerprint(series)
    )
    result = TrainResult(
        model,
        normalizer,
        mc,
        tc,
        source=series.source,
        contract=contract,
        val_values=np.array(val_raw, dtype=np.float64),
    )
    best_loss, best_state, stale = math.inf, None, 0
    xt_t, yt_t = torch.from_numpy(xt), torch.from_numpy(yt)
    xv_t, yv_t = torch.from_numpy(xv), torch.from_numpy(yv)
    for epoch in range(1, tc.epochs + 1):
        model.train()
        order = rng.permutation(len(xt))
        total = 0.0
        for i in range(0, len(order), tc.batch_size):
            idx = torch.from_numpy(order[i : i + tc.batch_size])
            optim.zero_grad()
            pred, _ = model(xt_t[idx])
            loss = loss_fn(pred, yt_t[idx])
            loss.backward()
            if tc.clip_grad_norm > 0:
                nn.utils.clip_grad_norm_(model.parameters(), tc.clip_grad_norm)
            optim.step()
            total += float(loss.detach()) * len(idx)
        model.eval()
        with torch.inference_mode():
            val_loss = float(loss_fn(model(xv_t)[0], yv_t))
        train_loss = total / len(order)
        if not math.isfinite(train_loss):
            raise InputError(f"training diverged at epoch {epoch} (loss {train_loss}); lower --lr")
        result.history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss})
        if progress:
            progress(epoch, tc.epochs, train_loss, val_loss)
        if val_loss < best_loss:
            best_loss, stale, result.best_epoch = val_loss, 0, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if tc.patience and stale >= tc.patience:
                break
    if best_state is not None:  # the epoch that validated best, not the last one
        model.load_state_dict(best_state)
    result.val_mse, result.persistence_mse = evaluate(model, xv, yv, normalizer, tc.warmup)
    result.seconds = time.perf_counter() - start
    return result


def save_checkpoint(path: str | os.PathLike[str], result: TrainResult) -> Path:
    """Weights plus JSON config, metrics and normalization; nothing that needs unpickling."""
    path = Path(path)
    payload: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "model_config": json.dumps(result.model_config.to_dict()),
        "train_config": json.dumps(asdict(result.train_config)),
        "normalization": json.dumps(asdict(result.normalizer.to_spec())),
        "metrics": json.dumps(result.metrics()),
        "source": result.source,
        "contract": json.dumps(asdict(result.contract)) if result.contract else "",
        "state_dict": {k: v.detach().cpu() for k, v in result.model.state_dict().items()},
    }
    if result.val_values is not None:
        payload["val_values"] = torch.from_numpy(np.ascontiguousarray(result.val_values))
    atomic_write(path, lambda p: torch.save(payload, p))
    return path


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model rebuilt from its config, ready for eval or export."""

    model: SequenceModel
    normalization: Normalization | None
    metrics: dict[str, float]
    source: str
    contract: DataContract | None = None
    #: raw validation rows (data units) and the window the model was trained with
    val_values: np.ndarray | None = None
    window: int | None = None


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Load with `weights_only=True`: a file that carries pickled code is refused, not run."""
    path = Path(path)
    try:
        is_file = path.is_file()
    except OSError as exc:  # a name too long for the file system, a symlink loop, ...
        raise ModelFileError(
            f"checkpoint '{str(path)[:120]}' cannot be opened "
            f"({exc.strerror or exc.__class__.__name__})"
        ) from exc
    if not is_file:
        raise ModelFileError(
            f"checkpoint '{path}' does not exist (expected a .pt file written by `rnnedge train`)"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ModelFileError(
            f"checkpoint '{path}' contains pickled objects or code that rnnedge will not run "
            f"({first[:160]}); expected weights and JSON only, as `rnnedge train` writes"
        ) from exc
    except Exception as exc:
        raise ModelFileError(
            f"checkpoint '{path}' is corrupt or not a PyTorch file "
            f"({exc.__class__.__name__}); expected a .pt file from "
            "`rnnedge train`"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ModelFileError(
            f"checkpoint '{path}' is not an rnnedge checkpoint (expected "
            f"format '{CHECKPOINT_FORMAT}')"
        )
    try:
        config = ModelConfig.from_dict(json.loads(payload["model_config"]))
        norm_text = payload.get("normalization")
        norm = Normalization.from_dict(json.loads(norm_text)) if norm_text else None
        model = SequenceModel(config)
        model.load_state_dict(payload["state_dict"])
        metrics = json.loads(payload.get("metrics", "{}"))
        contract_text = payload.get("contract")
        contract = DataContract.from_dict(json.loads(contract_text)) if contract_text else None
        val = payload.get("val_values")
        val_values = val.numpy().astype(np.float64) if val is not None else None
        window = json.loads(payload.get("train_config", "{}")).get("window")
    except (
        KeyError,
        ValueError,
        TypeError,
        RuntimeError,
        InputError,
        ModelFileError,
        AttributeError,
    ) as exc:
        raise ModelFileError(
            f"checkpoint '{path}' is damaged: {str(exc).splitlines()[0][:200]}"
        ) from exc
    model.eval()
    return Checkpoint(
        model,
        norm,
        metrics,
        str(payload.get("source", "")),
        contract,
        val_values,
        int(window) if isinstance(window, int) else None,
    )
