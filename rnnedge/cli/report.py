"""`rnnedge report`: export, lint, parity, streaming and latency in one markdown + JSON."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from rnnedge._optional import require
from rnnedge.cli import common, paths
from rnnedge.tools.pipeline import is_checkpoint
from rnnedge.tools.report import FILES, ReportConfig


@dataclass(frozen=True)
class Options:
    config: ReportConfig
    json: bool


def _add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_model(
        p,
        "a .pt checkpoint, or pkg.module:attr / file.py:attr naming an "
        "nn.Module (or a function returning one)",
    )
    p.add_argument("-o", "--out-dir", default="runs/report", help="output folder (runs/report)")
    common.add_force(p, f"{', '.join(FILES)} already in the output folder")
    p.add_argument("--features", type=common.whole, help="input features, for a user module")
    p.add_argument(
        "--time-major", action="store_true", help="a user module takes (seq_len, batch, features)"
    )
    common.add_exporter(p)
    common.add_shape_grid(p, batches="1,4", seq_lens="1,16,64,256", what="parity and bench")
    p.add_argument("--budget-s", type=common.real, default=0.2, help="bench time per point (0.2)")
    common.add_json(p, "the report's JSON")


def _options(args: argparse.Namespace) -> Options:
    target = args.model
    checkpoint = is_checkpoint(target)
    where, sep, attr = target.rpartition(":")
    if not checkpoint and not (sep and where and attr):
        raise common.UsageError(
            f"MODEL '{target}' is neither a .pt checkpoint nor "
            "'module:attr'; e.g. mypkg.models:build or models.py:Forecaster"
        )
    if checkpoint and (args.features is not None or args.time_major):
        raise common.UsageError(
            "--features and --time-major describe a user module; a checkpoint knows its own"
        )
    if not checkpoint and args.features is None:
        raise common.UsageError("a user module needs --features (its input feature count)")
    features = None if args.features is None else common.at_least(args.features, "--features", 1)
    reads = (target,) if checkpoint else (where,)  # a module file is read, too
    out_dir = paths.output_folder(
        args.out_dir, "--out-dir", force=args.force, writes=FILES, inputs=reads
    )
    config = ReportConfig(
        model=target,
        out_dir=out_dir,
        features=features,
        time_major=args.time_major,
        exporter=args.exporter,
        shapes=tuple(common.shape_grid(args.batches, args.seq_lens)),
        budget_s=common.positive_float(args.budget_s, "--budget-s", common.MAX_BUDGET_S),
    )
    return Options(config, args.json)


def _say(line: str) -> None:
    print(f"rnnedge report: {line}", file=sys.stderr, flush=True)


def _run(opts: Options) -> int:
    require("torch", "rnnedge report", extra="export")
    require("onnx", "rnnedge report", extra="export")
    require("matplotlib", "rnnedge report's latency plot", extra="plot")
    from rnnedge.tools.render import to_json
    from rnnedge.tools.report import build_report

    report = build_report(opts.config, say=_say)
    if opts.json:
        print(to_json(report.data))
    else:
        print(report.markdown)
        print("\nwrote " + ", ".join(str(f) for f in report.files))
    report.parity.raise_if_failed()
    return 0


COMMAND = common.Command(
    name="report",
    help="export, lint, verify, stream and bench: one markdown + JSON report",
    description="Take a checkpoint (or a user module given as 'pkg.module:attr' or "
    "'file.py:attr'), export it to ONNX with verification, lint the graph, check parity on "
    "every runtime available here over a (batch, seq_len) grid, check streaming against one "
    "full pass, benchmark, and write report.md, report.json and latency.png.",
    add_arguments=_add_arguments,
    options=_options,
    run=_run,
)
