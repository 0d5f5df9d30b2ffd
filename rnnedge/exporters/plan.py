"""What to trace and what to call it, decided before torch runs: names, axes, state pairs.

A user's module is exported under the names its own `forward` uses, with the state pairs the
user names (`state_names=[("h", "h_out")]`, a batch axis added as a third item when the state
is not in PyTorch's `(layers, batch, hidden)` layout). Output names follow from the outputs'
shapes: the first output is the data output, each state output is the next one shaped like
its state input. Nothing here needs the user to repeat what the module already says.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from rnnedge.errors import InputError
from rnnedge.exporters.probe import (
    BATCH,
    Sampler,
    data_layout,
    forward_names,
    layout_axes,
    probe_output_axes,
    token_range,
)
from rnnedge.spec import Normalization, RnnSpec, StatePair, TensorSpec

#: a state pair as the user gives it: (input, output) or (input, output, batch axis or None)
StateName = tuple[str, str] | tuple[str, str, int | None]
_UNSET = object()


@dataclass
class Plan:
    """The module to trace, its example args, names and dynamic axes, decided before export."""

    module: Any
    args: tuple[Any, ...]
    input_names: list[str]
    output_names: list[str]
    input_axes: dict[str, dict[int, str]]
    output_axes: dict[str, dict[int, str]]
    spec: RnnSpec
    #: draws inputs the module accepts at any (batch, seq_len), for probing and verification
    sampler: Sampler
    #: state pairs the exporter added by lifting the module's own RNN state
    lifted: list[StatePair] = field(default_factory=list)


def tensor_spec(name: str, t: torch.Tensor, axes: Mapping[int, str]) -> TensorSpec:
    """The example tensor's dtype and shape, its dynamic axes named."""
    dtype = str(t.dtype).replace("torch.", "")
    return TensorSpec(name, dtype, tuple(axes.get(i, int(d)) for i, d in enumerate(t.shape)))


def plan_sequence_model(model: Any, x: torch.Tensor, normalization: Normalization | None) -> Plan:
    """An rnnedge `SequenceModel`: state as `h0`/`c0` → `hn`/`cn`, everything known."""
    from rnnedge.modeling.models import stateful_wrapper

    cfg = model.config
    if x.dim() != 3 or not x.is_floating_point():
        raise InputError(
            f"the example sequence must have rank 3 (batch, seq_len, features) "
            f"and a float dtype, got shape {tuple(x.shape)} {x.dtype}"
        )
    wrapper = stateful_wrapper(model).eval()
    state = model.initial_state(x)
    state_t = state if isinstance(state, tuple) else (state,)
    n_state = len(state_t)
    in_names = ["x", "h0", "c0"][: 1 + n_state]
    out_names = ["y", "hn", "cn"][: 1 + n_state]
    layout = "BTF" if cfg.batch_first else "TBF"
    x_axes = layout_axes(layout)
    in_axes = {"x": x_axes, **{n: {1: BATCH} for n in in_names[1:]}}
    out_axes = {"y": dict(x_axes), **{n: {1: BATCH} for n in out_names[1:]}}
    args = (x, *state_t)
    spec = RnnSpec(
        inputs=[tensor_spec(n, a, in_axes[n]) for n, a in zip(in_names, args, strict=True)],
        outputs=[],
        data_input="x",
        data_output="y",
        state_pairs=[StatePair(i, o, 1) for i, o in zip(in_names[1:], out_names[1:], strict=True)],
        batch_first=cfg.batch_first,
        cell=cfg.cell,
        num_layers=cfg.num_layers,
        hidden_size=cfg.hidden_size,
        input_size=cfg.input_size,
        output_size=cfg.output_size,
        bidirectional=cfg.bidirectional,
        normalization=normalization,
        layout=layout,
    )
    sampler = Sampler(args, [in_axes[n] for n in in_names], states=tuple(range(1, len(args))))
    return Plan(wrapper, args, in_names, out_names, in_axes, out_axes, spec, sampler)


