"""Cold start of an app that embeds rnnedge, against bare ONNX Runtime on the same file.

Each sample is a whole new process, timed from spawn to exit by this script, running either

    import rnnedge; m = rnnedge.load(f); s = m.stream(); s.step(x)             (rnnedge)
    import onnxruntime; s = InferenceSession(f); s.run(None, zero feeds)        (bare ORT)

on one 2-layer, hidden-256 LSTM exported from PyTorch. The two alternate, in an order that
flips every round, so drift in machine load hits both alike; the first of each is a warm-up
(page cache) and not counted. Each child reports its peak RSS (`resource.getrusage`) and the
modules it imported, so a regression can be traced to the module that brought it
(`python -X importtime` on the rnnedge child says what each costs).

Targets: median wall time at most 1.15 × bare ORT's, median peak RSS at most bare + 8 MB.
The machine is shared, so the load average is checked first: the script waits for a quiet
machine (up to --wait-s) and records the load either way.

    python benchmarks/cold_start.py [--runs 15] [--model lstm.onnx] [--out results.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
HIDDEN, LAYERS, FEATURES = 256, 2, 1
WALL_RATIO_TARGET, RSS_EXTRA_TARGET_MB = 1.15, 8.0
#: a 1-minute load average above this share of the cores means other jobs are running
QUIET_LOAD_PER_CORE = 0.3

# Each child prints one JSON line: its peak RSS, the time from its first line to the end,
# and the modules it imported. Nothing else is imported before the measured lines.
_REPORT = """
import resource as _r, json as _j
_kb = _r.getrusage(_r.RUSAGE_SELF).ru_maxrss
print(_j.dumps({"maxrss_kb": _kb if sys.platform != "darwin" else _kb // 1024,
                "inner_s": time.perf_counter() - _t0, "modules": sorted(sys.modules)}))
"""
CHILDREN = {
    "rnnedge": """
import sys, time
_t0 = time.perf_counter()
import numpy as np
import rnnedge
m = rnnedge.load(sys.argv[1])
s = m.stream()
y = s.step(np.zeros((1, 1, m.spec.input(m.spec.data_input).shape[-1]), np.float32))
""",
    "bare-ort": """
import sys, time
_t0 = time.perf_counter()
import numpy as np
import onnxruntime
sess = onnxruntime.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
feeds = {i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], np.float32)
         for i in sess.get_inputs()}
y = sess.run(None, feeds)
""",
}


EXPORT = f"""
import sys, torch, rnnedge
from rnnedge.modeling.models import ModelConfig, SequenceModel
torch.manual_seed(0)
cfg = ModelConfig(cell="lstm", input_size={FEATURES}, hidden_size={HIDDEN}, num_layers={LAYERS})
rnnedge.export(SequenceModel(cfg).eval(), torch.randn(2, 16, {FEATURES}), sys.argv[1])
"""


def export_model(folder: Path) -> Path:
    """A seeded 2×256 LSTM forecaster, exported and verified by `rnnedge.export`.

    In a process of its own: Linux carries a parent's peak RSS into every child it forks
    (`ru_maxrss` survives fork and exec), so this process must stay small while it measures.
    """
    path = folder / "lstm-2x256.onnx"
    subprocess.run([sys.executable, "-c", EXPORT, str(path)], check=True, timeout=600)
    return path


def child_env(pycache: Path | None) -> dict[str, str]:
    """The children's environment: bytecode cached in `pycache` (as an installed package has
    its .pyc files), or as this process has it when None."""
    env = dict(os.environ)
    if pycache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def run_child(kind: str, model: Path, env: dict[str, str]) -> dict[str, Any]:
    """One whole process of `kind`: wall time from spawn to exit, and what it reported."""
    code = CHILDREN[kind] + _REPORT
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code, str(model)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"{kind} child failed ({out.returncode}): {out.stderr[-2000:]}")
    report = json.loads(out.stdout.strip().splitlines()[-1])
    return {"wall_s": wall, **report}


def wait_for_quiet(wait_s: float) -> tuple[bool, list[float]]:
    """(quiet, load averages): polls until the load is low or `wait_s` has passed."""
    cores = os.cpu_count() or 1
    deadline = time.monotonic() + wait_s
    while True:
        load = list(os.getloadavg())
        if load[0] <= QUIET_LOAD_PER_CORE * cores:
            return True, load
        if time.monotonic() >= deadline:
            return False, load
        print(f"load average {load[0]:.2f} on {cores} cores: waiting for a quiet machine")
        time.sleep(10)


def measure(model: Path, runs: int, env: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """`runs` samples per kind, interleaved, order flipped every round; warm-ups dropped."""
    kinds = list(CHILDREN)
    for kind in kinds:  # warm-up: page cache, .pyc files
        run_child(kind, model, env)
    samples: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    for i in range(runs):
        for kind in kinds if i % 2 == 0 else kinds[::-1]:
            samples[kind].append(run_child(kind, model, env))
    return samples


def summarize(samples: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Medians per kind, the ratios against bare ORT, and whether the targets are met."""
    med = {
        kind: {
            "wall_s": statistics.median(s["wall_s"] for s in runs),
            "inner_s": statistics.median(s["inner_s"] for s in runs),
            "maxrss_mb": statistics.median(s["maxrss_kb"] for s in runs) / 1024,
            "modules": len(runs[-1]["modules"]),
        }
        for kind, runs in samples.items()
    }
    ours, bare = med["rnnedge"], med["bare-ort"]
    ratio = ours["wall_s"] / bare["wall_s"]
    extra_mb = ours["maxrss_mb"] - bare["maxrss_mb"]
    return {
        "medians": med,
        "wall_ratio": ratio,
        "inner_ratio": ours["inner_s"] / bare["inner_s"],
        "rss_extra_mb": extra_mb,
        "targets": {"wall_ratio_max": WALL_RATIO_TARGET, "rss_extra_mb_max": RSS_EXTRA_TARGET_MB},
        "met": {"wall": ratio <= WALL_RATIO_TARGET, "rss": extra_mb <= RSS_EXTRA_TARGET_MB},
    }


