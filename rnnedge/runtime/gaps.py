"""Gaps in data: one policy for NaN, empty cells and NA tokens, wherever data enters.

Training, `run`, `batch-infer` and streams all fill the same way, so a model is never fed
data cleaned one way in training and another in production.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from rnnedge.errors import InputError

#: how gaps are handled, everywhere data enters (train, run, batch-infer, streams)
MISSING_POLICIES = ("raise", "zero", "ffill", "interpolate")
POLICY_HINT = "pass --nan-policy zero, ffill or interpolate (nan_policy= in the API) to fill gaps"


def fill_missing(
    values: np.ndarray,
    policy: str,
    *,
    columns: Sequence[str] | None = None,
    where: Callable[[int], str] | None = None,
    what: str = "data",
    carry: np.ndarray | None = None,
) -> np.ndarray:
    """Apply one missing-value policy to (T, F) data along time (axis 0); returns a new array.

    `ffill` fills a gap with the last value before it (from `carry` — the previous chunk's last
    row — for a stream, else 0 for leading gaps); `interpolate` draws a straight line between
    the values around a gap and extends the first/last value over leading/trailing gaps.
    Only NaN is a gap: an infinity is a broken value and stays an error elsewhere.
    """
    if policy not in MISSING_POLICIES:
        raise InputError(f"nan policy {policy!r} is not one of {', '.join(MISSING_POLICIES)}")
    x = np.array(
        values,
        dtype=np.float64 if np.asarray(values).dtype.kind != "f" else np.asarray(values).dtype,
        copy=True,
    )
    gaps = np.isnan(x)
    if not gaps.any():
        return x
    if policy == "raise":
        r, j = (int(i) for i in np.argwhere(gaps)[0])
        col = repr(columns[j]) if columns is not None else f"{j}"
        at = where(r) if where is not None else f"step {r} of {what}"
        count = int(gaps.sum())
        more = f" ({count} missing values in all)" if count > 1 else ""
        raise InputError(f"column {col} is missing a value at {at}{more}; {POLICY_HINT}")
    if policy == "zero":
        x[gaps] = 0.0
        return x
    if policy == "ffill":
        prev = (
            np.asarray(carry, dtype=x.dtype).reshape(x.shape[1:])
            if carry is not None
            else np.zeros(x.shape[1:], dtype=x.dtype)
        )
        for t in range(x.shape[0]):
            row = x[t]
            row[gaps[t]] = prev[gaps[t]]
            prev = row
        return x
    t_idx = np.arange(x.shape[0], dtype=np.float64)
    flat = x.reshape(x.shape[0], -1)
    for j in range(flat.shape[1]):
        col_gaps = np.isnan(flat[:, j])
        if col_gaps.all():
            name = repr(columns[j]) if columns is not None else str(j)
            raise InputError(
                f"column {name} has no value at all in {what}; nothing to interpolate from"
            )
        if col_gaps.any():
            flat[col_gaps, j] = np.interp(t_idx[col_gaps], t_idx[~col_gaps], flat[~col_gaps, j])
    return flat.reshape(x.shape)
