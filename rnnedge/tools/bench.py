"""Latency measurement: a timing primitive, its statistics, and runner sweeps built on it.

Numbers stay numbers here (seconds, as floats and float arrays); `rnnedge.tools.render` turns them
into strings. Importing this module loads numpy only, so timing code can be reused where torch
and onnxruntime are absent; runners and their backends come in through the callables passed.

Timing is honest on devices: `synchronize` is called after every call, inside the timed
region, so queued GPU work is waited for before the clock stops. It is also honest about this
machine: a `CpuLoad` monitor records how much CPU other processes took while a point was being
measured, and `measure_clean` repeats a block that was disturbed, so a shared machine shows up
as a flag in the results instead of as a silent slowdown.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rnnedge.runtime.tuned import cpu_model

#: a time budget per measured point that keeps the default sweep well under a minute
DEFAULT_BUDGET_S = 0.3
DEFAULT_WARMUP = 3
#: other processes using more than this many cores while measuring marks a point as noisy
NOISY_LOAD = 0.1

Clock = Callable[[], float]


@dataclass(frozen=True)
class Throughput:
    """Work per second at the median latency: whole sequences and time steps (over the batch)."""

    sequences_per_s: float
    steps_per_s: float


@dataclass(frozen=True)
class LatencyStats:
    """Summary of per-call latencies in seconds; `latencies` keeps every sample.

    `stdev` is the sample standard deviation (n − 1), 0 for a single sample.
    """

    samples: int
    min: float
    p50: float
    p90: float
    p99: float
    max: float
    mean: float
    stdev: float
    latencies: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False, compare=False)

    @classmethod
    def from_samples(cls, samples: Iterable[float]) -> LatencyStats:
        """Statistics of a list of latencies (seconds); an empty list is an error."""
        arr = np.asarray(list(samples), dtype=np.float64)
        if arr.size == 0:
            raise ValueError("no latency samples to summarize")
        p50, p90, p99 = (float(v) for v in np.percentile(arr, [50, 90, 99]))
        return cls(
            samples=int(arr.size),
            min=float(arr.min()),
            p50=p50,
            p90=p90,
            p99=p99,
            max=float(arr.max()),
            mean=float(arr.mean()),
            stdev=float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
            latencies=arr,
        )

    def throughput(self, batch: int, seq_len: int) -> Throughput:
        """Sequences/s and steps/s at the median latency, for calls of (batch, seq_len)."""
        return Throughput(batch / self.p50, batch * seq_len / self.p50)

    def to_dict(self) -> dict[str, float | int]:
        """The summary without the raw samples (those can be long)."""
        return {
            k: getattr(self, k)
            for k in ("samples", "min", "p50", "p90", "p99", "max", "mean", "stdev")
        }


def measure(
    fn: Callable[[], Any],
    *,
    warmup: int = DEFAULT_WARMUP,
    repeat: int | None = None,
    budget_s: float | None = None,
    synchronize: Callable[[], None] | None = None,
    min_samples: int = 3,
    clock: Clock = time.perf_counter,
) -> LatencyStats:
    """Time `fn` call by call after `warmup` untimed calls.

    Args:
        repeat: a fixed number of timed calls; with `budget_s` too, it is a cap.
        budget_s: keep calling until this much time has passed in the timed phase (and at
            least `min_samples` calls were made). Neither given: `DEFAULT_BUDGET_S`.
        synchronize: called after every call (warm-up included) before the clock stops, so
            asynchronous device work is counted in the call that queued it.
        clock: a monotonic clock in seconds; replaceable for tests.
    """
    if repeat is not None and repeat < 1:
        raise ValueError(f"repeat must be ≥ 1, got {repeat}")
    if repeat is None and budget_s is None:
        budget_s = DEFAULT_BUDGET_S
    sync = synchronize or (lambda: None)
    for _ in range(max(0, warmup)):
        fn()
        sync()
    out: list[float] = []
    start = clock()
    while True:
        if repeat is not None and len(out) >= repeat:
            break
        if budget_s is not None and len(out) >= min_samples and clock() - start >= budget_s:
            break
        t0 = clock()
        fn()
        sync()
        out.append(clock() - t0)
    return LatencyStats.from_samples(out)


class CpuLoad:
    """How many cores other processes kept busy during a `with` block (Linux; else None).

    Whole-machine busy time comes from /proc/stat, this process's own (all threads) from
    `os.times`; the difference over wall time is what others took from the measurement.
    """

    def __init__(self) -> None:
        self.other_cores: float | None = None
        self._start: tuple[float, float, float] | None = None

    @staticmethod
    def _busy_s() -> float | None:
        try:
            with open("/proc/stat") as f:
                values = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        return (sum(values) - idle) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _mine_s() -> float:
        t = os.times()
        return t.user + t.system

    def __enter__(self) -> CpuLoad:
        busy = self._busy_s()
        self._start = None if busy is None else (busy, self._mine_s(), time.perf_counter())
        return self

    def __exit__(self, *exc: object) -> None:
        busy = self._busy_s()
        if self._start is None or busy is None:
            return
        b0, m0, w0 = self._start
        wall = max(time.perf_counter() - w0, 1e-9)
        self.other_cores = max(0.0, ((busy - b0) - (self._mine_s() - m0)) / wall)


def wait_quiet(
    timeout_s: float, *, window_s: float = 0.5, threshold: float = NOISY_LOAD
) -> float | None:
    """Wait (up to `timeout_s`) for a window in which other processes stay under `threshold`
    cores; returns the load last seen (None where it cannot be known). On a shared machine
    this keeps other jobs' bursts out of a measurement that is about to start.
    """
    deadline = time.perf_counter() + timeout_s
    while True:
        with CpuLoad() as load:
            time.sleep(window_s)
        if (
            load.other_cores is None
            or load.other_cores < threshold
            or time.perf_counter() >= deadline
        ):
            return load.other_cores


def measure_clean(
    fn: Callable[[], Any],
    *,
    retries: int = 2,
    settle_s: float = 0.02,
    **kwargs: Any,
) -> tuple[LatencyStats, float | None]:
    """`measure`, repeated up to `retries` times while other processes disturb it.

    A short pause first lets thread pools of whatever ran before (ORT or OpenMP workers that
    spin after their work) go idle. Returns the stats and the other processes' load during
    the kept attempt (the least disturbed one when none was clean).
    """
    best: tuple[LatencyStats, float | None] | None = None
    for _ in range(retries + 1):
        time.sleep(settle_s)
        with CpuLoad() as load:
            stats = measure(fn, **kwargs)
        if load.other_cores is None or load.other_cores < NOISY_LOAD:
            return stats, load.other_cores
        if best is None or (best[1] or 0.0) > load.other_cores:
            best = (stats, load.other_cores)
        time.sleep(10 * settle_s)  # let a burst of someone else's work pass
    assert best is not None
    return best


@dataclass
class BenchPoint:
    """One runner at one shape: `kind` is "sequence" (whole-sequence run) or "stream_step".

    Ratios are speedups: `vs_eager` = eager p50 / this p50, so > 1 means faster than eager.
    `other_load` is the cores other processes used while this point was measured.
    """

    runner: str
    batch: int
    seq_len: int
    stats: LatencyStats
    kind: str = "sequence"
    other_load: float | None = None
    vs_eager: float | None = None
    vs_ort_raw: float | None = None

    @property
    def noisy(self) -> bool:
        return self.other_load is not None and self.other_load >= NOISY_LOAD

    def to_dict(self) -> dict[str, Any]:
        tp = self.stats.throughput(self.batch, self.seq_len)
        return {
            "runner": self.runner,
            "kind": self.kind,
            "batch": self.batch,
            "seq_len": self.seq_len,
            "latency_s": self.stats.to_dict(),
            "sequences_per_s": tp.sequences_per_s,
            "steps_per_s": tp.steps_per_s,
            "vs_eager": self.vs_eager,
            "vs_ort_raw": self.vs_ort_raw,
            "other_load": self.other_load,
            "noisy": self.noisy,
        }


def add_ratios(
    points: Sequence[BenchPoint], eager: str = "eager", ort_raw: str = "ort-raw"
) -> None:
    """Fill `vs_eager`/`vs_ort_raw` from the baselines measured at the same kind and shape."""
    index = {(p.runner, p.kind, p.batch, p.seq_len): p.stats.p50 for p in points}
    for p in points:
        for base, attr in ((eager, "vs_eager"), (ort_raw, "vs_ort_raw")):
            ref = index.get((base, p.kind, p.batch, p.seq_len))
            setattr(p, attr, ref / p.stats.p50 if ref is not None else None)


def merge_rounds(
    rounds: Sequence[tuple[LatencyStats, float | None]],
) -> tuple[LatencyStats, float | None]:
    """Pool the samples of interleaved rounds; the load reported is the worst round's."""
    samples = np.concatenate([s.latencies for s, _ in rounds])
    loads = [load for _, load in rounds if load is not None]
    return LatencyStats.from_samples(samples), (max(loads) if loads else None)


