"""ONNX graphs that the step experiments compare with the exported LSTM.

`step_ideas.py` asks whether the LSTM op itself is the cost of one step, and whether a graph
written for single steps would beat it. To answer that it needs the same weights in other
shapes: a one-Identity graph (the floor of any `run`), the last LSTM layer alone, a Gemm of
that layer's weights alone, and the whole model as Gemm/Sigmoid/Tanh/Mul on [batch, H]
tensors (valid for seq_len 1 only). The weights are read back from the exported file, so
every graph computes what the exported one computes; `step_ideas.py` checks that numerically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

Layer = tuple[np.ndarray, np.ndarray, np.ndarray]


def save(graph: Any, path: Path, opset: int = 18) -> Path:
    """Check and write a graph as a model at `opset`."""
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def value_info(name: str, shape: list[Any]) -> Any:
    from onnx import TensorProto, helper

    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def identity_graph(path: Path) -> Path:
    """One Identity on a [1, 1, 1] tensor: what a `run` costs with no work in it."""
    from onnx import helper

    node = helper.make_node("Identity", ["a"], ["b"])
    g = helper.make_graph(
        [node], "floor", [value_info("a", [1, 1, 1])], [value_info("b", [1, 1, 1])]
    )
    return save(g, path, opset=17)


def lstm_weights(path: Path) -> tuple[list[Layer], np.ndarray, np.ndarray]:
    """Per layer (W [4H, I], R [4H, H], Wb + Rb), gates in ONNX order i, o, f, c; the head."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    init = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    layers = []
    for n in (n for n in m.graph.node if n.op_type == "LSTM"):
        w, r, b = (init[n.input[i]][0] for i in (1, 2, 3))
        h = r.shape[1]
        layers.append((w, r, b[: 4 * h] + b[4 * h :]))
    matmul = next(n for n in m.graph.node if n.op_type == "MatMul")
    add = next(n for n in m.graph.node if n.op_type == "Add")
    bias = next(i for i in add.input if i in init)
    return layers, init[matmul.input[1]], init[bias]


def _ifoc(a: np.ndarray) -> np.ndarray:
    """Gates from ONNX order i, o, f, c to i, f, o | c: the sigmoid gates first."""
    i, o, f, c = np.split(a, 4, axis=0)
    return np.concatenate([i, f, o, c], 0).astype(np.float32)


