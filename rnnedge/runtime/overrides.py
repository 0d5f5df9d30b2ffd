"""What a user may tell `rnnedge.load` about a file rnnedge did not write, checked in one place.

Detection (`rnnedge.runtime.foreign`) can be wrong or stuck; each of its guesses has an
override, given the same way in the API (`rnnedge.load(path, data_input=..., ...)`) and on
the command line (`--data-input`, `--state in:out@axis`, ...). This module checks their types
and parses the command-line forms, so a bad value is refused with one line before any file is
opened. A spec stored in the file wins over all of them: it was written from the model itself.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rnnedge.errors import InputError

_STATE_EXAMPLE = "e.g. --state h0:hn,c0:cn or --state input_3:stack_2@0 (input:output[@axis])"
_EXTRA_EXAMPLE = "e.g. --extra sr=16000 (name=value; the value a JSON number or list)"
#: how `--state in:out@none` says a state has no batch axis
NO_AXIS = "none"


@dataclass(frozen=True)
class Overrides:
    """The load options that replace detection's guesses; None (or empty) leaves it to guess.

    Attributes:
        data_input: The graph input that carries the sequence.
        data_output: The graph output that carries the per-step (or per-call) result.
        state_names: State input -> the output fed back into it; `{}` says there is no state.
        state_batch_axis: State input -> its batch axis, or None for a state with none.
        batch_first: For a rank-2 or rank-3 data input, whether batch comes before time.
        layout: The data input's axes as letters (`B` batch, `T` time, others fixed).
    """

    data_input: str | None = None
    data_output: str | None = None
    state_names: dict[str, str] | None = None
    state_batch_axis: dict[str, int | None] = field(default_factory=dict)
    batch_first: bool | None = None
    layout: str | None = None

    @classmethod
    def of(
        cls,
        *,
        data_input: Any = None,
        data_output: Any = None,
        state_names: Any = None,
        state_batch_axis: Any = None,
        batch_first: Any = None,
        layout: Any = None,
    ) -> Overrides:
        """Checked overrides from `rnnedge.load`'s keyword arguments.

        `state_names` is a mapping `{input: output}` or, as `rnnedge.export` takes it, a list
        of `(input, output)` or `(input, output, batch_axis)`; the third item joins
        `state_batch_axis`.

        Raises:
            InputError: A value has the wrong type, or a name is empty.
        """
        for what, value in (("data_input", data_input), ("data_output", data_output)):
            if value is not None and (not isinstance(value, str) or not value):
                raise InputError(
                    f"{what} must be a tensor name (a non-empty string) or None, "
                    f"got {_short(value)}"
                )
        if layout is not None and (not isinstance(layout, str) or not layout):
            raise InputError(
                f"layout must be the data input's axes as letters, e.g. 'BT' or "
                f"'BTF' (B batch, T time), or None; got {_short(layout)}"
            )
        if batch_first is not None and not isinstance(batch_first, bool):
            raise InputError(f"batch_first must be True, False or None, got {_short(batch_first)}")
        names, axes = _pairs(state_names)
        axes.update(_axes(state_batch_axis))
        return cls(data_input, data_output, names, axes, batch_first, layout)

    @property
    def given(self) -> bool:
        return self != Overrides()

    def tensor_names(self) -> list[tuple[str, str, str]]:
        """(what, name, "input"/"output") for every tensor an override names, to check they
        exist even when a stored spec makes the overrides moot."""
        named = [
            ("data input", self.data_input, "input"),
            ("data output", self.data_output, "output"),
        ]
        for i, o in (self.state_names or {}).items():
            named += [("state input", i, "input"), ("state output", o, "output")]
        named += [("state_batch_axis", n, "input") for n in self.state_batch_axis]
        return [(w, n, k) for w, n, k in named if n is not None]


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _axis(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 64:
        raise InputError(
            f"state batch axis for '{name}' must be an axis number ≥ 0 or None, got {_short(value)}"
        )
    return value


def _pairs(state_names: Any) -> tuple[dict[str, str] | None, dict[str, int | None]]:
    if state_names is None:
        return None, {}
    axes: dict[str, int | None] = {}
    if isinstance(state_names, Mapping):
        items = list(state_names.items())
    elif isinstance(state_names, Sequence) and not isinstance(state_names, (str, bytes)):
        items = []
        for item in state_names:
            if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
                raise InputError(
                    f"state_names items must be (input, output) or (input, output, "
                    f"batch_axis), got {_short(item)}"
                )
            items.append((item[0], item[1]))
            if len(item) == 3:
                axes[item[0]] = _axis(str(item[0]), item[2])
    else:
        raise InputError(
            f"state_names must map state inputs to outputs, e.g. {{'h0': 'hn'}}, "
            f"got {_short(state_names)}"
        )
    names: dict[str, str] = {}
    for i, o in items:
        if not (isinstance(i, str) and isinstance(o, str) and i and o):
            raise InputError(f"state_names pairs must be two tensor names, got {_short((i, o))}")
        if i in names or o in names.values():
            raise InputError(f"state_names names '{i if i in names else o}' twice")
        names[i] = o
    return names, axes


def _axes(state_batch_axis: Any) -> dict[str, int | None]:
    if state_batch_axis is None:
        return {}
    if not isinstance(state_batch_axis, Mapping):
        raise InputError(
            f"state_batch_axis must map state inputs to an axis or None, e.g. "
            f"{{'state': 1}}, got {_short(state_batch_axis)}"
        )
    out = {}
    for name, value in state_batch_axis.items():
        if not isinstance(name, str) or not name:
            raise InputError(f"state_batch_axis keys must be state input names, got {_short(name)}")
        out[name] = _axis(name, value)
    return out


def _state_items(text: str | Sequence[str]) -> list[tuple[str, str, str | None]]:
    items = [text] if isinstance(text, str) else list(text)
    parts = [p.strip() for item in items for p in str(item).split(",")]
    if not any(parts):
        raise InputError(f"--state is empty; {_STATE_EXAMPLE}")
    out = []
    for part in parts:
        pair, _, axis = part.partition("@")
        halves = [h.strip() for h in pair.split(":")]
        if len(halves) != 2 or not all(halves) or ("@" in part and not axis.strip()):
            raise InputError(f"--state item '{part}' is not input:output[@axis]; {_STATE_EXAMPLE}")
        out.append((halves[0], halves[1], axis.strip() if "@" in part else None))
    return out


def parse_state_arg(text: str | Sequence[str]) -> dict[str, str]:
    """Parse `--state h0:hn,c0:cn` (repeated flags may be passed as a list) into a mapping;
    an `@axis` suffix is read by `parse_state_axes`.

    Raises:
        InputError: An item is not `input:output[@axis]`, or a name is used twice.
    """
    pairs: dict[str, str] = {}
    for i_name, o_name, _ in _state_items(text):
        if i_name in pairs or o_name in pairs.values():
            name = i_name if i_name in pairs else o_name
            raise InputError(f"--state names '{name}' twice; {_STATE_EXAMPLE}")
        pairs[i_name] = o_name
    return pairs


def parse_state_axes(text: str | Sequence[str]) -> dict[str, int | None]:
    """The `@axis` suffixes of `--state in:out@axis` items: `{input: axis}`, `@none` → None.

    Raises:
        InputError: An axis is neither a whole number ≥ 0 nor `none`.
    """
    axes: dict[str, int | None] = {}
    for i_name, _, axis in _state_items(text):
        if axis is None:
            continue
        if axis.lower() == NO_AXIS:
            axes[i_name] = None
        elif axis.isdigit() and int(axis) < 64:
            axes[i_name] = int(axis)
        else:
            raise InputError(
                f"--state {i_name}:…@{axis}: the batch axis must be a whole number "
                f"(0, 1, ...) or '{NO_AXIS}'; {_STATE_EXAMPLE}"
            )
    return axes


def parse_extra_arg(items: Sequence[str]) -> dict[str, Any]:
    """`--extra sr=16000 --extra gain=[0.5]` → `{"sr": 16000, "gain": [0.5]}`.

    A value is read as JSON, so `16000` stays an integer, `16000.5` a float and `"16000"` a
    string: `check_extra` then holds each to the graph's declared dtype and rank exactly.

    Raises:
        InputError: An item is not `name=value`, a value is not JSON, or a name repeats.
    """
    out: dict[str, Any] = {}
    for item in items:
        name, eq, text = str(item).partition("=")
        name = name.strip()
        if not eq or not name or not text.strip():
            raise InputError(f"--extra item '{item}' is not name=value; {_EXTRA_EXAMPLE}")
        if name in out:
            raise InputError(f"--extra names '{name}' twice; give each extra input once")
        try:
            value = json.loads(text, parse_constant=_no_constant)
        except (ValueError, RecursionError) as exc:
            raise InputError(
                f"--extra {name}={text[:60]}: the value is not a JSON number or "
                f"list ({str(exc)[:80]}); {_EXTRA_EXAMPLE}"
            ) from None
        if isinstance(value, float) and not math.isfinite(value):
            raise InputError(f"--extra {name}={text[:60]} is not finite")
        out[name] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")
