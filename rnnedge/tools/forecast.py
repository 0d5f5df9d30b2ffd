"""Forecast a CSV series with an ONNX model, whole or streamed, and write what came out.

What `rnnedge run` does. numpy + onnxruntime only: the CSV reader is numpy's, the model runs
through `rnnedge.runtime`, and the forecasts are in the data's units because the model file
carries the normalization it was trained with.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnedge.errors import InputError
from rnnedge.fileio import atomic_write, atomic_write_text
from rnnedge.runtime.gaps import MISSING_POLICIES

FORMATS = (".csv", ".npy", ".json")


@dataclass(frozen=True)
class ForecastJob:
    """One series through one model.

    Attributes:
        model: The `.onnx` file.
        series: A CSV file with a header row; one sequence, one row per step.
        columns: Input columns; None takes every numeric one.
        runtime: A registered runtime, or "auto".
        stream: Feed the series chunk by chunk, carrying state, instead of in one pass.
        chunk: Steps per chunk when streaming.
        state_names: State pairs (input → output) of a model rnnedge did not write.
        nan_policy: How gaps (empty or NaN cells) are filled, as in training: "raise",
            "zero", "ffill" or "interpolate"; "zero" and "ffill" also cover infinities.
    """

    model: Path
    series: Path
    columns: tuple[str, ...] | None = None
    runtime: str = "auto"
    stream: bool = False
    chunk: int = 1
    state_names: Mapping[str, str] | None = None
    nan_policy: str = "raise"


@dataclass(frozen=True)
class Forecast:
    """Per-step forecasts, (steps, outputs), named after the columns they forecast."""

    values: np.ndarray
    columns: tuple[str, ...]

    def csv_text(self) -> str:
        """`step,forecast_<column>...` with one row per step, full float precision."""
        buf = io.StringIO()
        buf.write("step," + ",".join(f"forecast_{c}" for c in self.columns) + "\n")
        for i, row in enumerate(self.values):
            buf.write(f"{i}," + ",".join(repr(float(v)) for v in row) + "\n")
        return buf.getvalue()


def forecast(job: ForecastJob) -> Forecast:
    """Run the model over the series; streamed output equals one full pass.

    Raises:
        ModelFileError: The model or CSV file is missing or unreadable.
        InputError: A column is missing, a cell is not a number, NaN under "raise", the
            feature count differs from the model's, or `chunk` < 1.
        RuntimeUnavailableError: The runtime is unknown or not available here.
    """
    from rnnedge.modeling import data
    from rnnedge.runtime.inputs import NAN_POLICIES, check_sequence
    from rnnedge.runtime.model import load

    if job.chunk < 1:
        raise InputError(f"chunk must be ≥ 1, got {job.chunk}")
    if job.nan_policy not in MISSING_POLICIES:
        raise InputError(
            f"nan_policy '{job.nan_policy}' is not one of {', '.join(MISSING_POLICIES)}"
        )
    series = data.load_csv(
        job.series, list(job.columns) if job.columns else None, nan_policy=job.nan_policy
    )
    # the reader filled the gaps; what is left non-finite (inf) the model's checks judge
    policy = job.nan_policy if job.nan_policy in NAN_POLICIES else "raise"
    with load(job.model, job.runtime, state_names=job.state_names) as model:
        spec = model.spec
        x = series.values.astype(np.float32)
        x = x[None] if spec.batch_first else x[:, None]
        # the whole series at once, so NaN indices are the file's and ffill crosses chunks
        x = check_sequence(x, spec, "x", policy)
        if job.stream:
            stream = model.stream(batch=1, nan_policy=policy)
            steps = x.shape[spec.seq_axis]
            parts = [
                stream.step(np.take(x, range(i, min(i + job.chunk, steps)), axis=spec.seq_axis))
                for i in range(0, steps, job.chunk)
            ]
            y = np.concatenate(parts, axis=spec.seq_axis)
        else:
            y, _ = model.run(x, nan_policy=policy)
        y = y[0] if spec.batch_first else y[:, 0]
        norm = spec.normalization
        names = (
            [series.columns[i] for i in norm.target_index]
            if norm and max(norm.target_index) < len(series.columns)
            else [f"y{i}" for i in range(y.shape[-1])]
        )
    return Forecast(y, tuple(names))


def write_forecast(result: Forecast, path: str | Path) -> Path:
    """Write `.csv`, `.npy` or `.json` (chosen by the suffix), atomically.

    Raises:
        InputError: The suffix is none of those.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return atomic_write_text(path, result.csv_text())
    if suffix == ".npy":

        def save_npy(p: Path) -> None:
            with open(p, "wb") as f:  # np.save(path) would append ".npy" to the temporary name
                np.save(f, result.values)

        return atomic_write(path, save_npy)
    if suffix == ".json":
        text = json.dumps({"columns": list(result.columns), "forecast": result.values.tolist()})
        return atomic_write_text(path, text)
    raise InputError(f"output '{path}' must end in .csv, .npy or .json")
