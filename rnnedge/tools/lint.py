"""An RNN-aware linter for ONNX graphs: what goes silently wrong when recurrent models export.

`onnx.checker` accepts every one of these graphs, and ONNX Runtime runs them at the example
length; they only fail (or, worse, return wrong numbers) at another sequence length or batch.

Codes (stable): RNN001 error, data input's seq axis is a fixed int (dynamo freezes it).
RNN002 warning, a sequence-shaped output declares a fixed seq length. RNN003 error, a Reshape
bakes the seq length into its constant shape. RNN004 error, unrolled cell loop (one weight fed
to ≥ 3 MatMul/Gemm, no recurrent node). RNN005 error, GRU without `linear_before_reset=1`.
RNN006 warning, direction vs the spec's `bidirectional`. RNN007 warning/info, `layout` vs the
spec's `batch_first`. RNN008 info, `sequence_lens` per RNN node. RNN009 warning/info, opset
< 14 or IR < 7, and both values. RNN010 info/warning, inventory of recurrent nodes (warning
when none). RNN011 warning/info, batch axis fixed. RNN012 warning, op type vs the spec's `cell`.

Axes come from, in order: the explicit arguments, the rnnedge spec in `metadata_props`, the
position the data input reaches an RNN node's `X` at (traced through Transpose/Squeeze/...,
using the node's `layout`), and finally batch 0 / seq 1.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnedge._optional import require
from rnnedge.errors import InputError, ModelFileError
from rnnedge.spec import SPEC_KEY, RnnSpec

if TYPE_CHECKING:
    import onnx

RNN_OPS = frozenset({"RNN", "LSTM", "GRU"})
LOOP_OPS = frozenset({"Loop", "Scan"})
SEVERITIES = ("error", "warning", "info")
_CELL_OPS = {"rnn_tanh": "RNN", "rnn_relu": "RNN", "lstm": "LSTM", "gru": "GRU"}
# Ops that move or keep axes without mixing them, so a seq axis can be followed through them.
_AXIS_KEEPING = frozenset({"Identity", "Cast", "Dropout", "Relu", "Tanh", "Sigmoid"})
# Ops a state output (h_n, c_n) typically passes through between the RNN node and the output.
_STATE_PATH = frozenset({"Identity", "Cast", "Concat", "Squeeze", "Unsqueeze", "Transpose"})
_UNROLL_MIN = 3
_RESPEC = "re-export so the spec and the graph come from the same module"
_FIXES = {
    "RNN001": "re-export with exporter='torchscript' or pass dynamic shapes; "
    "rnnedge export verifies other lengths",
    "RNN002": "mark the output's seq axis dynamic too and check the output at a second length",
    "RNN003": "re-export with exporter='torchscript' (it emits 0/-1 there) or with dynamic "
    "shapes, and verify at a second length",
    "RNN004": "use nn.LSTM/nn.GRU instead of a cell loop, or export with a loop-preserving "
    "path (torch.jit.script / a Loop-emitting exporter)",
    "RNN005": "set linear_before_reset=1 on the node (or re-export from torch.nn.GRU)",
    "RNN006": _RESPEC,
    "RNN007": _RESPEC,
    "RNN009": "re-export with opset_version=17",
    "RNN010": "export from nn.RNN/nn.LSTM/nn.GRU so the time loop stays in one node",
    "RNN011": "mark the batch dim dynamic at export unless a fixed batch is intended",
    "RNN012": _RESPEC,
}


@dataclass(frozen=True)
class Finding:
    """One problem (or fact) the linter found; `code` is stable so tools can filter on it."""

    severity: str  # "error" | "warning" | "info"
    code: str  # stable id like "RNN001"
    node: str  # node or tensor name, "" for graph-level
    message: str  # what was found
    fix: str  # what to do

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity '{self.severity}' is not one of {SEVERITIES}")


def _find(severity: str, code: str, node: str, message: str, fix: str | None = None) -> Finding:
    return Finding(severity, code, node, message, _FIXES.get(code, "") if fix is None else fix)


def worst(findings: list[Finding]) -> str | None:
    """The highest severity present, so a CLI can pick its exit status from one value."""
    present = {f.severity for f in findings}
    return next((s for s in SEVERITIES if s in present), None)


@dataclass
class _Ctx:
    """The loaded graph plus the lookups every check needs, built once."""

    model: Any
    spec: RnnSpec | None
    expected_seq_len: int | None
    nodes: list[tuple[Any, str]] = field(default_factory=list)  # (node, display name)
    producer: dict[str, tuple[Any, int]] = field(default_factory=dict)  # tensor -> (node, idx)
    consumers: dict[str, list[tuple[Any, int]]] = field(default_factory=dict)
    inits: set[str] = field(default_factory=set)
    consts: dict[str, list[int]] = field(default_factory=dict)  # integer constants only
    data: Any = None  # ValueInfoProto of the data input
    seq_axis: int = 1
    batch_axis: int = 0
    axes_from: str = "default batch 0 / seq 1"

    @property
    def rnn_nodes(self) -> list[tuple[Any, str]]:
        return [(n, label) for n, label in self.nodes if n.op_type in RNN_OPS]


def _load(model: str | os.PathLike[str] | onnx.ModelProto) -> tuple[Any, str]:
    """Return (ModelProto, source name); a bad file is a `ModelFileError` naming the path."""
    onnx = require("onnx", "rnnedge lint")
    if isinstance(model, onnx.ModelProto):
        return model, model.graph.name or "model"
    path = Path(os.fspath(model))
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    try:  # external weights are not needed to lint structure, and may live elsewhere
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError, RuntimeWarning, ValueError...
        raise ModelFileError(
            f"{path}: not a readable ONNX model ({exc.__class__.__name__}: {exc})".splitlines()[0]
        ) from exc
    if proto.ir_version <= 0 or not proto.HasField("graph") or not proto.graph.node:
        raise ModelFileError(f"{path}: not an ONNX model (no IR version or no graph nodes)")
    return proto, str(path)


def _all_nodes(graph: Any) -> Iterator[tuple[Any, str]]:
    """Every node, subgraph bodies (Loop/Scan/If) included, with a name fit for messages."""
    onnx = require("onnx", "rnnedge lint")
    for i, node in enumerate(graph.node):
        yield node, node.name or f"{node.op_type}_{i}"
        for attr in node.attribute:
            subs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            for sub in subs:
                yield from _all_nodes(sub)


def _attr(node: Any, name: str, default: Any = None) -> Any:
    onnx = require("onnx", "rnnedge lint")
    for a in node.attribute:
        if a.name == name:
            value = onnx.helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _int_array(tensor: Any) -> list[int] | None:
    onnx = require("onnx", "rnnedge lint")
    if tensor.data_type not in (onnx.TensorProto.INT64, onnx.TensorProto.INT32):
        return None
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        return None
    return [int(v) for v in onnx.numpy_helper.to_array(tensor).reshape(-1)]


def _dims(vi: Any) -> list[int | str | None] | None:
    """A value's declared dims: int when fixed, str when symbolic, None when unknown."""
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim]


