"""`rnnedge lint`: what goes silently wrong in RNN graphs; exit 1 when an error is found."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from rnnedge._optional import require
from rnnedge.cli import common


@dataclass(frozen=True)
class Options:
    model: Path
    seq_len: int | None
    json: bool


def _add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_model(p)
    p.add_argument(
        "--seq-len", type=common.whole, help="the example length used at export, if known"
    )
    common.add_json(p)


def _options(args: argparse.Namespace) -> Options:
    seq_len = None if args.seq_len is None else common.at_least(args.seq_len, "--seq-len", 1)
    return Options(Path(args.model), seq_len, args.json)


def _run(opts: Options) -> int:
    require("onnx", "rnnedge lint")
    from rnnedge.tools import render
    from rnnedge.tools.lint import lint, worst

    findings = lint(opts.model, expected_seq_len=opts.seq_len)
    if opts.json:
        print(render.to_json({"findings": findings, "worst": worst(findings)}))
    else:
        rows = [[f.severity, f.code, f.node, f.message, f.fix] for f in findings]
        print(render.table(("severity", "code", "node", "finding", "fix"), rows))
    return 1 if worst(findings) == "error" else 0


COMMAND = common.Command(
    name="lint",
    help="find what goes silently wrong in RNN graphs",
    description="Check RNN/LSTM/GRU nodes and the graph around them: frozen sequence axes, "
    "baked Reshape lengths, unrolled loops, GRU linear_before_reset, layout/direction vs "
    "spec, opset and IR version. Needs onnx alone (pip install 'rnnedge[onnx]'). Exits 1 "
    "when a finding is an error.",
    add_arguments=_add_arguments,
    options=_options,
    run=_run,
)
