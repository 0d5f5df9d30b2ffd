"""One streaming step on third-party ONNX files: rnnedge's `Stream.step` vs each project's loop.

The files and their protocols are `tests/fixtures/thirdparty/` (silero-vad, faster-whisper's
silero v6, DTLN's two models, GTCRN). For each, one step is what the project's own streaming
code does per call, written as in `protocols.py`:

* raw: a `session.run` on the project's session (1 intra-op thread, as those projects open
  theirs), with the feed built as the project builds it (silero-vad: the 64 carried samples
  concatenated in front of 512 new ones; the state fed back);
* rnnedge: `stream.step(the same new samples or frame)` of a stream over
  `rnnedge.load(file, settings=...)`, once with the raw session's settings (1 intra-op
  thread) and once with `STEP_SETTINGS` (also 1 thread, no spinning, no arena).

Candidates of a file run in interleaved rounds (`common.measure`); ratios are medians of the
raw loop over rnnedge's, per call and round-paired. Results are stored only when the machine
was quiet (1-minute load < 0.5 at the start; the run itself then adds one busy core): on a
busy machine the figures are printed as indicative and nothing is written.

    .venv/bin/python benchmarks/thirdparty_step.py [--repeat 3000] [--rounds 30] [--quick]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import common
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "fixtures" / "thirdparty"))
import protocols as P  # noqa: E402

#: the 1-minute load average under which results are worth storing
QUIET_LOAD = 0.5
TARGET = 1.0  # rnnedge's step at least as fast as the project's own loop
RAW = "raw loop (project's session, 1 thread)"
SAME = "rnnedge stream.step, same settings"
STEP = "rnnedge stream.step, STEP_SETTINGS"
ONE_THREAD = {"intra_op_num_threads": 1, "inter_op_num_threads": 1}
OVERRIDES = {
    "dtln_model_1": {"state_names": {"input_3": "tf_op_layer_stack_2"}},
    "dtln_model_2": {"state_names": {"input_5": "tf_op_layer_stack_5"}},
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3000, help="timed calls per candidate")
    ap.add_argument("--rounds", type=int, default=30, help="interleaved rounds")
    ap.add_argument(
        "--json-out",
        type=Path,
        default=None,
        help="results file (default: benchmarks/results/<date>-<host>-"
        "thirdparty-step.json; only written on a quiet machine)",
    )
    ap.add_argument("--quick", action="store_true", help="300 calls in 3 rounds, no file")
    args = ap.parse_args(argv)
    if args.quick:
        args.repeat, args.rounds = 300, 3
    return args


# -- one step of each project's loop, and the same step through rnnedge --------------------------
def _audio(n: int) -> np.ndarray:
    return P.make_signal(n, batch=1, seed=0)


def silero() -> tuple[Callable[[], Any], np.ndarray, dict[str, Any]]:
    """silero-vad's OnnxWrapper.__call__: context + 512 samples, state and sr fed."""
    session = P.open_session("silero_vad")
    frame = _audio(512)
    sr = np.array(16000, dtype=np.int64)
    held = {"state": np.zeros((2, 1, 128), np.float32), "context": np.zeros((1, 64), np.float32)}

    def step() -> Any:
        x = np.concatenate([held["context"], frame], axis=1)
        out, held["state"] = session.run(None, {"input": x, "state": held["state"], "sr": sr})
        held["context"] = x[..., -64:]
        return out

    return step, frame, {"context": 64, "frame": 512, "extra": {"sr": sr}}


def _carried(name: str, feed: str, states: dict[str, str], x: np.ndarray) -> Callable[[], Any]:
    """A loop that feeds `x` and carries each state input from its output, as the projects
    do (faster-whisper's h/c, DTLN's state, GTCRN's caches)."""
    session = P.open_session(name)
    inputs = {i.name: i for i in session.get_inputs()}
    held = {s: np.zeros(inputs[s].shape, np.float32) for s in states}
    names = [o.name for o in session.get_outputs()]
    where = {o: names.index(o) for o in states.values()}

    def step() -> Any:
        out = session.run(None, {feed: x, **held})
        for s, o in states.items():
            held[s] = out[where[o]]
        return out[0]

    return step


