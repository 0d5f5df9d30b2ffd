"""Which axis of a graph's tensors is batch and which is time, for files that do not say.

A data input is described by its layout, one capital letter per axis (`rnnedge.spec`): `B`
batch, `T` time, anything else a fixed axis. rnnedge's own files store it; for any other file
`guess_layout` reads it from the declared shapes, `state_axis` finds where each state keeps
the batch, and `output_time_axis` where the data output keeps time, so a stream can join the
outputs of several calls. Every rule is written out in `rnnedge.runtime.foreign`'s docstring;
each guess can be overridden at load (`layout=`, `batch_first=`, `state_batch_axis=`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from rnnedge.errors import InputError
from rnnedge.spec import Dim, RnnSpec, TensorSpec, _layout_problems

#: letters given to a guessed layout's axes that are neither batch nor time, in order
OTHER_LETTERS = "FCDEGHIJ"
#: words in a dim's name (split at anything not a letter or digit) that mark batch or time
_BATCH_WORDS = ("batch", "b", "n", "bs", "nbatch")
_TIME_PREFIXES = ("seq", "time", "len", "frame", "step", "sample", "token", "window")


def is_generated(tensor: TensorSpec, axis: int) -> bool:
    """Whether a symbolic dim only has the name `session_tensor_specs` made up for it."""
    return tensor.shape[axis] == f"{tensor.name}_dim{axis}"


def _hint(tensor: TensorSpec, axis: int) -> str | None:
    """ "B" or "T" when a symbolic dim's own name says which, else None."""
    dim = tensor.shape[axis]
    if not isinstance(dim, str) or is_generated(tensor, axis):
        return None
    words = [w for w in re.split(r"[^a-z0-9]+", dim.lower()) if w]
    if any(w.startswith("batch") or w in _BATCH_WORDS for w in words):
        return "B"
    if any(w.startswith(_TIME_PREFIXES) or w == "t" for w in words):
        return "T"
    return None


def _state_batch_dims(states: Sequence[TensorSpec]) -> list[Dim]:
    """Each state's batch dim as far as its own shape tells: its only symbolic dim, else
    PyTorch's axis 1 for rank ≥ 3 (axis 0 below). Made-up names are left out."""
    dims: list[Dim] = []
    for s in states:
        if not s.shape:
            continue
        symbolic = [i for i, d in enumerate(s.shape) if isinstance(d, str)]
        axis = symbolic[0] if len(symbolic) == 1 else (1 if len(s.shape) >= 3 else 0)
        if not (isinstance(s.shape[axis], str) and is_generated(s, axis)):
            dims.append(s.shape[axis])
    return dims


def _letters(rank: int, b: int | None, t: int) -> str:
    others = iter(OTHER_LETTERS)  # enough for MAX_RANK axes
    return "".join("B" if i == b else "T" if i == t else next(others) for i in range(rank))


def guess_layout(
    data: TensorSpec, states: Sequence[TensorSpec], batch_first: bool | None = None
) -> tuple[str | None, bool, str]:
    """The data input's (layout, batch_first, reason) from its shape and the states'.

    A rank-3 input keeps `layout=None` (`BTF`/`TBF` by `batch_first`), as rnnedge's own files
    do. `reason` says which rule decided, for `rnnedge inspect`.

    Raises:
        InputError: `batch_first` is given for an input of rank other than 2 or 3, or the
            input is a scalar (no axis can be time).
    """
    rank = len(data.shape)
    if rank == 0:
        raise InputError(f"data input '{data.name}' is a scalar; a sequence needs a time axis")
    if batch_first is not None:
        if rank == 3:
            return None, batch_first, "batch_first given"
        if rank == 2:
            return ("BT" if batch_first else "TB"), batch_first, "batch_first given"
        raise InputError(
            f"batch_first describes rank-2 and rank-3 data inputs; '{data.name}' has rank "
            f"{rank} {tuple(data.shape)}: pass layout= instead (e.g. "
            f"{_letters(rank, 0, min(1, rank - 1))!r}, one letter per axis, B batch, T time)"
        )
    if rank == 1:
        return "T", True, "rank 1: a single sequence, no batch axis"
    hints = [_hint(data, a) for a in range(rank)]
    b = hints.index("B") if hints.count("B") == 1 else None
    t = hints.index("T") if hints.count("T") == 1 else None
    reasons = [
        f"dim {data.shape[a]!r} is named like {'batch' if h == 'B' else 'time'}"
        for a, h in enumerate(hints)
        if h and a in (b, t)
    ]
    if b is None:
        batch_dims = _state_batch_dims(states)
        near = (0, 1) if rank == 3 else range(rank)
        found = [
            a
            for a in near
            if a != t
            and data.shape[a] in batch_dims
            and not (isinstance(data.shape[a], str) and is_generated(data, a))
        ]
        if len(found) == 1:
            b = found[0]
            reasons.append(f"dim {b} ({data.shape[b]!r}) is the states' batch dim")
    if b is None and t is None:
        if rank == 3:
            return None, True, "nothing to go by: (batch, seq_len, features)"
        if rank == 2:
            if isinstance(data.shape[0], str) and isinstance(data.shape[1], int):
                return "TF", True, "rank 2, dim 0 dynamic and dim 1 fixed: rows are time steps"
            return "BT", True, "rank 2: (batch, samples)"
        b = 0
        reasons.append(
            "nothing to go by: axis 0 batch, the first later dynamic (else size-1) axis time"
        )
    if t is None:
        t = _time_after(data, b)
    if b is None:
        b = _batch_besides(data, t)
    layout = _letters(rank, b, t)
    reason = "; ".join(reasons)
    if layout in ("BTF", "TBF"):
        return None, layout == "BTF", reason
    return layout, b is None or b < t, reason


