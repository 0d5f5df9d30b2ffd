"""Long-format sequence files in and forecast files out, for batch inference (no Ray needed).

A long file has one row per time step: `seq_id` (integer or string), `step` (integer) and the
feature columns (every other column, in file order). Reading checks everything that would
make a forecast silently wrong; writing goes through a temporary file and a rename, so an
output file is either complete or absent. Kept apart from `rnnedge.batch.infer` so the
single-process path (and its benchmark) reads and writes exactly as the Ray actors do.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rnnedge._optional import require
from rnnedge.errors import InputError, ModelFileError, RnnEdgeError
from rnnedge.fileio import atomic_write
from rnnedge.runtime.named import name_mismatch

SEQ_ID, STEP = "seq_id", "step"
SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "CSV"}


@dataclass(frozen=True, eq=False)
class LongFile:
    """The sequences of one file, sorted by seq_id, each one's rows sorted by step."""

    ids: list[Any]
    ids_are_int: bool
    steps: list[np.ndarray]
    values: list[np.ndarray]


def arrow_modules() -> tuple[Any, Any, Any]:
    """pyarrow, pyarrow.csv and pyarrow.parquet, or an error saying how to install them."""
    require("pyarrow", "rnnedge batch-infer")
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    return pa, pacsv, pq


def list_inputs(
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
) -> tuple[list[Path], list[str]]:
    """Input files (a folder's parquet/CSV files, or the given files) and the names skipped.

    Hidden and `_`-prefixed names (`_SUCCESS`, editor swap files) are skipped, as Spark and
    Ray do, so a folder written by another job can be read as it is.
    """
    if isinstance(inputs, (str, os.PathLike)):
        root = Path(inputs)
        if not root.exists():
            raise ModelFileError(
                f"input '{root}' does not exist; pass a folder of parquet or "
                "CSV files in long format (seq_id, step, features…)"
            )
        candidates = sorted(root.iterdir()) if root.is_dir() else [root]
    else:
        candidates = [Path(p) for p in inputs]
    files, skipped = [], []
    for p in candidates:
        usable = p.suffix.lower() in SUFFIXES and not p.name.startswith((".", "_"))
        (files if usable else skipped).append(p)
    if not files:
        raise InputError(f"no .parquet, .pq or .csv files in '{inputs}'")
    outs = [output_name(p) for p in files]
    clash = sorted({o for o in outs if outs.count(o) > 1})
    if clash:
        raise InputError(f"inputs would write the same output file(s) {clash}; rename them")
    return files, [p.name for p in skipped]


def output_name(path: Path) -> str:
    """`part-3.csv` → `part-3.parquet`: one output per input, named after it."""
    return path.with_suffix(".parquet").name


