"""Reduced precision, judged on the forecast: rnnedge fp32 / int8 / OpenVINO bf16 vs raw ORT.

The four workloads of issue 13, each a model trained on the bundled sunspots series
(`rnnedge.modeling.train`), so the precision gate judges real forecasts:

    W1  LSTM 2×128, batch 1, one streaming step   (state carried between calls)
    W2  LSTM 2×256, batch 1, seq_len 256
    W3  GRU  2×256, batch 64, seq_len 128
    W4  LSTM 1×512, batch 1, seq_len 100

Per workload: export fp32; run the gate (`rnnedge.exporters.precision.quantize`) for int8 and,
where the CPU has native bf16 and openvino is installed, bf16 — recording the validation MSE of
fp32 and of the reduced file, whole sequences and streamed; try a tuning of the fp32 file
under the tuner's quiet-machine rule; then time in one interleaved run (`common.measure`):

* `raw-ort-fp32`: `session.run` on the fp32 file with ORT's defaults (the baseline; for W1 the
  state is fed back by hand, as an app would);
* `rnnedge-fp32`: `rnnedge.load(fp32)` (with the tuning when one was adopted) — `Model.run`, or
  `Model.stream().step` for W1;
* `rnnedge-int8`: the same on the int8 file the gate wrote (when it passed);
* `openvino-bf16`: `rnnedge.runtime.backends.openvino.load_model(fp32, precision="bf16")`.

Ratios are round-paired speedups over `raw-ort-fp32` from that same run (`common.paired`).
Figures are stored only when the 1-minute load average is under `QUIET_LOADAVG` before every
timed run (the script waits up to `--wait-s` for it; its own training counts, so it waits that
out too) and other processes took under `QUIET_OTHER_CORES` while it ran (`CpuLoad`, this
process excluded); otherwise nothing is written unless --out names a file, and the file says
which workloads were not quiet.
`--quick` trains for 2 epochs and times briefly, to show the script works on a busy machine;
it writes to --out only when given one, never into benchmarks/results.

    .venv/bin/python benchmarks/precision.py [--workloads W1,W4] [--epochs 12] [--out FILE]
    .venv/bin/python benchmarks/precision.py --quick
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import common
import numpy as np

from rnnedge.tools.bench import CpuLoad

#: figures are kept only when the 1-minute load average is below this before a timed run ...
QUIET_LOADAVG = 0.5
#: ... and other processes took fewer cores than this while it ran (this process excluded)
QUIET_OTHER_CORES = 0.25
TARGETS = {
    "W4": ("rnnedge-int8", 3.0),
    "W2": ("rnnedge-int8", 2.0),
    "W3": ("openvino-bf16", 1.6),
    "W1": ("rnnedge-int8", 1.6),
}
INT8_FILE_TARGET = 0.30
BASE = "raw-ort-fp32"


@dataclass(frozen=True)
class Workload:
    name: str
    cell: str
    layers: int
    hidden: int
    batch: int
    seq_len: int  # 1 with step=True: one streaming step
    step: bool
    repeat: int
    warmup: int


WORKLOADS = {
    "W1": Workload("W1", "lstm", 2, 128, 1, 1, True, 20000, 500),
    "W2": Workload("W2", "lstm", 2, 256, 1, 256, False, 400, 20),
    "W3": Workload("W3", "gru", 2, 256, 64, 128, False, 40, 3),
    "W4": Workload("W4", "lstm", 1, 512, 1, 100, False, 800, 30),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default="W1,W2,W3,W4")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument(
        "--wait-s",
        type=float,
        default=600.0,
        help="how long to wait for the load average to fall before a timed run",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="2 epochs, short timings, no file in benchmarks/results",
    )
    ap.add_argument("--out", type=Path, default=None)
    return ap.parse_args(argv)


def wait_quiet(wait_s: float) -> float:
    """The 1-minute load average once under QUIET_LOADAVG; waits up to `wait_s` for it."""
    deadline = time.monotonic() + wait_s
    while True:
        load = os.getloadavg()[0]
        if load < QUIET_LOADAVG or time.monotonic() >= deadline:
            return load
        time.sleep(5.0)


def trained(w: Workload, epochs: int, folder: Path) -> tuple[Path, Any, dict[str, Any]]:
    """Train on sunspots, export fp32; the path, the gate's validation data and the scores."""
    import torch

    import rnnedge
    from rnnedge.exporters.validation import Validation
    from rnnedge.modeling.data import load_sunspots
    from rnnedge.modeling.models import ModelConfig
    from rnnedge.modeling.train import TrainConfig, train

    cfg = ModelConfig(
        cell=w.cell, input_size=1, hidden_size=w.hidden, num_layers=w.layers, output_size=1
    )
    t0 = time.perf_counter()
    res = train(load_sunspots(), cfg, TrainConfig(epochs=epochs, patience=0))
    path = folder / f"{w.name.lower()}.onnx"
    rnnedge.export(res.model, torch.randn(1, 8, 1), path, normalization=res.normalizer.to_spec())
    v = Validation.from_values(
        res.val_values, res.train_config.window, target_index=res.train_config.target_index
    )
    info = {
        "val_mse_eager": res.val_mse,
        "persistence_mse": res.persistence_mse,
        "skill": res.skill,
        "epochs": epochs,
        "train_s": time.perf_counter() - t0,
    }
    return path, v, info


