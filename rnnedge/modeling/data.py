"""Series in, training windows out: the data side of a forecaster, in numpy only.

This module is imported by the CLI and by apps that never train, so it must not pull in torch,
onnx or pandas. Everything a model was trained with (feature statistics, which columns are
targets) round-trips through `rnnedge.spec.Normalization`, so the exported file carries it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.resources import files

import numpy as np

from rnnedge.errors import InputError, ModelFileError
from rnnedge.modeling import tables
from rnnedge.runtime.normalize import (  # Normalizer is part of the training API too
    Normalizer,  # noqa: F401
    _targets,
    validate_finite,
)

KINDS = ("sine", "ar", "random_walk")
_BURN_IN = 200  # AR steps discarded so the series starts from the stationary distribution


@dataclass(frozen=True, eq=False)
class Series:
    """A named multivariate series; `source` says where it came from, for messages and plots.

    `values` is copied to a read-only float64 (T, F) array so a Series cannot change under a
    normalizer fitted on it. Equality is identity: element-wise array equality has no truth value.
    """

    values: np.ndarray
    columns: tuple[str, ...]
    source: str = ""
    #: the column that labels the rows (dates, years), carried to outputs; never a feature
    time_column: str | None = None
    #: one label per row, from `time_column`
    time: tuple[str, ...] | None = None
    #: time-like columns that were left out of the features
    ignored: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        values = _as_2d(np.array(self.values, dtype=np.float64), "Series values")
        columns = tuple(str(c) for c in self.columns)
        if len(columns) != values.shape[1]:
            raise InputError(
                f"Series has {values.shape[1]} feature column(s) but {len(columns)} name(s) "
                f"{columns}; pass one name per column"
            )
        if self.time is not None and len(self.time) != values.shape[0]:
            raise InputError(
                f"Series has {values.shape[0]} rows but {len(self.time)} time "
                "labels; pass one label per row"
            )
        values.flags.writeable = False
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "columns", columns)


def load_sunspots() -> Series:
    """Yearly sunspot numbers 1700–2008: a small, real, quasi-periodic series for demos and tests.

    Bundled (see `rnnedge/modeling/datasets/README.md`) so examples run offline.
    """
    resource = files("rnnedge.modeling") / "datasets" / "sunspots.csv"
    with resource.open("r", encoding="utf-8-sig", newline="") as f:
        return _read_csv(f, ["SUNACTIVITY"], ",", "rnnedge/modeling/datasets/sunspots.csv")


def synthetic(
    length: int = 1000,
    *,
    features: int = 1,
    kind: str = "sine",
    noise: float = 0.05,
    seed: int = 0,
) -> Series:
    """A reproducible series for tests and demos that need no data files.

    `"sine"` has known periodic structure (two periods per feature, differing across features),
    `"ar"` is a stable AR(2) with unit innovations, `"random_walk"` is non-stationary on purpose.
    `noise` is the std of white observation noise added to every kind.
    """
    if kind not in KINDS:
        raise InputError(f"synthetic kind {kind!r} is unknown; use one of {', '.join(KINDS)}")
    length = _int_at_least(length, "synthetic length", 2)
    features = _int_at_least(features, "synthetic features", 1)
    if not np.isfinite(noise) or noise < 0:
        raise InputError(f"synthetic noise {noise!r} is invalid; pass a finite std >= 0")
    rng = np.random.default_rng(seed)
    if kind == "sine":
        t = np.arange(length, dtype=np.float64)[:, None]
        f = np.arange(features, dtype=np.float64)[None, :]
        slow, fast = 50.0 + 13.0 * f, 11.0 + 3.0 * f
        phase = rng.uniform(0.0, 2.0 * np.pi, size=(2, features))
        values = np.sin(2 * np.pi * t / slow + phase[0]) + 0.5 * np.sin(
            2 * np.pi * t / fast + phase[1]
        )
    elif kind == "ar":
        # phi1 + phi2 < 1, phi2 - phi1 < 1, |phi2| < 1: stable, complex roots -> quasi-cycles.
        phi1, phi2 = 1.3, -0.6
        e = rng.standard_normal((length + _BURN_IN, features))
        x = np.zeros_like(e)
        for i in range(2, len(e)):
            x[i] = phi1 * x[i - 1] + phi2 * x[i - 2] + e[i]
        values = x[_BURN_IN:]
    else:
        values = np.cumsum(rng.standard_normal((length, features)), axis=0)
    values = values + noise * rng.standard_normal((length, features))
    source = (
        f"synthetic(length={length}, features={features}, kind={kind!r}, noise={noise}, "
        f"seed={seed})"
    )
    return Series(values, tuple(f"x{i}" for i in range(features)), source)


def load_csv(
    path: str | os.PathLike[str],
    columns: Sequence[str] | None = None,
    *,
    delimiter: str = ",",
    nan_policy: str = "raise",
    time_column: str | None = None,
) -> Series:
    """Read numeric columns of a CSV with a header row, by name.

    With `columns=None` every numeric column that does not label time is taken (see
    `rnnedge.modeling.tables.time_like`); time-like columns are kept as the rows' labels, never
    as features. Missing cells (empty, `NA`, `null`, `nan`, ...) are handled by `nan_policy`;
    the default refuses them with the column, data row and file line.
    """
    if isinstance(columns, str):
        columns = [columns]
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8-sig", newline="") as f:
            return _read_csv(f, columns, delimiter, name, nan_policy, time_column)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as e:
        raise ModelFileError(f"CSV file {name!r} not found; check the path") from e
    except UnicodeDecodeError as e:
        raise ModelFileError(
            f"CSV file {name!r} is not UTF-8 text ({e}); re-save it as UTF-8"
        ) from e
    except OSError as e:
        raise ModelFileError(
            f"CSV file {name!r} cannot be read ({e.strerror or e}); check "
            "the path and its permissions"
        ) from e


def _read_csv(
    lines: Iterable[str],
    columns: Sequence[str] | None,
    delimiter: str,
    source: str,
    nan_policy: str = "raise",
    time_column: str | None = None,
) -> Series:
    """Parse an open CSV into a Series; see `load_csv`."""
    table = tables.read_table(lines, delimiter, source)
    header = table.header
    for c in [*(columns or ()), *([time_column] if time_column else [])]:
        if c not in header:
            raise InputError(
                f"column {c!r} is not in {source}; available columns: {', '.join(header)}"
            )
    timey = [h for h in header if h != time_column and tables.time_like(h, table.column(h))]
    if time_column is None:
        time_column = next(iter(timey), None)
    if columns is None:  # mostly-numeric columns; their gaps and typos get reported below
        chosen = [
            h
            for h in header
            if h not in timey and h != time_column and tables.numeric_column(table.column(h))
        ]
    else:
        chosen = list(columns)
    if not chosen:
        what = "no column is numeric" if columns is None else "columns=[] selects nothing"
        skipped = f" (time-like, not used: {', '.join(timey)})" if timey else ""
        raise InputError(
            f"{source}: {what} (columns: {', '.join(header)}){skipped}; pass columns= naming "
            "those to load"
        )
    values = tables.parse_numbers(table, chosen)
    values = tables.fill_missing(values, nan_policy, columns=chosen, where=table.where, what=source)
    ignored = tuple(h for h in timey if h not in chosen)
    labels = tuple(table.column(time_column)) if time_column and time_column not in chosen else None
    return Series(
        values,
        tuple(chosen),
        source,
        time_column=time_column if labels else None,
        time=labels,
        ignored=ignored,
    )


def make_windows(
    values: np.ndarray,
    window: int,
    *,
    stride: int = 1,
    target_index: Sequence[int] = (0,),
) -> tuple[np.ndarray, np.ndarray]:
    """Next-step windows: X[n] = values[i:i+window], Y[n] = values[i+1:i+window+1, targets].

    The target at every step is the next value, so a sequence model is trained at every time
    step (teacher forcing) and streams one step at a time after export. float32 for training.
    """
    x = _as_2d(np.asarray(values), "values")
    validate_finite(x, "values")
    window = _int_at_least(window, "window", 1)
    stride = _int_at_least(stride, "stride", 1)
    t = x.shape[0]
    if t < window + 1:
        raise InputError(
            f"series of length {t} is too short for one window of {window}; it needs "
            f"{window + 1} steps (window + the next value); shorten the window or add data"
        )
    targets = list(_targets(target_index, x.shape[1]))
    view = np.lib.stride_tricks.sliding_window_view(x.astype(np.float32), window, axis=0)
    view = view.transpose(0, 2, 1)  # (T - window + 1, window, F)
    xs = np.ascontiguousarray(view[0 : t - window : stride])
    ys = np.ascontiguousarray(view[1 : t - window + 1 : stride][..., targets])
    return xs, ys


def split(
    values: np.ndarray, val_fraction: float = 0.2, *, min_len: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Chronological train/validation split along axis 0 (views, not copies).

    Never shuffled: validating on steps before the training data would leak the future.
    """
    x = np.asarray(values)
    if not 0.0 < val_fraction < 1.0:
        raise InputError(f"val_fraction {val_fraction!r} is out of range; pass 0 < fraction < 1")
    if x.ndim == 0:
        raise InputError("cannot split a 0-d array; pass a series of shape (T,) or (T, F)")
    t = x.shape[0]
    n_val = round(t * val_fraction)
    n_train = t - n_val
    if min(n_train, n_val) < min_len:
        raise InputError(
            f"splitting {t} steps at val_fraction={val_fraction} gives {n_train} train and "
            f"{n_val} validation steps; each needs >= {min_len}, use more data or another fraction"
        )
    return x[:n_train], x[n_train:]


def _int_at_least(value: int, what: str, lo: int) -> int:
    """Accept ints (and integral floats from configs); reject bools, fractions and small values."""
    ok = isinstance(value, (int, float, np.integer)) and not isinstance(value, bool)
    if not ok or value < lo or int(value) != value:
        raise InputError(f"{what} {value!r} is invalid; pass a whole number >= {lo}")
    return int(value)


def _as_2d(x: np.ndarray, what: str) -> np.ndarray:
    """(T,) is one feature; anything but (T,) or (T, F) is a caller mix-up worth naming."""
    if x.ndim == 1:
        return x[:, None]
    if x.ndim != 2:
        raise InputError(f"{what} has shape {x.shape}; expected (T,) or (T, F)")
    return x
