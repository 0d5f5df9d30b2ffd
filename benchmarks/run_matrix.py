"""The fixed latency matrix: eager PyTorch vs raw ONNX Runtime vs rnnedge's tuned runtime.

Run from the repository root:

    .venv/bin/python benchmarks/run_matrix.py            # ~1-3 min on 2 cores
    .venv/bin/python benchmarks/run_matrix.py --investigate   # + dynamo/opset/int8 probes

Writes benchmarks/results/<YYYY-MM-DD>-<machine>-matrix.{json,md,png}. Every workload is a
seeded `SequenceModel` with random weights, exported with rnnedge (verified against eager),
tuned for its shape on this machine, then measured in interleaved rounds: eager, ort-raw and
rnnedge take turns, so drifts of a shared machine hit all three alike. Each runner's exact
settings go into the results, with the CPU, core count and library versions.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rnnedge.modeling.models import ModelConfig, SequenceModel, stateful_wrapper
from rnnedge.modeling.torch_runner import TorchRunner
from rnnedge.runtime.backends.ort import OrtCpuRunner
from rnnedge.runtime.tuned import TunedOrtRunner, cpu_model, shape_class
from rnnedge.tools import bench
from rnnedge.tools import render as report
from rnnedge.tools.tune import tune
from rnnedge.verify.parity import make_feeds

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Workload:
    name: str
    cell: str
    layers: int
    hidden: int
    features: int
    batch: int
    seq_len: int
    target: float | None = 1.2
    kind: str = "sequence"  # or "stream_step": one step, batch 1, through Model.stream()
    seed: int = 0

    @property
    def description(self) -> str:
        what = (
            "streaming step (1 step, batch 1)"
            if self.kind == "stream_step"
            else f"batch {self.batch}, {self.seq_len} steps"
        )
        return (
            f"{self.cell.upper()} {self.layers}×{self.hidden}, {self.features} input "
            f"feature(s), {what}"
        )


WORKLOADS = (
    Workload("lstm-2x256-b1-t256", "lstm", 2, 256, 1, 1, 256),
    Workload("gru-2x256-b64-t128", "gru", 2, 256, 16, 64, 128),
    Workload("lstm-1x512-b1-t100", "lstm", 1, 512, 1, 1, 100),
    Workload("lstm-2x128-stream-step", "lstm", 2, 128, 1, 1, 1, None, "stream_step"),
)


def say(text: str) -> None:
    print(f"run_matrix: {text}", file=sys.stderr, flush=True)


def build(
    w: Workload, folder: Path, exporter: str = "torchscript", opset: int | None = None
) -> tuple[SequenceModel, Any]:
    """The seeded model and its verified export."""
    import rnnedge
    from rnnedge.exporters.onnx import example_for

    torch.manual_seed(w.seed)
    model = SequenceModel(
        ModelConfig(cell=w.cell, input_size=w.features, hidden_size=w.hidden, num_layers=w.layers)
    ).eval()
    path = folder / f"{w.name}.{exporter}{opset or ''}.onnx"
    with torch.no_grad():
        res = rnnedge.export(
            model, example_for(True, w.features), path, exporter=exporter, opset=opset
        )
    return model, res


def call_for(runner: Any, w: Workload, spec: Any) -> Callable[[], Any]:
    if w.kind == "stream_step":
        return bench.stream_step_call(runner, spec, np.random.default_rng(w.seed + 1))
    feeds = make_feeds(spec, w.batch, w.seq_len, np.random.default_rng(w.seed + 1))
    return lambda: runner.infer(feeds)


def tuned_entry(w: Workload, res: Any, args: argparse.Namespace) -> tuple[dict, dict]:
    """Tune the exported file for this workload's shape; the tuning and its chosen entry."""
    if args.wait_quiet > 0:
        bench.wait_quiet(args.wait_quiet)
    tuning = tune(res.path, [(w.batch, w.seq_len)], budget_s=args.tune_budget_s, spec=res.spec)
    entry = tuning["classes"][shape_class(w.batch, w.seq_len)]
    say(
        f"{w.name}: tuned → {entry['chosen']} ({report.fmt(entry['speedup_vs_defaults'])}× "
        "vs ORT defaults in tuning); measuring"
    )
    return tuning, entry


def runner_settings(entry: dict) -> dict[str, dict]:
    """What each runner ran with, stored beside its figures."""
    return {
        "eager": {
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "inference_mode": True,
        },
        "ort-raw": {"session_options": "onnxruntime defaults (none set)"},
        "rnnedge": {
            "settings": entry["settings"],
            "batch_split": entry["batch_split"],
            "label": entry["chosen"],
        },
    }