def _through(ctx: _Ctx, node: Any, pos: int, forward: bool) -> int | None:
    """Where axis `pos` lands across `node` (input->output if forward), or None if it mixes."""
    op = node.op_type
    if op in _AXIS_KEEPING:
        return pos
    if op == "Transpose":
        perm = list(_attr(node, "perm", []))
        if not perm or pos >= len(perm):
            return None
        return perm.index(pos) if forward else perm[pos]
    if op in ("Squeeze", "Unsqueeze"):
        axes = _attr(node, "axes")
        if axes is None and len(node.input) > 1:
            axes = ctx.consts.get(node.input[1])
        if axes is None or any(a < 0 for a in axes):
            return None
        if (op == "Squeeze") == forward:  # going from the higher rank to the lower
            return None if pos in axes else pos - sum(a < pos for a in axes)
        for a in sorted(axes):
            pos += a <= pos
        return pos
    return None


def _walk(ctx: _Ctx, tensor: str, pos: int, forward: bool) -> list[tuple[str, int, Any]]:
    """Follow axis `pos` of `tensor` through axis-keeping ops until a Reshape or graph input.

    Returns (tensor, axis, stopping node) triples: the Reshape met (its data input when forward,
    its output when backward), or node None when a graph input is reached going backward.
    """
    stops: list[tuple[str, int, Any]] = []
    todo = [(tensor, pos, 0)]
    while todo:
        name, p, depth = todo.pop()
        if depth > 16:
            continue
        if forward:
            nexts = [(n, n.output[0]) for n, i in ctx.consumers.get(name, []) if i == 0]
        else:
            prod = ctx.producer.get(name)
            if prod is None:
                stops.append((name, p, None))
                continue
            nexts = [(prod[0], prod[0].input[0] if prod[0].input else "")]
        for node, other in nexts:
            if node.op_type == "Reshape":
                stops.append((name, p, node))
                continue
            q = _through(ctx, node, p, forward)
            if q is not None and other:
                todo.append((other, q, depth + 1))
    return stops


