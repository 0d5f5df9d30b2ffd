"""Checks on what users feed a model, shared by `Model.run` and streams.

Each check raises `InputError` with one line naming what was given and what was expected,
before anything reaches the runtime, so a bad call never changes a stream's state. They follow
the spec: the data input's layout (`B` batch, `T` time, one letter per axis) and declared
dtype, each state's declared shape and batch axis, each extra input's dtype and rank, exactly:
integers are never cast from floats or strings, and a scalar stays rank 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from rnnedge.errors import InputError
from rnnedge.runtime.normalize import validate_finite
from rnnedge.spec import RnnSpec, TensorSpec

NAN_POLICIES = ("raise", "zero", "ffill")
#: the most values a zero state may hold (all states together): past this a batch is a slip
MAX_STATE_VALUES = 2**31
_AXIS_WORDS = {"B": "batch", "T": "seq_len", "F": "features", "C": "channels"}


def _words(spec: RnnSpec) -> list[str]:
    shape = spec.input(spec.data_input).shape
    words = [_AXIS_WORDS.get(letter, f"axis {letter}") for letter in spec.data_layout]
    return [f"{w}={d}" if isinstance(d, int) else w for w, d in zip(words, shape, strict=False)]


def expected_layout(spec: RnnSpec) -> str:
    """The data input's axes in words, `(batch, seq_len, features=3)`, for messages."""
    return "(" + ", ".join(_words(spec)) + ")"


def as_array(x: Any, what: str) -> np.ndarray:
    """`np.asarray(x)`, with whatever numpy cannot make a numeric array of refused."""
    if isinstance(x, (str, bytes, dict, set, frozenset)) or x is None or callable(x):
        raise InputError(f"{what} is a {type(x).__name__}; expected an array of numbers")
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError, RecursionError, OverflowError) as exc:
        first = " ".join(str(exc).split())[:160]
        raise InputError(
            f"{what} cannot be read as an array ({first}); expected an array of numbers, "
            "e.g. nested lists of equal lengths"
        ) from None
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{what} has dtype {arr.dtype}; expected an array of numbers")
    return arr


def _dtype_fits(arr: np.ndarray, declared: str, what: str) -> np.dtype:
    """The declared dtype, when `arr`'s values can become it without changing meaning."""
    want = np.dtype(declared)
    kind = arr.dtype.kind
    if want.kind == "f":
        if kind != "f":
            raise InputError(f"{what} has dtype {arr.dtype}; expected floating point ({declared})")
    elif want.kind in "iu":
        if kind not in "iu":
            raise InputError(
                f"{what} has dtype {arr.dtype}; the model takes integers "
                f"({declared}), and other values are not cast to them"
            )
        if arr.size and arr.dtype != want:
            info = np.iinfo(want)
            lo, hi = int(arr.min()), int(arr.max())
            if lo < info.min or hi > info.max:
                raise InputError(
                    f"{what} holds {lo}..{hi}, outside {declared} ({info.min}..{info.max})"
                )
    elif want.kind == "b" and kind != "b":
        raise InputError(f"{what} has dtype {arr.dtype}; expected booleans ({declared})")
    return want


def check_sequence(
    x: Any,
    spec: RnnSpec,
    what: str = "x",
    nan_policy: str = "raise",
    carry: np.ndarray | None = None,
    *,
    free_time: bool = False,
) -> np.ndarray:
    """`x` as a contiguous array of the model's dtype, or an InputError saying what is wrong.

    `carry`: for "ffill", the values of the step before `x` (its shape without the seq axis),
    so a stream fills a chunk's leading NaNs as one full pass would. `free_time`: the time
    axis may have any length, 0 included (a framed stream buffers it and adds its carried
    context before a call).
    """
    if nan_policy not in NAN_POLICIES:
        raise InputError(f"nan_policy {nan_policy!r} is not one of {NAN_POLICIES}")
    arr = as_array(x, what)
    tspec = spec.input(spec.data_input)
    layout = spec.data_layout
    want = _dtype_fits(arr, tspec.dtype, what)
    if arr.ndim != len(layout):
        raise InputError(
            f"{what} has shape {tuple(arr.shape)} (rank {arr.ndim}); expected rank "
            f"{len(layout)} {expected_layout(spec)}"
        )
    t = spec.seq_axis
    for axis, (dim, letter) in enumerate(zip(tspec.shape, layout, strict=True)):
        if not isinstance(dim, int) or arr.shape[axis] == dim or (free_time and axis == t):
            continue
        if letter == "B":
            raise InputError(
                f"{what} has batch {arr.shape[axis]} (shape {tuple(arr.shape)}); this graph "
                f"fixes the batch at {dim}: run one sequence per call or stream, layout "
                f"{expected_layout(spec)}"
            )
        name = {"T": "steps", "F": "features", "C": "channels"}.get(
            letter, f"values on axis {axis}"
        )
        raise InputError(
            f"{what} has {arr.shape[axis]} {name} (shape {tuple(arr.shape)}); the model "
            f"expects {dim}, layout {expected_layout(spec)}"
        )
    if any(n == 0 for a, n in enumerate(arr.shape) if a != t) or (
        arr.shape[t] == 0 and not free_time
    ):
        raise InputError(
            f"{what} is empty (shape {tuple(arr.shape)}); expected at least one step and one "
            f"sequence, layout {expected_layout(spec)}"
        )
    arr = np.ascontiguousarray(arr, dtype=want)
    if want.kind != "f":
        return arr
    if nan_policy == "raise":
        validate_finite(arr, what)
    elif not np.all(np.isfinite(arr)):
        arr = _fill(arr, t, nan_policy, carry)
    return arr