class _GraphBuilder:
    """Collects nodes and initializers; names stay readable in the written graph."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.inits: list[Any] = []

    def const(self, name: str, arr: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def node(self, op: str, ins: list[str], outs: list[str], **attrs: Any) -> None:
        from onnx import helper

        self.nodes.append(helper.make_node(op, ins, outs, **attrs))


def _lstm_layer(b: _GraphBuilder, i: int, inp: str, layer: Layer, fused: bool) -> str:
    """One LSTM layer for one step; returns the name of its new hidden state."""
    w, r, bias = layer
    hidden = r.shape[1]
    three = 3 * hidden
    wr, bias = np.concatenate([_ifoc(w), _ifoc(r)], 1), _ifoc(bias)
    b.node("Concat", [inp, f"h{i}_in"], [f"xh{i}"], axis=1)
    if fused:  # a Gemm per activation, which ORT fuses with it (FusedGemm)
        wa, ba = b.const(f"wa{i}", wr[:three]), b.const(f"ba{i}", bias[:three])
        b.node("Gemm", [f"xh{i}", wa, ba], [f"za{i}"], transB=1)
        wg, bg = b.const(f"wg{i}", wr[three:]), b.const(f"bg{i}", bias[three:])
        b.node("Gemm", [f"xh{i}", wg, bg], [f"zg{i}"], transB=1)
    else:  # one Gemm, then a Split into the sigmoid gates and the cell candidate
        b.node(
            "Gemm", [f"xh{i}", b.const(f"w{i}", wr), b.const(f"b{i}", bias)], [f"z{i}"], transB=1
        )
        split = b.const(f"split{i}", np.array([three, hidden], np.int64))
        b.node("Split", [f"z{i}", split], [f"za{i}", f"zg{i}"], axis=1)
    b.node("Sigmoid", [f"za{i}"], [f"sig{i}"])
    b.node("Tanh", [f"zg{i}"], [f"g{i}"])
    b.node("Split", [f"sig{i}"], [f"i{i}", f"f{i}", f"o{i}"], axis=1, num_outputs=3)
    b.node("Mul", [f"f{i}", f"c{i}_in"], [f"fc{i}"])
    b.node("Mul", [f"i{i}", f"g{i}"], [f"ig{i}"])
    b.node("Add", [f"fc{i}", f"ig{i}"], [f"c{i}_out"])
    b.node("Tanh", [f"c{i}_out"], [f"tc{i}"])
    b.node("Mul", [f"o{i}", f"tc{i}"], [f"h{i}_out"])
    return f"h{i}_out"


def step_graph(src: Path, dst: Path, fused: bool) -> Path:
    """The exported LSTM as Gemm/Sigmoid/Tanh/Mul on [batch, H] tensors: seq_len 1 only.

    `fused`: separate Gemms for the sigmoid gates and the cell candidate, so ORT fuses each
    with its activation (FusedGemm); otherwise one Gemm, a Split and the two activations.
    """
    from onnx import helper

    layers, head_w, head_b = lstm_weights(src)
    n_layers, hidden, n_in = len(layers), layers[0][1].shape[1], layers[0][0].shape[1]
    b = _GraphBuilder()
    b.node("Reshape", ["x", b.const("x_shape", np.array([-1, n_in], np.int64))], ["x2"])
    state_shape = b.const("s_shape", np.array([-1, hidden], np.int64))
    for s in ("h", "c"):
        b.node("Reshape", [f"{s}0", state_shape], [f"{s}_2d"])
        ins = [f"{s}{i}_in" for i in range(n_layers)]
        b.node("Split", [f"{s}_2d"], ins, axis=0, num_outputs=n_layers)
    inp = "x2"
    for i, layer in enumerate(layers):
        inp = _lstm_layer(b, i, inp, layer, fused)
    out_shape = b.const("o_shape", np.array([n_layers, -1, hidden], np.int64))
    for s, name in (("h", "hn"), ("c", "cn")):
        b.node("Concat", [f"{s}{i}_out" for i in range(n_layers)], [f"{s}_cat"], axis=0)
        b.node("Reshape", [f"{s}_cat", out_shape], [name])
    head = [b.const("head_w", head_w.astype(np.float32)), b.const("head_b", head_b)]
    b.node("Gemm", [inp, *head], ["y2"])
    y_shape = b.const("y_shape", np.array([-1, 1, head_w.shape[1]], np.int64))
    b.node("Reshape", ["y2", y_shape], ["y"])
    state = [n_layers, "batch", hidden]
    g = helper.make_graph(
        b.nodes,
        "lstm_step",
        [value_info("x", ["batch", 1, n_in]), value_info("h0", state), value_info("c0", state)],
        [
            value_info("y", ["batch", 1, head_w.shape[1]]),
            value_info("hn", state),
            value_info("cn", state),
        ],
        b.inits,
    )
    return save(g, dst)


def lstm_op_graph(src: Path, folder: Path) -> tuple[Path, Path]:
    """The last layer's LSTM op alone at seq_len 1, and a Gemm of its [W R] weights alone."""
    from onnx import helper, numpy_helper

    layers, _, _ = lstm_weights(src)
    w, r, b = layers[-1]
    h, n_in = r.shape[1], w.shape[1]
    arrays = {"W": w[None], "R": r[None], "B": np.concatenate([b, np.zeros_like(b)])[None]}
    node = helper.make_node(
        "LSTM", ["X", "W", "R", "B", "", "h", "c"], ["Y", "hn", "cn"], hidden_size=h
    )
    g = helper.make_graph(
        [node],
        "lstm_op",
        [value_info("X", [1, 1, n_in]), value_info("h", [1, 1, h]), value_info("c", [1, 1, h])],
        [value_info("Y", [1, 1, 1, h]), value_info("hn", [1, 1, h]), value_info("cn", [1, 1, h])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in arrays.items()],
    )
    lstm = save(g, folder / "lstm_op.onnx", opset=17)
    wr = np.concatenate([w, r], 1).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("Gemm", ["a", "WR"], ["z"], transB=1)],
        "gemm",
        [value_info("a", [1, n_in + h])],
        [value_info("z", [1, 4 * h])],
        [numpy_helper.from_array(wr, "WR")],
    )
    return lstm, save(g, folder / "gemm_only.onnx")
