"""`rnnedge bench`: latency of every runner available here over a sweep of shapes."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from rnnedge._optional import require
from rnnedge.cli import common, paths
from rnnedge.tools.bench import DEFAULT_BUDGET_S, DEFAULT_WARMUP
from rnnedge.tools.benchrun import BenchConfig, known_runners
from rnnedge.tools.pipeline import is_checkpoint


@dataclass(frozen=True)
class Options:
    config: BenchConfig
    json: bool
    markdown: Path | None
    plot: Path | None


def _add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_model(
        p,
        "a .pt checkpoint from `rnnedge train` (exported to a temporary "
        "verified ONNX file) or an .onnx file",
    )
    p.add_argument(
        "--checkpoint",
        help="for an .onnx MODEL: the checkpoint it was exported "
        "from, for the eager baseline (without it: ONNX runners only)",
    )
    common.add_shape_grid(p, batches="1,8", seq_lens="1,16,64,256,1024")
    p.add_argument(
        "--budget-s",
        type=common.real,
        default=DEFAULT_BUDGET_S,
        help=f"time spent measuring each point ({DEFAULT_BUDGET_S})",
    )
    p.add_argument(
        "--warmup",
        type=common.whole,
        default=DEFAULT_WARMUP,
        help=f"untimed calls before each point ({DEFAULT_WARMUP})",
    )
    p.add_argument(
        "--retries",
        type=common.whole,
        default=2,
        help="re-measure a point up to this many times while other processes disturb it (2)",
    )
    p.add_argument(
        "--runtime",
        action="append",
        metavar="NAME",
        help="only this runner, repeatable: eager, ort-raw, rnnedge, or a "
        "registered runtime (default: all available)",
    )
    p.add_argument("--no-stream", action="store_true", help="skip the streaming-step point")
    p.add_argument(
        "--tune",
        action="store_true",
        help="tune ONNX Runtime settings for this "
        "model and machine first and write MODEL.onnx.tuning.json next to it",
    )
    p.add_argument(
        "--tune-budget-s",
        type=common.real,
        default=0.15,
        help="time per candidate setting while tuning (0.15)",
    )
    common.add_exporter(p, "exporter for a .pt MODEL (torchscript)")
    common.add_load_overrides(p)
    p.add_argument("--markdown", metavar="PATH", help="also write the results as markdown")
    p.add_argument("--plot", metavar="PATH.png", help="also plot latency vs seq_len (log-log)")
    common.add_force(p, "existing --markdown and --plot files")
    common.add_json(p)


def _options(args: argparse.Namespace) -> Options:
    model = Path(args.model)
    if is_checkpoint(model) and args.checkpoint:
        raise common.UsageError(
            f"--checkpoint is for an .onnx MODEL; MODEL is a checkpoint already ('{model}')"
        )
    known = known_runners()
    unknown = [n for n in args.runtime or [] if n not in known]
    if unknown:
        raise common.UsageError(
            f"--runtime {', '.join(unknown)} is not a runner; expected one of {', '.join(known)}"
        )
    config = BenchConfig(
        model=model,
        checkpoint=Path(args.checkpoint) if args.checkpoint else None,
        shapes=tuple(common.shape_grid(args.batches, args.seq_lens)),
        budget_s=common.positive_float(args.budget_s, "--budget-s", common.MAX_BUDGET_S),
        warmup=common.at_least(args.warmup, "--warmup", 0),
        retries=common.at_least(args.retries, "--retries", 0),
        runtimes=tuple(args.runtime) if args.runtime else None,
        stream=not args.no_stream,
        tune=args.tune,
        tune_budget_s=common.positive_float(
            args.tune_budget_s, "--tune-budget-s", common.MAX_BUDGET_S
        ),
        exporter=args.exporter,
        load_options=common.load_overrides(args),
    )
    reads = (args.model, args.checkpoint)
    markdown = paths.optional_output_file(
        args.markdown, "--markdown", force=args.force, inputs=reads
    )
    plot = paths.optional_output_file(
        args.plot, "--plot", force=args.force, suffixes=(".png",), inputs=reads
    )
    return Options(config, args.json, markdown, plot)


def _say(line: str) -> None:
    print(f"rnnedge bench: {line}", file=sys.stderr, flush=True)


def _run(opts: Options) -> int:
    from rnnedge.fileio import atomic_write_text
    from rnnedge.tools import render
    from rnnedge.tools.benchrun import run_bench

    if opts.plot is not None:
        require("matplotlib", "rnnedge bench --plot", extra="plot")
    if is_checkpoint(opts.config.model) or opts.config.checkpoint:
        require("torch", "rnnedge bench with a checkpoint", extra="export")
    data = run_bench(opts.config, say=_say)
    if opts.markdown is not None:
        atomic_write_text(opts.markdown, render.bench_markdown(data))
    if opts.plot is not None:
        render.plot_bench(data, opts.plot)
    print(render.to_json(data) if opts.json else render.bench_text(data))
    return 0


COMMAND = common.Command(
    name="bench",
    help="measure latency: eager PyTorch vs ONNX Runtime vs rnnedge",
    description="Time every runner available here (eager PyTorch, ONNX Runtime with default "
    "settings = ort-raw, rnnedge's tuned ONNX Runtime, GPU runtimes when present) over batch "
    "sizes and sequence lengths, plus one streaming step, and print p50/p90 with each "
    "runner's speedup over eager and over ort-raw from the same run.",
    add_arguments=_add_arguments,
    options=_options,
    run=_run,
)