def _fill(
    arr: np.ndarray, seq_axis: int, policy: str, carry: np.ndarray | None = None
) -> np.ndarray:
    """Replace non-finite values: with 0, or with the last finite value along time."""
    out = arr.copy()
    bad = ~np.isfinite(out)
    if policy == "zero":
        out[bad] = 0.0
        return out
    moved = np.moveaxis(out, seq_axis, 0)
    bad_m = np.moveaxis(bad, seq_axis, 0)
    first = (
        np.asarray(carry, dtype=out.dtype)
        if carry is not None and np.shape(carry) == moved[0].shape
        else np.zeros_like(moved[0])
    )
    for t in range(moved.shape[0]):
        prev = moved[t - 1] if t else first
        moved[t][bad_m[t]] = prev[bad_m[t]]
    return out


def batch_of(arr: np.ndarray, spec: RnnSpec) -> int:
    """Sequences in a checked data array: its batch dim, or 1 without a batch axis."""
    b = spec.batch_axis
    return 1 if b is None else int(arr.shape[b])


def fixed_batch(spec: RnnSpec) -> tuple[int, str] | None:
    """(batch, why) when the graph allows one batch size only, else None."""
    data = spec.input(spec.data_input)
    b = spec.batch_axis
    if b is None:
        return 1, f"data input '{data.name}' {tuple(data.shape)} has no batch axis"
    if isinstance(data.shape[b], int):
        return data.shape[b], f"data input '{data.name}' is declared {tuple(data.shape)}"
    for p in spec.state_pairs:
        shape = spec.input(p.input).shape
        if p.batch_axis is None:
            return 1, f"state '{p.input}' {tuple(shape)} has no batch axis"
        if isinstance(shape[p.batch_axis], int):
            return shape[p.batch_axis], f"state '{p.input}' is declared {tuple(shape)}"
    return None


def check_batch(spec: RnnSpec, batch: Any, what: str = "stream batch") -> int:
    """A batch size this graph can run, with a zero state of bounded size."""
    if isinstance(batch, np.integer):
        batch = int(batch)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise InputError(f"{what} must be a positive integer, got {batch!r}")
    fixed = fixed_batch(spec)
    if fixed is not None and batch != fixed[0]:
        raise InputError(
            f"{what} is {batch}, but this graph runs batch {fixed[0]} only ({fixed[1]}); "
            f"open {batch} streams of batch {fixed[0]} instead"
        )
    per_row = sum(
        int(
            np.prod(
                [
                    d
                    for i, d in enumerate(spec.input(p.input).shape)
                    if i != p.batch_axis and isinstance(d, int)
                ],
                dtype=np.int64,
            )
        )
        for p in spec.state_pairs
    )
    if per_row and batch * per_row > MAX_STATE_VALUES:
        raise InputError(
            f"{what} is {batch}: its zero state would hold {batch * per_row:,} values, more "
            f"than {MAX_STATE_VALUES:,}; use a smaller batch"
        )
    return batch


def state_shape(spec: RnnSpec, name: str, batch: int) -> tuple[int, ...]:
    """The concrete shape of a state input for `batch`, from its declared shape."""
    tspec = spec.input(name)
    pair = next(p for p in spec.state_pairs if p.input == name)
    dims = []
    for axis, d in enumerate(tspec.shape):
        if axis == pair.batch_axis:
            if isinstance(d, int) and d != batch:
                raise InputError(
                    f"state '{name}' is declared {tuple(tspec.shape)} with batch "
                    f"{d} on axis {axis}; batch {batch} does not fit"
                )
            dims.append(batch)
        elif isinstance(d, int):
            dims.append(d)
        else:
            raise InputError(
                f"state input '{name}' has a symbolic dim '{d}' at axis {axis} that is not its "
                f"batch axis ({pair.batch_axis}); pass state_batch_axis={{'{name}': {axis}}} "
                f"(--state {name}:{pair.output}@{axis}) if it is the batch, else rnnedge "
                "needs that dim fixed"
            )
    return tuple(dims)


