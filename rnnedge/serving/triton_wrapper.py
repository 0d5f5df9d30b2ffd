"""The ONNX file in a Triton repository: the model rewrapped the way Triton's batcher needs it.

Triton's implicit state and sequence batcher ask two things of a model that an exported RNN
does not give: every input and output, state included, batch-first (PyTorch's state is
(layers·directions, batch, hidden), a time-major data input (seq, batch, F)); and the sequence
controls START/READY/END/CORRID as [batch, 1] graph inputs, which the ONNX Runtime backend
checks when it loads the model. The wrapper adds Transpose nodes around state (and time-major
data), declares the controls (Triton resets the state itself on START, so the graph need not
read them), and runs the model's stored normalization in the graph. Tensor names are kept.
`verify_wrapper` runs it against the original through `rnnedge.load` before it is written.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from rnnedge.errors import ExportError, UnsupportedModelError
from rnnedge.spec import SPEC_KEY, RnnSpec

WRAPPER_KEY = "rnnedge.triton"
#: control kind -> (tensor name in the wrapper, Triton data type)
CONTROLS: dict[str, tuple[str, str]] = {
    "CONTROL_SEQUENCE_START": ("START", "TYPE_BOOL"),
    "CONTROL_SEQUENCE_READY": ("READY", "TYPE_BOOL"),
    "CONTROL_SEQUENCE_END": ("END", "TYPE_BOOL"),
    "CONTROL_SEQUENCE_CORRID": ("CORRID", "TYPE_UINT64"),
}


def _to_batch_first(shape: Sequence[Any], axis: int) -> list[Any]:
    return [shape[axis], *[d for i, d in enumerate(shape) if i != axis]]


def check_servable(spec: RnnSpec) -> None:
    """Refuse, with the reason, a model whose state Triton could not carry between requests."""
    if not spec.streamable:
        why = (
            "it is bidirectional: each output depends on steps not yet sent"
            if spec.bidirectional
            else "it has no recurrent state inputs/outputs"
        )
        raise UnsupportedModelError(
            f"cannot serve this model as a Triton sequence model: {why}; serve whole "
            "sequences with a plain (stateless) model configuration instead"
        )
    states = {p.input for p in spec.state_pairs}
    extra = [t.name for t in spec.inputs if t.name != spec.data_input and t.name not in states]
    if extra:
        raise UnsupportedModelError(
            f"inputs {extra} are neither data nor state; Triton's batcher needs a batch axis "
            "on every input: fold them into the graph as initializers first"
        )
    taken = {t.name for t in spec.inputs} & {n for n, _ in CONTROLS.values()}
    if taken:
        raise UnsupportedModelError(
            f"the model already has inputs named {sorted(taken)}, "
            "which Triton's sequence controls need"
        )
    for p in spec.state_pairs:
        dims = _to_batch_first(spec.input(p.input).shape, p.batch_axis)[1:]
        if not all(isinstance(d, int) for d in dims):
            raise UnsupportedModelError(
                f"state '{p.input}' has symbolic dims {dims} besides batch; Triton's "
                "implicit state needs fixed dims to make its zero initial state"
            )


# -- the wrapper graph ----------------------------------------------------------------------
def _rename(graph: Any, old: str, new: str) -> None:
    """Rename tensor `old` to `new` in every node of `graph` and its subgraphs."""
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
        for attr in node.attribute:
            if attr.HasField("g"):
                _rename(attr.g, old, new)
            for sub in attr.graphs:
                _rename(sub, old, new)
    for vi in graph.value_info:
        if vi.name == old:
            vi.name = new


def _value_info(name: str, elem_type: int, shape: Sequence[Any]) -> Any:
    from onnx import helper

    return helper.make_tensor_value_info(name, elem_type, list(shape))


def _dims(vi: Any) -> list[Any]:
    return [
        d.dim_param or (d.dim_value if d.HasField("dim_value") else None)
        for d in vi.type.tensor_type.shape.dim
    ]


def wrap_for_triton(model: Any, spec: RnnSpec, *, normalize: bool = True) -> Any:
    """A copy of `model` with batch-first state/data, control inputs and in-graph normalization.

    Tensor names are kept, so a client of the repository uses the names `rnnedge inspect`
    shows; only the layouts of time-major data and of state are batch-first.
    """
    from onnx import TensorProto, helper, numpy_helper

    check_servable(spec)
    m = copy.deepcopy(model)
    g = m.graph
    pre: list[Any] = []
    post: list[Any] = []
    norm = spec.normalization if normalize else None
    x_dtype = np.dtype(spec.input(spec.data_input).dtype)

    def const(name: str, values: Sequence[float]) -> str:
        g.initializer.append(numpy_helper.from_array(np.asarray(values, x_dtype), name))
        return name

    def relayout(name: str, axis: int, ops: Sequence[tuple[str, str]], is_input: bool) -> None:
        """Public batch-first `name` <-> the graph's own tensor, through `ops` and a Transpose."""
        if axis == 0 and not ops:
            return
        ios = g.input if is_input else g.output
        vi = next(v for v in ios if v.name == name)
        dims = _dims(vi)
        inner = f"{name}__rnnedge"
        _rename(g, name, inner)
        ios.remove(vi)
        ios.append(_value_info(name, vi.type.tensor_type.elem_type, _to_batch_first(dims, axis)))
        steps: list[tuple[str, Any]] = list(ops)
        others = [i for i in range(len(dims)) if i != axis]
        if axis != 0:
            steps.append(
                (
                    "Transpose",
                    [0 if i == axis else others.index(i) + 1 for i in range(len(dims))]
                    if is_input
                    else [axis, *others],
                )
            )
        cur, dst = (name, inner) if is_input else (inner, name)
        for k, (op, arg) in enumerate(steps):
            out = dst if k == len(steps) - 1 else f"{name}__{op.lower()}{k}"
            node = (
                helper.make_node(op, [cur], [out], perm=arg)
                if op == "Transpose"
                else helper.make_node(op, [cur, arg], [out])
            )
            (pre if is_input else post).append(node)
            cur = out

    x_ops: list[tuple[str, str]] = []
    y_ops: list[tuple[str, str]] = []
    if norm is not None:
        t = list(norm.target_index)
        x_ops = [
            ("Sub", const("rnnedge_x_mean", norm.mean)),
            ("Div", const("rnnedge_x_std", norm.std)),
        ]
        y_ops = [
            ("Mul", const("rnnedge_y_std", [norm.std[i] for i in t])),
            ("Add", const("rnnedge_y_mean", [norm.mean[i] for i in t])),
        ]
    relayout(spec.data_input, spec.batch_axis, x_ops, True)
    relayout(spec.data_output, spec.batch_axis, y_ops, False)
    for p in spec.state_pairs:
        relayout(p.input, p.batch_axis, (), True)
        relayout(p.output, p.batch_axis, (), False)

    batch_dim = spec.input(spec.data_input).shape[spec.batch_axis]
    for name, ttype in CONTROLS.values():
        elem = TensorProto.UINT64 if ttype == "TYPE_UINT64" else TensorProto.BOOL
        g.input.append(_value_info(name, elem, [batch_dim, 1]))
    nodes = [*pre, *g.node, *post]
    del g.node[:]
    g.node.extend(nodes)

    keep = [p for p in m.metadata_props if p.key not in (SPEC_KEY, WRAPPER_KEY)]
    del m.metadata_props[:]
    m.metadata_props.extend(keep)
    info = {
        "layout": "batch-first",
        "normalized_in_graph": norm is not None,
        "controls": [n for n, _ in CONTROLS.values()],
        "state_pairs": [[p.input, p.output] for p in spec.state_pairs],
    }
    m.metadata_props.add(key=WRAPPER_KEY, value=json.dumps(info, sort_keys=True))
    return m


