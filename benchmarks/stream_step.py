"""One streaming step: rnnedge's `Stream.step` vs raw ONNX Runtime `session.run` vs eager PyTorch.

The product claim, measured in one run: an app that streams a 2-layer LSTM (hidden 128, one
input feature) one step at a time at batch 1 gets more out of `rnnedge.load(p).stream().step`
than out of a hand-written `session.run` loop with ORT's defaults, and far more than out of
eager PyTorch. Candidates, each timed with `perf_counter_ns` around every call after warm-up:

* eager PyTorch (the same `SequenceModel`, state carried, `torch.inference_mode`), with torch's
  default threads and with one; timed in a phase of its own, so that its OpenMP threads never
  spin while ORT's candidates run;
* raw `session.run` with the state fed back, with ORT's default options and with
  `STEP_SETTINGS`;
* `Stream.step` with `STEP_SETTINGS` and with ORT's defaults, and the `StepSession` it is
  built on;
* the call floor: `session.run` of a one-Identity graph.

The ORT candidates run in interleaved rounds, so drift in machine load hits them alike, and
every ratio comes from this run's figures: median/median, round-paired (`common.paired`) and
best-round. What each idea on the step path was worth is `step_ideas.py`'s job; cold start
(import, load, first step, peak RSS) is `cold_start.py`'s.

    .venv/bin/python benchmarks/stream_step.py [--repeat 3000] [--rounds 30] [--json-out FILE]
    .venv/bin/python benchmarks/stream_step.py --quick    # a few seconds; writes no file

Results go to `benchmarks/results/<date>-<host>-stream-step.json`, in the format of
`2026-11-27-vm-stream-step.json` with these changes:

* the candidate "fast_step.StepSession, STEP_SETTINGS" is now "StepSession, STEP_SETTINGS",
  after the module that holds it (`rnnedge/runtime/step.py`);
* `stream_uses_fast_step` is now `stream_uses_step_session`; `stream_step_bound` says whether
  the stream took the bound-buffer path; `load_honors_all_step_settings` is read back from
  the options of the session `rnnedge.load` opened;
* `ideas` moved to `step_ideas.py`'s file, `cold_start` to `cold_start.py`'s;
* `method.quick` marks a short run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common
import numpy as np
from common import BATCH, FEATURES, Fn
from step_graphs import identity_graph

RAW_DEFAULT = "raw session.run, ORT default options"
RAW_STEP = "raw session.run, STEP_SETTINGS"
STREAM_STEP = "rnnedge stream.step, STEP_SETTINGS"
STREAM_DEFAULT = "rnnedge stream.step, ORT default options"
CORE_STEP = "StepSession, STEP_SETTINGS"
FLOOR = "call floor: one-Identity graph, default"
EAGER_1T = "eager torch (1 thread)"
#: what the product promises: a ratio of medians from the same run, at least this
TARGETS = {"stream_step_vs_raw_ort_default": 1.3, "stream_step_vs_eager": 8.0}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3000, help="timed calls per candidate")
    ap.add_argument(
        "--rounds", type=int, default=30, help="interleaved rounds the calls are split over"
    )
    ap.add_argument(
        "--json-out",
        type=Path,
        default=None,
        help="results file (default: benchmarks/results/<date>-<host>-stream-step.json; "
        "with --quick, none)",
    )
    ap.add_argument(
        "--quick", action="store_true", help="300 calls in 3 rounds: proves the script runs"
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.repeat, args.rounds = 300, 3
    return args


# -- candidates -------------------------------------------------------------------------------
def eager_step(module: Any) -> Fn:
    """One step of the PyTorch module, its state carried, as a PyTorch app would run it."""
    import torch

    x = torch.zeros(BATCH, 1, FEATURES)
    state = [module.initial_state(x)]

    def step() -> Any:
        with torch.inference_mode():
            y, state[0] = module(x, state[0])
        return y

    return step


def measure_eager(module: Any, repeat: int, rounds: int) -> tuple[dict, int]:
    """Eager PyTorch with its default threads, then with one; returns stats and the default."""
    import torch

    threads = torch.get_num_threads()
    calls = max(300, repeat // 3)
    stats = common.measure(
        {f"eager torch ({threads} threads, default)": eager_step(module)}, calls, rounds
    )
    torch.set_num_threads(1)
    try:
        stats.update(common.measure({EAGER_1T: eager_step(module)}, calls, rounds))
    finally:
        torch.set_num_threads(threads)
    common.show("eager PyTorch, one step", stats)
    return stats, threads


def ort_candidates(models: dict[str, Any], path: Path, floor: Path, chunk: np.ndarray) -> dict:
    """The ORT-side candidates, all stepping the same chunk."""
    from rnnedge.runtime.step import STEP_SETTINGS

    stream_step = models["step"].stream(batch=BATCH)
    stream_default = models["default"].stream(batch=BATCH)
    floor_sess = common.session(floor)
    floor_feeds = {"a": np.zeros((1, 1, 1), np.float32)}
    return {
        RAW_DEFAULT: common.raw_step(common.session(path)),
        RAW_STEP: common.raw_step(common.session(path, STEP_SETTINGS)),
        STREAM_STEP: lambda: stream_step.step(chunk),
        STREAM_DEFAULT: lambda: stream_default.step(chunk),
        CORE_STEP: common.core_step(models["step"], chunk),
        FLOOR: lambda: floor_sess.run(["b"], floor_feeds),
    }


# -- what the run shows -----------------------------------------------------------------------
def ratios(eager: dict, stats: dict) -> dict:
    """Speedups of the STEP_SETTINGS candidates over raw ORT defaults and over eager."""
    eager_key = next(iter(eager))
    eager_us, eager_best = eager[eager_key]["median_us"], eager[eager_key]["best_round_median_us"]
    eager_1t = eager[EAGER_1T]["median_us"]
    raw_us, raw_best = stats[RAW_DEFAULT]["median_us"], stats[RAW_DEFAULT]["best_round_median_us"]
    out = {}
    for name in (STREAM_STEP, CORE_STEP, RAW_STEP):
        us, best = stats[name]["median_us"], stats[name]["best_round_median_us"]
        out[name] = {
            "speedup_vs_raw_ort_default": round(raw_us / us, 2),
            "paired_speedup_vs_raw_ort_default": common.paired(stats, RAW_DEFAULT, name),
            "best_round_speedup_vs_raw_ort_default": round(raw_best / best, 2),
            "speedup_vs_eager": round(eager_us / us, 2),
            "best_round_speedup_vs_eager": round(eager_best / best, 2),
            "speedup_vs_eager_1_thread": round(eager_1t / us, 2),
        }
    return out


def targets(ratio: dict) -> dict:
    """Each target against the stream's median ratio, with the steadier figures beside it."""
    main = ratio[STREAM_STEP]
    out = {
        "stream_step_vs_raw_ort_default": {
            "want": TARGETS["stream_step_vs_raw_ort_default"],
            "got": main["speedup_vs_raw_ort_default"],
            "paired": main["paired_speedup_vs_raw_ort_default"],
        },
        "stream_step_vs_eager": {
            "want": TARGETS["stream_step_vs_eager"],
            "got": main["speedup_vs_eager"],
            "best_round": main["best_round_speedup_vs_eager"],
        },
    }
    for t in out.values():
        t["met"] = t["got"] >= t["want"]
    return out