def measure_runners(
    w: Workload, model: SequenceModel, res: Any, tuning: dict, args: argparse.Namespace
) -> dict[str, Any]:
    """eager, ort-raw and rnnedge in interleaved rounds: name → (LatencyStats, other load)."""
    spec, path = res.spec, res.path
    names_in = [t.name for t in spec.inputs]
    names_out = [t.name for t in spec.outputs]
    with (
        TorchRunner(stateful_wrapper(model), names_in, names_out) as eager,
        OrtCpuRunner(path, settings={}) as raw,
        TunedOrtRunner(path, tuning, spec) as tuned,
    ):
        runners = {"eager": eager, "ort-raw": raw, "rnnedge": tuned}
        if args.wait_quiet > 0:
            bench.wait_quiet(args.wait_quiet)
        calls = {name: call_for(r, w, spec) for name, r in runners.items()}
        return bench.run_interleaved(
            calls,
            rounds=args.rounds,
            budget_s=args.budget_s,
            synchronize={n: r.synchronize for n, r in runners.items()},
        )


def workload_result(w: Workload, res: Any, runners: dict[str, Any], entry: dict) -> dict:
    """The workload's record: its runners' figures and the speedups read from them."""
    p50 = {k: v["latency_s"]["p50"] for k, v in runners.items()}
    best_base = min(p50["eager"], p50["ort-raw"])
    return {
        "name": w.name,
        "description": w.description,
        "kind": w.kind,
        "batch": w.batch,
        "seq_len": w.seq_len,
        "config": {
            "cell": w.cell,
            "num_layers": w.layers,
            "hidden_size": w.hidden,
            "input_size": w.features,
            "seed": w.seed,
        },
        "export": {
            "exporter": res.exporter,
            "opset": res.opset,
            "verified_max_abs_diff": res.parity.max_abs() if res.parity else None,
        },
        "runners": runners,
        "vs_eager": p50["eager"] / p50["rnnedge"],
        "vs_ort_raw": p50["ort-raw"] / p50["rnnedge"],
        "vs_best_baseline": best_base / p50["rnnedge"],
        "target": w.target,
        "met": None if w.target is None else best_base / p50["rnnedge"] >= w.target,
        "tuning": entry,
    }