def gate(path: Path, v: Any, folder: Path) -> tuple[dict[str, Path], dict[str, Any]]:
    """Each reduced precision through the gate: the files that passed, and every figure."""
    from rnnedge.errors import RnnEdgeError
    from rnnedge.exporters.precision import quantize
    from rnnedge.runtime.backends.openvino import bf16_support

    files: dict[str, Path] = {}
    out: dict[str, Any] = {}
    wanted = ["int8"] + (["bf16"] if bf16_support() else [])
    for p in wanted:
        try:
            r = quantize(path, p, v, out=folder / f"{path.stem}.{p}.onnx")
        except RnnEdgeError as exc:
            out[p] = {"passed": False, "error": f"{type(exc).__name__}: {exc}"}
            continue
        rec = r.record
        files[p] = r.path
        out[p] = {
            "passed": True,
            "scheme": rec.scheme,
            "fp32_mse": rec.fp32_value,
            "mse": rec.value,
            "mse_change": rec.relative_change,
            "stream_mse": rec.stream_value,
            "stream_mse_change": None
            if rec.stream_value is None
            else (rec.stream_value - rec.fp32_value) / rec.fp32_value,
            "file_bytes": r.path.stat().st_size,
            "file_vs_fp32": r.path.stat().st_size / path.stat().st_size,
            "candidates": [
                {
                    "scheme": c.scheme,
                    "mse": c.value,
                    "stream_mse": c.stream_value,
                    "passed": c.passed,
                    "reason": c.reason,
                }
                for c in r.candidates
            ],
            "notes": r.notes,
        }
    if "bf16" not in wanted:
        out["bf16"] = {"passed": False, "error": "this CPU has no native bf16"}
    return files, out


def tuned(path: Path, w: Workload, quick: bool) -> dict[str, Any]:
    """Tune the fp32 file for this shape under the quiet rule; what happened, in words."""
    from rnnedge.tools import tune

    rule = tune.QuietRule(readings=4 if quick else 20)
    shape = (w.batch, 1 if w.step else w.seq_len)
    try:
        result = tune.tune(path, [shape], budget_s=0.02 if quick else 0.15, rule=rule)
    except tune.MachineBusyError as exc:
        return {"written": False, "why": str(exc)}
    tune.write_tuning(path, result)
    return {
        "written": True,
        "summary": result["summary"],
        "classes": {
            k: {kk: v[kk] for kk in ("chosen", "adopted", "reason")}
            for k, v in result["classes"].items()
        },
    }


def candidates(w: Workload, path: Path, files: dict[str, Path]) -> tuple[dict[str, Any], list]:
    """Zero-argument callables for the interleaved run, and what to close afterwards."""
    import rnnedge
    from rnnedge.runtime.backends import openvino as ovb

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((w.batch, w.seq_len, 1)) * 40 + 50).astype(np.float32)
    sess = common.session(path)
    models = {"rnnedge-fp32": rnnedge.load(path)}
    if "int8" in files:
        models["rnnedge-int8"] = rnnedge.load(files["int8"])
    if "bf16" in files:
        models["openvino-bf16"] = ovb.load_model(path, precision="bf16")
    cands: dict[str, Any] = {}
    if w.step:
        cands[BASE] = common.raw_step(sess)
        for name, m in models.items():
            stream = m.stream(batch=1)
            cands[name] = lambda s=stream: s.step(x)
    else:
        feeds = {
            i.name: np.zeros([d if isinstance(d, int) else w.batch for d in i.shape], np.float32)
            for i in sess.get_inputs()
        }
        feeds["x"] = x
        cands[BASE] = lambda: sess.run(None, feeds)
        for name, m in models.items():
            cands[name] = lambda m=m: m.run(x)
    return cands, list(models.values())


