"""Recurrent contracts for ONNX files that rnnedge did not write (no `rnnedge.spec` metadata).

Models exported by other tools still carry their state as graph inputs and outputs; only the
pairing and the axes are unwritten. This module recovers them from names and shapes alone, so
it needs nothing beyond what `session.get_inputs()` reports (numpy + onnxruntime; `onnx` is
imported lazily, only to list RNN nodes for `rnnedge inspect`).

State pairs (unless `state_names` is given): rules tried in order for each graph input; the
first rule that matches any compatible output decides, and name comparison ignores case:

    (a) X0 -> Xn                                        h0 -> hn, state0 -> stateN, h_0 -> h_n
    (b) X -> Xn, X_n, X_out, Xout, new_X, next_X        state -> stateN, h -> h_out
    (c) X_in, Xin -> X_out, Xout                        h_in -> h_out
    (d) in_X -> out_X                                   in_state -> out_state

An output is compatible when it has the input's dtype and rank, and equal dims wherever both
are fixed (symbolic dims may be named differently). Two candidates under one rule, or two
inputs claiming one output, is an `InputError`: a wrong guess would stream wrong numbers.
A named `data_input`/`data_output` is never taken for a state.

Batch axis of a state: its only symbolic dim; else axis 1 for rank ≥ 3 (PyTorch's
(layers·dirs, batch, hidden)) and axis 0 below that.

`batch_first` when not given: each state's batch dim (in pair order) is looked up in the data
input's dims 0 and 1, by name when symbolic and by value when fixed; the first state for which
exactly one of them equals it decides (dim 0 → True, dim 1 → False). Otherwise True.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rnnedge.errors import InputError
from rnnedge.runtime.backends.ort import read_spec, session_tensor_specs
from rnnedge.spec import RnnSpec, StatePair, TensorSpec, dims_to_str

PRODUCER = {"detected": "rnnedge.foreign"}
RNN_OP_TYPES = ("RNN", "LSTM", "GRU")
_STATE_EXAMPLE = "e.g. --state h0:hn,c0:cn (input:output, comma-separated)"
Pairs = list[tuple[TensorSpec, TensorSpec]]


def _rule_c(name: str) -> set[str]:
    stem = name[:-3] if name.endswith("_in") else name[:-2] if name.endswith("in") else ""
    return {stem + "_out", stem + "out"} if stem else set()


# (rule for messages, lowercase input name -> the lowercase output names it pairs with)
_RULES: tuple[tuple[str, Callable[[str], set[str]]], ...] = (
    ("X0 -> Xn", lambda n: {n[:-1] + "n"} if len(n) > 1 and n.endswith("0") else set()),
    (
        "X -> Xn/X_n/X_out/Xout/new_X/next_X",
        lambda n: {n + "n", n + "_n", n + "_out", n + "out", "new_" + n, "next_" + n},
    ),
    ("X_in/Xin -> X_out/Xout", _rule_c),
    ("in_X -> out_X", lambda n: {"out_" + n[3:]} if n.startswith("in_") and n[3:] else set()),
)


def _listing(label: str, tensors: Sequence[TensorSpec]) -> str:
    """`inputs: x(batch, seq, 3), h0(1, batch, 4)`, so an error shows what there is."""
    return f"{label}: " + (", ".join(f"{t.name}{dims_to_str(t.shape)}" for t in tensors) or "none")


def _graph(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> str:
    return f"{_listing('inputs', inputs)}; {_listing('outputs', outputs)}"


def _incompatibility(inp: TensorSpec, out: TensorSpec) -> str | None:
    """Why `out` cannot be fed back as `inp` on the next call, or None when it can."""
    if inp.dtype != out.dtype:
        return f"dtype {inp.dtype} vs {out.dtype}"
    if len(inp.shape) != len(out.shape):
        return f"rank {len(inp.shape)} vs {len(out.shape)}"
    for axis, (a, b) in enumerate(zip(inp.shape, out.shape, strict=True)):
        if isinstance(a, int) and isinstance(b, int) and a != b:
            return f"axis {axis} is {a} vs {b}"
    return None


def state_batch_axis(state: TensorSpec) -> int:
    """Where the batch lives in a state tensor: its only symbolic dim, else PyTorch's layout."""
    symbolic = [i for i, d in enumerate(state.shape) if isinstance(d, str)]
    if len(symbolic) == 1:
        return symbolic[0]
    return 1 if len(state.shape) >= 3 else 0