def show(summary: dict[str, Any]) -> None:
    med, bare = summary["medians"], summary["medians"]["bare-ort"]
    print(
        f"{'':10} {'wall s':>8} {'ratio':>6} {'in-proc s':>10} {'peak RSS MB':>12} "
        f"{'+MB':>6} {'modules':>8}"
    )
    for kind, m in med.items():
        print(
            f"{kind:10} {m['wall_s']:8.3f} {m['wall_s'] / bare['wall_s']:6.2f} "
            f"{m['inner_s']:10.3f} {m['maxrss_mb']:12.1f} "
            f"{m['maxrss_mb'] - bare['maxrss_mb']:6.1f} {m['modules']:8d}"
        )
    met = summary["met"]
    print(
        f"targets: wall ≤ {WALL_RATIO_TARGET}× bare ORT: "
        f"{'met' if met['wall'] else 'MISSED'} ({summary['wall_ratio']:.3f}×); "
        f"RSS ≤ bare + {RSS_EXTRA_TARGET_MB:g} MB: {'met' if met['rss'] else 'MISSED'} "
        f"({summary['rss_extra_mb']:+.1f} MB)"
    )


def versions() -> dict[str, str]:
    import numpy
    import onnxruntime

    import rnnedge

    return {
        "rnnedge": rnnedge.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="samples per kind (≥ 10)")
    parser.add_argument("--model", type=Path, help="an LSTM .onnx (default: export 2×256)")
    parser.add_argument(
        "--wait-s",
        type=float,
        default=300.0,
        help="how long to wait for a quiet machine before measuring anyway",
    )
    parser.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="run the children with this environment's bytecode settings "
        "(by default .pyc files are cached in a temporary folder, as an "
        "installed package has them, even where PYTHONDONTWRITEBYTECODE "
        "is set)",
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS / f"{dt.date.today().isoformat()}-cold-start.json"
    )
    args = parser.parse_args(argv)
    if args.runs < 10:
        parser.error("--runs must be at least 10: a median of fewer whole processes is noise")
    with tempfile.TemporaryDirectory(prefix="rnnedge-cold-") as tmp:
        model = args.model or export_model(Path(tmp))
        env = child_env(None if args.no_bytecode_cache else Path(tmp) / "pycache")
        quiet, load_start = wait_for_quiet(args.wait_s)
        if not quiet:
            print(f"warning: measuring on a busy machine (load {load_start[0]:.2f})")
        start = time.perf_counter()
        samples = measure(model, args.runs, env)
        seconds = time.perf_counter() - start
        parent_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        # only now: what these imports take would have been inherited by every child
        from rnnedge.fileio import atomic_write_text
        from rnnedge.runtime.tuned import cpu_model

        model_name = model.name if args.model else f"2×{HIDDEN} LSTM (rnnedge.export)"
        ours = samples["rnnedge"][-1]["modules"]
        report = {
            "benchmark": "cold_start",
            "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "model": {
                "file": model_name,
                "bytes": model.stat().st_size,
                "cell": "lstm",
                "num_layers": LAYERS,
                "hidden_size": HIDDEN,
            },
            "method": {
                "runs_per_kind": args.runs,
                "interleaved": "kinds alternate, order flipped each round; 1 warm-up each",
                "wall": "spawn to exit, measured by the parent",
                "inner": "child's first line to after the step",
                "rss": "ru_maxrss of the child (resource.getrusage); a child starts from its "
                "parent's peak, which stayed below the children's",
                "parent_maxrss_kb_while_measuring": parent_kb,
                "bytecode": (
                    "as this environment has it"
                    if args.no_bytecode_cache
                    else "cached by the warm-up run (PYTHONPYCACHEPREFIX), for both kinds"
                ),
            },
            "machine": {
                "cpu_model": cpu_model(),
                "cores": os.cpu_count(),
                "platform": platform.platform(),
                "loadavg_start": load_start,
                "loadavg_end": list(os.getloadavg()),
                "quiet_at_start": quiet,
            },
            "versions": versions(),
            **summarize(samples),
            "rnnedge_modules": [m for m in ours if m == "rnnedge" or m.startswith("rnnedge.")],
            "modules_beyond_bare_ort": sorted(set(ours) - set(samples["bare-ort"][-1]["modules"])),
            "seconds": seconds,
            "samples": {
                k: [
                    {"wall_s": s["wall_s"], "inner_s": s["inner_s"], "maxrss_kb": s["maxrss_kb"]}
                    for s in v
                ]
                for k, v in samples.items()
            },
        }
    show(report)
    print("rnnedge modules imported:", ", ".join(report["rnnedge_modules"]))
    atomic_write_text(args.out, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
