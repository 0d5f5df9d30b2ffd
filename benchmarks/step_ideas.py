"""What each idea tried on the step path was worth: the evidence behind `rnnedge/runtime/step.py`.

`stream_step.py` measures the product against its alternatives; this measures the parts, on
the same 2-layer LSTM (hidden 128, batch 1, one step) and with the same interleaved timing
(`common.measure`), so each alternative is judged against the path it would replace in the
same rounds. Four experiments, each its own table and its own key under `ideas`:

* `session_options`: raw `session.run` under ORT's defaults and under each session option
  (threads, spinning, optimization level, execution mode, memory arena and patterns) and
  under `STEP_SETTINGS`;
* `call_paths` (all under `STEP_SETTINGS`): who allocates the outputs and which call runs the
  graph: `session.run`, `run_with_ort_values`, IO binding rebound every step, two IO bindings
  bound once that ping-pong between state buffers (with and without a `RunOptions`), the
  `StepSession` built on them, and the same calls on a one-Identity graph (the floors);
* `graphs`: the exported graph against two graphs written for single steps
  (`step_graphs.step_graph`), checked to give the same numbers, with node counts after ORT's
  optimizations; one LSTM op alone and one Gemm of the same weights alone;
* `python_overhead`: rnnedge's checks and normalization per step, against the numpy they
  replace.

    .venv/bin/python benchmarks/step_ideas.py [--repeat 3000] [--rounds 30] [--json-out FILE]
        [--only session_options,call_paths,graphs,python_overhead]
    .venv/bin/python benchmarks/step_ideas.py --quick      # a few seconds; writes no file

Results go to `benchmarks/results/<date>-<host>-step-ideas.json`: `benchmark`, `date`,
`machine`, `versions`, `model`, `settings`, `method`, then `ideas` with one table per
experiment in the format `stream_step.py`'s `latency` uses. Until 2026-11-27 these tables
were the `ideas` key of the stream-step file; since then "fast_step.StepSession (checks +
ping-pong)" reads "StepSession (checks + ping-pong)" and "validate.check_sequence (full
checks)" reads "check_sequence (full checks)", after the modules that hold them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import common
import numpy as np
from common import BATCH, FEATURES, LAYERS, Fn
from step_graphs import identity_graph, lstm_op_graph, step_graph

EXPERIMENTS = ("session_options", "call_paths", "graphs", "python_overhead")
THREADS_1 = {"intra_op_num_threads": 1}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3000, help="timed calls per candidate")
    ap.add_argument("--rounds", type=int, default=30, help="interleaved rounds")
    ap.add_argument("--only", default=",".join(EXPERIMENTS), help="experiments to run")
    ap.add_argument("--json-out", type=Path, default=None, help="results file")
    ap.add_argument("--quick", action="store_true", help="300 calls in 3 rounds; no file")
    args = ap.parse_args(argv)
    args.only = [e for e in args.only.split(",") if e]
    unknown = sorted(set(args.only) - set(EXPERIMENTS))
    if unknown:
        ap.error(f"--only {','.join(unknown)}: unknown; expected some of {','.join(EXPERIMENTS)}")
    if args.quick:
        args.repeat, args.rounds = 300, 3
    return args


# -- step functions that only the experiments use ---------------------------------------------
def ortvalue_step(sess: Any) -> Fn:
    """State carried as OrtValues through `run_with_ort_values`: no numpy on the state."""
    import onnxruntime as ort

    value = ort.OrtValue.ortvalue_from_numpy
    feeds = {k: value(v) for k, v in common.zero_feeds(sess).items()}
    names = ["y", "hn", "cn"]

    def step() -> Any:
        y, feeds["h0"], feeds["c0"] = sess.run_with_ort_values(names, feeds)
        return y.numpy()

    return step


def rebind_step(sess: Any) -> Fn:
    """IO binding rebuilt every step: bind the input, the carried state and fresh outputs."""
    feeds = common.zero_feeds(sess)
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
    feeds = common.zero_feeds(sess)
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
        binds.append((io,) if run_options is None else (io, run_options))
    cur = [0]

    def step() -> Any:
        xb[...] = x
        k = cur[0]
        sess.run_with_iobinding(*binds[k])
        cur[0] = 1 - k
        return yb.copy()

    return step


def plain_run(sess: Any) -> Fn:
    """`session.run` on zeros, nothing carried: for graphs that are not the whole model."""
    feeds, names = common.zero_feeds(sess), [o.name for o in sess.get_outputs()]
    return lambda: sess.run(names, feeds)


# -- the experiments --------------------------------------------------------------------------
def session_option_variants() -> dict[str, tuple[dict | None, dict]]:
    """Label → (rnnedge settings dict, SessionOptions attributes set directly)."""
    from rnnedge.runtime.step import STEP_SETTINGS

    def spin(threads: int, on: int) -> dict:
        return {
            "intra_op_num_threads": threads,
            "config": {"session.intra_op.allow_spinning": str(on)},
        }

    variants: dict[str, tuple[dict | None, dict]] = {
        "ORT defaults": (None, {}),
        "intra_op_num_threads=1": (THREADS_1, {}),
        "threads=1, allow_spinning=0": (spin(1, 0), {}),
        "threads=2, allow_spinning=0": (spin(2, 0), {}),
        "threads=2, allow_spinning=1": (spin(2, 1), {}),
    }
    for level in ("disable", "basic", "extended", "all"):
        variants[f"threads=1, optimization {level}"] = (
            {**THREADS_1, "graph_optimization_level": level},
            {},
        )
    variants["threads=1, execution_mode parallel"] = (
        {**THREADS_1, "execution_mode": "parallel"},
        {},
    )
    variants["threads=1, no CPU memory arena"] = (THREADS_1, {"enable_cpu_mem_arena": False})
    variants["threads=1, no memory pattern"] = (THREADS_1, {"enable_mem_pattern": False})
    variants["STEP_SETTINGS"] = (STEP_SETTINGS, {})
    return variants


def session_options(ctx: dict, args: argparse.Namespace) -> dict:
    path = ctx["path"]
    sessions = {k: common.session(path, s, **a) for k, (s, a) in session_option_variants().items()}
    cands = {k: common.raw_step(s) for k, s in sessions.items()}
    stats = common.measure(cands, args.repeat // 2, args.rounds)
    common.show("idea: session options (raw session.run)", stats, "ORT defaults")
    return stats


def _floor_calls(floor_path: Path) -> dict[str, Fn]:
    """The one-Identity graph through `run`, the public IO-binding call and the C++ one."""
    import onnxruntime as ort

    from rnnedge.runtime.step import STEP_SETTINGS

    floor = common.session(floor_path, STEP_SETTINGS)
    x, y = np.zeros((1, 1, 1), np.float32), np.zeros((1, 1, 1), np.float32)
    io = floor.io_binding()
    io.bind_ortvalue_input("a", ort.OrtValue.ortvalue_from_numpy(x))
    io.bind_ortvalue_output("b", ort.OrtValue.ortvalue_from_numpy(y))
    no_sync = ort.RunOptions()
    no_sync.add_run_config_entry("disable_synchronize_execution_providers", "1")
    c_run, c_io = floor._sess.run_with_iobinding, io._iobinding  # what StepSession calls
    return {
        "floor: Identity, session.run": lambda: floor.run(["b"], {"a": x}),
        "floor: Identity, run_with_iobinding(io)": lambda: floor.run_with_iobinding(io),
        "floor: Identity, C++ run_with_iobinding, no EP sync": lambda: c_run(c_io, no_sync),
    }


def call_paths(ctx: dict, args: argparse.Namespace) -> dict:
    import onnxruntime as ort

    from rnnedge.runtime.step import STEP_SETTINGS

    sess = common.session(ctx["path"], STEP_SETTINGS)
    base = "session.run (ORT allocates outputs, numpy in/out)"
    cands = {
        base: common.raw_step(sess),
        "run_with_ort_values, state kept as OrtValues": ortvalue_step(sess),
        "IO binding rebound every step": rebind_step(sess),
        "IO binding ping-pong, bound once (no checks)": pingpong_step(sess),
        "IO binding ping-pong + RunOptions() (public API)": pingpong_step(sess, ort.RunOptions()),
        "StepSession (checks + ping-pong)": common.core_step(ctx["model"], ctx["chunk"]),
        **_floor_calls(ctx["floor"]),
    }
    stats = common.measure(cands, args.repeat // 2, args.rounds)
    common.show("idea: output allocation and call path (STEP_SETTINGS)", stats, base)
    return stats


def _max_diff(sessions: dict[str, Any], ref_key: str) -> dict[str, float]:
    """Each graph's largest difference from the exported one, on random input and state."""
    rng = np.random.default_rng(0)
    probe = {
        "x": rng.standard_normal((3, 1, FEATURES)).astype(np.float32),
        "h0": rng.standard_normal((LAYERS, 3, common.HIDDEN)).astype(np.float32),
        "c0": rng.standard_normal((LAYERS, 3, common.HIDDEN)).astype(np.float32),
    }
    ref = sessions[ref_key].run(None, probe)
    return {
        k: float(max(np.abs(a - b).max() for a, b in zip(ref, s.run(None, probe), strict=True)))
        for k, s in sessions.items()
    }


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


