"""Checks on what users feed a model, shared by `Model.run` and streams.

Each check raises `InputError` with one line naming what was given and what was expected,
before anything reaches the runtime, so a bad call never changes a stream's state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from rnnedge.errors import InputError
from rnnedge.runtime.normalize import validate_finite
from rnnedge.spec import RnnSpec

NAN_POLICIES = ("raise", "zero", "ffill")


def expected_layout(spec: RnnSpec) -> str:
    features = spec.input(spec.data_input).shape[2]
    order = "batch, seq_len" if spec.batch_first else "seq_len, batch"
    return f"({order}, features={features})"


def check_sequence(x: Any, spec: RnnSpec, what: str = "x", nan_policy: str = "raise",
                   carry: np.ndarray | None = None) -> np.ndarray:
    """`x` as a contiguous array of the model's dtype, or an InputError saying what is wrong.

    `carry`: for "ffill", the values of the step before `x` (its shape without the seq axis),
    so a stream fills a chunk's leading NaNs as one full pass would.
    """
    if nan_policy not in NAN_POLICIES:
        raise InputError(f"nan_policy '{nan_policy}' is not one of {NAN_POLICIES}")
    arr = np.asarray(x)
    tspec = spec.input(spec.data_input)
    if arr.dtype.kind != "f":
        raise InputError(
            f"{what} has dtype {arr.dtype}; expected floating point ({tspec.dtype})"
        )
    if arr.ndim != 3:
        raise InputError(
            f"{what} has shape {tuple(arr.shape)} (rank {arr.ndim}); expected rank 3 "
            f"{expected_layout(spec)}"
        )
    features = tspec.shape[2]
    if isinstance(features, int) and arr.shape[2] != features:
        raise InputError(
            f"{what} has {arr.shape[2]} features (shape {tuple(arr.shape)}); the model expects "
            f"{features}, layout {expected_layout(spec)}"
        )
    if arr.shape[spec.seq_axis] == 0 or arr.shape[spec.batch_axis] == 0:
        raise InputError(
            f"{what} is empty (shape {tuple(arr.shape)}); expected at least one step and one "
            f"sequence, layout {expected_layout(spec)}"
        )
    arr = np.ascontiguousarray(arr, dtype=tspec.dtype)
    if nan_policy == "raise":
        validate_finite(arr, what)
    elif not np.all(np.isfinite(arr)):
        arr = _fill(arr, spec.seq_axis, nan_policy, carry)
    return arr


def _fill(arr: np.ndarray, seq_axis: int, policy: str,
          carry: np.ndarray | None = None) -> np.ndarray:
    """Replace non-finite values: with 0, or with the last finite value along time."""
    out = arr.copy()
    bad = ~np.isfinite(out)
    if policy == "zero":
        out[bad] = 0.0
        return out
    moved = np.moveaxis(out, seq_axis, 0)
    bad_m = np.moveaxis(bad, seq_axis, 0)
    first = (np.asarray(carry, dtype=out.dtype) if carry is not None
             and np.shape(carry) == moved[0].shape else np.zeros_like(moved[0]))
    for t in range(moved.shape[0]):
        prev = moved[t - 1] if t else first
        moved[t][bad_m[t]] = prev[bad_m[t]]
    return out


def state_shape(spec: RnnSpec, name: str, batch: int) -> tuple[int, ...]:
    """The concrete shape of a state input for `batch`, from its declared shape."""
    tspec = spec.input(name)
    pair = next(p for p in spec.state_pairs if p.input == name)
    dims = []
    for axis, d in enumerate(tspec.shape):
        if axis == pair.batch_axis:
            dims.append(batch)
        elif isinstance(d, int):
            dims.append(d)
        else:
            raise InputError(
                f"state input '{name}' has a symbolic dim '{d}' at axis {axis} that is not its "
                f"batch axis; rnnedge needs the other state dims fixed"
            )
    return tuple(dims)


def check_state(
    state: Mapping[str, Any] | None, spec: RnnSpec, batch: int
) -> dict[str, np.ndarray] | None:
    """A state mapping with every pair's input present at the right shape and dtype."""
    if state is None:
        return None
    if not isinstance(state, Mapping):
        raise InputError(
            f"state must be a mapping of {[p.input for p in spec.state_pairs]} to arrays, "
            f"got {type(state).__name__}"
        )
    names = [p.input for p in spec.state_pairs]
    unknown = sorted(set(state) - set(names))
    missing = [n for n in names if n not in state]
    if unknown or missing:
        raise InputError(f"state has names {sorted(state)}; expected exactly {names}")
    out = {}
    for name in names:
        arr = np.asarray(state[name])
        want = state_shape(spec, name, batch)
        if arr.shape != want:
            raise InputError(
                f"state '{name}' has shape {tuple(arr.shape)}; expected {want} for batch {batch}"
            )
        if arr.dtype.kind != "f":
            raise InputError(f"state '{name}' has dtype {arr.dtype}; expected floating point")
        arr = np.ascontiguousarray(arr, dtype=spec.input(name).dtype)
        validate_finite(arr, f"state '{name}'")
        out[name] = arr
    return out


def zero_state(spec: RnnSpec, batch: int) -> dict[str, np.ndarray]:
    return {
        p.input: np.zeros(state_shape(spec, p.input, batch), dtype=spec.input(p.input).dtype)
        for p in spec.state_pairs
    }


def check_extra(extra: Mapping[str, Any] | None, spec: RnnSpec) -> dict[str, np.ndarray]:
    """Values for the graph's non-data, non-state inputs: all given, none unknown, right shape.

    Such inputs (a sample rate, a gain) are fixed for a stream, so they are checked once when
    the stream opens rather than at every step.
    """
    from rnnedge.runtime.foreign import extra_inputs

    wanted = {t.name: t for t in extra_inputs(spec)}
    given = dict(extra or {})
    missing = [n for n in wanted if n not in given]
    unknown = [n for n in given if n not in wanted]
    if missing or unknown:
        raise InputError(
            f"extra inputs given: {sorted(given) or 'none'}; the model needs exactly "
            f"{sorted(wanted) or 'none'} besides '{spec.data_input}' and its state"
        )
    out = {}
    for name, tspec in wanted.items():
        arr = np.asarray(given[name])
        fixed = all(isinstance(d, int) for d in tspec.shape)
        if len(tspec.shape) != arr.ndim or (fixed and tuple(tspec.shape) != arr.shape):
            raise InputError(f"extra input '{name}' has shape {tuple(arr.shape)}; expected "
                             f"{tuple(tspec.shape)}")
        try:
            out[name] = np.ascontiguousarray(arr, dtype=tspec.dtype)
        except (TypeError, ValueError) as exc:
            raise InputError(f"extra input '{name}' has dtype {arr.dtype}; expected "
                             f"{tspec.dtype}") from exc
    return out


def parse_positive_ints(text: str, what: str) -> list[int]:
    """`"1,3,64"` from a command-line option → `[1, 3, 64]`, or an InputError naming it."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise InputError(f"{what} must be comma-separated integers like 1,3; got '{text}'"
                         ) from exc
    if not values or min(values) < 1:
        raise InputError(f"{what} must be positive integers; got '{text}'")
    return values
