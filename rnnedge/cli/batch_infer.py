"""`rnnedge batch-infer`: the command line of `rnnedge.batch.infer.batch_infer`.

Kept out of `rnnedge.cli.main` so that parsing needs nothing beyond argparse; Ray is imported only
when the command runs.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any

from rnnedge.tools import render as report


def add_batch_parser(sub: Any) -> argparse.ArgumentParser:
    """Register `batch-infer` on the `rnnedge` subparsers object and return its parser."""
    p = sub.add_parser(
        "batch-infer",
        help="forecast every sequence in a folder of files with Ray",
        description="Run an ONNX model over every sequence of a folder of long-format parquet "
        "or CSV files (columns seq_id, step, then the features) on a pool of Ray actors, "
        "and write <input stem>.parquet (seq_id, step, forecast_0…) per input. Sequences are "
        "batched by exact length, so results equal running each one alone. A file that "
        "cannot be read is reported by name and the others are still processed; the exit "
        "code is then that of its error (4 unreadable file, 3 invalid content).",
    )
    p.add_argument("model", help="the .onnx file (written by `rnnedge export`)")
    p.add_argument("--input", required=True, help="folder of .parquet/.csv files, or one file")
    p.add_argument("--output", required=True, help="folder for the forecast files")
    p.add_argument("--actors", type=int, default=2, help="actors, one model session each (2)")
    p.add_argument("--batch-size", type=int, default=1024, help="sequences per actor call (1024)")
    p.add_argument(
        "--gpu",
        default="auto",
        choices=["auto", "yes", "no"],
        help="one GPU per actor: auto uses GPUs when the cluster has them (auto)",
    )
    p.add_argument(
        "--runtime",
        choices=["ort-cpu", "ort-cuda"],
        help="runtime in the actors (default: ort-cuda on GPU actors, else ort-cpu)",
    )
    p.add_argument(
        "--max-restarts",
        type=int,
        default=3,
        help="restarts of a dead actor and retries of its batch (3)",
    )
    p.add_argument(
        "--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local cluster)"
    )
    p.add_argument("--progress", action="store_true", help="show Ray Data progress bars")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    return p


def cmd_batch_infer(args: argparse.Namespace) -> int:
    """Run the batch; 0 when every file was written, else the worst failure's exit code."""
    from rnnedge.batch.infer import batch_infer

    use_gpu: bool | str = {"auto": "auto", "yes": True, "no": False}[args.gpu]
    # Ray prints worker deaths and retries on stdout; stdout is kept for the result alone
    with contextlib.redirect_stdout(sys.stderr):
        res = batch_infer(
            args.model,
            args.input,
            args.output,
            num_actors=args.actors,
            batch_size=args.batch_size,
            use_gpu=use_gpu,
            runtime=args.runtime,
            max_restarts=args.max_restarts,
            address=args.address,
            progress=args.progress,
        )
    if args.json:
        print(report.to_json(res.to_dict()))
    else:
        rate = res.sequences_out / res.seconds if res.seconds else 0.0
        total = len(res.outputs) + len(res.failed)
        print(
            f"wrote {len(res.outputs)} of {total} files to {args.output}: "
            f"{res.sequences_out} sequences, {res.rows_out} rows in "
            f"{report.fmt(res.seconds)} s ({report.fmt(rate)} sequences/s) on "
            f"{res.actors} {res.runtime} actor(s)"
        )
        if res.skipped:
            print(f"skipped (not .parquet/.pq/.csv): {', '.join(res.skipped)}")
    for name, failure in res.failed.items():
        print(f"rnnedge batch-infer: error: {name}: {failure.message}", file=sys.stderr)
    return res.exit_code
