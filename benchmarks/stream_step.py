"""Per-step streaming latency: eager PyTorch vs raw ONNX Runtime vs rnnedge `stream.step`.

One run exports a 2-layer LSTM (hidden 128, 1 input feature), then times one-step chunks at
batch 1 (median and p90 of many `perf_counter_ns`-timed calls after warm-up) for:

* eager PyTorch (the same SequenceModel, state carried, under `torch.inference_mode`);
* raw `InferenceSession.run` with ONNX Runtime's default options, and with `STEP_SETTINGS`;
* rnnedge `stream.step`, and the `fast_step.StepSession` it is built on;
* the call floor: `run` on a one-Identity graph.

Candidates are timed in interleaved rounds so that drift in machine load hits them alike;
the calling thread's CPU time per call is recorded too (it ignores preemption, not a busy
sibling core). With `--ideas` (default) it also records what each idea in
`rnnedge/fast_step.py` was worth: session options, output allocation and call paths (IO
binding, OrtValues), the LSTM kernel's fixed cost at seq_len 1, a graph specialized for single
steps, and rnnedge's Python checks. Cold start (import, load, first step, peak RSS) is measured
in fresh subprocesses that never import torch.

    .venv/bin/python benchmarks/stream_step.py [--repeat 3000] [--json-out FILE] [--no-ideas]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HIDDEN, LAYERS, FEATURES, BATCH = 128, 2, 1, 1
RESULTS = Path(__file__).resolve().parent / "results"
ATTR_KEYS = ("enable_cpu_mem_arena", "enable_mem_pattern")  # SessionOptions attributes
Fn = Callable[[], Any]


# -- timing -----------------------------------------------------------------------------------
def measure(cands: dict[str, Fn], repeat: int, rounds: int = 30, warmup: int = 200) -> dict:
    """Interleaved rounds of timed calls per candidate; stats in µs.

    Besides the median and p90 over all calls, each round's median is kept (`round_us`), so
    two candidates can be compared round by round (`paired`), which cancels load drift.
    """
    wall: dict[str, list[int]] = {k: [] for k in cands}
    per_round: dict[str, list[float]] = {k: [] for k in cands}
    cpu: dict[str, list[float]] = {k: [] for k in cands}
    for f in cands.values():
        for _ in range(warmup):
            f()
    per = max(1, repeat // rounds)
    clock, tclock = time.perf_counter_ns, time.thread_time_ns
    for _ in range(rounds):
        for name, f in cands.items():
            block = []
            c0 = tclock()
            for _ in range(per):
                t0 = clock()
                f()
                block.append(clock() - t0)
            cpu[name].append((tclock() - c0) / per)
            wall[name].extend(block)
            block.sort()
            per_round[name].append(block[len(block) // 2] / 1e3)
            time.sleep(0.001)  # let spinning worker threads of the last session go idle
    out = {}
    for name in cands:
        w = sorted(wall[name])
        c = sorted(cpu[name])
        out[name] = {
            "median_us": round(w[len(w) // 2] / 1e3, 2),
            "p90_us": round(w[int(len(w) * 0.9)] / 1e3, 2),
            "p10_us": round(w[len(w) // 10] / 1e3, 2),
            "best_round_median_us": round(min(per_round[name]), 2),
            "cpu_us": round(c[len(c) // 2] / 1e3, 2),
            "n": len(w),
            "round_us": [round(v, 2) for v in per_round[name]],
        }
    return out


def paired(stats: dict, base: str, cand: str) -> float:
    """Median over rounds of base/cand round medians: a speedup robust to load drift."""
    pairs = zip(stats[base]["round_us"], stats[cand]["round_us"], strict=True)
    return round(float(np.median([b / c for b, c in pairs])), 2)


def show(title: str, stats: dict, base: str | None = None) -> None:
    print(f"\n{title}")
    ref = stats[base]["median_us"] if base else None
    for name, s in stats.items():
        rel = f"  {ref / s['median_us']:5.2f}x vs {base}" if ref else ""
        print(
            f"  {name:44s} median {s['median_us']:8.1f} µs  p90 {s['p90_us']:8.1f}  "
            f"cpu {s['cpu_us']:7.1f}{rel}"
        )


# -- models and graphs ------------------------------------------------------------------------
def export_model(folder: Path) -> tuple[Any, Path]:
    import torch

    import rnnedge
    from rnnedge.modeling.models import ModelConfig, SequenceModel

    torch.manual_seed(0)
    cfg = ModelConfig(cell="lstm", input_size=FEATURES, hidden_size=HIDDEN, num_layers=LAYERS)
    module = SequenceModel(cfg).eval()
    path = folder / "lstm.onnx"
    rnnedge.export(module, torch.randn(2, 16, FEATURES), path)
    return module, path


def _save(graph: Any, path: Path, opset: int = 18) -> Path:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def identity_graph(path: Path) -> Path:
    from onnx import TensorProto, helper

    vi = helper.make_tensor_value_info
    node = helper.make_node("Identity", ["a"], ["b"])
    g = helper.make_graph(
        [node],
        "floor",
        [vi("a", TensorProto.FLOAT, [1, 1, 1])],
        [vi("b", TensorProto.FLOAT, [1, 1, 1])],
    )
    return _save(g, path, opset=17)


def _lstm_weights(path: Path) -> tuple[list[tuple[np.ndarray, ...]], np.ndarray, np.ndarray]:
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


def step_graph(src: Path, dst: Path, fused: bool) -> Path:
    """The same LSTM as Gemm/Sigmoid/Tanh/Mul on [batch, H] tensors: valid for seq_len 1 only.

    `fused`: separate Gemms for the sigmoid gates and the cell candidate, so ORT fuses each
    with its activation (FusedGemm); otherwise one Gemm, a Split and the two activations.
    """
    from onnx import TensorProto, helper, numpy_helper

    layers, head_w, head_b = _lstm_weights(src)
    n_layers, hidden, n_in = len(layers), layers[0][1].shape[1], layers[0][0].shape[1]
    nodes, inits = [], []

    def const(name: str, arr: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def node(op: str, ins: list[str], outs: list[str], **attrs: Any) -> None:
        nodes.append(helper.make_node(op, ins, outs, **attrs))

    def ifoc(a: np.ndarray) -> np.ndarray:  # ONNX i, o, f, c → i, f, o | c
        i, o, f, c = np.split(a, 4, axis=0)
        return np.concatenate([i, f, o, c], 0).astype(np.float32)

    node("Reshape", ["x", const("x_shape", np.array([-1, n_in], np.int64))], ["x2"])
    state_shape = const("s_shape", np.array([-1, hidden], np.int64))
    for s in ("h", "c"):
        node("Reshape", [f"{s}0", state_shape], [f"{s}_2d"])
        node(
            "Split",
            [f"{s}_2d"],
            [f"{s}{i}_in" for i in range(n_layers)],
            axis=0,
            num_outputs=n_layers,
        )
    inp, three = "x2", 3 * hidden
    for i, (w, r, b) in enumerate(layers):
        wr, bias = np.concatenate([ifoc(w), ifoc(r)], 1), ifoc(b)
        node("Concat", [inp, f"h{i}_in"], [f"xh{i}"], axis=1)
        if fused:
            node(
                "Gemm",
                [f"xh{i}", const(f"wa{i}", wr[:three]), const(f"ba{i}", bias[:three])],
                [f"za{i}"],
                transB=1,
            )
            node("Sigmoid", [f"za{i}"], [f"sig{i}"])
            node(
                "Gemm",
                [f"xh{i}", const(f"wg{i}", wr[three:]), const(f"bg{i}", bias[three:])],
                [f"zg{i}"],
                transB=1,
            )
            node("Tanh", [f"zg{i}"], [f"g{i}"])
        else:
            node("Gemm", [f"xh{i}", const(f"w{i}", wr), const(f"b{i}", bias)], [f"z{i}"], transB=1)
            split = const(f"split{i}", np.array([three, hidden], np.int64))
            node("Split", [f"z{i}", split], [f"za{i}", f"zg{i}"], axis=1)
            node("Sigmoid", [f"za{i}"], [f"sig{i}"])
            node("Tanh", [f"zg{i}"], [f"g{i}"])
        node("Split", [f"sig{i}"], [f"i{i}", f"f{i}", f"o{i}"], axis=1, num_outputs=3)
        node("Mul", [f"f{i}", f"c{i}_in"], [f"fc{i}"])
        node("Mul", [f"i{i}", f"g{i}"], [f"ig{i}"])
        node("Add", [f"fc{i}", f"ig{i}"], [f"c{i}_out"])
        node("Tanh", [f"c{i}_out"], [f"tc{i}"])
        node("Mul", [f"o{i}", f"tc{i}"], [f"h{i}_out"])
        inp = f"h{i}_out"
    out_shape = const("o_shape", np.array([n_layers, -1, hidden], np.int64))
    for s, name in (("h", "hn"), ("c", "cn")):
        node("Concat", [f"{s}{i}_out" for i in range(n_layers)], [f"{s}_cat"], axis=0)
        node("Reshape", [f"{s}_cat", out_shape], [name])
    node("Gemm", [inp, const("head_w", head_w.astype(np.float32)), const("head_b", head_b)], ["y2"])
    node("Reshape", ["y2", const("y_shape", np.array([-1, 1, head_w.shape[1]], np.int64))], ["y"])

    def vi(name: str, shape: list[Any]) -> Any:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)

    state = [n_layers, "batch", hidden]
    g = helper.make_graph(
        nodes,
        "lstm_step",
        [vi("x", ["batch", 1, n_in]), vi("h0", state), vi("c0", state)],
        [vi("y", ["batch", 1, head_w.shape[1]]), vi("hn", state), vi("cn", state)],
        inits,
    )
    return _save(g, dst)


def lstm_op_graph(src: Path, dst: Path) -> tuple[Path, Path]:
    """The last layer's LSTM op alone at seq_len 1, and a Gemm of its [W R] weights alone."""
    from onnx import TensorProto, helper, numpy_helper

    layers, _, _ = _lstm_weights(src)
    w, r, b = layers[-1]
    h, n_in = r.shape[1], w.shape[1]

    def vi(name: str, shape: list[int]) -> Any:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)

    arrays = {"W": w[None], "R": r[None], "B": np.concatenate([b, np.zeros_like(b)])[None]}
    g = helper.make_graph(
        [
            helper.make_node(
                "LSTM", ["X", "W", "R", "B", "", "h", "c"], ["Y", "hn", "cn"], hidden_size=h
            )
        ],
        "lstm_op",
        [vi("X", [1, 1, n_in]), vi("h", [1, 1, h]), vi("c", [1, 1, h])],
        [vi("Y", [1, 1, 1, h]), vi("hn", [1, 1, h]), vi("cn", [1, 1, h])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in arrays.items()],
    )
    lstm = _save(g, dst.with_name("lstm_op.onnx"), opset=17)
    wr = np.concatenate([w, r], 1).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("Gemm", ["a", "WR"], ["z"], transB=1)],
        "gemm",
        [vi("a", [1, n_in + h])],
        [vi("z", [1, 4 * h])],
        [numpy_helper.from_array(wr, "WR")],
    )
    return lstm, _save(g, dst.with_name("gemm_only.onnx"))


