"""The search behind `rnnedge bench --tune`: ORT settings per shape class, never slower.

Measuring lives here, on the tools side; `rnnedge.runtime.tuned` only reads and applies what
was written, so an embedded app never imports the timing machinery.

A tuning must never make things slower, and every way it did so came from measuring badly:
tuned on a loaded machine, a 2-thread non-spinning choice ran an LSTM 1×512 1.7× slower than
ORT's defaults once the machine was quiet, and a step workload stalled at 8–16 ms in 4 of 9
rounds. So the rules here are:

* measure only on a quiet machine: wait (a bounded number of readings) for other processes to
  go under `QUIET_LOAD` cores, re-check that they stayed there while measuring, and refuse
  with the reason (`MachineBusyError`, nothing written) when the machine never settles;
* take no first-pass winner on trust: confirm it against ORT's defaults in a second,
  interleaved run, and adopt it only when faster there by `MIN_GAIN`;
* never offer parallel execution or spinning threads for batch-1 shapes (a stream's step is
  microseconds of work: a spinning pool burns a core between steps, and inter-op parallelism
  only adds hand-offs);
* say "no faster setting found" when ORT's defaults win, and record that, so a stale tuning
  from another day is replaced rather than kept.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rnnedge.errors import MachineBusyError
from rnnedge.fileio import atomic_write_text, sha256_file
from rnnedge.runtime.backends.base import Feeds
from rnnedge.runtime.inputs import check_sequence
from rnnedge.runtime.model import load
from rnnedge.runtime.step import STEP_SETTINGS, StepSession
from rnnedge.runtime.tuned import (
    INTER_SPIN,
    SHORT_MAX,
    SPIN,
    TUNING_FORMAT,
    TunedOrtRunner,
    machine_key,
    shape_class,
    splittable,
    tuning_path,
)
from rnnedge.spec import RnnSpec
from rnnedge.tools.bench import NOISY_LOAD, CpuLoad, measure
from rnnedge.verify.parity import make_feeds

#: a candidate must beat ORT's defaults by this much in the confirmation run to be adopted
MIN_GAIN = 0.05
#: other processes may keep at most this many cores busy while tuning measures
QUIET_LOAD = NOISY_LOAD
NO_FASTER = "no faster setting found"

Candidate = dict[str, Any]  # {"label": str, "settings": dict, "batch_split": int}

#: What `tune_step_settings` tries by default: the step settings, then ORT's own defaults.
CANDIDATE_SETTINGS: tuple[dict[str, Any], ...] = (
    STEP_SETTINGS,
    {},
    {"intra_op_num_threads": 2, "config": {"session.intra_op.allow_spinning": "0"}},
)


@dataclass
class QuietRule:
    """When the machine counts as quiet, and how long to wait for it.

    Args:
        threshold: most cores other processes may use (`CpuLoad.other_cores`).
        readings: readings taken while waiting before giving up; each lasts `window_s`.
        window_s: length of one reading.
        monitor: a context manager factory whose object has `other_cores` (float, or None
            where it cannot be known) after the block; None: this module's `CpuLoad`, looked
            up when used (so a test of a command can replace it).
        sleep: how a reading waits (`time.sleep`); a test passes a no-op with scripted loads.
    """

    threshold: float = QUIET_LOAD
    readings: int = 20
    window_s: float = 0.5
    monitor: Callable[[], Any] | None = None
    sleep: Callable[[float], None] | None = None
    seen: list[float] = field(default_factory=list)

    def _monitor(self) -> Any:
        return (self.monitor or CpuLoad)()

    def reading(self) -> float | None:
        with self._monitor() as load:
            (self.sleep or time.sleep)(self.window_s)
        return self._note(load.other_cores)

    def _note(self, value: float | None) -> float | None:
        if value is not None:
            self.seen.append(float(value))
        return value

    def quiet(self, value: float | None) -> bool:
        return value is None or value < self.threshold

    def wait(self, what: str) -> None:
        """Return once a reading is quiet; raise `MachineBusyError` after `readings` loud ones."""
        last = None
        for _ in range(max(1, self.readings)):
            last = self.reading()
            if self.quiet(last):
                return
        raise MachineBusyError(
            f"not tuning {what}: other processes kept {last:.2f} cores busy through "
            f"{self.readings} readings of {self.window_s:g} s (a quiet machine has under "
            f"{self.threshold:g}); a tuning measured now could be slower than ORT's defaults "
            "once the machine is quiet, so none was written; run again when the machine is "
            "quiet (ORT's defaults stay in use meanwhile)"
        )

    @contextlib.contextmanager
    def watch(self) -> Iterator[list[float | None]]:
        """Yields a list that holds, after the block, the load other processes added in it."""
        box: list[float | None] = []
        with self._monitor() as load:
            yield box
        box.append(self._note(load.other_cores))


def candidates(batch: int, splittable: bool, cores: int | None = None) -> list[Candidate]:
    """ORT defaults, the grid of CPU settings that matter, and batch splits for batch > 1.

    For batch 1 the grid holds no parallel execution mode and no spinning threads.
    """
    cores = cores or os.cpu_count() or 1
    out: list[Candidate] = [{"label": "ort-defaults", "settings": {}, "batch_split": 1}]
    modes = ("sequential",) if batch == 1 else ("sequential", "parallel")
    spins = (0,) if batch == 1 else (0, 1)
    for threads in sorted({1, min(2, cores), cores}):
        for level in ("basic", "all"):
            for mode in modes:
                for spin in spins:
                    if (threads, level, mode, spin) == (cores, "all", "sequential", 1):
                        continue  # what ORT does by default: measured once, as the default
                    config = {SPIN: str(spin)}
                    if mode == "parallel":
                        config[INTER_SPIN] = str(spin)
                    out.append(
                        {
                            "label": f"t{threads}-{level}-{mode[:3]}-spin{spin}",
                            "settings": {
                                "intra_op_num_threads": threads,
                                "graph_optimization_level": level,
                                "execution_mode": mode,
                                "config": config,
                            },
                            "batch_split": 1,
                        }
                    )
    if splittable and batch > 1:
        for k in sorted({min(cores, batch), min(2 * cores, batch)} - {1}):
            out.append(
                {
                    "label": f"split{k}-t1",
                    "batch_split": k,
                    "settings": {
                        "intra_op_num_threads": 1,
                        "graph_optimization_level": "all",
                        "execution_mode": "sequential",
                    },
                }
            )
    return out


def allowed(candidate: Candidate, batch: int) -> bool:
    """False for what batch-1 shapes must never get: parallel execution or spinning threads."""
    if batch != 1 or candidate["label"] == "ort-defaults":
        return True
    settings = candidate.get("settings", {})
    config = settings.get("config", {})
    return (
        settings.get("execution_mode", "sequential") == "sequential"
        and str(config.get(SPIN, "1")) == "0"
        and str(config.get(INTER_SPIN, "0")) == "0"
    )


def representative_shapes(shapes: Sequence[tuple[int, int]]) -> dict[str, tuple[int, int]]:
    """One shape per class to tune on: the class's largest batch at its median length."""
    by_class: dict[str, list[tuple[int, int]]] = {}
    for b, t in shapes:
        by_class.setdefault(shape_class(b, t), []).append((b, t))
    out = {}
    for cls, items in sorted(by_class.items()):
        batch = max(b for b, _ in items)
        lens = sorted(t for b, t in items if b == batch)
        out[cls] = (batch, lens[(len(lens) - 1) // 2])
    return out


#: called as candidates are measured: (class, candidate label, p50 seconds)
TuneProgress = Callable[[str, str, float], None]
#: times one candidate: (candidate, time budget in s) -> p50 seconds
Timer = Callable[[Candidate, float], float]


def _quiet_pass(rule: QuietRule, what: str, run: Callable[[], Any]) -> Any:
    """`run()` on a quiet machine; repeated once if others loaded it meanwhile, then refused."""
    for attempt in range(2):
        rule.wait(what)
        with rule.watch() as load:
            result = run()
        if rule.quiet(load[0]):
            return result
        if attempt == 1:
            raise MachineBusyError(
                f"not tuning {what}: other processes took {load[0]:.2f} cores while it was "
                f"being measured, twice (a quiet machine has under {rule.threshold:g}); no "
                "tuning was written; run again when the machine is quiet"
            )
    raise AssertionError("unreachable")


def decide(
    default_p50: Sequence[float], candidate_p50: Sequence[float], min_gain: float = MIN_GAIN
) -> tuple[bool, float]:
    """(adopt?, speedup) from a confirmation run's per-round p50s, defaults vs candidate.

    Adopted only when the median of the per-round speedups reaches 1 + `min_gain` and the
    candidate was faster in more than half of the rounds.
    """
    ratios = [d / c for d, c in zip(default_p50, candidate_p50, strict=True) if c > 0]
    if not ratios:
        return False, 1.0
    speedup = statistics.median(ratios)
    wins = sum(r > 1.0 for r in ratios)
    return speedup >= 1.0 + min_gain and wins * 2 > len(ratios), speedup


def tune_class(
    cls: str,
    batch: int,
    cands: Sequence[Candidate],
    timer: Timer,
    *,
    rule: QuietRule,
    budget_s: float,
    confirm_rounds: int,
    progress: Callable[[str, float], None] | None = None,
) -> dict[str, Any]:
    """First pass over `cands`, then the best non-default confirmed against the defaults."""
    cands = [c for c in cands if allowed(c, batch)]
    default = cands[0]
    first: dict[str, float] = {}

    def first_pass() -> None:
        for c in cands:
            first[c["label"]] = timer(c, budget_s)
            if progress:
                progress(c["label"], first[c["label"]])

    _quiet_pass(rule, cls, first_pass)
    ranked = sorted(cands, key=lambda c: first[c["label"]])
    best = next((c for c in ranked if c is not default), None)
    p50 = {c["label"]: first[c["label"]] for c in ranked}
    entry: dict[str, Any] = {"first_pass_p50_s": p50, "p50_s": dict(p50)}
    if best is None or first[best["label"]] * (1 + MIN_GAIN) > first[default["label"]]:
        return {
            **entry,
            **_keep_defaults(
                default,
                f"{NO_FASTER}: ORT's defaults were within {MIN_GAIN:.0%} of every candidate",
                1.0,
            ),
        }
    d_p50: list[float] = []
    c_p50: list[float] = []

    def confirm() -> None:
        for r in range(confirm_rounds):  # alternate who goes first: no order bias
            pair = ((default, d_p50), (best, c_p50))
            for c, acc in pair if r % 2 == 0 else pair[::-1]:
                acc.append(timer(c, budget_s))

    _quiet_pass(rule, cls, confirm)
    adopt, speedup = decide(d_p50, c_p50)
    entry["confirm"] = {
        "candidate": best["label"],
        "rounds": confirm_rounds,
        "defaults_p50_s": d_p50,
        "candidate_p50_s": c_p50,
        "speedup": speedup,
    }
    if not adopt:
        return {
            **entry,
            **_keep_defaults(
                default,
                f"{NO_FASTER}: {best['label']} led the first pass but was {speedup:.3f}× "
                f"ORT's defaults in the confirmation run (needs ≥ {1 + MIN_GAIN:.2f}× and most "
                "rounds)",
                speedup,
            ),
        }
    return {
        **entry,
        "chosen": best["label"],
        "adopted": True,
        "settings": best["settings"],
        "batch_split": best["batch_split"],
        "speedup_vs_defaults": speedup,
        "reason": f"{best['label']} confirmed {speedup:.3f}× faster than ORT's defaults",
    }


def _keep_defaults(default: Candidate, reason: str, speedup: float) -> dict[str, Any]:
    return {
        "chosen": default["label"],
        "adopted": False,
        "settings": default["settings"],
        "batch_split": default["batch_split"],
        "speedup_vs_defaults": 1.0,
        "best_candidate_speedup": speedup,
        "reason": reason,
    }


def tune(
    model_path: str | os.PathLike[str],
    shapes: Sequence[tuple[int, int]],
    *,
    budget_s: float = 0.15,
    confirm_rounds: int = 5,
    spec: RnnSpec | None = None,
    progress: TuneProgress | None = None,
    seed: int = 0,
    rule: QuietRule | None = None,
) -> dict[str, Any]:
    """Tune ORT's settings per shape class on a quiet machine; defaults unless confirmed faster.

    Per class (one representative shape each): wait for a quiet machine, time every allowed
    candidate once, then time the fastest non-default against ORT's defaults in
    `confirm_rounds` interleaved rounds (both under the quiet rule), and adopt it only when it
    is faster by `MIN_GAIN` there (`decide`).

    Returns:
        The tuning to write: machine key, file hash, and per class the chosen settings with
        `adopted`, `reason`, first-pass and confirmation timings; `summary` says what changed,
        "no faster setting found" when nothing did.

    Raises:
        MachineBusyError: the machine did not get quiet (or got loaded while measuring).
    """
    rule = rule or QuietRule()
    rng = np.random.default_rng(seed)
    classes: dict[str, Any] = {}
    with TunedOrtRunner(model_path, None, spec) as runner:
        assert runner.spec is not None
        can_split = splittable(runner.spec)
        for cls, (b, t) in representative_shapes(shapes).items():
            feeds = make_feeds(runner.spec, b, t, rng)

            def timer(c: Candidate, budget: float, feeds: Feeds = feeds) -> float:
                def call() -> Any:
                    return runner.run_with(c["settings"], c["batch_split"], feeds)

                return measure(call, warmup=2, budget_s=budget, min_samples=3).p50

            report = (
                None
                if progress is None
                else (lambda label, p50, cls=cls: progress(cls, label, p50))
            )
            classes[cls] = {
                "shape": [b, t],
                **tune_class(
                    cls,
                    b,
                    candidates(b, can_split),
                    timer,
                    rule=rule,
                    budget_s=budget_s,
                    confirm_rounds=confirm_rounds,
                    progress=report,
                ),
            }
    adopted = [
        f"{k} {v['chosen']} ({v['speedup_vs_defaults']:.2f}×)"
        for k, v in classes.items()
        if v["adopted"]
    ]
    summary = ("adopted: " + ", ".join(adopted)) if adopted else NO_FASTER
    return {
        "format": TUNING_FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **machine_key(),
        "onnx_sha256": sha256_file(model_path),
        "short_max_seq_len": SHORT_MAX,
        "summary": summary,
        "quiet": {
            "threshold_cores": rule.threshold,
            "max_other_cores_seen": max(rule.seen, default=None),
        },
        "classes": classes,
    }


def write_tuning(model_path: str | os.PathLike[str], tuning: Mapping[str, Any]) -> Path:
    """Write `model.onnx.tuning.json` atomically (temporary file, then rename)."""
    return atomic_write_text(tuning_path(model_path), json.dumps(tuning, indent=2) + "\n")


def time_steps(core: StepSession, chunk: np.ndarray, steps: int) -> list[int]:
    """Per-step wall times (ns) of `fast_input` + `run` on `chunk` (the first shape is slow)."""
    clock = time.perf_counter_ns
    times = []
    for _ in range(steps):
        t0 = clock()
        x = core.fast_input(chunk)
        core.run(x if x is not None else check_sequence(chunk, core.spec, "chunk"))
        times.append(clock() - t0)
    return times


def tune_step_settings(
    path: str,
    *,
    batch: int = 1,
    candidates: Sequence[Mapping[str, Any]] = CANDIDATE_SETTINGS,
    steps: int = 2000,
    rounds: int = 10,
) -> tuple[dict[str, Any], dict[str, float]]:
    """Time one-step chunks under each candidate settings here; return the fastest and all.

    For the machine that will serve the stream: which settings win depends on its cores, their
    caches and what else runs there. Candidates are timed in interleaved rounds (after a
    warm-up) so drift in machine load hits them alike; the score is the median step time in
    µs, keyed by `repr` of the settings.
    """
    models = [load(path, settings=dict(c)) for c in candidates]
    try:
        spec = models[0].spec
        features = spec.input(spec.data_input).shape[2]
        shape = [1, 1, features if isinstance(features, int) else 1]
        shape[spec.batch_axis] = batch
        chunk = np.zeros(shape, dtype=spec.input(spec.data_input).dtype)
        cores = [StepSession(m.runner, m.spec, batch) for m in models]
        for core in cores:
            time_steps(core, chunk, 100)
        samples: list[list[int]] = [[] for _ in cores]
        for _ in range(rounds):
            for core, acc in zip(cores, samples, strict=True):
                acc.extend(time_steps(core, chunk, max(1, steps // rounds)))
        scores = {}
        for c, acc in zip(candidates, samples, strict=True):
            acc.sort()
            scores[repr(dict(c))] = acc[len(acc) // 2] / 1e3
        best = min(range(len(candidates)), key=lambda i: scores[repr(dict(candidates[i]))])
        return dict(candidates[best]), scores
    finally:
        for m in models:
            m.close()
