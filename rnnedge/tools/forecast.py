"""Forecast a CSV series with an ONNX model, whole, streamed, or row by row from a live feed.

What `rnnedge run` does. numpy + onnxruntime only. Columns are matched *by name* when the model
carries a data contract (its feature and target names, stored at export), so a CSV whose
columns are in another order gives the same forecast and one missing a column is refused; a
model without a contract is fed positionally, checked on the count. Each output row says what
it is: the input row's step and time label, the horizon (row t forecasts t + horizon), and
`forecast_<target>` in the data's units.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from rnnedge.errors import InputError
from rnnedge.fileio import atomic_write, atomic_write_text
from rnnedge.runtime.gaps import MISSING_POLICIES, fill_missing
from rnnedge.runtime.named import name_mismatch

FORMATS = (".csv", ".npy", ".json")
#: a live feed fills each row as it comes; interpolation would need the rows after a gap
LIVE_POLICIES = ("raise", "zero", "ffill")


@dataclass(frozen=True)
class ForecastJob:
    """One series through one model.

    Attributes:
        model: The `.onnx` file.
        series: A CSV file with a header row (one sequence, one row per step); None reads
            the CSV from `source` (stdin for the CLI) instead.
        columns: Input columns; None takes the model's own (by name) or every numeric one.
        runtime: A registered runtime, or "auto".
        stream: Feed the series chunk by chunk, carrying state, instead of in one pass.
        chunk: Steps per chunk when streaming.
        state_names: State pairs (input → output) of a model rnnedge did not write.
        nan_policy: How gaps (empty cells, NA tokens, NaN) are filled, as in training.
        load_options: Further `rnnedge.load` overrides for a model rnnedge did not write
            (`data_input`, `data_output`, `layout`, `state_batch_axis`).
        extra: Values of the graph's extra inputs (`Model.run`'s `extra`).
    """

    model: Path
    series: Path | None
    columns: tuple[str, ...] | None = None
    runtime: str = "auto"
    stream: bool = False
    chunk: int = 1
    state_names: Mapping[str, str] | None = None
    nan_policy: str = "raise"
    load_options: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Forecast:
    """Per-step forecasts, (steps, outputs), named after the columns they forecast."""

    values: np.ndarray
    columns: tuple[str, ...]
    horizon: int = 1
    time_column: str | None = None
    time: tuple[str, ...] | None = None
    #: the input step of the first row (a live feed answers one row at a time)
    first_step: int = 0

    def header(self) -> list[str]:
        time = [self.time_column] if self.time_column and self.time is not None else []
        return ["step", *time, "horizon", *(f"forecast_{c}" for c in self.columns)]

    def row(self, i: int) -> list[Any]:
        time = [self.time[i]] if self.time_column and self.time is not None else []
        return [self.first_step + i, *time, self.horizon, *(float(v) for v in self.values[i])]

    def csv_text(self, header: bool = True) -> str:
        """One row per input step, floats at full precision."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        if header:
            writer.writerow(self.header())
        for i in range(len(self.values)):
            writer.writerow([repr(v) if isinstance(v, float) else v for v in self.row(i)])
        return buf.getvalue()

    def to_dict(self) -> dict[str, Any]:
        return {
            "columns": list(self.columns),
            "horizon": self.horizon,
            "time_column": self.time_column,
            "rows": [
                dict(zip(self.header(), self.row(i), strict=True)) for i in range(len(self.values))
            ],
        }


def choose_columns(
    spec: Any, requested: Sequence[str] | None, available: Sequence[str] | None = None
) -> list[str] | None:
    """The columns to read, in the model's order, or None to take every numeric column.

    Raises:
        InputError: With a contract: `requested` is not the model's set of features, or the
            data lacks some of them (both sets are named).
    """
    contract = spec.contract
    if contract is None:
        return list(requested) if requested else None
    wanted = list(contract.features)
    mismatch = None if requested is None else name_mismatch(requested, wanted, sort=True)
    if mismatch:
        raise InputError(
            f"--columns {list(requested)} are not the model's features; it was trained on "
            f"{wanted} ({mismatch})"
        )
    if available is not None:
        missing = [c for c in wanted if c not in available]
        if missing:
            raise InputError(
                f"the data lacks column(s) {missing} the model was trained on; it needs "
                f"{wanted} and has {list(available)}"
            )
    return wanted


def _targets(spec: Any, columns: Sequence[str], width: int) -> tuple[str, ...]:
    if spec.contract is not None:
        return tuple(spec.contract.targets)
    norm = spec.normalization
    if norm and max(norm.target_index) < len(columns):
        return tuple(columns[i] for i in norm.target_index)
    return tuple(f"y{i}" for i in range(width))