# -- candidates -------------------------------------------------------------------------------
def session(path: Path, settings: dict | None = None, **attrs: Any) -> Any:
    """An InferenceSession: ORT defaults when `settings` is None, else rnnedge's settings dict."""
    import onnxruntime as ort

    from rnnedge.runtime.backends.ort import session_options

    if settings is None and not attrs:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    so = session_options(settings or {})
    for key in ATTR_KEYS:  # in case rnnedge's session_options does not know them yet
        if key in (settings or {}):
            setattr(so, key, bool(settings[key]))  # type: ignore[index]
    for k, v in attrs.items():
        setattr(so, k, v)
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def zero_feeds(sess: Any) -> dict[str, np.ndarray]:
    return {
        i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], np.float32)
        for i in sess.get_inputs()
    }


def raw_step(sess: Any) -> Fn:
    """`session.run` with the state fed back, as an app would write it by hand."""
    feeds = zero_feeds(sess)
    names = [o.name for o in sess.get_outputs()]
    run = sess.run

    def step() -> Any:
        y, feeds["h0"], feeds["c0"] = run(names, feeds)
        return y

    return step


def plain_run(sess: Any) -> Fn:
    feeds, names = zero_feeds(sess), [o.name for o in sess.get_outputs()]
    return lambda: sess.run(names, feeds)