def _build(model: Any, source: str, args: dict[str, Any]) -> _Ctx:
    """Index the graph once and decide which input is the data and which axes are seq/batch."""
    onnx = require("onnx", "rnnedge lint")
    graph = model.graph
    meta = {p.key: p.value for p in model.metadata_props}
    spec = RnnSpec.from_json(meta[SPEC_KEY], source) if SPEC_KEY in meta else None
    ctx = _Ctx(model, spec, args["expected_seq_len"], list(_all_nodes(graph)))
    ctx.inits = {t.name for t in graph.initializer}
    ctx.consts = {t.name: a for t in graph.initializer if (a := _int_array(t)) is not None}
    for node, _ in ctx.nodes:
        for i, name in enumerate(node.output):
            ctx.producer[name] = (node, i)
        for i, name in enumerate(node.input):
            ctx.consumers.setdefault(name, []).append((node, i))
        a = next((a for a in node.attribute if a.name in ("value", "value_ints")), None)
        if node.op_type == "Constant" and a is not None and node.output:
            is_tensor = a.type == onnx.AttributeProto.TENSOR
            arr = _int_array(a.t) if is_tensor else list(a.ints)
            if arr is not None:
                ctx.consts[node.output[0]] = arr

    inputs = {vi.name: vi for vi in graph.input}
    name = args["data_input"] or (spec.data_input if spec else None)
    name = name or next((n for n in inputs if n not in ctx.inits), None)
    if name is not None and name not in inputs:
        raise InputError(
            f"{source}: data input '{name}' is not a graph input; graph inputs are "
            f"{', '.join(inputs) or 'none'}"
        )
    ctx.data = inputs.get(name) if name else None

    seq, batch = args["seq_axis"], args["batch_axis"]
    if seq is not None or batch is not None:
        ctx.axes_from = "arguments"
        seq = seq if seq is not None else (1 - batch if batch in (0, 1) else 1)
        batch = batch if batch is not None else (1 - seq if seq in (0, 1) else 0)
        rank = len(_dims(ctx.data) or []) if ctx.data is not None else 0
        if rank and not all(-rank <= ax < rank for ax in (seq, batch)):
            raise InputError(
                f"{source}: seq_axis {seq} / batch_axis {batch} out of range for data input "
                f"'{name}' of rank {rank}"
            )
        ctx.seq_axis, ctx.batch_axis = (seq % rank, batch % rank) if rank else (seq, batch)
    elif spec is not None:
        ctx.seq_axis, ctx.batch_axis, ctx.axes_from = spec.seq_axis, spec.batch_axis, "spec"
    elif name is not None:
        for node, label in ctx.rnn_nodes:  # follow X's seq/batch axes back to the data input
            layout = _attr(node, "layout", 0)
            s_pos, b_pos = (1, 0) if layout == 1 else (0, 1)
            seqs = [p for t, p, _ in _walk(ctx, node.input[0], s_pos, False) if t == name]
            batches = [p for t, p, _ in _walk(ctx, node.input[0], b_pos, False) if t == name]
            if seqs:
                ctx.seq_axis = seqs[0]
                ctx.batch_axis = batches[0] if batches else int(seqs[0] == 0)
                ctx.axes_from = f"traced to {node.op_type} '{label}' (layout={layout})"
                break
    return ctx