def _time_after(data: TensorSpec, b: int | None) -> int:
    """The time axis when only the batch axis is known: the first later dynamic axis, else the
    first later axis of size 1 (one step per call), else the first axis that is not batch."""
    rest = [a for a in range(len(data.shape)) if a != b]
    later = [a for a in rest if a > (b if b is not None else -1)]
    for a in later:
        if isinstance(data.shape[a], str):
            return a
    for a in later:
        if data.shape[a] == 1:
            return a
    return rest[0]


def _batch_besides(data: TensorSpec, t: int) -> int | None:
    """The batch axis when only time is known: axis 0 if time is not first; else another
    dynamic axis, or (rank 3 and up) one of size 1; else none (rows are time steps)."""
    if t != 0:
        return 0
    rest = range(1, len(data.shape))
    for a in rest:
        if isinstance(data.shape[a], str):
            return a
    if len(data.shape) >= 3:
        for a in rest:
            if data.shape[a] == 1:
                return a
    return None


def check_layout(layout: str, data: TensorSpec) -> str:
    """A given layout, or an InputError saying how it fails the data input's rank."""
    if not isinstance(layout, str):
        raise InputError(f"layout must be a string of axis letters like 'BT', got {layout!r}")
    problems = _layout_problems(layout, len(data.shape))
    if problems:
        raise InputError(
            f"layout {layout!r} does not fit data input '{data.name}' "
            f"{tuple(data.shape)}: {'; '.join(problems)}"
        )
    return layout


def state_axis(
    state: TensorSpec, data: TensorSpec, layout: str, given: Mapping[str, int | None]
) -> int | None:
    """Where a state keeps the batch: given, else its one symbolic dim, else the axis that
    follows the data input's batch (see `rnnedge.runtime.foreign`)."""
    if state.name in given:
        axis = given[state.name]
        if axis is not None and (
            isinstance(axis, bool) or not isinstance(axis, int) or not 0 <= axis < len(state.shape)
        ):
            raise InputError(
                f"state_batch_axis for '{state.name}' is {axis!r}; expected an axis "
                f"0..{len(state.shape) - 1} of its shape {tuple(state.shape)}, or None"
            )
        return axis
    symbolic = [i for i, d in enumerate(state.shape) if isinstance(d, str)]
    b = layout.find("B")
    data_batch: Dim | None = data.shape[b] if b >= 0 else None
    if len(symbolic) == 1:
        return symbolic[0]
    if symbolic:
        same = [i for i in symbolic if state.shape[i] == data_batch]
        if len(same) == 1:
            return same[0]
        return 1 if len(state.shape) >= 3 else 0
    if isinstance(data_batch, int):
        sized = [i for i, d in enumerate(state.shape) if d == data_batch]
        if len(sized) == 1:
            return sized[0]
    return None


def output_time_axis(spec: RnnSpec) -> int | None:
    """The data output's time axis, or None when it has one value per call.

    The output keeps time where the data input does when both have the same rank and the same
    dim there (a dynamic dim of the same name, or equal fixed sizes); else where a dynamic dim
    is named like the input's time dim; else it has none (a VAD's one probability per call).
    """
    x = spec.input(spec.data_input)
    try:
        y = spec.output(spec.data_output)
    except KeyError:
        return None
    t = spec.seq_axis
    dim = x.shape[t]
    if (
        len(y.shape) == len(x.shape)
        and y.shape[t] == dim
        and not (isinstance(dim, str) and is_generated(x, t))
    ):
        return t
    if isinstance(dim, str) and not is_generated(x, t) and dim in y.shape:
        return y.shape.index(dim)
    return None
