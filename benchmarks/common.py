"""What the step benchmarks share: interleaved timing, the model they time, and result files.

`stream_step.py` (rnnedge against raw ONNX Runtime and eager PyTorch) and `step_ideas.py`
(what each idea on the step path was worth) time the same 2-layer LSTM the same way, so that
their figures can be read side by side. `ray_throughput.py` takes the machine description and
the result-file helpers from here too.

Timing interleaves candidates in rounds: drift in machine load then hits every candidate alike,
and two candidates can be compared round by round (`paired`). Every candidate is a
zero-argument callable doing one step.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HIDDEN, LAYERS, FEATURES, BATCH = 128, 2, 1, 1
RESULTS = Path(__file__).resolve().parent / "results"
WARMUP = 200
#: a 1-minute load average above this share of the cores means another job is running
BUSY_LOAD_PER_CORE = 0.25
Fn = Callable[[], Any]


# -- timing -----------------------------------------------------------------------------------
def measure(cands: dict[str, Fn], repeat: int, rounds: int = 30, warmup: int = WARMUP) -> dict:
    """Interleaved rounds of timed calls per candidate; stats in µs.

    Besides the median and p90 over all calls, each round's median is kept (`round_us`), so
    two candidates can be compared round by round (`paired`), which cancels load drift. The
    calling thread's CPU time per call (`cpu_us`) ignores preemption, not a busy sibling core.
    """
    for f in cands.values():
        for _ in range(warmup):
            f()
    wall: dict[str, list[int]] = {k: [] for k in cands}
    per_round: dict[str, list[float]] = {k: [] for k in cands}
    cpu: dict[str, list[float]] = {k: [] for k in cands}
    per = max(1, repeat // rounds)
    for _ in range(rounds):
        for name, f in cands.items():
            block, cpu_ns = _timed_block(f, per)
            cpu[name].append(cpu_ns / per)
            wall[name].extend(block)
            per_round[name].append(_median(block) / 1e3)
            time.sleep(0.001)  # let spinning worker threads of the last session go idle
    return {name: _summary(wall[name], per_round[name], cpu[name]) for name in cands}


def _timed_block(f: Fn, calls: int) -> tuple[list[int], int]:
    """Wall time of each of `calls` calls (ns), and the thread's CPU time over all of them."""
    clock, block = time.perf_counter_ns, []
    c0 = time.thread_time_ns()
    for _ in range(calls):
        t0 = clock()
        f()
        block.append(clock() - t0)
    return block, time.thread_time_ns() - c0