def _explicit_pairs(
    names: Mapping[str, str], inputs: list[TensorSpec], outputs: list[TensorSpec], source: str
) -> Pairs:
    by_in, by_out = {t.name: t for t in inputs}, {t.name: t for t in outputs}
    pairs: Pairs = []
    for i_name, o_name in names.items():
        missing = [f"input '{i_name}'"] if i_name not in by_in else []
        missing += [f"output '{o_name}'"] if o_name not in by_out else []
        if missing:
            raise InputError(
                f"{source}: state pair {i_name}:{o_name} names no graph {' or '.join(missing)}; "
                f"the graph has {_graph(inputs, outputs)}"
            )
        if any(o.name == o_name for _, o in pairs):
            raise InputError(f"{source}: state output '{o_name}' is paired with two inputs")
        inp, out = by_in[i_name], by_out[o_name]
        why = _incompatibility(inp, out)
        if why:
            raise InputError(
                f"{source}: state pair {i_name}:{o_name} cannot be carried ({why}): "
                f"{i_name}{dims_to_str(inp.shape)} vs {o_name}{dims_to_str(out.shape)}"
            )
        pairs.append((inp, out))
    return pairs


def _detected_pairs(inputs: list[TensorSpec], outputs: list[TensorSpec], source: str) -> Pairs:
    pairs: Pairs = []
    claimed: dict[str, str] = {}  # output -> input
    for inp in inputs:
        for rule, targets_of in _RULES:
            targets = targets_of(inp.name.lower())
            found = [o for o in outputs if o.name.lower() in targets]
            found = [o for o in found if _incompatibility(inp, o) is None]
            if len(found) > 1:
                names = " and ".join(f"'{o.name}'" for o in found)
                raise InputError(
                    f"{source}: state input '{inp.name}' is ambiguous: it pairs with outputs "
                    f"{names} (rule {rule}); pass state_names, e.g. "
                    f"--state {inp.name}:{found[0].name}"
                )
            if not found:
                continue
            out = found[0]
            if out.name in claimed:
                raise InputError(
                    f"{source}: state output '{out.name}' is ambiguous: inputs "
                    f"'{claimed[out.name]}' and '{inp.name}' both pair with it; pass "
                    f"state_names, e.g. --state {claimed[out.name]}:{out.name}"
                )
            claimed[out.name] = inp.name
            pairs.append((inp, out))
            break
    return pairs


def _infer_batch_first(data: TensorSpec, states: Sequence[TensorSpec]) -> bool:
    for state in states:
        batch = state.shape[state_batch_axis(state)] if state.shape else None
        hits = [axis for axis in (0, 1) if axis < len(data.shape) and data.shape[axis] == batch]
        if len(hits) == 1:
            return hits[0] == 0
    return True