def run_interleaved(
    calls: Mapping[str, Callable[[], Any]],
    *,
    rounds: int = 1,
    budget_s: float = DEFAULT_BUDGET_S,
    warmup: int = DEFAULT_WARMUP,
    synchronize: Mapping[str, Callable[[], None]] | None = None,
    progress: Callable[[str, LatencyStats, float | None], None] | None = None,
) -> dict[str, tuple[LatencyStats, float | None]]:
    """Measure several callables in turn, `rounds` times, pooling each one's samples.

    Interleaving spreads slow drifts of the machine (other jobs, clocks) over all of them
    instead of charging them to whichever happened to run at the wrong moment.
    """
    per: dict[str, list[tuple[LatencyStats, float | None]]] = {k: [] for k in calls}
    sync = synchronize or {}
    for r in range(rounds):
        for name, fn in calls.items():
            stats, load = measure_clean(
                fn,
                budget_s=budget_s / rounds,
                warmup=warmup if r == 0 else 1,
                synchronize=sync.get(name),
            )
            per[name].append((stats, load))
            if progress:
                progress(name, stats, load)
    return {name: merge_rounds(v) for name, v in per.items()}


def stream_step_call(runner: Any, spec: Any, rng: np.random.Generator) -> Callable[[], Any]:
    """One batch-1 streaming step as a callable.

    rnnedge's own runner goes through `Model.stream().step` (the path an app takes: checks,
    normalization, state kept by the stream, bound buffers); every other runner (raw ONNX
    Runtime, eager PyTorch, …) is called with its state carried by hand, which is what a user
    of that runtime would write.
    """
    from rnnedge.runtime.inputs import zero_state
    from rnnedge.runtime.model import Model
    from rnnedge.runtime.tuned import TunedOrtRunner

    x = rng.standard_normal((1, 1, spec.input(spec.data_input).shape[-1])).astype(np.float32)
    if isinstance(runner, TunedOrtRunner):
        stream = Model(runner, spec).stream(batch=1)
        return lambda: stream.step(x)
    state = zero_state(spec, 1)

    def step() -> Any:
        out = runner.infer({spec.data_input: x, **state})
        state.update({p.input: out[p.output] for p in spec.state_pairs})
        return out[spec.data_output]

    return step


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """What a latency number depends on: CPU, cores, OS and library versions (not imported)."""
    from rnnedge import __version__

    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            "rnnedge": __version__,
            "numpy": np.__version__,
            "torch": _version("torch"),
            "onnxruntime": _version("onnxruntime"),
            "onnx": _version("onnx"),
        },
        "date": time.strftime("%Y-%m-%d"),
    }


@dataclass
class BenchResult:
    """A whole benchmark run: what ran, where, and every point measured."""

    model: str
    model_info: dict[str, Any]
    environment: dict[str, Any]
    runners: dict[str, dict[str, Any]]
    points: list[BenchPoint] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    budget_s: float = DEFAULT_BUDGET_S
    warmup: int = DEFAULT_WARMUP

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "model_info": self.model_info,
            "environment": self.environment,
            "runners": self.runners,
            "skipped": self.skipped,
            "notes": self.notes,
            "budget_s": self.budget_s,
            "warmup": self.warmup,
            "points": [p.to_dict() for p in self.points],
        }