def _median(values: list[Any]) -> Any:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def _summary(wall_ns: list[int], round_us: list[float], cpu_ns: list[float]) -> dict:
    w = sorted(wall_ns)
    return {
        "median_us": round(w[len(w) // 2] / 1e3, 2),
        "p90_us": round(w[int(len(w) * 0.9)] / 1e3, 2),
        "p10_us": round(w[len(w) // 10] / 1e3, 2),
        "best_round_median_us": round(min(round_us), 2),
        "cpu_us": round(_median(cpu_ns) / 1e3, 2),
        "n": len(w),
        "round_us": [round(v, 2) for v in round_us],
    }


def paired(stats: dict, base: str, cand: str) -> float:
    """Median over rounds of base/cand round medians: a speedup robust to load drift."""
    pairs = zip(stats[base]["round_us"], stats[cand]["round_us"], strict=True)
    return round(float(np.median([b / c for b, c in pairs])), 2)


def show(title: str, stats: dict, base: str | None = None) -> None:
    """Print one table of candidates, with each one's speedup over `base` when given."""
    print(f"\n{title}")
    ref = stats[base]["median_us"] if base else None
    for name, s in stats.items():
        rel = f"  {ref / s['median_us']:5.2f}x vs {base}" if ref else ""
        print(
            f"  {name:44s} median {s['median_us']:8.1f} µs  p90 {s['p90_us']:8.1f}  "
            f"cpu {s['cpu_us']:7.1f}{rel}"
        )


def method(repeat: int, rounds: int) -> dict:
    """How the figures were taken, stored beside them."""
    return {
        "repeat": repeat,
        "rounds": rounds,
        "warmup_calls": WARMUP,
        "clock": "time.perf_counter_ns around each call; cpu_us: the calling thread's "
        "CPU time per call (median over rounds)",
        "interleaved": "candidates of a table alternate in rounds of repeat/rounds calls",
    }


# -- the model and the sessions the step benchmarks time --------------------------------------
def export_model(folder: Path) -> tuple[Any, Path]:
    """A seeded 2-layer LSTM forecaster and its verified ONNX export."""
    import torch

    import rnnedge
    from rnnedge.modeling.models import ModelConfig, SequenceModel

    torch.manual_seed(0)
    cfg = ModelConfig(cell="lstm", input_size=FEATURES, hidden_size=HIDDEN, num_layers=LAYERS)
    module = SequenceModel(cfg).eval()
    path = folder / "lstm.onnx"
    rnnedge.export(module, torch.randn(2, 16, FEATURES), path)
    return module, path


def model_info(path: Path, chunk: np.ndarray) -> dict:
    return {
        "cell": "lstm",
        "num_layers": LAYERS,
        "hidden_size": HIDDEN,
        "input_size": FEATURES,
        "batch": BATCH,
        "chunk_shape": list(chunk.shape),
        "exporter": "torchscript (rnnedge.export default)",
        "onnx_file_bytes": path.stat().st_size,
    }


def session(path: Path, settings: dict | None = None, **attrs: Any) -> Any:
    """An InferenceSession: ORT defaults when `settings` is None, else rnnedge's settings dict.

    `attrs` are set on the `SessionOptions` as they are, for options rnnedge does not expose.
    """
    import onnxruntime as ort

    from rnnedge.runtime.backends.ort import session_options

    if settings is None and not attrs:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    so = session_options(settings or {})
    for k, v in attrs.items():
        setattr(so, k, v)
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def zero_feeds(sess: Any) -> dict[str, np.ndarray]:
    """Zeros for every input, symbolic dims taken as 1."""
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


def core_step(model: Any, chunk: np.ndarray) -> Fn:
    """`StepSession` alone: the fast input check plus the bound run, no `Stream` around it."""
    from rnnedge.runtime.inputs import check_sequence
    from rnnedge.runtime.step import StepSession

    core = StepSession(model.runner, model.spec, BATCH)
    core.run(check_sequence(chunk, model.spec, "chunk"))
    fast, run = core.fast_input, core.run

    def step() -> Any:
        x = fast(chunk)
        return run(x if x is not None else check_sequence(chunk, model.spec, "chunk"))

    return step


# -- machine and result files -----------------------------------------------------------------
def loadavg() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def machine() -> dict:
    from rnnedge.runtime.tuned import cpu_model

    return {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg_start": loadavg(),
    }


def warn_if_busy() -> bool:
    """Say so when other jobs are running: figures taken now are not worth storing."""
    load, cores = loadavg(), os.cpu_count() or 1
    busy = load is not None and load[0] > BUSY_LOAD_PER_CORE * cores
    if busy:
        print(f"warning: load average {load[0]:.2f} on {cores} cores: other jobs are running")
    return busy


def versions(**extra: str) -> dict:
    """Versions of what the step benchmarks import, plus any given by the caller."""
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
        **extra,
    }


def host_tag() -> str:
    name = socket.gethostname().split(".")[0].lower()
    return re.sub(r"[^a-z0-9-]+", "-", name).strip("-")[:24] or "host"


def now() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


def default_out(kind: str) -> Path:
    """benchmarks/results/<date>-<host>-<kind>.json"""
    return RESULTS / f"{dt.date.today().isoformat()}-{host_tag()}-{kind}.json"


def write_json(path: Path, report: dict) -> Path:
    """Write the results atomically: an interrupted run never leaves half a results file."""
    from rnnedge.fileio import atomic_write_text

    return atomic_write_text(path, json.dumps(report, indent=2) + "\n")