def cases() -> dict[str, tuple[Callable[[], Any], np.ndarray, dict[str, Any]]]:
    """name -> (raw step, what rnnedge's step gets, stream options)."""
    windows = P.feeds_faster_whisper_vad(_audio(1024)[0])[:1]
    mag = P.feeds_dtln_model_1(_audio(512)[0])[-1]
    time_in = P.feeds_dtln_model_2(P.open_session("dtln_model_1"), _audio(512)[0])[-1]
    mix = P.feeds_gtcrn(_audio(512)[0])[1]
    return {
        "silero_vad": silero(),
        "faster_whisper_vad": (
            _carried("faster_whisper_vad", "input", {"h": "hn", "c": "cn"}, windows),
            windows,
            {},
        ),
        "dtln_model_1": (
            _carried("dtln_model_1", "input_2", {"input_3": "tf_op_layer_stack_2"}, mag),
            mag,
            {},
        ),
        "dtln_model_2": (
            _carried("dtln_model_2", "input_4", {"input_5": "tf_op_layer_stack_5"}, time_in),
            time_in,
            {},
        ),
        "gtcrn": (
            _carried(
                "gtcrn",
                "mix",
                {
                    "conv_cache": "conv_cache_out",
                    "tra_cache": "tra_cache_out",
                    "inter_cache": "inter_cache_out",
                },
                mix,
            ),
            mix,
            {},
        ),
    }


def candidates(
    name: str, raw: Callable[[], Any], chunk: np.ndarray, options: dict[str, Any]
) -> dict[str, Callable[[], Any]]:
    import rnnedge
    from rnnedge.runtime.step import STEP_SETTINGS

    out = {RAW: raw}
    for label, settings in ((SAME, ONE_THREAD), (STEP, STEP_SETTINGS)):
        model = rnnedge.load(P.path(name), settings=settings, **OVERRIDES.get(name, {}))
        stream = model.stream(**options)
        out[label] = lambda stream=stream: stream.step(chunk)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start_load = common.loadavg()
    quiet = start_load is not None and start_load[0] < QUIET_LOAD
    print(
        f"1-minute load at start: {start_load[0] if start_load else 'unknown'}"
        f"{'' if quiet else ' (not quiet: figures are indicative, nothing is stored)'}"
    )
    report: dict[str, Any] = {"files": {}}
    for name, (raw, chunk, options) in cases().items():
        stats = common.measure(candidates(name, raw, chunk, options), args.repeat, args.rounds)
        common.show(f"{name}: one step, {tuple(chunk.shape)} new", stats, RAW)
        ratios = {
            label: {
                "median_ratio": round(stats[RAW]["median_us"] / stats[label]["median_us"], 2),
                "paired_ratio": common.paired(stats, RAW, label),
            }
            for label in (SAME, STEP)
        }
        report["files"][name] = {
            "file": P.FILES[name],
            "chunk_shape": list(chunk.shape),
            "stream_options": {k: v for k, v in options.items() if k != "extra"},
            "stats": {k: {m: v for m, v in s.items() if m != "round_us"} for k, s in stats.items()},
            "ratio_vs_raw": ratios,
            "target_met": min(r["median_ratio"] for r in ratios.values()) >= TARGET,
        }
    print("\nraw loop time / rnnedge step time (median; round-paired), target ≥ 1.0:")
    for name, entry in report["files"].items():
        cells = "; ".join(
            f"{label.split(', ')[1]} {r['median_ratio']:.2f}x ({r['paired_ratio']:.2f}x)"
            for label, r in entry["ratio_vs_raw"].items()
        )
        print(f"  {name:20s} {cells}")
    end_load = common.loadavg()  # recorded, not judged: the run itself keeps a core busy
    if args.quick or not quiet:
        print("not stored" + (" (--quick)" if args.quick else f" (load at start {start_load})"))
        return 0
    machine = {**common.machine(), "loadavg_start": start_load, "loadavg_end": end_load}
    report.update(
        method=common.method(args.repeat, args.rounds),
        machine=machine,
        versions=common.versions(),
        when=common.now(),
        target=TARGET,
    )
    path = common.write_json(args.json_out or common.default_out("thirdparty-step"), report)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