def check_state(
    state: Mapping[str, Any] | None, spec: RnnSpec, batch: int
) -> dict[str, np.ndarray] | None:
    """A state mapping with every pair's input present at the right shape and dtype."""
    if state is None:
        return None
    names = [p.input for p in spec.state_pairs]
    if not isinstance(state, Mapping):
        raise InputError(
            f"state must be a mapping of {names} to arrays, got {type(state).__name__}"
        )
    keys = list(state)
    if set(keys) != set(names) or len(keys) != len(names):
        raise InputError(f"state has names {sorted(map(repr, keys))}; expected exactly {names}")
    out = {}
    for name in names:
        tspec = spec.input(name)
        arr = as_array(state[name], f"state '{name}'")
        want = state_shape(spec, name, batch)
        if arr.shape != want:
            raise InputError(
                f"state '{name}' has shape {tuple(arr.shape)}; expected {want} for batch {batch} "
                f"(declared {tuple(tspec.shape)})"
            )
        dtype = _dtype_fits(arr, tspec.dtype, f"state '{name}'")
        arr = np.asarray(arr, dtype=dtype, order="C")
        if dtype.kind == "f":
            validate_finite(arr, f"state '{name}'")
        out[name] = arr
    return out


def zero_state(spec: RnnSpec, batch: int) -> dict[str, np.ndarray]:
    """Each state's declared shape, `batch` on its batch axis, zeros of its declared dtype."""
    check_batch(spec, batch)
    return {
        p.input: np.zeros(state_shape(spec, p.input, batch), dtype=spec.input(p.input).dtype)
        for p in spec.state_pairs
    }


def _extra_value(name: str, value: Any, tspec: TensorSpec) -> np.ndarray:
    arr = as_array(value, f"extra input '{name}'")
    if arr.ndim != len(tspec.shape) or any(
        isinstance(d, int) and d != n for d, n in zip(tspec.shape, arr.shape, strict=False)
    ):
        raise InputError(
            f"extra input '{name}' has shape {tuple(arr.shape)} (rank {arr.ndim}); the graph "
            f"declares {tuple(tspec.shape)} (rank {len(tspec.shape)})"
            + ("; a scalar is given as a plain number" if not tspec.shape else "")
        )
    dtype = _dtype_fits(arr, tspec.dtype, f"extra input '{name}'")
    return np.asarray(arr, dtype=dtype, order="C")  # ascontiguousarray makes a scalar (1,)


def check_extra(extra: Mapping[str, Any] | None, spec: RnnSpec) -> dict[str, np.ndarray]:
    """Values for the graph's non-data, non-state inputs: all given, none unknown, each of the
    declared rank and of the declared dtype's kind (an int64 input takes integers only).

    Such inputs (a sample rate, a gain) are fixed for a stream, so they are checked once when
    the stream opens rather than at every step.
    """
    from rnnedge.runtime.foreign import extra_inputs

    wanted = {t.name: t for t in extra_inputs(spec)}
    if extra is not None and not isinstance(extra, Mapping):
        raise InputError(
            f"extra must map input names to values, e.g. {{'{next(iter(wanted), 'sr')}': ...}}; "
            f"got {type(extra).__name__}"
        )
    given = dict(extra or {})
    missing = [n for n in wanted if n not in given]
    unknown = [n for n in given if n not in wanted]
    if missing or unknown:
        shown = sorted(map(str, given)) or "none"
        raise InputError(
            f"extra inputs given: {shown}; the model needs exactly "
            f"{sorted(wanted) or 'none'} besides '{spec.data_input}' and its state"
            + (" (pass extra={...}, --extra name=value)" if missing else "")
        )
    return {name: _extra_value(name, given[name], tspec) for name, tspec in wanted.items()}


def parse_positive_ints(text: str, what: str) -> list[int]:
    """`"1,3,64"` from a command-line option → `[1, 3, 64]`, or an InputError naming it."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise InputError(f"{what} must be comma-separated integers like 1,3; got '{text}'") from exc
    if not values or min(values) < 1:
        raise InputError(f"{what} must be positive integers; got '{text}'")
    return values


def check_output(y: np.ndarray, what: str = "the model's output") -> np.ndarray:
    """Finite input must give finite output: anything else is a broken model or statistics.

    Cheap for the common one-value step (`item()`), a full scan otherwise.
    """
    if y.dtype.kind != "f":
        return y
    ok = math.isfinite(y.item()) if y.size == 1 else bool(np.isfinite(y).all())
    if not ok:
        raise InputError(
            f"{what} is not finite although the input was; the model's weights or stored "
            "normalization are broken (re-export it), or the input is far outside the range it "
            "was trained on"
        )
    return y
