"""`rnnedge verify`: an ONNX file against eager PyTorch on every runtime, over a grid."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from rnnedge._optional import require
from rnnedge.cli import common
from rnnedge.tools.pipeline import VerifyJob


@dataclass(frozen=True)
class Options:
    job: VerifyJob
    json: bool


def _add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_model(p)
    p.add_argument("--checkpoint", required=True, help="the checkpoint it was exported from")
    p.add_argument(
        "--runtime",
        action="append",
        help="runtime to check, repeatable (default: every available one)",
    )
    common.add_shape_grid(p, batches="1,3", seq_lens="1,5,64,257")
    common.add_json(p)


def _options(args: argparse.Namespace) -> Options:
    shapes = tuple(common.shape_grid(args.batches, args.seq_lens))
    runtimes = tuple(args.runtime) if args.runtime else None
    return Options(VerifyJob(Path(args.model), Path(args.checkpoint), runtimes, shapes), args.json)


def _run(opts: Options) -> int:
    require("torch", "rnnedge verify", extra="export")
    from rnnedge.tools import render
    from rnnedge.tools.pipeline import verify_onnx

    rep = verify_onnx(opts.job)
    if opts.json:
        print(render.to_json({"ok": rep.ok, "comparisons": rep.comparisons}))
    else:
        print(render.table(render.PARITY_HEADERS, render.parity_rows(rep)))
    rep.raise_if_failed()
    return 0


COMMAND = common.Command(
    name="verify",
    help="prove an ONNX file equals eager PyTorch on runtimes",
    description="Run the ONNX file on each runtime over a grid of batch sizes and seq_len "
    "values and compare every output with eager PyTorch (fp32: |a-e| <= 1e-5 + 1e-4*|e|).",
    add_arguments=_add_arguments,
    options=_options,
    run=_run,
)