def show_ratios(ratio: dict, target: dict) -> None:
    print("\nspeedups, same run (median/median; round-paired; best-round medians):")
    for name, r in ratio.items():
        print(
            f"  {name:38s} vs raw ORT default {r['speedup_vs_raw_ort_default']:4.2f}x; "
            f"{r['paired_speedup_vs_raw_ort_default']:4.2f}x; "
            f"{r['best_round_speedup_vs_raw_ort_default']:4.2f}x   vs eager "
            f"{r['speedup_vs_eager']:5.2f}x; best-round "
            f"{r['best_round_speedup_vs_eager']:5.2f}x "
            f"(1-thread eager {r['speedup_vs_eager_1_thread']:.2f}x)"
        )
    for name, t in target.items():
        other = {k: v for k, v in t.items() if k not in ("want", "got", "met")}
        print(
            f"  target {name}: want ≥ {t['want']}x, got {t['got']}x ({other}): "
            f"{'met' if t['met'] else 'NOT met'}"
        )


def settings_honored(model: Any) -> bool:
    """Whether the session `rnnedge.load` opened carries every option of STEP_SETTINGS."""
    import onnxruntime as ort

    from rnnedge.runtime.step import STEP_SETTINGS

    so = model.runner.session.get_session_options()
    want = {
        "intra_op_num_threads": so.intra_op_num_threads == STEP_SETTINGS["intra_op_num_threads"],
        "execution_mode": so.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL,
        "graph_optimization_level": so.graph_optimization_level
        == ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "enable_cpu_mem_arena": so.enable_cpu_mem_arena == STEP_SETTINGS["enable_cpu_mem_arena"],
        "config": all(
            so.get_session_config_entry(k) == v for k, v in STEP_SETTINGS["config"].items()
        ),
    }
    assert set(want) == set(STEP_SETTINGS), "STEP_SETTINGS has a key this check does not read"
    return all(want.values())