def _check_frozen_axes(ctx: _Ctx) -> Iterator[Finding]:
    """RNN001/RNN011: a fixed seq (or batch) dim on the data input rejects every other one."""
    dims = _dims(ctx.data) if ctx.data is not None else None
    if not dims:
        return
    name, seq, batch = ctx.data.name, ctx.seq_axis, ctx.batch_axis
    if seq < len(dims) and isinstance(dims[seq], int):
        msg = f"data input '{name}' has seq axis {seq} frozen at {dims[seq]} ({ctx.axes_from})"
        yield _find("error", "RNN001", name, msg + "; any other length is rejected")
    if batch < len(dims) and isinstance(value := dims[batch], int):
        msg = f"data input '{name}' has batch axis {batch} fixed at {value}"
        yield _find("warning" if value > 1 else "info", "RNN011", name, msg)


def _state_outputs(ctx: _Ctx) -> set[str]:
    """Outputs that carry h_n/c_n: from the spec, else traced back to an RNN's Y_h/Y_c."""
    if ctx.spec is not None:
        return {p.output for p in ctx.spec.state_pairs}
    found = set()
    for out in ctx.model.graph.output:
        todo, seen = [out.name], set()
        while todo and out.name not in found:
            name = todo.pop()
            node, idx = ctx.producer.get(name, (None, 0))
            if name in seen or node is None:
                continue
            seen.add(name)
            if node.op_type in RNN_OPS and idx >= 1:
                found.add(out.name)
            elif node.op_type in _STATE_PATH:
                todo.extend(i for i in node.input if i)
    return found


def _check_output_freeze(ctx: _Ctx) -> Iterator[Finding]:
    """RNN002: a symbolic-seq input with a sequence output declared at a fixed length.

    Without `expected_seq_len` only outputs of rank ≥ 3 (batch, seq, features) count, since a
    rank-2 seq-to-one output has features where the seq axis would be; with it, any rank ≥ 2
    output whose seq dim equals it counts. State outputs (h_n, c_n) are skipped.
    """
    dims = _dims(ctx.data) if ctx.data is not None else None
    seq, expected = ctx.seq_axis, ctx.expected_seq_len
    if not dims or seq >= len(dims) or isinstance(dims[seq], int):
        return
    states = _state_outputs(ctx)
    for out in ctx.model.graph.output:
        odims = _dims(out) or []
        if out.name in states or len(odims) < 2 or seq >= len(odims):
            continue
        value = odims[seq]
        if not isinstance(value, int) or value <= 1:
            continue
        if (expected is None and len(odims) >= 3) or value == expected:
            msg = (
                f"output shape annotation freezes seq: '{out.name}' declares {value} on axis "
                f"{seq} while input '{ctx.data.name}' has a symbolic seq dim"
            )
            yield _find("warning", "RNN002", out.name, msg)


def _check_baked_reshape(ctx: _Ctx) -> Iterator[Finding]:
    """RNN003: a Reshape whose constant target shape bakes in the example seq length.

    With `expected_seq_len`, any constant Reshape shape containing it is flagged. Without it,
    a heuristic follows the seq axis from each RNN node's X (backward) and Y (forward) through
    axis-keeping ops (Transpose, Squeeze, ...) to the first Reshape, and flags a constant value
    > 1 at the seq position (position 0 when time-major): a Reshape that keeps the length
    dynamic puts 0 (copy) or -1 (infer) there.
    """
    labels = {id(n): label for n, label in ctx.nodes}
    suspects: dict[str, tuple[Any, int | None]] = {}
    if ctx.expected_seq_len is not None:
        for node, label in ctx.nodes:
            is_reshape = node.op_type == "Reshape" and len(node.input) > 1
            shape = ctx.consts.get(node.input[1]) if is_reshape else None
            if shape and ctx.expected_seq_len in shape:
                suspects[label] = (node, None)
    for node, _ in ctx.rnn_nodes if ctx.expected_seq_len is None else []:
        pos = 1 if _attr(node, "layout", 0) == 1 else 0
        ends = _walk(ctx, node.input[0], pos, False)
        if node.output and node.output[0]:
            ends += _walk(ctx, node.output[0], pos, True)
        for _, p, stop in ends:
            shape = ctx.consts.get(stop.input[1]) if stop and len(stop.input) > 1 else None
            if shape and p < len(shape) and shape[p] > 1:
                suspects[labels[id(stop)]] = (stop, p)
    for label, (node, p) in suspects.items():
        shape = ctx.consts[node.input[1]]
        where = f"{shape[p]} at seq position {p}" if p is not None else ctx.expected_seq_len
        msg = (
            f"Reshape '{label}' has constant shape {shape} with a baked seq length ({where}); "
            "other lengths fail or are silently mis-shaped"
        )
        yield _find("error", "RNN003", label, msg)


