"""`rnnedge demo`: train on sunspots, export, verify and stream: the whole pipeline."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from rnnedge._optional import require
from rnnedge.cli import common, paths
from rnnedge.cli.train import epoch_progress, summary_lines, train_settings
from rnnedge.tools.demo import DemoConfig

#: what the demo writes into --out-dir
WRITES = ("model.pt", "model.onnx")


@dataclass(frozen=True)
class Options:
    config: DemoConfig
    json: bool


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out-dir", default="runs/demo", help="where artifacts go (runs/demo)")
    common.add_force(p, f"{' and '.join(WRITES)} already in --out-dir")
    common.add_exporter(p)
    common.add_model_settings(p)
    common.add_train_settings(p)
    common.add_json(p)


def _options(args: argparse.Namespace) -> Options:
    out_dir = paths.output_folder(args.out_dir, "--out-dir", force=args.force, writes=WRITES)
    return Options(DemoConfig(out_dir, args.exporter, train_settings(args)), args.json)


def _say(line: str) -> None:
    print(f"rnnedge demo: {line}", flush=True)


def _run(opts: Options) -> int:
    require("torch", "rnnedge demo", extra="export")
    require("onnx", "rnnedge demo", extra="export")
    from rnnedge.tools import render
    from rnnedge.tools.demo import run_demo

    if opts.json:
        res = run_demo(opts.config)
        print(render.to_json(res.summary()))
    else:
        res = run_demo(opts.config, progress=epoch_progress, say=_say)
        exp = res.export
        print("\n".join(summary_lines(res.trained)))
        print(
            f"exported {exp.path} ({exp.exporter}, opset {exp.opset}), verified at other "
            f"lengths: max abs diff {render.fmt(exp.parity.max_abs() if exp.parity else None)}"
        )
        print("parity against eager PyTorch:")
        print(render.table(render.PARITY_HEADERS, render.parity_rows(res.parity)))
        print(
            f"streaming chunk by chunk (1, 7, random) vs one full pass: max abs diff "
            f"{render.fmt(res.stream_vs_full_max_abs)}"
        )
        print(f"done in {render.fmt(res.seconds)} s; artifacts in {opts.config.out_dir}/")
    res.parity.raise_if_failed()
    return 0


COMMAND = common.Command(
    name="demo",
    help="train on sunspots, export, verify: the whole pipeline",
    description="Train a forecaster on the bundled yearly sunspot series, export it to ONNX, "
    "verify it against eager PyTorch on every runtime available here at several batch sizes "
    "and lengths, and print a summary.",
    add_arguments=_add_arguments,
    options=_options,
    run=_run,
)