def stream_facts(model: Any, chunk: np.ndarray) -> dict:
    """Which path `Stream.step` takes once warm: the `StepSession`, and its bound buffers."""
    from rnnedge.runtime.step import StepSession
    from rnnedge.runtime.stream import Stream

    stream = model.stream(batch=BATCH)
    for _ in range(3):  # the buffers are bound once a chunk shape has been seen
        stream.step(chunk)
    core = getattr(stream, "_core", None)
    facts = {
        "stream_uses_step_session": isinstance(core, StepSession),
        "stream_step_bound": bool(getattr(core, "bound", False)),
        "load_honors_all_step_settings": settings_honored(model),
        "stream_module": sys.modules[Stream.__module__].__file__,
    }
    stream.close()
    for key, value in facts.items():
        print(f"  {key}: {value}")
    return facts


# -- the run ----------------------------------------------------------------------------------
def run(args: argparse.Namespace, folder: Path) -> dict:
    """Export, time eager then the ORT candidates, and return everything the report holds."""
    import rnnedge
    from rnnedge.runtime.step import STEP_SETTINGS

    chunk = np.zeros((BATCH, 1, FEATURES), np.float32)
    module, path = common.export_model(folder)
    floor = identity_graph(folder / "identity.onnx")
    eager, torch_threads = measure_eager(module, args.repeat, args.rounds)
    time.sleep(0.3)
    models = {"step": rnnedge.load(path, settings=STEP_SETTINGS), "default": rnnedge.load(path)}
    try:
        stats = common.measure(ort_candidates(models, path, floor, chunk), args.repeat, args.rounds)
        common.show("one step, batch 1 (interleaved rounds)", stats, RAW_DEFAULT)
        ratio = ratios(eager, stats)
        target = targets(ratio)
        show_ratios(ratio, target)
        facts = stream_facts(models["step"], chunk)
    finally:
        for m in models.values():
            m.close()
    return {
        "model": common.model_info(path, chunk),
        "settings": {
            "STEP_SETTINGS": STEP_SETTINGS,
            "ORT default options": "onnxruntime.SessionOptions() untouched",
            "torch_threads_default": torch_threads,
        },
        **facts,
        "latency": {**eager, **stats},
        "ratios": ratio,
        "targets": target,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    common.warn_if_busy()
    report: dict[str, Any] = {
        "benchmark": "stream_step",
        "date": common.now(),
        "machine": common.machine(),
        "versions": common.versions(),
    }
    with tempfile.TemporaryDirectory(prefix="rnnedge-stream-step-") as tmp:
        results = run(args, Path(tmp))
    report["machine"]["loadavg_end"] = common.loadavg()
    method = {**common.method(args.repeat, args.rounds), "quick": args.quick}
    report.update({"model": results.pop("model"), "settings": results.pop("settings")})
    report.update({"method": method, **results})
    report["seconds"] = round(time.perf_counter() - started, 1)
    out = args.json_out or (None if args.quick else common.default_out("stream-step"))
    if out is not None:
        common.write_json(out, report)
        print(f"\nwrote {out} in {report['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