def run_workload(w: Workload, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    print(
        f"\n== {w.name}: {w.cell.upper()} {w.layers}×{w.hidden}, batch {w.batch}, "
        f"{'one step' if w.step else f'seq_len {w.seq_len}'}",
        flush=True,
    )
    path, v, info = trained(w, 2 if args.quick else args.epochs, folder)
    files, gated = gate(path, v, folder)
    for p, g in gated.items():
        print(
            f"  gate {p}: "
            + (
                f"MSE {g['fp32_mse']:.2f} → {g['mse']:.2f} "
                f"({g['mse_change']:+.2%}, streamed {g['stream_mse_change']:+.2%})"
                if g["passed"]
                else g["error"][:200]
            ),
            flush=True,
        )
    tuning = tuned(path, w, args.quick)
    print(f"  tuning: {tuning.get('summary') or tuning['why'][:160]}", flush=True)
    load = wait_quiet(0.0 if args.quick else args.wait_s)
    cands, models = candidates(w, path, files)
    repeat = max(args.rounds, w.repeat // (20 if args.quick else 1))
    with CpuLoad() as others:  # what other processes took while this run was timed
        stats = common.measure(
            cands, repeat, rounds=args.rounds, warmup=max(1, w.warmup // (10 if args.quick else 1))
        )
    other = others.other_cores
    for m in models:
        m.close()
    ratios = {name: common.paired(stats, BASE, name) for name in stats if name != BASE}
    common.show(
        f"{w.name} (load average {load:.2f} before; other processes "
        f"{'?' if other is None else f'{other:.2f}'} cores while timing)",
        stats,
        BASE,
    )
    return {
        "workload": asdict(w),
        "training": info,
        "gate": gated,
        "tuning": tuning,
        "loadavg_before": load,
        "other_cores_while_timing": other,
        "quiet": load < QUIET_LOADAVG and (other is None or other < QUIET_OTHER_CORES),
        "stats": stats,
        "vs_raw_ort_fp32": ratios,
        "fp32_file_bytes": path.stat().st_size,
    }


def targets_table(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, r in results.items():
        ratios = r["vs_raw_ort_fp32"]
        rows.append(
            {
                "target": f"{name} rnnedge-fp32 ≥ 1.0×",
                "measured": ratios.get("rnnedge-fp32"),
                "met": (ratios.get("rnnedge-fp32") or 0) >= 1.0,
            }
        )
        cand, goal = TARGETS[name]
        got = ratios.get(cand)
        change = r["gate"].get(cand.split("-")[1], {}).get("mse_change")
        rows.append(
            {
                "target": f"{name} {cand} ≥ {goal}×",
                "measured": got,
                "mse_change": change,
                "met": got is not None and got >= goal,
            }
        )
        int8 = r["gate"].get("int8", {})
        if r["workload"]["cell"] == "lstm" and int8.get("passed"):
            rows.append(
                {
                    "target": f"{name} int8 file ≤ {INT8_FILE_TARGET:.0%} of fp32",
                    "measured": int8["file_vs_fp32"],
                    "met": int8["file_vs_fp32"] <= INT8_FILE_TARGET,
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = [n.strip().upper() for n in args.workloads.split(",") if n.strip()]
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        print(f"unknown workloads {unknown}; choose from {', '.join(WORKLOADS)}")
        return 2
    if not args.quick:
        load = wait_quiet(args.wait_s)
        if load >= QUIET_LOADAVG:
            print(
                f"not measuring: the 1-minute load average stayed at {load:.2f} (≥ "
                f"{QUIET_LOADAVG}) for {args.wait_s:.0f} s; figures taken now would not be "
                "worth storing. Run again on a quiet machine, or with --quick to check the "
                "script works."
            )
            return 3
    report: dict[str, Any] = {
        "benchmark": "precision",
        "created": common.now(),
        "machine": common.machine(),
        "quick": args.quick,
        "versions": common.versions(**_extra_versions()),
        "method": {
            **common.method(0, args.rounds),
            "baseline": BASE,
            "quiet_loadavg": QUIET_LOADAVG,
            "quiet_other_cores": QUIET_OTHER_CORES,
        },
    }
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            results[name] = run_workload(WORKLOADS[name], args, Path(tmp))
    report["workloads"] = results
    report["targets"] = targets_table(results)
    print("\ntargets:")
    for row in report["targets"]:
        got = row["measured"]
        print(
            f"  {row['target']:38s} {('—' if got is None else f'{got:.2f}'):>6s}  "
            f"{'met' if row['met'] else 'NOT met'}"
        )
    noisy = [n for n, r in results.items() if not r["quiet"]]
    if args.quick or noisy:
        why = (
            "quick mode"
            if args.quick
            else (
                f"not quiet during {noisy}: load average ≥ {QUIET_LOADAVG} before, or other "
                f"processes ≥ {QUIET_OTHER_CORES} cores while timing"
            )
        )
        if args.out is None:
            print(f"\nnot stored ({why}); pass --out FILE to keep these figures elsewhere")
            return 0 if args.quick else 3
        report["not_quiet"] = why
    out = args.out or common.default_out("precision")
    common.write_json(out, report)
    print(f"\nwritten to {out}")
    return 0


def _extra_versions() -> dict[str, str]:
    try:
        from importlib.metadata import version

        return {"openvino": version("openvino")}
    except Exception:
        return {}


if __name__ == "__main__":
    sys.exit(main())
