"""State pairs of a graph rnnedge did not write: which output is fed back into which input.

By name first (`h0 -> hn`, `state -> stateN`, `x_in -> x_out`, `in_x -> out_x`), each pair
checked to be carriable (same dtype and rank, fixed dims equal); or as the user names them.
Kept apart from `rnnedge.runtime.foreign`, which decides the rest of the spec around them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from rnnedge.errors import InputError
from rnnedge.spec import TensorSpec, dims_to_str

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


def listing(label: str, tensors: Sequence[TensorSpec]) -> str:
    """`inputs: x(batch, seq, 3), h0(1, batch, 4)`, so an error shows what there is."""
    return f"{label}: " + (", ".join(f"{t.name}{dims_to_str(t.shape)}" for t in tensors) or "none")


def graph_listing(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> str:
    return f"{listing('inputs', inputs)}; {listing('outputs', outputs)}"


def incompatibility(inp: TensorSpec, out: TensorSpec) -> str | None:
    """Why `out` cannot be fed back as `inp` on the next call, or None when it can."""
    if inp.dtype != out.dtype:
        return f"dtype {inp.dtype} vs {out.dtype}"
    if len(inp.shape) != len(out.shape):
        return f"rank {len(inp.shape)} vs {len(out.shape)}"
    for axis, (a, b) in enumerate(zip(inp.shape, out.shape, strict=True)):
        if isinstance(a, int) and isinstance(b, int) and a != b:
            return f"axis {axis} is {a} vs {b}"
    return None


def explicit_pairs(
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
                f"the graph has {graph_listing(inputs, outputs)}"
            )
        if any(o.name == o_name for _, o in pairs):
            raise InputError(f"{source}: state output '{o_name}' is paired with two inputs")
        inp, out = by_in[i_name], by_out[o_name]
        why = incompatibility(inp, out)
        if why:
            raise InputError(
                f"{source}: state pair {i_name}:{o_name} cannot be carried ({why}): "
                f"{i_name}{dims_to_str(inp.shape)} vs {o_name}{dims_to_str(out.shape)}"
            )
        pairs.append((inp, out))
    return pairs


def detected_pairs(inputs: list[TensorSpec], outputs: list[TensorSpec], source: str) -> Pairs:
    pairs: Pairs = []
    claimed: dict[str, str] = {}  # output -> input
    for inp in inputs:
        for rule, targets_of in _RULES:
            targets = targets_of(inp.name.lower())
            found = [o for o in outputs if o.name.lower() in targets]
            found = [o for o in found if incompatibility(inp, o) is None]
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


def state_batch_axis(state: TensorSpec) -> int:
    """Where the batch lives in a state tensor judged from its own shape alone: its only
    symbolic dim, else PyTorch's layout (axis 1 from rank 3, else 0)."""
    symbolic = [i for i, d in enumerate(state.shape) if isinstance(d, str)]
    if len(symbolic) == 1:
        return symbolic[0]
    return 1 if len(state.shape) >= 3 else 0


def same_shape_pairs(
    inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]
) -> list[tuple[str, str]]:
    """(input, output) of exactly the same declared dtype and shape, each side matched once:
    what to try as `state_names` when names follow no rule. Only a suggestion: a data input
    and its output often match too."""
    found = []
    for inp in inputs:
        same = [o for o in outputs if o.dtype == inp.dtype and o.shape == inp.shape]
        if len(same) == 1 and inp.shape:
            found.append((inp.name, same[0].name))
    outs = [o for _, o in found]
    return [(i, o) for i, o in found if outs.count(o) == 1]