def _check_unrolled(ctx: _Ctx) -> Iterator[Finding]:
    """RNN004: a Python cell loop traced into N copies of the step, one per example timestep."""
    if any(n.op_type in RNN_OPS | LOOP_OPS for n, _ in ctx.nodes):
        return
    uses: dict[str, int] = {}
    for node, _ in ctx.nodes:
        if node.op_type in ("MatMul", "Gemm"):
            for name in set(node.input[:2]) & ctx.inits:
                uses[name] = uses.get(name, 0) + 1
    for name, count in sorted(uses.items()):
        if count >= _UNROLL_MIN:
            msg = (
                f"weight '{name}' is consumed by {count} MatMul/Gemm nodes and there is no "
                "RNN/LSTM/GRU/Loop/Scan node: a cell loop was unrolled to the example length"
            )
            yield _find("error", "RNN004", name, msg)


def _check_gru_reset(ctx: _Ctx) -> Iterator[Finding]:
    """RNN005: ONNX GRU by default resets h before its linear map; PyTorch resets after it."""
    for node, label in ctx.rnn_nodes:
        value = _attr(node, "linear_before_reset", 0)
        if node.op_type == "GRU" and value != 1:
            msg = (
                f"GRU '{label}' has linear_before_reset={value}; PyTorch GRU semantics need 1, "
                "so outputs differ from eager PyTorch"
            )
            yield _find("error", "RNN005", label, msg)


def _check_spec_agreement(ctx: _Ctx) -> Iterator[Finding]:
    """RNN006/RNN007/RNN012: RNN node attributes that contradict the stored spec.

    torch exporters emit layout=0 plus Transposes even for batch_first modules, so layout=0 is
    never flagged; without a spec, the layout is only reported.
    """
    nodes, spec = ctx.rnn_nodes, ctx.spec
    dirs = {_attr(n, "direction", "forward") for n, _ in nodes}
    two_way = "bidirectional" in dirs or {"forward", "reverse"} <= dirs
    for node, label in nodes:
        op, layout = node.op_type, _attr(node, "layout", 0)
        if spec is not None and spec.bidirectional != two_way:
            msg = (
                f"{op} '{label}' has direction={_attr(node, 'direction', 'forward')} but the "
                f"spec says bidirectional={spec.bidirectional}"
            )
            yield _find("warning", "RNN006", label, msg)
        if spec is None:
            kind = "batch-first" if layout == 1 else "time-major"
            msg = f"{op} '{label}' has layout={layout} ({kind}); no rnnedge spec to compare with"
            fix = "pass seq_axis/batch_axis if the data input is not (batch, seq, features)"
            yield _find("info", "RNN007", label, msg, fix)
        elif layout == 1 and not spec.batch_first:
            msg = f"{op} '{label}' has layout=1 (batch-first) but the spec says time-major"
            yield _find("warning", "RNN007", label, msg)
    want = _CELL_OPS.get(spec.cell or "") if spec is not None else None
    if want and nodes and all(n.op_type != want for n, _ in nodes):
        ops = ", ".join(sorted({n.op_type for n, _ in nodes}))
        msg = f"spec cell '{spec.cell}' expects {want} nodes, the graph has {ops}"
        yield _find("warning", "RNN012", "", msg)