def detect_spec(
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    *,
    state_names: Mapping[str, str] | None = None,
    data_input: str | None = None,
    data_output: str | None = None,
    batch_first: bool | None = None,
    source: str = "model",
) -> RnnSpec:
    """Build the recurrent contract of a graph that carries no rnnedge metadata.

    Args:
        inputs: Graph inputs, e.g. `session_tensor_specs(session.get_inputs())`.
        outputs: Graph outputs, same form.
        state_names: Input -> output state pairs to use instead of detection; `{}` says the
            model carries no state.
        data_input: The sequence input; default the first non-state input of rank 3.
        data_output: The sequence output; default the first non-state output.
        batch_first: Layout of the data input; default inferred (see the module docstring).
        source: Model name for messages.

    Returns:
        An RnnSpec with names, axes and state pairs; `cell` and the sizes stay None.

    Raises:
        InputError: A given name does not exist, a pairing is ambiguous or cannot be carried,
            or no data input/output can be found.
    """
    inputs, outputs = list(inputs), list(outputs)
    for what, name, tensors in (("input", data_input, inputs), ("output", data_output, outputs)):
        if name is not None and all(t.name != name for t in tensors):
            raise InputError(
                f"{source}: data {what} '{name}' is not in the graph; it has "
                f"{_graph(inputs, outputs)}"
            )
    if state_names is not None:
        raw = _explicit_pairs(state_names, inputs, outputs, source)
    else:
        raw = _detected_pairs(
            [t for t in inputs if t.name != data_input],
            [t for t in outputs if t.name != data_output],
            source,
        )
    state_in, state_out = {i.name for i, _ in raw}, {o.name for _, o in raw}
    for what, name, states in (("input", data_input, state_in), ("output", data_output, state_out)):
        if name in states:
            raise InputError(f"{source}: data {what} '{name}' is also named as a state")
    if data_input is None:
        data_input = next(
            (t.name for t in inputs if t.name not in state_in and len(t.shape) == 3), None
        )
        if data_input is None:
            raise InputError(
                f"{source}: no rank-3 non-state input to use as the sequence input "
                f"({_listing('inputs', inputs)}); pass data_input"
            )
    if data_output is None:
        data_output = next((t.name for t in outputs if t.name not in state_out), None)
        if data_output is None:
            raise InputError(
                f"{source}: every output is a state, none is left for the sequence output "
                f"({_listing('outputs', outputs)}); pass data_output or state_names"
            )
    if batch_first is None:
        data = next(t for t in inputs if t.name == data_input)
        batch_first = _infer_batch_first(data, [i for i, _ in raw])
    spec = RnnSpec(
        inputs=inputs,
        outputs=outputs,
        data_input=data_input,
        data_output=data_output,
        state_pairs=[StatePair(i.name, o.name, state_batch_axis(i)) for i, o in raw],
        batch_first=batch_first,
        producer=dict(PRODUCER),
    )
    spec.validate(source)
    return spec


def extra_inputs(spec: RnnSpec) -> list[TensorSpec]:
    """Graph inputs that are neither the data nor a state, which a stream must get once."""
    states = {p.input for p in spec.state_pairs}
    return [t for t in spec.inputs if t.name != spec.data_input and t.name not in states]


def parse_state_arg(text: str | Sequence[str]) -> dict[str, str]:
    """Parse `--state h0:hn,c0:cn` (repeated flags may be passed as a list) into a mapping.

    Raises:
        InputError: An item is not `input:output`, or a name is used twice.
    """
    items = [text] if isinstance(text, str) else list(text)
    parts = [p.strip() for item in items for p in str(item).split(",")]
    if not any(parts):
        raise InputError(f"--state is empty; {_STATE_EXAMPLE}")
    pairs: dict[str, str] = {}
    for part in parts:
        halves = [h.strip() for h in part.split(":")]
        if len(halves) != 2 or not all(halves):
            raise InputError(f"--state item '{part}' is not input:output; {_STATE_EXAMPLE}")
        i_name, o_name = halves
        if i_name in pairs or o_name in pairs.values():
            name = i_name if i_name in pairs else o_name
            raise InputError(f"--state names '{name}' twice; {_STATE_EXAMPLE}")
        pairs[i_name] = o_name
    return pairs


def resolve_spec(session: Any, *, source: str = "model", **detect: Any) -> RnnSpec:
    """The stored rnnedge spec when present, else one detected from the session's tensors.

    `detect` takes `detect_spec`'s keyword arguments; they apply to foreign models only,
    since a stored spec was written from the module itself.
    """
    stored = read_spec(session, source)
    if stored is not None:
        return stored
    inputs = session_tensor_specs(session.get_inputs())
    outputs = session_tensor_specs(session.get_outputs())
    return detect_spec(inputs, outputs, source=source, **detect)