def read_long_file(
    path: str | os.PathLike[str],
    n_features: int | None = None,
    dtype: str = "float32",
    *,
    features: Sequence[str] | None = None,
) -> LongFile:
    """Read and check one long-format file.

    With `features` (the model's column names, from its data contract) the feature columns are
    taken by name in that order, whatever the file's order; without, every other column in
    file order.

    Raises:
        ModelFileError: the file cannot be read as parquet/CSV.
        InputError: a missing column, a feature count other than `n_features`, a non-numeric
            feature, an empty cell, NaN/Inf or a repeated step; the message names the place.
    """
    pa, pacsv, pq = arrow_modules()
    path = Path(path)
    kind = SUFFIXES.get(path.suffix.lower(), "CSV")
    try:
        table = pq.read_table(path) if kind == "parquet" else pacsv.read_csv(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise ModelFileError(f"{path.name} could not be read as {kind} ({first})") from exc
    names = table.column_names
    if SEQ_ID not in names or STEP not in names:
        raise InputError(
            f"{path.name} has columns {names}; expected long format: "
            f"{SEQ_ID}, {STEP}, then the feature columns"
        )
    feats = [c for c in names if c not in (SEQ_ID, STEP)]
    if features is not None:
        mismatch = name_mismatch(feats, features)
        if mismatch:
            raise InputError(
                f"{path.name} has feature columns {feats}; the model was trained on "
                f"{list(features)} ({mismatch})"
            )
        feats = list(features)
    if n_features is not None and len(feats) != n_features:
        raise InputError(
            f"{path.name} has {len(feats)} feature column(s) {feats}; the model "
            f"expects {n_features}"
        )
    if table.num_rows == 0:
        raise InputError(f"{path.name} has no rows")
    t = pa.types
    id_type = table.schema.field(SEQ_ID).type
    if not (t.is_integer(id_type) or t.is_string(id_type) or t.is_large_string(id_type)):
        raise InputError(f"{path.name}: {SEQ_ID} has type {id_type}; expected integer or string")
    for col in [STEP, *feats]:
        ctype = table.schema.field(col).type
        numeric = t.is_integer(ctype) or (col != STEP and t.is_floating(ctype))
        if not numeric:
            want = "integer" if col == STEP else "numeric"
            raise InputError(f"{path.name}: column {col!r} has type {ctype}; expected {want}")
    for col in names:
        if table[col].null_count:
            r = int(np.argmax(table[col].is_null().to_numpy(zero_copy_only=False)))
            key = {c: table[c][r].as_py() for c in (SEQ_ID, STEP)}
            raise InputError(
                f"{path.name}: column {col!r} has {table[col].null_count} empty or "
                f"NaN cell(s), the first at data row {r + 1} ({SEQ_ID} "
                f"{key[SEQ_ID]!r}, {STEP} {key[STEP]}); fill or drop them"
            )
    table = table.sort_by([(SEQ_ID, "ascending"), (STEP, "ascending")])
    ids = table[SEQ_ID].to_numpy(zero_copy_only=False)
    steps = table[STEP].to_numpy(zero_copy_only=False).astype(np.int64)
    values = np.empty((len(ids), len(feats)), dtype=dtype)
    for j, c in enumerate(feats):
        values[:, j] = table[c].to_numpy(zero_copy_only=False)
    bad = ~np.isfinite(values)
    if bad.any():
        r, c = np.unravel_index(int(np.argmax(bad)), bad.shape)
        raise InputError(
            f"{path.name}: {values[r, c]} in column {feats[c]!r} at {SEQ_ID} "
            f"{ids[r]!r} step {steps[r]}; clean or impute it"
        )
    new = np.ones(len(ids), dtype=bool)
    new[1:] = ids[1:] != ids[:-1]
    dup = np.flatnonzero(~new[1:] & (steps[1:] == steps[:-1]))
    if dup.size:
        r = int(dup[0]) + 1
        raise InputError(f"{path.name}: {SEQ_ID} {ids[r]!r} has step {steps[r]} twice")
    bounds = [*np.flatnonzero(new).tolist(), len(ids)]
    spans = list(itertools.pairwise(bounds))
    as_int = t.is_integer(id_type)
    return LongFile(
        [int(ids[a]) if as_int else str(ids[a]) for a, _ in spans],
        as_int,
        [steps[a:b] for a, b in spans],
        [values[a:b] for a, b in spans],
    )


def predict_buckets(model: Any, xs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Forecasts for (length, features) sequences, one `Model.run` per distinct length.

    Our graphs take no `sequence_lens`, so padding would change the final state and the
    padded steps' outputs. Sequences of equal length are stacked instead, and nothing is
    padded: each result equals running that sequence alone.
    """
    out: list[Any] = [None] * len(xs)
    lengths = np.array([len(x) for x in xs])
    axis = model.spec.batch_axis
    for n in np.unique(lengths):
        idx = np.flatnonzero(lengths == n)
        y, _ = model.run(np.stack([xs[i] for i in idx], axis=axis))
        for j, i in enumerate(idx):
            out[i] = np.take(y, j, axis=axis)
    return out


def write_forecasts(
    path: Path,
    ids: Sequence[Any],
    ids_are_int: bool,
    steps: Sequence[np.ndarray],
    ys: Sequence[np.ndarray],
    names: Sequence[str] | None = None,
) -> tuple[int, int]:
    """Write `seq_id, step, forecast_<target>…` (`forecast_0…` without names) in order.

    Row `step` holds the forecast for step + 1, as `rnnedge run` writes it.

    Returns (rows, sequences) counted in the file as written, before it is renamed into
    place; a file whose counts differ from the input's is never published.
    """
    pa, _, pq = arrow_modules()
    import pyarrow.compute as pc

    lengths = [len(s) for s in steps]
    y = np.concatenate([np.reshape(v, (n, -1)) for v, n in zip(ys, lengths, strict=True)])
    id_col = np.repeat(np.array(ids, dtype=np.int64 if ids_are_int else object), lengths)
    cols: dict[str, Any] = {SEQ_ID: id_col, STEP: np.concatenate(steps)}
    labels = list(names) if names is not None and len(names) == y.shape[1] else range(y.shape[1])
    cols.update({f"forecast_{name}": y[:, k] for k, name in enumerate(labels)})
    table = pa.table(cols)
    counts: list[int] = []

    def write(tmp: Path) -> None:
        pq.write_table(table, tmp)
        counts[:] = [pq.read_metadata(tmp).num_rows, pc.count_distinct(table[SEQ_ID]).as_py()]
        if counts != [sum(lengths), len(ids)]:
            raise RnnEdgeError(
                f"{path.name}: {counts[0]} rows / {counts[1]} sequences written for "
                f"{sum(lengths)} / {len(ids)} read; not published"
            )

    atomic_write(path, write)
    return counts[0], counts[1]