def _state_pairs(
    state_names: Sequence[Sequence[Any]], state_batch_axis: Mapping[str, int | None] | None
) -> list[tuple[str, str, Any]]:
    """(input, output, axis or _UNSET) from both ways of giving a state's batch axis."""
    pairs = []
    for item in state_names:
        if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
            raise InputError(
                f"state_names entry {item!r} must be (input, output) or (input, output, batch_axis)"
            )
        axis = item[2] if len(item) == 3 else _UNSET
        pairs.append((str(item[0]), str(item[1]), axis))
    given = dict(state_batch_axis or {})
    unknown = sorted(set(given) - {p[0] for p in pairs})
    if unknown:
        raise InputError(
            f"state_batch_axis names {unknown}, which are not state inputs {[p[0] for p in pairs]}"
        )
    out = []
    for name, out_name, axis in pairs:
        if name in given:
            if axis is not _UNSET and axis != given[name]:
                raise InputError(
                    f"state '{name}' gets batch axis {axis} from state_names and "
                    f"{given[name]} from state_batch_axis; give it once"
                )
            axis = given[name]
        if (
            axis is not _UNSET
            and axis is not None
            and (isinstance(axis, bool) or not isinstance(axis, int))
        ):
            raise InputError(f"state '{name}' batch axis {axis!r} must be an integer or None")
        out.append((name, out_name, axis))
    return out


def _input_names(
    module: nn.Module,
    args: Sequence[torch.Tensor],
    input_names: Sequence[str] | None,
    state_in: Sequence[str],
) -> list[str]:
    """Names of `forward`'s parameters; state inputs renamed to the names the user gave."""
    if input_names is not None:
        names = [str(n) for n in input_names]
        if len(names) != len(args):
            raise InputError(f"{len(names)} input names given for {len(args)} example inputs")
        return names
    names = forward_names(module, len(args)) or (
        ["x"] if len(args) == 1 else [f"input_{i}" for i in range(len(args))]
    )
    unmatched = [s for s in state_in if s not in names]
    free = [i for i in range(1, len(names)) if names[i] not in state_in]
    if unmatched:
        if len(unmatched) != len(free):
            raise InputError(
                f"state inputs {unmatched} are not among the module's inputs {names} (from its "
                "forward() parameters); name them as forward() does, or pass input_names"
            )
        for i, s in zip(free, unmatched, strict=True):
            names[i] = s
    return names


def _batch_axis(name: str, t: torch.Tensor, axis: Any, batch: int | None) -> int | None:
    """The state's batch axis: given, PyTorch's axis 1 when it fits, or the one axis that does."""
    if axis is not _UNSET:
        if axis is not None and not -t.dim() <= axis < t.dim():
            raise InputError(
                f"state '{name}' batch axis {axis} is outside its shape {tuple(t.shape)}"
            )
        return None if axis is None else axis % t.dim()
    if batch is None:
        return None
    if t.dim() >= 2 and t.shape[1] == batch:
        return 1
    fits = [a for a, d in enumerate(t.shape) if d == batch]
    if len(fits) == 1:
        return fits[0]
    raise InputError(
        f"state '{name}' has shape {tuple(t.shape)}; {'none' if not fits else 'several'} of its "
        f"axes match the example's batch {batch}: declare the batch axis, e.g. "
        f"state_names=[('{name}', '<output>', AXIS)] or state_batch_axis={{'{name}': AXIS}} "
        "(None for a state without one)"
    )


def _output_names(
    out_axes: list[dict[int, str]],
    shapes: list[tuple[int, ...]],
    output_names: Sequence[str] | None,
    pairs: list[tuple[str, str, Any]],
    state_shapes: dict[str, tuple[int, ...]],
    in_names: list[str],
) -> list[str]:
    """Given names, or: the data output `y`, state outputs by shape, the rest `output_i`."""
    if output_names is not None:
        names = [str(n) for n in output_names]
        if len(names) != len(out_axes):
            raise InputError(
                f"{len(names)} output names given; the module returns {len(out_axes)} outputs"
            )
        return names
    names: list[str | None] = [None] * len(out_axes)
    names[0] = "y" if "y" not in in_names else "output_0"
    for name, out_name, _ in pairs:
        want = state_shapes[name]
        pick = next(
            (i for i in range(1, len(names)) if names[i] is None and shapes[i] == want), None
        )
        if pick is None:
            raise InputError(
                f"state '{name}' -> '{out_name}': no output after the first has the state's "
                f"shape {want} (outputs: {[tuple(s) for s in shapes]}); return the new state "
                "from forward(), or pass output_names"
            )
        names[pick] = out_name
    return [n if n is not None else f"output_{i}" for i, n in enumerate(names)]


