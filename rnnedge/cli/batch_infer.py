"""`rnnedge batch-infer`: every sequence of a folder of files through a model, on Ray actors.

Parsing needs nothing beyond argparse; Ray, pyarrow and the model are imported when the
command runs (`rnnedge.batch.infer` asks for them through `_optional`, so a missing Ray is
"install rnnedge[ray]", exit 5).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path

from rnnedge.cli import common, paths

GPU_CHOICES = {"auto": "auto", "yes": True, "no": False}


@dataclass(frozen=True)
class Options:
    """The `batch_infer` arguments, checked."""

    model: Path
    inputs: Path
    output_dir: Path
    num_actors: int
    batch_size: int
    use_gpu: bool | str
    runtime: str | None
    max_restarts: int
    address: str | None
    progress: bool
    json: bool


def _add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_model(p, "the .onnx file (written by `rnnedge export`)")
    p.add_argument("--input", required=True, help="folder of .parquet/.csv files, or one file")
    p.add_argument(
        "--output", required=True, help="folder for the forecast files, <input stem>.parquet each"
    )
    common.add_force(p, "forecast files already in --output")
    p.add_argument(
        "--actors", type=common.whole, default=2, help="actors, one model session each (2)"
    )
    p.add_argument(
        "--batch-size", type=common.whole, default=1024, help="sequences per actor call (1024)"
    )
    p.add_argument(
        "--gpu",
        default="auto",
        choices=list(GPU_CHOICES),
        help="one GPU per actor: auto uses GPUs when the cluster has them (auto)",
    )
    p.add_argument(
        "--runtime",
        choices=["ort-cpu", "ort-cuda"],
        help="runtime in the actors (default: ort-cuda on GPU actors, else ort-cpu)",
    )
    p.add_argument(
        "--max-restarts",
        type=common.whole,
        default=3,
        help="restarts of a dead actor and retries of its batch (3)",
    )
    p.add_argument(
        "--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local cluster)"
    )
    p.add_argument("--progress", action="store_true", help="show Ray Data progress bars")
    common.add_json(p)


def _address(value: str | None) -> str | None:
    """What Ray takes as a cluster address: auto, local, or HOST:PORT (ray:// too)."""
    if value is None or value in ("auto", "local"):
        return value
    host, sep, port = value.rpartition(":")
    if not (sep and host and port.isdigit() and 0 < int(port) < 65536):
        raise common.UsageError(
            f"--address '{value}' is not a Ray cluster address; expected "
            "HOST:PORT (e.g. 10.0.0.5:6379), ray://HOST:PORT, auto or local"
        )
    return value


def _options(args: argparse.Namespace) -> Options:
    from rnnedge.batch.io import list_inputs, output_name

    files, _ = list_inputs(args.input)  # what is written is named after what is read
    out = paths.output_folder(
        args.output,
        "--output",
        force=args.force,
        writes=[output_name(f) for f in files],
        inputs=(args.model, args.input, *files),
    )
    return Options(
        model=Path(args.model),
        inputs=Path(args.input),
        output_dir=out,
        num_actors=common.at_least(args.actors, "--actors", 1),
        batch_size=common.at_least(args.batch_size, "--batch-size", 1),
        use_gpu=GPU_CHOICES[args.gpu],
        runtime=args.runtime,
        max_restarts=common.at_least(args.max_restarts, "--max-restarts", 0),
        address=_address(args.address),
        progress=args.progress,
        json=args.json,
    )


def _run(opts: Options) -> int:
    """0 when every file was written, else the worst failure's exit code."""
    from rnnedge.batch.infer import batch_infer
    from rnnedge.tools.render import fmt, to_json

    # Ray prints worker deaths and retries on stdout; stdout is kept for the result alone
    with contextlib.redirect_stdout(sys.stderr):
        res = batch_infer(
            opts.model,
            opts.inputs,
            opts.output_dir,
            num_actors=opts.num_actors,
            batch_size=opts.batch_size,
            use_gpu=opts.use_gpu,
            runtime=opts.runtime,
            max_restarts=opts.max_restarts,
            address=opts.address,
            progress=opts.progress,
        )
    if opts.json:
        print(to_json(res.to_dict()))
    else:
        rate = res.sequences_out / res.seconds if res.seconds else 0.0
        total = len(res.outputs) + len(res.failed)
        print(
            f"wrote {len(res.outputs)} of {total} files to {opts.output_dir}: "
            f"{res.sequences_out} sequences, {res.rows_out} rows in {fmt(res.seconds)} s "
            f"({fmt(rate)} sequences/s) on {res.actors} {res.runtime} actor(s)"
        )
        if res.skipped:
            print(f"skipped (not .parquet/.pq/.csv): {', '.join(res.skipped)}")
    for name, failure in res.failed.items():
        print(f"rnnedge batch-infer: error: {name}: {failure.message}", file=sys.stderr)
    return res.exit_code


COMMAND = common.Command(
    name="batch-infer",
    help="forecast every sequence in a folder of files with Ray",
    description="Run an ONNX model over every sequence of a folder of long-format parquet or "
    "CSV files (columns seq_id, step, then the features) on a pool of Ray actors, and write "
    "<input stem>.parquet (seq_id, step, forecast_0…) per input. Sequences are batched by "
    "exact length, so results equal running each one alone. A file that cannot be read is "
    "reported by name and the others are still processed; the exit code is then that of its "
    "error (4 unreadable file, 3 invalid content).",
    add_arguments=_add_arguments,
    options=_options,
    run=_run,
)