def graphs(ctx: dict, args: argparse.Namespace) -> dict:
    from rnnedge.runtime.step import STEP_SETTINGS

    path, folder = ctx["path"], ctx["folder"]
    exported = "exported graph (2 LSTM ops)"
    files = {
        exported: path,
        "step graph, Gemm+Split+Sigmoid/Tanh per layer": step_graph(
            path, folder / "step_split.onnx", fused=False
        ),
        "step graph, 2 FusedGemm per layer": step_graph(
            path, folder / "step_fused.onnx", fused=True
        ),
    }
    sessions = {k: common.session(p, STEP_SETTINGS) for k, p in files.items()}
    cands = {f"{k}: session.run": common.raw_step(s) for k, s in sessions.items()}
    cands.update({f"{k}: IO binding ping-pong": pingpong_step(s) for k, s in sessions.items()})
    lstm_op, gemm_only = lstm_op_graph(path, folder)
    cands["one LSTM op alone (layer 2, seq_len 1)"] = plain_run(
        common.session(lstm_op, STEP_SETTINGS)
    )
    cands["one Gemm alone, same weights [1,256]x[256,512]"] = plain_run(
        common.session(gemm_only, STEP_SETTINGS)
    )
    stats = common.measure(cands, args.repeat // 2, args.rounds)
    title = "idea: LSTM kernel cost and a single-step graph (STEP_SETTINGS)"
    common.show(title, stats, f"{exported}: session.run")
    return {
        "latency": stats,
        "max_abs_diff_vs_exported": _max_diff(sessions, exported),
        "nodes_after_ort_optimization": _node_counts(files),
    }


def _infer_overhead(model: Any, chunk: np.ndarray) -> Fn:
    """`runner.infer`'s own work (checks, dict copies, zip) around a run that returns at once.

    The runner's session is swapped for one whose `run` hands back ready outputs, so what is
    timed is rnnedge's wrapper alone.
    """
    from rnnedge.runtime.backends.ort import OrtCpuRunner

    runner = OrtCpuRunner(model.path, session=model.runner.session).activate()
    state = np.zeros((LAYERS, 1, common.HIDDEN), np.float32)
    outs = [np.zeros((1, 1, 1), np.float32), state, state.copy()]
    runner.session = type("InstantSession", (), {"run": lambda self, names, feeds: outs})()
    feeds = {"x": chunk, "h0": state, "c0": state}
    return lambda: runner.infer(feeds)


def _normalize_calls(chunk: np.ndarray) -> dict[str, Fn]:
    from rnnedge.runtime.normalize import Normalizer
    from rnnedge.runtime.step import FastNormalizer

    norm = Normalizer(np.array([0.5]), np.array([2.0]), (0,))
    fast = FastNormalizer(norm)
    dtype = chunk.dtype

    def numpy_way() -> Any:
        x = norm.transform(chunk).astype(dtype, copy=False)
        return norm.inverse_targets(x).astype(dtype, copy=False)

    return {
        "Normalizer.transform + inverse_targets (+ astype)": numpy_way,
        "FastNormalizer.transform + inverse_targets": lambda: fast.inverse_targets(
            fast.transform(chunk)
        ),
    }


def python_overhead(ctx: dict, args: argparse.Namespace) -> dict:
    from rnnedge.runtime.inputs import check_sequence
    from rnnedge.runtime.step import StepSession

    model, chunk = ctx["model"], ctx["chunk"]
    spec = model.spec
    core = StepSession(model.runner, spec, BATCH)
    core.run(check_sequence(chunk, spec, "chunk"))
    state = {
        "h0": np.zeros((LAYERS, 1, common.HIDDEN), np.float32),
        "c0": np.zeros((LAYERS, 1, common.HIDDEN), np.float32),
    }
    cands = {
        "check_sequence (full checks)": lambda: check_sequence(chunk, spec, "chunk"),
        "StepSession.fast_input (shape + finiteness)": lambda: core.fast_input(chunk),
        "np.isfinite(x).all()": lambda: np.isfinite(chunk).all(),
        "feed dict {x, **state, **extra}": lambda: {spec.data_input: chunk, **state},
        "runner.infer wrapper minus session.run": _infer_overhead(model, chunk),
        **_normalize_calls(chunk),
    }
    stats = common.measure(cands, args.repeat, args.rounds)
    common.show("idea: Python work around the run", stats)
    return stats


RUNS: dict[str, Callable[[dict, argparse.Namespace], dict]] = {
    "session_options": session_options,
    "call_paths": call_paths,
    "graphs": graphs,
    "python_overhead": python_overhead,
}


# -- the run ----------------------------------------------------------------------------------
def run(args: argparse.Namespace, folder: Path) -> tuple[dict, dict]:
    """Export once, then each chosen experiment; returns the model's description and results."""
    import rnnedge
    from rnnedge.runtime.step import STEP_SETTINGS

    _, path = common.export_model(folder)
    chunk = np.zeros((BATCH, 1, FEATURES), np.float32)
    model = rnnedge.load(path, settings=STEP_SETTINGS)
    ctx = {
        "path": path,
        "folder": folder,
        "floor": identity_graph(folder / "identity.onnx"),
        "model": model,
        "chunk": chunk,
    }
    try:
        ideas = {name: RUNS[name](ctx, args) for name in EXPERIMENTS if name in args.only}
    finally:
        model.close()
    return common.model_info(path, chunk), ideas


def main(argv: list[str] | None = None) -> int:
    from rnnedge.runtime.step import STEP_SETTINGS

    args = parse_args(argv)
    started = time.perf_counter()
    common.warn_if_busy()
    report: dict[str, Any] = {
        "benchmark": "step_ideas",
        "date": common.now(),
        "machine": common.machine(),
        "versions": common.versions(),
    }
    with tempfile.TemporaryDirectory(prefix="rnnedge-step-ideas-") as tmp:
        report["model"], ideas = run(args, Path(tmp))
    report["machine"]["loadavg_end"] = common.loadavg()
    report["settings"] = {"STEP_SETTINGS": STEP_SETTINGS}
    report["method"] = {**common.method(args.repeat, args.rounds), "quick": args.quick}
    report["method"]["calls"] = "repeat/2 per candidate, python_overhead: repeat"
    report["ideas"] = ideas
    report["seconds"] = round(time.perf_counter() - started, 1)
    out = args.json_out or (None if args.quick else common.default_out("step-ideas"))
    if out is not None:
        common.write_json(out, report)
        print(f"\nwrote {out} in {report['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
