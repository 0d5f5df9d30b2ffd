"""Recurrent contracts for ONNX files that rnnedge did not write (no `rnnedge.spec` metadata).

Models exported by other tools still carry their state as graph inputs and outputs; only the
pairing and the axes are unwritten. This module recovers them from names and shapes alone, so
it needs nothing beyond what `session.get_inputs()` reports (numpy + onnxruntime; `onnx` is
imported lazily, only to list RNN nodes for `rnnedge inspect`). Every rule below has an
override (`rnnedge.load(path, ...)`, the same on the command line); a spec stored in the file
wins over detection and over the overrides alike (the names an override gives must still
exist in the graph).

State pairs (override: `state_names={in: out}`, `--state in:out`): rules tried in order for
each graph input; the first rule that matches any compatible output decides, and name
comparison ignores case:

    (a) X0 -> Xn                                        h0 -> hn, state0 -> stateN, h_0 -> h_n
    (b) X -> Xn, X_n, X_out, Xout, new_X, next_X        state -> stateN, h -> h_out
    (c) X_in, Xin -> X_out, Xout                        h_in -> h_out
    (d) in_X -> out_X                                   in_state -> out_state

An output is compatible when it has the input's dtype and rank, and equal dims wherever both
are fixed (symbolic dims may be named differently). Two candidates under one rule, or two
inputs claiming one output, is an `InputError`: a wrong guess would stream wrong numbers.
A named `data_input`/`data_output` is never taken for a state. Names that follow no rule
(`input_3` -> `tf_op_layer_stack_2`) are not paired by shape alone; `rnnedge inspect` and the
error of `Model.stream` list the inputs and outputs of equal shape as the pairs to try.

Data input (override: `data_input=`, `--data-input`): the first non-state input of numeric
dtype and rank 3, else of rank 2 or more, else of rank 1 with a dynamic dim. Data output
(`data_output=`, `--data-output`): the first non-state output. Every other input is an extra
input, given once per stream or per run (`extra=`, `--extra name=value`).

Layout of the data input (override: `layout=`, `--layout`, e.g. `BT`, `TF`, `BFTC`; or
`batch_first=` for rank 2 and 3), one rule after the other:

    1. a dynamic dim named like batch (`batch`, `N`, `bs`, ...) is B, one named like time
       (`seq_len`, `time`, `frames`, `T`, ...) is T;
    2. a dim equal to the states' batch dim (its only dynamic dim, else axis 1 at rank ≥ 3)
       is B, when exactly one such dim exists (among dims 0 and 1 at rank 3);
    3. with nothing found: rank 3 is (batch, seq_len, features); rank 2 is (seq_len,
       features) when dim 0 is dynamic and dim 1 fixed (rows are time steps, no batch axis),
       else (batch, samples); rank 1 is one sequence; rank 4 and up has batch on axis 0;
    4. the time axis still missing is the first dynamic axis after batch, else the first of
       size 1 after it (one step per call), else the first axis that is not batch; the batch
       axis still missing is axis 0 unless time is, else another dynamic axis (or one of size
       1 at rank 3 and up), else there is none (one sequence per call).

Batch axis of a state (override: `state_batch_axis={in: axis or None}`, `--state in:out@axis`,
`@none`): its only dynamic dim; with several, the one named like the data's batch dim, else
axis 1 (rank ≥ 3) or 0; with every dim fixed, the one axis whose size is the data input's
fixed batch size, else none (the state belongs to the one sequence a call runs). Zero states
have each state's declared shape with the stream's batch on that axis, in its declared dtype.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rnnedge.errors import InputError, ModelFileError
from rnnedge.runtime.backends.ort import read_spec, session_tensor_specs
from rnnedge.runtime.layouts import check_layout, guess_layout, state_axis
from rnnedge.runtime.overrides import Overrides, parse_state_arg, parse_state_axes
from rnnedge.runtime.pairs import (
    detected_pairs,
    explicit_pairs,
    graph_listing,
    listing,
    same_shape_pairs,
    state_batch_axis,
)
from rnnedge.spec import RnnSpec, StatePair, TensorSpec, dims_to_str

__all__ = [
    "PRODUCER",
    "RNN_OP_TYPES",
    "Detection",
    "check_stored",
    "detect_spec",
    "extra_inputs",
    "parse_state_arg",
    "parse_state_axes",
    "resolve_spec",
    "same_shape_pairs",
    "state_batch_axis",
    "survey",
]

PRODUCER = {"detected": "rnnedge.foreign"}
RNN_OP_TYPES = ("RNN", "LSTM", "GRU")
#: dtypes a data input may have: numbers (a bool or string input is never the sequence)
_NUMERIC = ("float", "bfloat", "int", "uint")


@dataclass
class Detection:
    """How far detection got, kept when it stops: what `rnnedge inspect` shows of a file whose
    contract is incomplete, with the option that would complete it."""

    data_input: str | None = None
    data_candidates: list[str] = field(default_factory=list)
    data_output: str | None = None
    state_pairs: list[StatePair] = field(default_factory=list)
    same_shape: list[tuple[str, str]] = field(default_factory=list)
    layout: str | None = None
    layout_reason: str | None = None
    error: str | None = None
    #: the step detection was at: "state pairs", "data input", "data output", "layout", "done"
    stage: str = "state pairs"

    def advice(self) -> list[str]:
        """Options that would complete or correct what was found, for the user to try."""
        if self.error is not None and self.stage == "state pairs":
            return ["--state IN:OUT (state_names=) as the error says"]
        tips = []
        if self.error is not None and self.stage == "data output":
            tips.append("--data-output NAME (data_output=) names the result output")
        if self.data_input is None:
            tips.append("--data-input NAME (data_input=) names the sequence input")
        else:
            paired = {i for i, _ in self.same_shape}
            others = [c for c in self.data_candidates if c != self.data_input and c not in paired]
            if others:
                tips.append(f"--data-input picks another data input ({', '.join(others)})")
        if not self.state_pairs and self.same_shape:
            pairs = ",".join(f"{i}:{o}" for i, o in self.same_shape)
            tips.append(
                f"--state {pairs} if those outputs feed those inputs back "
                "(equal shapes; names follow no rule)"
            )
        if self.layout is not None:
            tips.append(
                f"--layout (layout=) if '{self.layout}' is not the data's axes "
                "(B batch, T time, one letter per axis)"
            )
        return tips


def _tensor(tensors: Sequence[TensorSpec], name: str) -> TensorSpec:
    return next(t for t in tensors if t.name == name)


def _data_candidates(inputs: Sequence[TensorSpec], states: set[str]) -> list[str]:
    """Non-state numeric inputs that could carry the sequence, most likely first."""
    numeric = [t for t in inputs if t.name not in states and t.dtype.startswith(_NUMERIC)]
    ranked = [t for t in numeric if len(t.shape) == 3]
    ranked += [t for t in numeric if len(t.shape) >= 2 and len(t.shape) != 3]
    if not ranked:
        ranked = [t for t in numeric if len(t.shape) == 1 and isinstance(t.shape[0], str)]
    return [t.name for t in ranked]


def _detect(
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    o: Overrides,
    source: str,
    found: Detection,
) -> RnnSpec:
    """Fill `found` step by step; raise at the first step that cannot be completed."""
    for what, name, kind in o.tensor_names():
        if what.startswith("data") and all(
            t.name != name for t in (inputs if kind == "input" else outputs)
        ):
            raise InputError(
                f"{source}: {what} '{name}' is not in the graph; it has "
                f"{graph_listing(inputs, outputs)}"
            )
    data_input, data_output = o.data_input, o.data_output
    if o.state_names is not None:
        raw = explicit_pairs(o.state_names, inputs, outputs, source)
    else:
        raw = detected_pairs(
            [t for t in inputs if t.name != data_input],
            [t for t in outputs if t.name != data_output],
            source,
        )
    state_in, state_out = {i.name for i, _ in raw}, {p.name for _, p in raw}
    found.state_pairs = [StatePair(i.name, p.name, None) for i, p in raw]
    for what, name, states in (("input", data_input, state_in), ("output", data_output, state_out)):
        if name in states:
            raise InputError(f"{source}: data {what} '{name}' is also named as a state")
    found.data_candidates = _data_candidates(inputs, state_in)
    found.stage = "data input"
    unknown_axes = sorted(set(o.state_batch_axis) - state_in)
    if unknown_axes:
        raise InputError(
            f"{source}: state_batch_axis names {unknown_axes}, which are not state "
            f"inputs; the state inputs are {sorted(state_in) or 'none'}"
        )
    if data_input is None:
        if not found.data_candidates:
            raise InputError(
                f"{source}: no non-state numeric input of rank ≥ 1 to use as the sequence "
                f"input ({listing('inputs', inputs)}); pass data_input (--data-input)"
            )
        data_input = found.data_candidates[0]
    found.data_input = data_input
    found.stage = "data output"
    if data_output is None:
        data_output = next((t.name for t in outputs if t.name not in state_out), None)
        if data_output is None:
            raise InputError(
                f"{source}: every output is a state, none is left for the sequence output "
                f"({listing('outputs', outputs)}); pass data_output or state_names"
            )
    found.data_output = data_output
    found.stage = "layout"
    left_in = [t for t in inputs if t.name not in state_in and t.name != data_input]
    left_out = [t for t in outputs if t.name not in state_out and t.name != data_output]
    found.same_shape = same_shape_pairs(left_in, left_out)
    data = _tensor(inputs, data_input)
    if not data.dtype.startswith(_NUMERIC):
        raise InputError(
            f"{source}: data input '{data_input}' has dtype {data.dtype}; a "
            "sequence input holds numbers (float features or integer tokens)"
        )
    states = [i for i, _ in raw]
    if o.layout is not None:
        layout: str | None = check_layout(o.layout, data)
        batch_first = o.layout.find("B") < o.layout.index("T") or "B" not in o.layout
        found.layout_reason = "layout given"
    else:
        layout, batch_first, found.layout_reason = guess_layout(data, states, o.batch_first)
    letters = layout or ("BTF" if batch_first else "TBF")
    found.layout = letters
    found.state_pairs = [
        StatePair(i.name, p.name, state_axis(i, data, letters, o.state_batch_axis)) for i, p in raw
    ]
    spec = RnnSpec(
        inputs=inputs,
        outputs=outputs,
        data_input=data_input,
        data_output=data_output,
        state_pairs=list(found.state_pairs),
        batch_first=batch_first,
        producer=dict(PRODUCER),
        layout=None if layout in ("BTF", "TBF") else layout,
    )
    try:
        spec.validate(source)
    except ModelFileError as exc:  # what the user gave does not fit the graph
        raise InputError(str(exc)) from None
    found.stage = "done"
    return spec


def detect_spec(
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    *,
    source: str = "model",
    **overrides: Any,
) -> RnnSpec:
    """Build the recurrent contract of a graph that carries no rnnedge metadata.

    Args:
        inputs: Graph inputs, e.g. `session_tensor_specs(session.get_inputs())`.
        outputs: Graph outputs, same form.
        source: Model name for messages.
        **overrides: `Overrides.of` keyword arguments: `data_input`, `data_output`,
            `state_names` (`{}` says the model carries no state), `state_batch_axis`,
            `batch_first`, `layout`; each replaces the rule in the module docstring.

    Returns:
        An RnnSpec with names, axes and state pairs; `cell` and the sizes stay None.

    Raises:
        InputError: An override has the wrong type or names a tensor that does not exist, a
            pairing is ambiguous or cannot be carried, or no data input/output can be found.
    """
    return _detect(list(inputs), list(outputs), Overrides.of(**overrides), source, Detection())


def survey(
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    *,
    source: str = "model",
    **overrides: Any,
) -> tuple[RnnSpec | None, Detection]:
    """`detect_spec` that never raises for the graph's sake: the spec (None when incomplete)
    and how far detection got, with the error that stopped it."""
    found = Detection()
    try:
        return _detect(list(inputs), list(outputs), Overrides.of(**overrides), source, found), found
    except InputError as exc:
        found.error = str(exc)
        return None, found


def check_stored(
    spec: RnnSpec, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], source: str
) -> None:
    """A stored spec must describe the graph it sits in: the same tensors, dtypes and ranks,
    and equal dims wherever both fix one; anything else is a broken file, not bad input."""
    problems = []
    for kind, declared, graph in (
        ("input", spec.inputs, inputs),
        ("output", spec.outputs, outputs),
    ):
        actual = {t.name: t for t in graph}
        for t in declared:
            g = actual.get(t.name)
            if g is None:
                problems.append(f"{kind} '{t.name}' is not in the graph")
            elif g.dtype != t.dtype:
                problems.append(
                    f"{kind} '{t.name}' is {t.dtype} in the spec, {g.dtype} in the graph"
                )
            elif len(g.shape) != len(t.shape) or any(
                isinstance(a, int) and isinstance(b, int) and a != b
                for a, b in zip(g.shape, t.shape, strict=True)
            ):
                problems.append(
                    f"{kind} '{t.name}' is {dims_to_str(t.shape)} in the spec, "
                    f"{dims_to_str(g.shape)} in the graph"
                )
    missing = sorted({t.name for t in inputs} - {t.name for t in spec.inputs})
    if missing:
        problems.append(f"graph inputs {missing} are missing from the spec")
    if problems:
        raise ModelFileError(
            f"{source}: its rnnedge spec contradicts its graph: "
            f"{'; '.join(problems[:4])}; re-export the model with rnnedge"
        )


def resolve_spec(session: Any, *, source: str = "model", **overrides: Any) -> RnnSpec:
    """The stored rnnedge spec when present, else one detected from the session's tensors.

    `overrides` are `detect_spec`'s; they apply to foreign models only, since a stored spec
    was written from the model itself, but the tensors they name must exist either way.

    Raises:
        ModelFileError: The stored spec is malformed or contradicts the graph.
        InputError: See `detect_spec`.
    """
    o = Overrides.of(**overrides)
    inputs = session_tensor_specs(session.get_inputs())
    outputs = session_tensor_specs(session.get_outputs())
    stored = read_spec(session, source)
    if stored is None:
        return _detect(inputs, outputs, o, source, Detection())
    for what, name, kind in o.tensor_names():
        if all(t.name != name for t in (inputs if kind == "input" else outputs)):
            raise InputError(
                f"{source}: {what} '{name}' is not a graph {kind}; it has "
                f"{graph_listing(inputs, outputs)}"
            )
    check_stored(stored, inputs, outputs, source)
    return stored


def extra_inputs(spec: RnnSpec) -> list[TensorSpec]:
    """Graph inputs that are neither the data nor a state, which a stream must get once."""
    states = {p.input for p in spec.state_pairs}
    return [t for t in spec.inputs if t.name != spec.data_input and t.name not in states]