def ortvalue_step(sess: Any) -> Fn:
    """State carried as OrtValues through `run_with_ort_values`: no numpy on the state."""
    import onnxruntime as ort

    value = ort.OrtValue.ortvalue_from_numpy
    feeds = {k: value(v) for k, v in zero_feeds(sess).items()}
    names = ["y", "hn", "cn"]

    def step() -> Any:
        y, feeds["h0"], feeds["c0"] = sess.run_with_ort_values(names, feeds)
        return y.numpy()

    return step


def rebind_step(sess: Any) -> Fn:
    """IO binding rebuilt every step: bind the input, the carried state and fresh outputs."""
    feeds = zero_feeds(sess)
    io = sess.io_binding()
    state = {"h0": feeds["h0"], "c0": feeds["c0"]}

    def step() -> Any:
        io.bind_cpu_input("x", feeds["x"])
        io.bind_cpu_input("h0", state["h0"])
        io.bind_cpu_input("c0", state["c0"])
        for name in ("y", "hn", "cn"):
            io.bind_output(name)
        sess.run_with_iobinding(io)
        y, state["h0"], state["c0"] = io.copy_outputs_to_cpu()
        return y

    return step


def pingpong_step(sess: Any, run_options: Any = None) -> Fn:
    """Two IOBindings over two state buffer sets, bound once; only the chunk is copied in."""
    import onnxruntime as ort

    value = ort.OrtValue.ortvalue_from_numpy
    feeds = zero_feeds(sess)
    xb, x = np.zeros_like(feeds["x"]), feeds["x"]
    yb = np.zeros((1, 1, 1), np.float32)
    h = [np.zeros_like(feeds["h0"]) for _ in range(2)]
    c = [np.zeros_like(feeds["c0"]) for _ in range(2)]
    binds = []
    for k in (0, 1):
        io = sess.io_binding()
        io.bind_ortvalue_input("x", value(xb))
        io.bind_ortvalue_input("h0", value(h[k]))
        io.bind_ortvalue_input("c0", value(c[k]))
        io.bind_ortvalue_output("y", value(yb))
        io.bind_ortvalue_output("hn", value(h[1 - k]))
        io.bind_ortvalue_output("cn", value(c[1 - k]))
        binds.append(io)
    cur = [0]
    args = [(io,) if run_options is None else (io, run_options) for io in binds]

    def step() -> Any:
        xb[...] = x
        k = cur[0]
        sess.run_with_iobinding(*args[k])
        cur[0] = 1 - k
        return yb.copy()

    return step


