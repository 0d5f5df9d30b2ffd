"""Named input: a mapping of columns (or a DataFrame) matched to the model's features by name.

A model exported from an rnnedge checkpoint knows its feature names (the data contract in its
spec), so `model.run({"unemp": ..., "infl": ...})` cannot feed columns in the wrong order:
they are put in the model's order here, and a missing or unexpected name is an error that
lists both sets. Plain arrays stay positional (checked on their count elsewhere). No pandas
import: anything with `.columns` and column indexing (pandas, polars) is read the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rnnedge.errors import InputError
from rnnedge.spec import RnnSpec


def name_mismatch(given: Sequence[str], wanted: Sequence[str], *, sort: bool = False) -> str | None:
    """`missing: [...], extra: [...]` when `given` is not the set `wanted`, else None: the one
    wording every by-name check (named input, CSV columns, long files) uses."""
    missing = [c for c in wanted if c not in given]
    extra = [c for c in given if c not in wanted]
    if not missing and not extra:
        return None
    if sort:
        missing, extra = sorted(missing), sorted(extra)
    return f"missing: {missing or 'none'}, extra: {extra or 'none'}"


def is_named(x: Any) -> bool:
    """A mapping of column names, or a data frame (has `.columns` and is not an array)."""
    if isinstance(x, Mapping):
        return True
    return hasattr(x, "columns") and not isinstance(x, np.ndarray)


def _column_names(x: Any) -> list[Any]:
    names = list(x.keys()) if isinstance(x, Mapping) else list(x.columns)
    twice = sorted({str(n) for n in names if names.count(n) > 1})
    if twice:
        raise InputError(f"named input has the column(s) {twice} more than once; name each once")
    return names


def _column(x: Any, name: Any) -> np.ndarray:
    values = x[name]
    to_numpy = getattr(values, "to_numpy", None)
    try:
        arr = np.asarray(to_numpy() if callable(to_numpy) else values)
    except (TypeError, ValueError) as exc:
        raise InputError(f"column {name!r} is not a sequence of numbers ({exc})") from None
    if arr.ndim != 1:
        raise InputError(f"column {name!r} has shape {arr.shape}; expected one value per step")
    if arr.dtype.kind not in "fiub":
        raise InputError(f"column {name!r} has dtype {arr.dtype}; expected numbers")
    return arr


def from_columns(x: Any, spec: RnnSpec) -> np.ndarray:
    """One sequence `(steps, features)` from named columns, in the model's feature order,
    shaped like the model's data input (batch 1).

    Raises:
        InputError: The model has no column names, a name is missing or unexpected (both sets
            are listed), a column is not 1-D numbers, or the columns differ in length.
    """
    contract = spec.contract
    names = _column_names(x)
    if contract is None:
        raise InputError(
            f"named input {[str(n) for n in names]} needs a model that knows its column names; "
            "this one has no data contract (re-export it from an rnnedge checkpoint), so pass a "
            "plain array in its feature order"
        )
    wanted = list(contract.features)
    given = [str(n) for n in names]
    mismatch = name_mismatch(given, wanted)
    if mismatch:
        raise InputError(
            f"named input has columns {given}; the model was trained on {wanted} ({mismatch})"
        )
    by_name = dict(zip(given, names, strict=True))
    cols = [_column(x, by_name[c]) for c in wanted]
    lengths = {len(c) for c in cols}
    if len(lengths) != 1:
        raise InputError(f"named input columns have different lengths {sorted(lengths)}")
    dtype = spec.input(spec.data_input).dtype
    table = np.stack(cols, axis=1).astype(dtype if dtype.startswith("float") else np.float64)
    layout = spec.data_layout
    if layout == "BTF":
        return table[None]
    if layout == "TBF":
        return table[:, None]
    if layout == "TF":
        return table
    raise InputError(
        f"named input is for (batch, time, features) models; this one's data "
        f"input has layout {layout}"
    )
