"""`rnnedge run`: forecasts from a CSV series, whole or streamed, in the data's units."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from rnnedge.cli import common, paths
from rnnedge.tools.forecast import FORMATS, ForecastJob


@dataclass(frozen=True)
class Options:
    job: ForecastJob
    output: Path | None  # None: CSV on stdout


def _add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_model(p)
    p.add_argument("--input", required=True, help="CSV file with a header row")
    p.add_argument("--columns", help="comma-separated input columns (default: all numeric)")
    common.add_output(p, "write .csv, .npy or .json (default: CSV on stdout)")
    p.add_argument("--runtime", default="auto", help="runtime (auto)")
    p.add_argument("--stream", action="store_true", help="feed the series chunk by chunk")
    p.add_argument("--chunk", type=int, default=1, help="steps per chunk with --stream (1)")
    common.add_state(p)
    common.add_nan_policy(p)


def _options(args: argparse.Namespace) -> Options:
    out = paths.optional_output_file(
        args.output, "--output", force=args.force, suffixes=FORMATS, inputs=(args.model, args.input)
    )
    job = ForecastJob(
        model=Path(args.model),
        series=Path(args.input),
        columns=common.columns(args.columns),
        runtime=args.runtime,
        stream=args.stream,
        chunk=common.at_least(args.chunk, "--chunk", 1),
        state_names=common.state_names(args.state),
        nan_policy=args.nan_policy,
    )
    return Options(job, out)


def _run(opts: Options) -> int:
    from rnnedge.tools.forecast import forecast, write_forecast

    result = forecast(opts.job)
    if opts.output is None:
        sys.stdout.write(result.csv_text())
    else:
        write_forecast(result, opts.output)
    return 0


COMMAND = common.Command(
    name="run",
    help="forecast with an ONNX model from a CSV series",
    description="Run the model over a CSV series (one sequence) and write per-step forecasts "
    "in the data's units, using the normalization stored in the model. --stream feeds it "
    "chunk by chunk, carrying state.",
    add_arguments=_add_arguments,
    options=_options,
    run=_run,
)