def _check_sequence_lens(ctx: _Ctx) -> Iterator[Finding]:
    """RNN008: whether padded batches can be run with per-row lengths."""
    graph_inputs = {vi.name for vi in ctx.model.graph.input} - ctx.inits
    for node, label in ctx.rnn_nodes:
        name = node.input[4] if len(node.input) > 4 else ""
        if not name:
            what = "has no sequence_lens input: every batch row runs the full length"
        elif name in graph_inputs:
            what = f"takes sequence_lens from graph input '{name}'"
        elif name in ctx.consts or name in ctx.inits:
            what = f"has a constant sequence_lens '{name}', which bakes in per-row lengths"
        else:
            what = f"has sequence_lens '{name}' computed inside the graph, not a graph input"
        fix = "" if name else "expose sequence_lens as a graph input to run padded batches"
        yield _find("info", "RNN008", label, f"{node.op_type} '{label}' {what}", fix)


def _check_versions(ctx: _Ctx) -> Iterator[Finding]:
    """RNN009: the RNN `layout` attribute needs opset 14; IR < 7 predates current runtimes."""
    model = ctx.model
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 14 or model.ir_version < 7:
        msg = f"opset {opset} / IR version {model.ir_version} is older than opset 14 / IR 7"
        yield _find("warning", "RNN009", "", msg)
    yield _find("info", "RNN009", "", f"opset {opset}, IR version {model.ir_version}", "")


def _check_inventory(ctx: _Ctx) -> Iterator[Finding]:
    """RNN010: which recurrent nodes exist; none at all usually means an unrolled export."""
    found = [(n, label) for n, label in ctx.nodes if n.op_type in RNN_OPS | LOOP_OPS]
    if not found:
        msg = "no RNN/LSTM/GRU/Loop/Scan node found: recurrence is unrolled or absent"
        yield _find("warning", "RNN010", "", msg)
    for node, label in found:
        extra = ""
        if node.op_type in RNN_OPS:
            hidden, direction = _attr(node, "hidden_size"), _attr(node, "direction", "forward")
            extra = f", hidden_size={hidden}, direction={direction}"
        yield _find("info", "RNN010", label, f"{node.op_type} '{label}'{extra}", "")


CHECKS: tuple[Callable[[_Ctx], Iterator[Finding]], ...] = (
    _check_frozen_axes,
    _check_output_freeze,
    _check_baked_reshape,
    _check_unrolled,
    _check_gru_reset,
    _check_spec_agreement,
    _check_sequence_lens,
    _check_versions,
    _check_inventory,
)


def lint(
    model: str | os.PathLike[str] | onnx.ModelProto,
    *,
    seq_axis: int | None = None,
    batch_axis: int | None = None,
    data_input: str | None = None,
    expected_seq_len: int | None = None,
) -> list[Finding]:
    """Lint an ONNX file or ModelProto for recurrent-export pitfalls `onnx.checker` misses.

    Args:
        model: Path to an `.onnx` file, or a loaded `onnx.ModelProto`.
        seq_axis: Seq axis of the data input; overrides the spec and the layout tracing.
        batch_axis: Batch axis of the data input; same precedence as `seq_axis`.
        data_input: Name of the sequence input; default: the spec's, else the first graph
            input that is not an initializer.
        expected_seq_len: The example seq length used at export; makes RNN002/RNN003 exact.

    Returns:
        Findings, errors first, then warnings, then infos (check order within each).

    Raises:
        ModelFileError: The file is missing, not ONNX, or its rnnedge spec is broken.
        InputError: `data_input` names no graph input, or an axis is out of range.
    """
    proto, source = _load(model)
    args = {
        "seq_axis": seq_axis,
        "batch_axis": batch_axis,
        "data_input": data_input,
        "expected_seq_len": expected_seq_len,
    }
    ctx = _build(proto, source, args)
    findings = [f for check in CHECKS for f in check(ctx)]
    return sorted(findings, key=lambda f: SEVERITIES.index(f.severity))
