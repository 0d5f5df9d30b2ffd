"""What every phase of the GPU benchmark shares: workloads, timing, math labels, the row sink.

A device call that hits its time limit returns only what is already in its output folder, so
every row goes to disk the moment its group is measured (`Rows`: one JSON object per line,
flushed and fsynced, into `$OUT` and into a state folder that later calls on the same machine
read back). Every row says what it measured in the same words: workload, case, runtime,
device, math (`fp32`, `tf32`, `fp16`), where the state lives, threads, and p50/p90/p99 in µs.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

Fn = Callable[[], Any]
TF32_ENV = "NVIDIA_TF32_OVERRIDE"


@dataclass(frozen=True)
class Workload:
    """One model and shape the goals are stated for."""

    name: str
    cell: str
    layers: int
    hidden: int
    features: int
    batch: int
    seq_len: int

    @property
    def label(self) -> str:
        return f"{self.cell.upper()} {self.layers}×{self.hidden}, {self.features} features"


#: W5: one stateful step of a small LSTM at batch 1 — latency, launch-bound on a GPU
W5 = Workload("W5", "lstm", 2, 128, 1, 1, 1)
#: W6: a batch of whole sequences through a wider GRU — throughput, cuDNN-bound
W6 = Workload("W6", "gru", 2, 256, 16, 64, 128)
#: streams: W5's model, N independent streams advanced together as one batch per step
STREAMS = (1, 64, 1024)


def build(torch: Any, w: Workload, folder: Path) -> tuple[Any, Path, Any]:
    """The workload's model (seeded), exported and verified by rnnedge: (module, path, spec)."""
    from rnnedge.exporters.onnx import example_for, export
    from rnnedge.modeling.models import ModelConfig, SequenceModel

    torch.manual_seed(0)
    model = SequenceModel(
        ModelConfig(cell=w.cell, input_size=w.features, hidden_size=w.hidden, num_layers=w.layers)
    ).eval()
    result = export(model, example_for(True, w.features), folder / f"{w.name.lower()}.onnx")
    return model, result.path, result.spec


def inputs(
    w: Workload, batch: int | None = None, seq_len: int | None = None, seed: int = 1
) -> np.ndarray:
    """Batch-first float32 inputs, random (never zeros: they hide unwritten outputs)."""
    shape = (batch or w.batch, seq_len or w.seq_len, w.features)
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def math_mode(requested: str, env: Mapping[str, str] | None = None) -> str:
    """The label a row may carry: fp32 only where TF32 is provably off, else refuse.

    cuDNN's RNN kernels use TF32 on Ampere and later whatever a framework flag says; only
    `NVIDIA_TF32_OVERRIDE=0`, set before CUDA starts, rules it out. So an "fp32" row needs it,
    a "tf32" row needs it unset, and fp16 rows are fp16 either way.
    """
    env = os.environ if env is None else env
    override = env.get(TF32_ENV)
    if requested == "fp16":
        return "fp16"
    if requested == "fp32":
        if override != "0":
            raise RuntimeError(
                f"fp32 rows need {TF32_ENV}=0 (it is {override!r}): cuDNN would "
                "use TF32 and the row would be mislabelled"
            )
        return "fp32"
    if requested == "tf32":
        if override == "0":
            raise RuntimeError(
                f"tf32 rows need {TF32_ENV} unset, not 0: the override forbids "
                "TF32 and the row would be mislabelled"
            )
        return "tf32"
    raise ValueError(f"math must be fp32, tf32 or fp16, not {requested!r}")


def stats(samples_ns: Iterable[int]) -> dict[str, float]:
    us = np.sort(np.asarray(list(samples_ns), dtype=np.float64)) / 1e3
    return {
        "p50_us": float(np.percentile(us, 50)),
        "p90_us": float(np.percentile(us, 90)),
        "p99_us": float(np.percentile(us, 99)),
        "mean_us": float(us.mean()),
        "n": int(us.size),
    }


def measure(
    cases: Mapping[str, Fn], seconds: float, rounds: int = 6, warmup: int = 10
) -> dict[str, dict[str, float]]:
    """Latency per case from interleaved rounds (load drift hits every case alike).

    Each call must return only once its work is done (host arrays out), so a wall clock is
    honest; a case's calls per round are sized so the whole case takes about `seconds`.
    """
    per: dict[str, int] = {}
    for name, fn in cases.items():
        t0 = time.perf_counter()
        fn()
        first = time.perf_counter() - t0
        # slow calls (whole sequences on a CPU) get fewer warm-up calls, never none
        n = max(1, min(warmup, int(seconds / 4 / max(first, 1e-7))))
        for _ in range(n):
            fn()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        one = max((time.perf_counter() - t0) / n, 1e-7)
        per[name] = max(1, min(20000, int(seconds / one / rounds)))
    samples: dict[str, list[int]] = {k: [] for k in cases}
    clock = time.perf_counter_ns
    for _ in range(rounds):
        for name, fn in cases.items():
            acc = samples[name]
            for _ in range(per[name]):
                t0 = clock()
                fn()
                acc.append(clock() - t0)
            time.sleep(0.001)
    return {name: stats(s) for name, s in samples.items()}