def measure_workload(w: Workload, folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    model, res = build(w, folder)
    say(f"{w.name}: exported and verified in {report.fmt(res.seconds)} s; tuning")
    tuning, entry = tuned_entry(w, res, args)
    settings = runner_settings(entry)
    runners = {}
    for name, (stats, load) in measure_runners(w, model, res, tuning, args).items():
        runners[name] = {
            "latency_s": stats.to_dict(),
            "other_load": load,
            "noisy": load is not None and load >= bench.NOISY_LOAD,
            "settings": settings[name],
            **({"label": entry["chosen"]} if name == "rnnedge" else {}),
        }
        say(f"{w.name}: {name} p50 {report.fmt(1e3 * stats.p50)} ms (n={stats.samples})")
    result = workload_result(w, res, runners, entry)
    if args.investigate and w.kind == "sequence":
        result["investigations"] = investigate(w, model, res.path, folder, res.spec, args)
    result["seconds"] = time.perf_counter() - t0
    return result


def investigate(
    w: Workload, model: SequenceModel, path: Path, folder: Path, spec: Any, args: argparse.Namespace
) -> dict[str, Any]:
    """Probes beyond session options, each measured against ORT defaults in the same rounds."""
    feeds = make_feeds(spec, w.batch, w.seq_len, np.random.default_rng(w.seed + 1))
    with TorchRunner(
        stateful_wrapper(model), [t.name for t in spec.inputs], [t.name for t in spec.outputs]
    ) as eager:
        expected = eager.infer(feeds)
    variants: dict[str, Path] = {"ort-raw (torchscript opset 17)": path}
    notes: dict[str, str] = {}
    for exporter, opset in (("torchscript", 14), ("torchscript", 20), ("dynamo", 18)):
        try:
            _, res = build(w, folder, exporter, opset)
            variants[f"ort-raw ({exporter} opset {opset})"] = res.path
        except Exception as exc:  # an exporter failing here is a finding, not a crash
            notes[f"{exporter} opset {opset}"] = str(exc).splitlines()[0][:200]
    if w.cell == "lstm":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        qpath = folder / f"{w.name}.int8.onnx"
        root = logging.getLogger()
        level, root.level = root.level, logging.ERROR  # its advice to pre-process is moot here
        try:
            quantize_dynamic(
                str(path), str(qpath), weight_type=QuantType.QInt8, op_types_to_quantize=["LSTM"]
            )
        finally:
            root.setLevel(level)
        variants["int8 weights (DynamicQuantizeLSTM)"] = qpath
    else:
        notes["int8"] = "ORT has no dynamically quantized GRU kernel (LSTM only)"
    out: dict[str, Any] = {}
    runners = {k: OrtCpuRunner(p, settings={}).activate() for k, p in variants.items()}
    try:
        calls = {k: (lambda r=r: r.infer(feeds)) for k, r in runners.items()}
        measured = bench.run_interleaved(calls, rounds=2, budget_s=args.budget_s)
        base = measured["ort-raw (torchscript opset 17)"][0].p50
        for k, (stats, load) in measured.items():
            got = runners[k].infer(feeds)
            diff = max(float(np.abs(got[n] - expected[n]).max()) for n in expected)
            out[k] = {
                "p50_s": stats.p50,
                "vs_ort_raw": base / stats.p50,
                "max_abs_diff_vs_eager": diff,
                "other_load": load,
            }
            say(
                f"{w.name}: investigate {k}: p50 {report.fmt(1e3 * stats.p50)} ms, "
                f"max abs diff {report.fmt(diff)}"
            )
    finally:
        for r in runners.values():
            r.deactivate()
    return {"variants": out, "notes": notes}


def workload_notes(results: list[dict[str, Any]]) -> list[str]:
    """Notes that keep readers from over-reading small differences."""
    same = [w["name"] for w in results if w["tuning"]["chosen"] == "ort-defaults"]
    notes = []
    if same:
        notes.append(
            f"{', '.join(same)}: the tuning kept ORT's defaults, so rnnedge and "
            "ort-raw ran with the same session options; their difference there is "
            "this machine's run-to-run noise, not a property of either"
        )
    noisy = [w["name"] for w in results if any(r["noisy"] for r in w["runners"].values())]
    if noisy:
        notes.append(
            f"{', '.join(noisy)}: other processes used ≥ 0.1 core during some of "
            "the measurement (see other_load in the JSON); treat those with care"
        )
    return notes


def write(matrix: dict[str, Any], out_dir: Path, stem: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(report.to_json(matrix) + "\n")
    (out_dir / f"{stem}.md").write_text(report.matrix_markdown(matrix))
    report.plot_matrix(matrix, out_dir / f"{stem}.png")


def machine_slug() -> str:
    cpu = re.sub(r"[^a-z0-9]+", "-", cpu_model().lower()).strip("-")
    return f"{cpu[:32].strip('-')}-{bench.environment()['cores']}c"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    ap.add_argument("--machine", default=None, help="name in the file names (CPU + cores)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    ap.add_argument(
        "--budget-s",
        type=float,
        default=1.5,
        help="measuring time per runner and workload, over all rounds (1.5)",
    )
    ap.add_argument("--tune-budget-s", type=float, default=0.2)
    ap.add_argument(
        "--wait-quiet",
        type=float,
        default=10.0,
        metavar="S",
        help="before each workload, wait up to S s for other processes to go "
        "quiet (10; 0 = don't wait)",
    )
    ap.add_argument("--only", action="append", help="run only this workload (repeatable)")
    ap.add_argument(
        "--investigate",
        action="store_true",
        help="also probe other exporters/opsets and int8 weights (slower)",
    )
    ap.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="only re-render the .md and .png of an existing results JSON",
    )
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        matrix = json.loads(args.render.read_text())
        write(matrix, args.render.parent, args.render.name.removesuffix(".json"))
        return 0
    start = time.perf_counter()
    env = bench.environment()
    workloads = [w for w in WORKLOADS if not args.only or w.name in args.only]
    with tempfile.TemporaryDirectory(prefix="rnnedge-matrix-") as tmp:
        results = [measure_workload(w, Path(tmp), args) for w in workloads]
    notes = [
        "ort-raw: InferenceSession with no options set (ORT picks intra-op threads = cores, "
        "spinning on, ORT_ENABLE_ALL, sequential). eager: the same module under "
        "torch.inference_mode with torch's default threads.",
        "rnnedge: TunedOrtRunner with the settings chosen by rnnedge.tools.tune.tune on this "
        "machine for this shape (candidates: ORT defaults; intra-op threads 1/2 × "
        "optimization basic/all × sequential/parallel × spinning 0/1; for batch > 1, the "
        "batch split into sub-batches run concurrently on 1-thread sessions).",
        *workload_notes(results),
    ]
    matrix = {
        "environment": env,
        "workloads": results,
        "notes": notes,
        "args": {k: v for k, v in vars(args).items() if k != "out_dir"},
        "seconds": time.perf_counter() - start,
    }
    stem = f"{env['date']}-{args.machine or machine_slug()}-matrix"
    write(matrix, args.out_dir, stem)
    print(report.table(report.MATRIX_HEADERS, report.matrix_rows(matrix)))
    say(f"wrote {args.out_dir / stem}.{{json,md,png}} in {report.fmt(matrix['seconds'])} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