def _states(
    args: Sequence[torch.Tensor],
    in_names: list[str],
    layout: str,
    pairs: list[tuple[str, str, Any]],
) -> tuple[list[dict[int, str]], list[StatePair]]:
    """Each input's dynamic axes (data: from the layout; states: their batch) and the pairs."""
    x_axes = layout_axes(layout)
    batch = next((int(args[0].shape[a]) for a, n in x_axes.items() if n == BATCH), None)
    index = {n: i for i, n in enumerate(in_names)}
    unknown = [p[0] for p in pairs if p[0] not in index or index[p[0]] == 0]
    if unknown:
        raise InputError(f"state inputs {unknown} do not name inputs {in_names[1:]}")
    axes_list: list[dict[int, str]] = [x_axes] + [{} for _ in in_names[1:]]
    state_pairs = []
    for name, out_name, axis in pairs:
        b_axis = _batch_axis(name, args[index[name]], axis, batch)
        axes_list[index[name]] = {} if b_axis is None else {b_axis: BATCH}
        state_pairs.append(StatePair(name, out_name, b_axis))
    return axes_list, state_pairs


def plan_module(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    *,
    input_names: Sequence[str] | None,
    output_names: Sequence[str] | None,
    batch_first: bool,
    layout: str | None,
    state_names: Sequence[Sequence[Any]],
    state_batch_axis: Mapping[str, int | None] | None,
    streamable: bool,
    normalization: Normalization | None,
) -> Plan:
    """The plan for any module whose first input is a sequence; lifts its RNN state if asked.

    A module that already takes its state (`state_names`) streams as it is; `streamable`
    lifts the state of one that does not.
    """
    layout = data_layout(args[0], layout, batch_first)
    pairs = _state_pairs(state_names, state_batch_axis)
    in_names = _input_names(module, args, input_names, [p[0] for p in pairs])
    if len(set(in_names)) != len(in_names):
        raise InputError(f"input names {in_names} repeat a name")
    axes_list, state_pairs = _states(args, in_names, layout, pairs)
    states = tuple(in_names.index(p.input) for p in state_pairs)
    sampler = Sampler(args, axes_list, 0, token_range(module, args), states)
    lifting = None
    if streamable and not pairs:
        from rnnedge.exporters.lift import lift

        lifting = lift(module, sampler, in_names)
        module, sampler, state_pairs = lifting.module, lifting.sampler, lifting.pairs
        in_names = in_names + lifting.input_names
    hint = "; ".join(
        f"if state '{p.input}' keeps its batch on an axis other than {p.batch_axis}, declare "
        f"it: state_names=[('{p.input}', '{p.output}', AXIS)]"
        for p, (_, _, axis) in zip(state_pairs, pairs, strict=False)
        if axis is _UNSET
    )
    out_axes_list, shapes = probe_output_axes(module, sampler, hint)
    if lifting is not None:
        n_own = len(shapes) - len(state_pairs)
        out_names = _output_names(
            out_axes_list[:n_own], shapes[:n_own], output_names, [], {}, in_names
        ) + [p.output for p in state_pairs]
    else:
        state_shapes = {
            p.input: tuple(sampler.args[in_names.index(p.input)].shape) for p in state_pairs
        }
        out_names = _output_names(
            out_axes_list, shapes, output_names, pairs, state_shapes, in_names
        )
    clash = sorted(set(out_names) & set(in_names)) or sorted(
        {n for n in out_names if out_names.count(n) > 1}
    )
    if clash:
        raise InputError(
            f"names {clash} are used twice (inputs {in_names}, outputs "
            f"{out_names}); give each graph tensor its own name"
        )
    missing = [p.output for p in state_pairs if p.output not in out_names]
    if missing:
        raise InputError(f"state outputs {missing} are not among the output names {out_names}")
    in_axes = dict(zip(in_names, sampler.axes, strict=True))
    out_axes = dict(zip(out_names, out_axes_list, strict=True))
    if lifting is not None:
        from rnnedge.exporters.lift import prove

        prove(lifting, out_names, out_axes)
    spec = RnnSpec(
        inputs=[tensor_spec(n, a, in_axes[n]) for n, a in zip(in_names, sampler.args, strict=True)],
        outputs=[],
        data_input=in_names[0],
        data_output=out_names[0],
        state_pairs=state_pairs,
        batch_first="B" not in layout or layout.index("B") < layout.index("T"),
        normalization=normalization,
        layout=layout,
        **(lifting.spec_fields if lifting is not None else {}),
    )
    module.eval()
    return Plan(
        module,
        sampler.args,
        in_names,
        out_names,
        in_axes,
        out_axes,
        spec,
        sampler,
        list(lifting.pairs) if lifting is not None else [],
    )