def max_abs(actual: np.ndarray, expected: np.ndarray) -> float:
    a, e = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if a.shape != e.shape:
        return math.inf
    return float(np.abs(a - e).max(initial=0.0))


def error(exc: BaseException) -> str:
    """`Type: message` on one line, for a case that failed (recorded, never hidden)."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"


class Rows:
    """Appends rows as JSON lines to every given file, flushed and fsynced per write."""

    def __init__(self, *paths: Path, phase: str) -> None:
        self.paths = [Path(p) for p in paths]
        self.phase = phase
        for p in self.paths:
            p.parent.mkdir(parents=True, exist_ok=True)

    def add(self, row: Mapping[str, Any]) -> dict[str, Any]:
        full = {
            "phase": self.phase,
            "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            **row,
        }
        line = json.dumps(full, default=_plain, allow_nan=True) + "\n"
        for p in self.paths:
            with open(p, "a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
        print(_one_line(full), flush=True)
        return full


def read_rows(*paths: Path) -> list[dict[str, Any]]:
    """Every row in the files, in order; a torn last line (a killed writer) is skipped."""
    rows: list[dict[str, Any]] = []
    for p in paths:
        if not Path(p).is_file():
            continue
        for line in Path(p).read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def _one_line(row: Mapping[str, Any]) -> str:
    keys = (
        "workload",
        "case",
        "math",
        "batch",
        "streams",
        "p50_us",
        "stream_steps_per_s",
        "max_abs_diff",
        "error",
    )
    return "row: " + ", ".join(
        f"{k}={row[k]:.4g}" if isinstance(row.get(k), float) else f"{k}={row[k]}"
        for k in keys
        if row.get(k) is not None
    )


Stepper = Callable[[np.ndarray], np.ndarray]


@dataclass
class Case:
    """One way of doing a group's work: `make()` returns a fresh stepper (state from zero).

    `meta` says what it is (runtime, device, math, where the state lives, threads); `split`,
    when given, times the parts of one call (copy-in, GPU work, copy-out) over `count` calls;
    `profile` asks for the device time per call from the profiler.
    """

    name: str
    meta: dict[str, Any]
    make: Callable[[], Stepper]
    split: Callable[[np.ndarray, int], dict[str, float]] | None = None
    profile: bool = False


def run_group(
    label: Mapping[str, Any],
    cases: list[Case],
    check: list[np.ndarray],
    expected: np.ndarray,
    timed: np.ndarray,
    seconds: float,
    rows: Rows,
    profiler: Callable[[Stepper, np.ndarray], dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Check every case against `expected`, time them interleaved, write one row per case.

    `check` is fed in order to a fresh stepper and its outputs joined on the time axis, so a
    stateful case is judged on its whole trajectory; `timed` is what each timed call gets.
    A case that fails records its error instead of numbers; the others still run.
    """
    batch = int(timed.shape[0])
    out: dict[str, dict[str, Any]] = {}
    fns: dict[str, Fn] = {}
    for case in cases:
        row: dict[str, Any] = {**label, "case": case.name, **case.meta}
        out[case.name] = row
        try:
            stepper = case.make()
            got = np.concatenate([stepper(x) for x in check], axis=1)
            row["max_abs_diff"] = max_abs(got, expected)
            timed_stepper = case.make()
            fns[case.name] = lambda s=timed_stepper: s(timed)
        except Exception as exc:  # recorded, not hidden
            row["error"] = error(exc)
    for name, st in (measure(fns, seconds) if fns else {}).items():
        out[name].update(st)
        if label.get("streams"):
            out[name]["stream_steps_per_s"] = batch / (st["p50_us"] / 1e6)
    for case in cases:
        row = out[case.name]
        if "error" in row:
            continue
        try:
            if case.split is not None:
                row["split"] = case.split(timed, 200)
            if case.profile and profiler is not None:
                row["gpu_time"] = profiler(case.make(), timed)
        except Exception as exc:
            row["split_error"] = error(exc)
    return [rows.add(row) for row in out.values()]


def part_stats(parts_ns: Mapping[str, list[int]]) -> dict[str, float]:
    """Median µs of each timed part of a call."""
    return {
        f"{k}_us": float(np.median(np.asarray(v, np.float64)) / 1e3)
        for k, v in parts_ns.items()
        if v
    }