def core_step(model: Any, chunk: np.ndarray) -> Fn:
    """`fast_step.StepSession`: the fast input check plus the bound run, no Stream around it."""
    from rnnedge.runtime.inputs import check_sequence
    from rnnedge.runtime.step import StepSession

    core = StepSession(model.runner, model.spec, BATCH)
    core.run(check_sequence(chunk, model.spec, "chunk"))
    fast, run = core.fast_input, core.run

    def step() -> Any:
        x = fast(chunk)
        return run(x if x is not None else check_sequence(chunk, model.spec, "chunk"))

    return step


def eager_step(module: Any) -> Fn:
    import torch

    x = torch.zeros(BATCH, 1, FEATURES)
    state = [module.initial_state(x)]

    def step() -> Any:
        with torch.inference_mode():
            y, state[0] = module(x, state[0])
        return y

    return step


# -- cold start -------------------------------------------------------------------------------
COLD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import rnnedge
t1 = time.perf_counter()
import numpy as np, onnxruntime, rnnedge.runtime.model, rnnedge.runtime.stream
t2 = time.perf_counter()
settings = json.loads(sys.argv[2])
model = rnnedge.load(sys.argv[1], settings=settings)
t3 = time.perf_counter()
stream = model.stream(batch=1)
x = np.zeros((1, 1, 1), np.float32)
stream.step(x)
t4 = time.perf_counter()
stream.step(x)
t5 = time.perf_counter()
for _ in range(200):
    stream.step(x)
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "onnx"))
print(json.dumps({
    "import_rnnedge_ms": (t1 - t0) * 1e3,
    "import_runtime_stack_ms": (t2 - t1) * 1e3,
    "load_ms": (t3 - t2) * 1e3,
    "first_step_ms": (t4 - t3) * 1e3,
    "second_step_ms": (t5 - t4) * 1e3,
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "vm_hwm_mib": next((int(ln.split()[1]) / 1024 for ln in open("/proc/self/status")
                        if ln.startswith("VmHWM:")), None),
    "torch_or_onnx_imported": bad,
}))
"""


# Linux carries a parent's peak RSS into a child's ru_maxrss across fork + exec, and this
# process holds torch; a small launcher process in between keeps ru_maxrss the child's own.
LAUNCH = "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:]).returncode)"


def cold_start(path: Path, settings: dict, runs: int = 3) -> dict:
    """Import, load, first steps and peak memory in fresh processes (median over `runs`)."""
    samples = []
    for _ in range(runs):
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                LAUNCH,
                sys.executable,
                "-c",
                COLD,
                str(path),
                json.dumps(settings),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        samples.append(json.loads(out.stdout.strip().splitlines()[-1]))
    result: dict[str, Any] = {"runs": runs, "statistic": "median over runs"}
    for key in samples[0]:
        if key == "torch_or_onnx_imported":
            result[key] = sorted({m for s in samples for m in s[key]})
        else:
            result[key] = round(float(np.median([s[key] for s in samples])), 2)
    return result


# -- machine ----------------------------------------------------------------------------------
def machine() -> dict:
    from rnnedge.tools.bench import cpu_model

    return {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def versions() -> dict:
    import onnx
    import onnxruntime
    import torch

    import rnnedge

    return {
        "rnnedge": rnnedge.__version__,
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "onnx": onnx.__version__,
    }


def host_tag() -> str:
    name = socket.gethostname().split(".")[0].lower()
    return re.sub(r"[^a-z0-9-]+", "-", name).strip("-")[:24] or "host"


# -- main -------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3000, help="timed calls per candidate")
    ap.add_argument(
        "--rounds", type=int, default=30, help="interleaved rounds the calls are split over"
    )
    ap.add_argument(
        "--json-out",
        type=Path,
        default=None,
        help="results file (default: benchmarks/results/<date>-<host>-stream-step.json)",
    )
    ap.add_argument("--no-ideas", action="store_true", help="skip the per-idea measurements")
    args = ap.parse_args(argv)
    started = time.perf_counter()

    import torch

    import rnnedge
    from rnnedge.runtime.backends.ort import session_options
    from rnnedge.runtime.step import STEP_SETTINGS, StepSession
    from rnnedge.runtime.stream import Stream

    info = {"machine": machine(), "versions": versions()}
    chunk = np.zeros((BATCH, 1, FEATURES), np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        module, path = export_model(folder)
        floor_path = identity_graph(folder / "identity.onnx")
        results: dict[str, Any] = {}

        # 1. eager PyTorch, in its own phase: its OpenMP threads must not spin during ORT's
        torch_threads = torch.get_num_threads()
        eager = {f"eager torch ({torch_threads} threads, default)": eager_step(module)}
        eager_stats = measure(eager, max(300, args.repeat // 3), args.rounds)
        torch.set_num_threads(1)
        eager_stats.update(
            measure(
                {"eager torch (1 thread)": eager_step(module)},
                max(300, args.repeat // 3),
                args.rounds,
            )
        )
        torch.set_num_threads(torch_threads)
        show("eager PyTorch, one step", eager_stats)
        time.sleep(0.3)

        # 2. the headline comparison
        model_step = rnnedge.load(path, settings=STEP_SETTINGS)
        model_default = rnnedge.load(path)
        stream_step, stream_default = (
            model_step.stream(batch=BATCH),
            model_default.stream(batch=BATCH),
        )
        raw_default_sess, raw_step_sess = session(path), session(path, STEP_SETTINGS)
        floor_sess = session(floor_path)
        floor_feeds = {"a": np.zeros((1, 1, 1), np.float32)}
        main_cands = {
            "raw session.run, ORT default options": raw_step(raw_default_sess),
            "raw session.run, STEP_SETTINGS": raw_step(raw_step_sess),
            "rnnedge stream.step, STEP_SETTINGS": lambda: stream_step.step(chunk),
            "rnnedge stream.step, ORT default options": lambda: stream_default.step(chunk),
            "fast_step.StepSession, STEP_SETTINGS": core_step(model_step, chunk),
            "call floor: one-Identity graph, default": lambda: floor_sess.run(["b"], floor_feeds),
        }
        stats = measure(main_cands, args.repeat, args.rounds)
        show(
            "one step, batch 1 (interleaved rounds)", stats, "raw session.run, ORT default options"
        )
        results["latency"] = {**eager_stats, **stats}
        uses_fast = isinstance(getattr(stream_step, "_core", None), StepSession)
        so = session_options(STEP_SETTINGS)
        honored = all(getattr(so, k) == STEP_SETTINGS[k] for k in ATTR_KEYS if k in STEP_SETTINGS)

        eager_key = next(iter(eager_stats))
        eager_us = eager_stats[eager_key]["median_us"]
        eager_1t = eager_stats["eager torch (1 thread)"]["median_us"]
        eager_best = eager_stats[eager_key]["best_round_median_us"]
        raw_key = "raw session.run, ORT default options"
        raw_us = stats[raw_key]["median_us"]
        raw_best = stats[raw_key]["best_round_median_us"]
        ratios = {}
        for name in (
            "rnnedge stream.step, STEP_SETTINGS",
            "fast_step.StepSession, STEP_SETTINGS",
            "raw session.run, STEP_SETTINGS",
        ):
            us = stats[name]["median_us"]
            best = stats[name]["best_round_median_us"]
            ratios[name] = {
                "speedup_vs_raw_ort_default": round(raw_us / us, 2),
                "paired_speedup_vs_raw_ort_default": paired(stats, raw_key, name),
                "best_round_speedup_vs_raw_ort_default": round(raw_best / best, 2),
                "speedup_vs_eager": round(eager_us / us, 2),
                "best_round_speedup_vs_eager": round(eager_best / best, 2),
                "speedup_vs_eager_1_thread": round(eager_1t / us, 2),
            }
        main = ratios["rnnedge stream.step, STEP_SETTINGS"]
        targets = {
            "stream_step_vs_raw_ort_default": {
                "want": 1.3,
                "got": main["speedup_vs_raw_ort_default"],
                "paired": main["paired_speedup_vs_raw_ort_default"],
            },
            "stream_step_vs_eager": {
                "want": 8.0,
                "got": main["speedup_vs_eager"],
                "best_round": main["best_round_speedup_vs_eager"],
            },
        }
        for t in targets.values():
            t["met"] = t["got"] >= t["want"]
        results["ratios"] = ratios
        results["targets"] = targets
        print("\nspeedups, same run (median/median; round-paired; best-round medians):")
        for name, r in ratios.items():
            print(
                f"  {name:38s} vs raw ORT default {r['speedup_vs_raw_ort_default']:4.2f}x; "
                f"{r['paired_speedup_vs_raw_ort_default']:4.2f}x; "
                f"{r['best_round_speedup_vs_raw_ort_default']:4.2f}x   vs eager "
                f"{r['speedup_vs_eager']:5.2f}x; best-round "
                f"{r['best_round_speedup_vs_eager']:5.2f}x "
                f"(1-thread eager {r['speedup_vs_eager_1_thread']:.2f}x)"
            )
        for name, t in targets.items():
            other = {k: v for k, v in t.items() if k not in ("want", "got", "met")}
            print(
                f"  target {name}: want ≥ {t['want']}x, got {t['got']}x ({other}): "
                f"{'met' if t['met'] else 'NOT met'}"
            )
        print(f"  stream.step uses fast_step.StepSession: {uses_fast}")
        print(f"  rnnedge.load honors every key of STEP_SETTINGS: {honored}")

        # 3. what each idea was worth
        if not args.no_ideas:
            results["ideas"] = ideas(path, folder, model_step, module, chunk, args)
        model_step.close()
        model_default.close()

        # 4. cold start in fresh processes that never import torch
        cold = {
            "STEP_SETTINGS": cold_start(path, STEP_SETTINGS),
            "ORT default options": cold_start(path, {}),
        }
        print("\ncold start (subprocess, no torch):")
        for name, c in cold.items():
            print(
                f"  {name:22s} import rnnedge {c['import_rnnedge_ms']:.1f} ms, + runtime stack "
                f"{c['import_runtime_stack_ms']:.0f} ms, load {c['load_ms']:.1f} ms, first step "
                f"{c['first_step_ms']:.2f} ms, second {c['second_step_ms']:.3f} ms, peak RSS "
                f"{c['peak_rss_mib']:.0f} MiB, torch/onnx imported: "
                f"{c['torch_or_onnx_imported'] or 'no'}"
            )
        results["cold_start"] = cold
        file_bytes = path.stat().st_size

    info["machine"]["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    report = {
        "benchmark": "stream_step",
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        **info,
        "model": {
            "cell": "lstm",
            "num_layers": LAYERS,
            "hidden_size": HIDDEN,
            "input_size": FEATURES,
            "batch": BATCH,
            "chunk_shape": list(chunk.shape),
            "exporter": "torchscript (rnnedge.export default)",
            "onnx_file_bytes": file_bytes,
        },
        "settings": {
            "STEP_SETTINGS": STEP_SETTINGS,
            "ORT default options": "onnxruntime.SessionOptions() untouched",
            "torch_threads_default": torch_threads,
        },
        "method": {
            "repeat": args.repeat,
            "rounds": args.rounds,
            "warmup_calls": 200,
            "clock": "time.perf_counter_ns around each call; cpu_us: the calling thread's "
            "CPU time per call (median over rounds)",
            "interleaved": "candidates of a table alternate in rounds of repeat/rounds calls",
        },
        "stream_uses_fast_step": uses_fast,
        "load_honors_all_step_settings": honored,
        "stream_module": sys.modules[Stream.__module__].__file__,
        **results,
        "seconds": round(time.perf_counter() - started, 1),
    }
    out = args.json_out or RESULTS / f"{dt.date.today().isoformat()}-{host_tag()}-stream-step.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out} in {report['seconds']} s")
    return 0


def ideas(
    path: Path, folder: Path, model: Any, module: Any, chunk: np.ndarray, args: argparse.Namespace
) -> dict:
    from rnnedge.runtime.inputs import check_sequence
    from rnnedge.runtime.step import STEP_SETTINGS

    out: dict[str, Any] = {}
    t1 = {"intra_op_num_threads": 1}

    # session options, raw session.run
    variants: dict[str, tuple[dict | None, dict]] = {
        "ORT defaults": (None, {}),
        "intra_op_num_threads=1": (t1, {}),
        "threads=1, allow_spinning=0": (
            {**t1, "config": {"session.intra_op.allow_spinning": "0"}},
            {},
        ),
        "threads=2, allow_spinning=0": (
            {"intra_op_num_threads": 2, "config": {"session.intra_op.allow_spinning": "0"}},
            {},
        ),
        "threads=2, allow_spinning=1": (
            {"intra_op_num_threads": 2, "config": {"session.intra_op.allow_spinning": "1"}},
            {},
        ),
        "threads=1, optimization disable": ({**t1, "graph_optimization_level": "disable"}, {}),
        "threads=1, optimization basic": ({**t1, "graph_optimization_level": "basic"}, {}),
        "threads=1, optimization extended": ({**t1, "graph_optimization_level": "extended"}, {}),
        "threads=1, optimization all": ({**t1, "graph_optimization_level": "all"}, {}),
        "threads=1, execution_mode parallel": ({**t1, "execution_mode": "parallel"}, {}),
        "threads=1, no CPU memory arena": (t1, {"enable_cpu_mem_arena": False}),
        "threads=1, no memory pattern": (t1, {"enable_mem_pattern": False}),
        "STEP_SETTINGS": (STEP_SETTINGS, {}),
    }
    sessions = {k: session(path, s, **a) for k, (s, a) in variants.items()}
    stats = measure({k: raw_step(s) for k, s in sessions.items()}, args.repeat // 2, args.rounds)
    show("idea: session options (raw session.run)", stats, "ORT defaults")
    out["session_options"] = stats
    del sessions

    # output allocation and call paths, all under STEP_SETTINGS
    sess = session(path, STEP_SETTINGS)
    import onnxruntime as ort

    floor = session(folder / "identity.onnx", STEP_SETTINGS)
    floor_x, floor_y = np.zeros((1, 1, 1), np.float32), np.zeros((1, 1, 1), np.float32)
    floor_io = floor.io_binding()
    floor_io.bind_ortvalue_input("a", ort.OrtValue.ortvalue_from_numpy(floor_x))
    floor_io.bind_ortvalue_output("b", ort.OrtValue.ortvalue_from_numpy(floor_y))
    no_sync = ort.RunOptions()
    no_sync.add_run_config_entry("disable_synchronize_execution_providers", "1")
    c_run, c_io = floor._sess.run_with_iobinding, floor_io._iobinding  # what StepSession calls
    paths = {
        "session.run (ORT allocates outputs, numpy in/out)": raw_step(sess),
        "run_with_ort_values, state kept as OrtValues": ortvalue_step(sess),
        "IO binding rebound every step": rebind_step(sess),
        "IO binding ping-pong, bound once (no checks)": pingpong_step(sess),
        "IO binding ping-pong + RunOptions() (public API)": pingpong_step(sess, ort.RunOptions()),
        "fast_step.StepSession (checks + ping-pong)": core_step(model, chunk),
        "floor: Identity, session.run": lambda: floor.run(["b"], {"a": floor_x}),
        "floor: Identity, run_with_iobinding(io)": lambda: floor.run_with_iobinding(floor_io),
        "floor: Identity, C++ run_with_iobinding, no EP sync": lambda: c_run(c_io, no_sync),
    }
    stats = measure(paths, args.repeat // 2, args.rounds)
    show(
        "idea: output allocation and call path (STEP_SETTINGS)",
        stats,
        "session.run (ORT allocates outputs, numpy in/out)",
    )
    out["call_paths"] = stats
    del sess, paths

    # the LSTM kernel's fixed cost, and a graph specialized for single steps
    lstm_op, gemm_only = lstm_op_graph(path, folder / "x.onnx")
    fused = step_graph(path, folder / "step_fused.onnx", fused=True)
    split = step_graph(path, folder / "step_split.onnx", fused=False)
    graph_files = {
        "exported graph (2 LSTM ops)": path,
        "step graph, Gemm+Split+Sigmoid/Tanh per layer": split,
        "step graph, 2 FusedGemm per layer": fused,
    }
    graphs = {k: session(p, STEP_SETTINGS) for k, p in graph_files.items()}
    probe = {
        "x": np.random.default_rng(0).standard_normal((3, 1, 1)).astype(np.float32),
        "h0": np.random.default_rng(1).standard_normal((LAYERS, 3, HIDDEN)).astype(np.float32),
        "c0": np.random.default_rng(2).standard_normal((LAYERS, 3, HIDDEN)).astype(np.float32),
    }
    ref = graphs["exported graph (2 LSTM ops)"].run(None, probe)
    max_diff = {
        k: float(max(np.abs(a - b).max() for a, b in zip(ref, s.run(None, probe), strict=True)))
        for k, s in graphs.items()
    }
    cands = {f"{k}: session.run": raw_step(s) for k, s in graphs.items()}
    cands.update({f"{k}: IO binding ping-pong": pingpong_step(s) for k, s in graphs.items()})
    op_sess, gemm_sess = session(lstm_op, STEP_SETTINGS), session(gemm_only, STEP_SETTINGS)
    cands["one LSTM op alone (layer 2, seq_len 1)"] = plain_run(op_sess)
    cands["one Gemm alone, same weights [1,256]x[256,512]"] = plain_run(gemm_sess)
    stats = measure(cands, args.repeat // 2, args.rounds)
    show(
        "idea: LSTM kernel cost and a single-step graph (STEP_SETTINGS)",
        stats,
        "exported graph (2 LSTM ops): session.run",
    )
    out["graphs"] = {
        "latency": stats,
        "max_abs_diff_vs_exported": max_diff,
        "nodes_after_ort_optimization": _node_counts(graph_files),
    }
    del graphs, op_sess, gemm_sess

    # rnnedge's Python work per step
    spec = model.spec
    from rnnedge.modeling.data import Normalizer
    from rnnedge.runtime.step import FastNormalizer, StepSession

    core = StepSession(model.runner, spec, BATCH)
    core.run(check_sequence(chunk, spec, "chunk"))
    norm = Normalizer(np.array([0.5]), np.array([2.0]), (0,))
    fast_norm = FastNormalizer(norm)
    state = {
        "h0": np.zeros((LAYERS, 1, HIDDEN), np.float32),
        "c0": np.zeros((LAYERS, 1, HIDDEN), np.float32),
    }
    py = {
        "validate.check_sequence (full checks)": lambda: check_sequence(chunk, spec, "chunk"),
        "StepSession.fast_input (shape + finiteness)": lambda: core.fast_input(chunk),
        "np.isfinite(x).all()": lambda: np.isfinite(chunk).all(),
        "feed dict {x, **state, **extra}": lambda: {spec.data_input: chunk, **state},
        "runner.infer wrapper minus session.run": _infer_overhead(model, chunk),
        "Normalizer.transform + inverse_targets (+ astype)": lambda: norm.inverse_targets(
            norm.transform(chunk).astype(chunk.dtype, copy=False)
        ).astype(chunk.dtype, copy=False),
        "FastNormalizer.transform + inverse_targets": lambda: fast_norm.inverse_targets(
            fast_norm.transform(chunk)
        ),
    }
    stats = measure(py, args.repeat, args.rounds)
    show("idea: Python work around the run", stats)
    out["python_overhead"] = stats
    return out


def _infer_overhead(model: Any, chunk: np.ndarray) -> Fn:
    """`runner.infer`'s own work (checks, dict copies, zip) with a run that returns at once."""
    from rnnedge.runtime.backends.ort import OrtCpuRunner

    runner = OrtCpuRunner(model.path, session=model.runner.session).activate()
    state = np.zeros((LAYERS, 1, HIDDEN), np.float32)
    outs = [np.zeros((1, 1, 1), np.float32), state, state.copy()]
    runner.session = type("InstantSession", (), {"run": lambda self, names, feeds: outs})()
    feeds = {"x": chunk, "h0": state, "c0": state}
    return lambda: runner.infer(feeds)


def _node_counts(files: dict[str, Path]) -> dict[str, int]:
    """Nodes left after ORT's optimizations, from an optimized copy written to a temp file."""
    import onnx
    import onnxruntime as ort

    counts = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, file in files.items():
            so = ort.SessionOptions()
            so.log_severity_level = 4
            so.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
            ort.InferenceSession(str(file), so, providers=["CPUExecutionProvider"])
            counts[name] = len(onnx.load(so.optimized_model_filepath).graph.node)
    return counts


if __name__ == "__main__":
    sys.exit(main())
