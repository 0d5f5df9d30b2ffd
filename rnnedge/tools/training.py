"""Train rnnedge's forecaster from a named data source and keep it as a checkpoint.

What `rnnedge train` and `rnnedge demo` do, as library calls on typed settings. The settings
hold what a user chooses; the data decides the rest (input size, which column is the target),
so `ModelConfig`/`TrainConfig` are built here, after the series is read. torch is imported
only when training starts, through `_optional`, so these settings can be built, and a missing
torch reported as "install rnnedge[export]", in a runtime-only install.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rnnedge._optional import require
from rnnedge.errors import InputError, QualityError

if TYPE_CHECKING:
    from rnnedge.modeling.data import Series
    from rnnedge.modeling.train import TrainResult

#: called after each epoch with (epoch, epochs, train_loss, val_loss)
Progress = Callable[[int, int, float, float], None]

SOURCES = ("sunspots", "synthetic")


@dataclass(frozen=True)
class SeriesSource:
    """Where the training series comes from.

    Attributes:
        data: "sunspots" (bundled), "synthetic", or the path of a CSV file with a header row.
        columns: CSV columns to use; None takes every numeric one.
        target: The column to forecast; may be None only when one column is used, since
            guessing among several (say, `year` before `unemp`) trains a useless model.
        nan_policy: How gaps in a CSV are filled: "raise", "zero", "ffill" or "interpolate".
    """

    data: str = "sunspots"
    columns: tuple[str, ...] | None = None
    target: str | None = None
    nan_policy: str = "raise"


@dataclass(frozen=True)
class TrainSettings:
    """The forecaster and its loop as a user picks them (defaults: the demo's, seconds on 2
    cores); `ModelConfig` and `TrainConfig` check them again when they are built."""

    cell: str = "lstm"
    hidden_size: int = 32
    num_layers: int = 1
    dropout: float = 0.0
    epochs: int = 60
    batch_size: int = 32
    lr: float = 5e-3
    window: int = 32
    val_fraction: float = 0.2
    seed: int = 0
    patience: int = 10
    #: refuse (QualityError, no checkpoint) a model that does not beat persistence
    strict: bool = False


@dataclass(frozen=True)
class TrainJob:
    """A training run that ends in a checkpoint at `checkpoint`."""

    source: SeriesSource
    settings: TrainSettings
    checkpoint: Path


@dataclass(frozen=True)
class Trained:
    """A trained model and where its checkpoint was written."""

    result: TrainResult
    checkpoint: Path


def load_series(source: SeriesSource) -> Series:
    """The series `source` names (sunspots, synthetic with as many features as columns, CSV).

    Raises:
        ModelFileError: The CSV file is missing or not text.
        InputError: A named column is missing or a cell is not a number.
    """
    from rnnedge.modeling import data

    if source.data == "sunspots":
        return data.load_sunspots()
    if source.data == "synthetic":
        return data.synthetic(1000, features=len(source.columns or [0]))
    return data.load_csv(
        source.data, list(source.columns) if source.columns else None, nan_policy=source.nan_policy
    )


def target_index(series: Series, target: str | None) -> int:
    """Position of the column to forecast among the series' columns.

    Raises:
        InputError: `target` is not one of the columns the series was read with, or it is
            None while several columns are used.
    """
    if target is None:
        if len(series.columns) == 1:
            return 0
        left_out = f" (time-like, not used: {', '.join(series.ignored)})" if series.ignored else ""
        raise InputError(
            f"{series.source or 'the data'} has {len(series.columns)} numeric columns "
            f"{list(series.columns)}{left_out}; name the one to forecast with --target "
            "(target= in the API)"
        )
    if target not in series.columns:
        raise InputError(
            f"target column '{target}' is not among the columns used "
            f"{list(series.columns)}; name one of them, or add it to the columns"
        )
    return list(series.columns).index(target)


def fit(
    series: Series, settings: TrainSettings, target: int = 0, progress: Progress | None = None
) -> TrainResult:
    """Train a next-step forecaster of column `target` on `series`.

    Raises:
        RuntimeUnavailableError: torch is not installed (exit 5, names the extra).
        InputError: A setting is out of range, or the series is too short for the window.
    """
    require("torch", "training a forecaster", extra="export")
    from rnnedge.modeling.models import ModelConfig
    from rnnedge.modeling.train import TrainConfig, train

    s = settings
    mc = ModelConfig(
        cell=s.cell,
        input_size=series.values.shape[1],
        hidden_size=s.hidden_size,
        num_layers=s.num_layers,
        dropout=s.dropout,
        output_size=1,
    )
    tc = TrainConfig(
        epochs=s.epochs,
        batch_size=s.batch_size,
        lr=s.lr,
        window=s.window,
        val_fraction=s.val_fraction,
        seed=s.seed,
        target_index=(target,),
        patience=s.patience,
    )
    return train(series, mc, tc, progress=progress)


def train_forecaster(job: TrainJob, progress: Progress | None = None) -> Trained:
    """Read the series, train, and write the checkpoint atomically (nothing on failure).

    Raises:
        RuntimeUnavailableError: torch is not installed.
        ModelFileError: The data file is missing or unreadable.
        InputError: The data or a setting does not allow training.
    """
    require("torch", "training a forecaster", extra="export")
    from rnnedge.modeling.train import save_checkpoint

    series = load_series(job.source)
    result = fit(series, job.settings, target_index(series, job.source.target), progress)
    if job.settings.strict and not result.skill > 0:
        raise QualityError(
            f"the model does not beat a persistence forecast on validation data (MSE "
            f"{result.val_mse:.4g} vs {result.persistence_mse:.4g}, skill "
            f"{100 * result.skill:.1f}%); no checkpoint written. Try more epochs, another "
            "--window or --target, or drop --strict to keep it anyway"
        )
    return Trained(result, Path(save_checkpoint(job.checkpoint, result)))
