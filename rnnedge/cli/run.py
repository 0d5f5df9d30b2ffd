"""`rnnedge run`: forecasts from a CSV series, whole, streamed or live from stdin, in data units."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rnnedge.cli import common, paths
from rnnedge.tools.forecast import FORMATS, Forecast, ForecastJob


@dataclass(frozen=True)
class Options:
    job: ForecastJob
    output: Path | None  # None: CSV (or JSON) on stdout
    json: bool


def _add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_model(p)
    p.add_argument(
        "--input",
        required=True,
        help="CSV file with a header row, or - for stdin (with --stream: each row is "
        "answered as it arrives)",
    )
    p.add_argument("--columns", help="comma-separated input columns (default: all numeric)")
    common.add_output(p, "write .csv, .npy or .json (default: CSV on stdout)")
    p.add_argument("--runtime", default="auto", help="runtime (auto)")
    p.add_argument("--stream", action="store_true", help="feed the series chunk by chunk")
    p.add_argument(
        "--chunk", type=common.whole, default=None, help="steps per chunk with --stream (1)"
    )
    common.add_load_overrides(p)
    common.add_extra(p)
    common.add_nan_policy(p)
    common.add_json(p, "the forecasts (JSON lines for a live --input - --stream)")


def _options(args: argparse.Namespace) -> Options:
    if args.chunk is not None and not args.stream:
        raise common.UsageError("--chunk sets the chunk size of --stream; add --stream or drop it")
    live = args.input == "-"
    if live and args.stream and args.output is not None:
        raise common.UsageError("a live feed (--input - --stream) answers on stdout; drop --output")
    if args.json and args.output is not None:
        raise common.UsageError("--json prints to stdout; use --output x.json to write a file")
    inputs = (args.model,) if live else (args.model, args.input)
    out = paths.optional_output_file(
        args.output, "--output", force=args.force, suffixes=FORMATS, inputs=inputs
    )
    job = ForecastJob(
        model=Path(args.model),
        series=None if live else Path(args.input),
        columns=common.columns(args.columns),
        runtime=args.runtime,
        stream=args.stream,
        chunk=common.at_least(1 if args.chunk is None else args.chunk, "--chunk", 1),
        nan_policy=args.nan_policy,
        **_load_fields(args),
    )
    return Options(job, out, bool(args.json))


def _load_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The job's `state_names`, other load overrides and extra inputs, from the flags."""
    overrides = common.load_overrides(args)
    return {
        "state_names": overrides.pop("state_names", None),
        "load_options": overrides,
        "extra": common.extra_values(args.extra),
    }


def _run(opts: Options) -> int:
    from rnnedge.tools.forecast import forecast, forecast_live, write_forecast

    if opts.job.series is None and opts.job.stream:

        def emit(one: Forecast) -> None:
            if opts.json:
                print(json.dumps(one.to_dict()["rows"][0]), flush=True)
            else:
                print(one.csv_text(header=one.first_step == 0), end="", flush=True)

        forecast_live(opts.job, sys.stdin, emit)
        return 0
    result = forecast(opts.job, source=sys.stdin if opts.job.series is None else None)
    if opts.output is not None:
        write_forecast(result, opts.output)
    elif opts.json:
        print(json.dumps(result.to_dict()))
    else:
        sys.stdout.write(result.csv_text())
    return 0


COMMAND = common.Command(
    name="run",
    help="forecast with an ONNX model from a CSV series",
    description="Run the model over a CSV series (one sequence) and write per-step forecasts "
    "in the data's units, using the normalization stored in the model. Columns are matched "
    "by name when the model knows its features. Row t of the output is the forecast for step "
    "t + horizon (the `horizon` column; 1 for rnnedge's forecasters), labelled with the "
    "input's time column. --stream feeds it chunk by chunk, carrying state; with --input - it "
    "answers each stdin row as it arrives.",
    add_arguments=_add_arguments,
    options=_options,
    run=_run,
)