def forecast(job: ForecastJob, source: IO[str] | None = None) -> Forecast:
    """Run the model over the whole series; streamed output equals one full pass.

    Raises:
        ModelFileError: The model or CSV file is missing or unreadable.
        InputError: A column is missing, a cell is not a number, a gap under "raise", the
            feature count differs from the model's, or `chunk` < 1.
        RuntimeUnavailableError: The runtime is unknown or not available here.
    """
    from rnnedge.modeling import data
    from rnnedge.runtime.inputs import check_sequence
    from rnnedge.runtime.model import load

    _check_job(job)
    with load(job.model, job.runtime, state_names=job.state_names, **job.load_options) as model:
        spec = model.spec
        if job.series is not None:
            header = _csv_header(job.series)
            series = data.load_csv(
                job.series, choose_columns(spec, job.columns, header), nan_policy=job.nan_policy
            )
        else:
            text = source.read() if source is not None else ""
            header = next(csv.reader(io.StringIO(text)), [])
            series = data._read_csv(
                io.StringIO(text),
                choose_columns(spec, job.columns, header),
                ",",
                "<stdin>",
                job.nan_policy,
            )
        x = series.values.astype(np.float32)
        x = x[None] if spec.batch_first else x[:, None]
        x = check_sequence(x, spec, "x")  # the reader filled the gaps; infinities are refused
        if job.stream:
            stream = model.stream(batch=1, extra=job.extra)
            steps = x.shape[spec.seq_axis]
            parts = [
                stream.step(np.take(x, range(i, min(i + job.chunk, steps)), axis=spec.seq_axis))
                for i in range(0, steps, job.chunk)
            ]
            y = np.concatenate(parts, axis=spec.seq_axis)
        else:
            y, _ = model.run(x, extra=job.extra)
        y = y[0] if spec.batch_first else y[:, 0]
        _check_finite(y)
        horizon = spec.contract.horizon if spec.contract else 1
        return Forecast(
            y, _targets(spec, series.columns, y.shape[-1]), horizon, series.time_column, series.time
        )


def forecast_live(job: ForecastJob, lines: Iterable[str], emit: Callable[[Forecast], None]) -> int:
    """Answer each CSV row as it arrives: one model step per row, state carried.

    `emit` gets a one-row `Forecast` whose `first_step` is the row's step. Returns the number
    of rows answered.

    Raises:
        InputError: As `forecast`, for the header and for each row (naming its file line).
    """
    from rnnedge.runtime.inputs import check_sequence
    from rnnedge.runtime.model import load

    _check_job(job)
    if job.nan_policy not in LIVE_POLICIES:
        raise InputError(
            f"nan policy '{job.nan_policy}' needs the rows after a gap; a live "
            f"feed supports {', '.join(LIVE_POLICIES)}"
        )
    reader = csv.reader(iter(lines))
    header = [c.strip() for c in next(reader, [])]
    if not header:
        raise InputError("<stdin> is empty; expected a header row and then one row per step")
    with load(job.model, job.runtime, state_names=job.state_names, **job.load_options) as model:
        spec = model.spec
        names = choose_columns(spec, job.columns, header) or _numeric_guess(header)
        unknown = [c for c in names if c not in header]
        if unknown:
            raise InputError(f"column(s) {unknown} are not in <stdin>'s header {header}")
        cols = [header.index(c) for c in names]
        time_col = next((c for c in header if c not in names and _is_time_name(c)), None)
        targets = _targets(spec, names, 0)
        horizon = spec.contract.horizon if spec.contract else 1
        stream = model.stream(batch=1, extra=job.extra)
        carry: np.ndarray | None = None
        step = 0
        for cells in _rows(reader, len(header)):
            row = _row_values([cells[j] for j in cols], names, reader.line_num)
            row = fill_missing(
                row[None],
                job.nan_policy,
                columns=names,
                carry=carry,
                where=lambda _r, n=reader.line_num: f"<stdin> line {n}",
            )
            carry = row[0]
            x = (
                row.astype(np.float32)[None]
                if spec.batch_first
                else row.astype(np.float32)[:, None]
            )
            y = stream.step(check_sequence(x, spec, "row"))
            y = y[0] if spec.batch_first else y[:, 0]
            _check_finite(y)
            label = (cells[header.index(time_col)],) if time_col else None
            emit(
                Forecast(
                    y, targets or _targets(spec, names, y.shape[-1]), horizon, time_col, label, step
                )
            )
            step += 1
        return step


def _check_job(job: ForecastJob) -> None:
    if job.chunk < 1:
        raise InputError(f"chunk must be ≥ 1, got {job.chunk}")
    if job.nan_policy not in MISSING_POLICIES:
        raise InputError(
            f"nan_policy '{job.nan_policy}' is not one of {', '.join(MISSING_POLICIES)}"
        )


def _check_finite(y: np.ndarray) -> None:
    """Finite input that gives a non-finite forecast is a broken model, never a number."""
    if not np.all(np.isfinite(y)):
        raise InputError(
            "the model produced non-finite forecasts from finite input; its weights or stored "
            "normalization are broken (re-export it) or the input is far outside the training "
            "range"
        )


def _csv_header(path: Path) -> list[str] | None:
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            return [c.strip() for c in next(csv.reader(f), [])]
    except (OSError, UnicodeDecodeError, csv.Error):
        return None  # the full read reports it properly


def _is_time_name(name: str) -> bool:
    from rnnedge.modeling.tables import TIME_NAMES

    return name.strip().lower() in TIME_NAMES


def _numeric_guess(header: Sequence[str]) -> list[str]:
    """Without a contract or --columns, a live feed takes every column not named like time."""
    return [c for c in header if not _is_time_name(c)]


def _rows(reader: Any, width: int) -> Iterator[list[str]]:
    for cells in reader:
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != width:
            raise InputError(
                f"<stdin> line {reader.line_num} has {len(cells)} fields but the header has {width}"
            )
        yield [c.strip() for c in cells]


def _row_values(cells: Sequence[str], names: Sequence[str], line: int) -> np.ndarray:
    from rnnedge.modeling.tables import parse_cell

    where = f"<stdin> line {line}"
    return np.array([parse_cell(c, n, where) for c, n in zip(cells, names, strict=True)])


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
        return atomic_write_text(path, json.dumps(result.to_dict()) + "\n")
    raise InputError(f"output '{path}' must end in .csv, .npy or .json")