# -- verification ---------------------------------------------------------------------------
VERIFY_SHAPES = ((1, 1), (3, 7), (2, 33))


def verify_wrapper(
    source: Any,
    wrapped: bytes,
    *,
    normalize: bool = True,
    shapes: Sequence[tuple[int, int]] = VERIFY_SHAPES,
    seed: int = 0,
) -> float:
    """Max |wrapped − original| over `shapes`; raises ExportError beyond fp32/fp16 tolerance.

    `source` is the loaded original (`rnnedge.load`); it runs with its stored normalization
    when `normalize`, which the wrapper must reproduce in the graph.
    """
    import onnxruntime as ort

    from rnnedge.verify.parity import TOLERANCES, compare_arrays, make_feeds

    spec: RnnSpec = source.spec
    sess = ort.InferenceSession(wrapped, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    tol = TOLERANCES["fp16" if spec.input(spec.data_input).dtype == "float16" else "fp32"]
    worst, failures = 0.0, []
    for batch, seq_len in shapes:
        feeds = make_feeds(spec, batch, seq_len, rng)
        x = feeds.pop(spec.data_input)
        y, state = source.run(x, feeds, normalize=normalize)
        wf = {spec.data_input: np.moveaxis(x, spec.batch_axis, 0)}
        for p in spec.state_pairs:
            wf[p.input] = np.ascontiguousarray(np.moveaxis(feeds[p.input], p.batch_axis, 0))
        for name, ttype in CONTROLS.values():
            wf[name] = np.zeros((batch, 1), np.uint64 if ttype == "TYPE_UINT64" else np.bool_)
        got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, wf), strict=True))
        pairs = [(spec.data_output, np.moveaxis(y, spec.batch_axis, 0))]
        pairs += [
            (p.output, np.moveaxis(state[p.input], p.batch_axis, 0)) for p in spec.state_pairs
        ]
        for name, expected in pairs:
            max_abs, _, ok, detail = compare_arrays(expected, got[name], tol)
            worst = max(worst, max_abs)
            if not ok:
                failures.append(f"{name} at batch {batch}, seq_len {seq_len}: {detail}")
    if failures:
        raise ExportError(
            "the Triton wrapper differs from the original model: " + "; ".join(failures)
        )
    return worst
