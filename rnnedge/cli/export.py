"""`rnnedge export`: a checkpoint to an ONNX file, verified before it appears."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rnnedge._optional import require
from rnnedge.cli import common, paths
from rnnedge.tools.pipeline import ExportJob


@dataclass(frozen=True)
class Options:
    job: ExportJob
    json: bool


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a .pt checkpoint written by `rnnedge train`")
    common.add_output(p, "ONNX path (default: the checkpoint's, .onnx)")
    common.add_exporter(p, "torch exporter; passed to torch explicitly (torchscript)")
    p.add_argument("--opset", type=common.whole, help="ONNX opset (17 torchscript, 18 dynamo)")
    p.add_argument(
        "--time-major",
        action="store_true",
        help="export with (seq_len, batch, features) inputs instead of batch-first",
    )
    p.add_argument("--no-verify", action="store_true", help="skip verification (not advised)")
    common.add_precision(p)
    common.add_json(p)


def _options(args: argparse.Namespace) -> Options:
    checkpoint = Path(args.checkpoint)
    out = paths.output_file(
        args.output or checkpoint.with_suffix(".onnx"),
        "--output",
        force=args.force,
        suffixes=(".onnx",),
        inputs=(checkpoint,),
    )
    opset = None if args.opset is None else common.at_least(args.opset, "--opset", 7)
    job = ExportJob(
        checkpoint,
        out,
        exporter=args.exporter,
        opset=opset,
        time_major=args.time_major,
        verify=not args.no_verify,
        precision=args.precision,
        margin=common.in_range(args.margin, "--margin", 0.0, 1.0, low_open=True),
    )
    if job.precision != "fp32" and not job.verify:
        raise common.UsageError("--precision judges a verified file; drop --no-verify")
    return Options(job, args.json)


def _run(opts: Options) -> int:
    require("torch", "rnnedge export", extra="export")
    require("onnx", "rnnedge export", extra="export")
    from rnnedge.tools.pipeline import export_checkpoint
    from rnnedge.tools.render import fmt, to_json

    res = export_checkpoint(opts.job)
    if opts.json:
        print(
            to_json(
                {
                    "path": res.path,
                    "exporter": res.exporter,
                    "opset": res.opset,
                    "seconds": res.seconds,
                    "verified": res.parity is not None,
                    "max_abs_diff": res.parity.max_abs() if res.parity else None,
                    "inputs": res.spec.inputs,
                    "outputs": res.spec.outputs,
                    "precision": res.precision.record if res.precision else None,
                }
            )
        )
        return 0
    print(f"wrote {res.path} ({res.exporter}, opset {res.opset}) in {fmt(res.seconds)} s")
    print("inputs : " + ", ".join(f"{t.name}{tuple(t.shape)}" for t in res.spec.inputs))
    print("outputs: " + ", ".join(f"{t.name}{tuple(t.shape)}" for t in res.spec.outputs))
    if res.parity:
        shapes = sorted({(c.batch, c.seq_len) for c in res.parity.comparisons})
        print(
            f"verified against eager PyTorch at {len(shapes)} (batch, seq_len) shapes "
            f"{shapes}: max abs diff {fmt(res.parity.max_abs())}"
        )
    if res.precision is not None:
        print("\n".join(precision_lines(res.precision)))
    return 0


def precision_lines(result: Any) -> list[str]:
    """What the precision gate measured for each candidate, and what it kept (export, optimize)."""
    from rnnedge.tools.render import precision_line

    lines = [f"precision gate: {precision_line(result.record)}"]
    for cand in result.candidates:
        reason = getattr(cand, "reason", None)
        if reason:
            lines.append(f"  {cand.precision}: {reason}")
    return lines + [f"  note: {note}" for note in result.notes]


COMMAND = common.Command(
    name="export",
    help="export a checkpoint to ONNX and verify it",
    description="Export with dynamic batch and seq_len axes and state as named inputs/outputs "
    "(h0/c0 -> hn/cn), then run the file at other batch sizes and lengths against eager "
    "PyTorch. A file that is wrong anywhere is not written.",
    add_arguments=_add_arguments,
    options=_options,
    run=_run,
)
