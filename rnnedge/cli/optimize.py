"""`rnnedge optimize`: a reduced-precision copy of an fp32 ONNX file, kept only if it forecasts
as well (within a margin) on validation data."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from rnnedge._optional import require
from rnnedge.cli import common, paths
from rnnedge.cli.export import precision_lines


@dataclass(frozen=True)
class Options:
    model: Path
    output: Path
    precision: str
    margin: float
    checkpoint: Path | None
    data: Path | None
    window: int | None
    target: str | None
    json: bool


def _add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_model(p, "the fp32 .onnx file (from rnnedge export)")
    common.add_precision(p, default="auto")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--checkpoint", help="score on this checkpoint's validation split")
    g.add_argument("--data", help="score on a CSV (next-step windows over its rows)")
    p.add_argument(
        "--window", type=common.whole, help="steps per window with --data (required there)"
    )
    p.add_argument("--target", help="column forecast with --data (default: the model's)")
    common.add_output(p, "where the reduced file goes (default: MODEL.<precision>.onnx)")
    common.add_json(p)


def _options(args: argparse.Namespace) -> Options:
    model = Path(args.model)
    if args.data is not None and args.window is None:
        raise common.UsageError("--data needs --window (the window the model was trained on)")
    if args.data is None and (args.window is not None or args.target is not None):
        raise common.UsageError("--window and --target go with --data")
    default = model.with_name(f"{model.stem}.{args.precision}.onnx")
    out = paths.output_file(
        args.output or default,
        "--output",
        force=args.force,
        suffixes=(".onnx",),
        inputs=(model, args.checkpoint, args.data),
    )
    return Options(
        model=model,
        output=out,
        precision=args.precision,
        margin=common.in_range(args.margin, "--margin", 0.0, 1.0, low_open=True),
        checkpoint=None if args.checkpoint is None else Path(args.checkpoint),
        data=None if args.data is None else Path(args.data),
        window=None if args.window is None else common.at_least(args.window, "--window", 1),
        target=args.target,
        json=args.json,
    )


def _validation(opts: Options) -> object:
    """The data the gate scores on: a checkpoint's own split, or windows over a CSV."""
    from rnnedge.exporters.validation import Validation

    if opts.checkpoint is not None:
        require("torch", "reading a checkpoint", extra="export")
        from rnnedge.modeling.train import load_checkpoint

        return Validation.from_checkpoint(load_checkpoint(opts.checkpoint), str(opts.checkpoint))
    from rnnedge.errors import InputError
    from rnnedge.modeling.data import load_csv
    from rnnedge.runtime.model import load
    from rnnedge.tools.forecast import choose_columns

    assert opts.data is not None and opts.window is not None
    with load(opts.model) as model:
        spec = model.spec
    series = load_csv(opts.data, choose_columns(spec, None))
    if opts.target is not None:
        if opts.target not in series.columns:
            raise InputError(f"--target '{opts.target}' is not among {list(series.columns)}")
        targets: tuple[int, ...] = (series.columns.index(opts.target),)
    elif spec.contract is not None:
        targets = tuple(series.columns.index(t) for t in spec.contract.targets)
    elif spec.normalization is not None:
        targets = tuple(spec.normalization.target_index)
    else:
        targets = (0,)
    return Validation.from_values(
        series.values, opts.window, target_index=targets, source=str(opts.data)
    )


def _run(opts: Options) -> int:
    require("onnx", "rnnedge optimize", extra="export")
    from rnnedge.exporters.precision import quantize
    from rnnedge.tools.render import to_json

    validation = _validation(opts)
    res = quantize(opts.model, opts.precision, validation, margin=opts.margin, out=opts.output)
    if opts.json:
        print(to_json({"path": res.path, "record": res.record, "notes": res.notes}))
    else:
        print(f"wrote {res.path}")
        print("\n".join(precision_lines(res)))
    return 0


COMMAND = common.Command(
    name="optimize",
    help="reduce an ONNX file's precision (int8, bf16) only if the forecast holds up",
    description="Write an int8 (ONNX Runtime dynamic quantization) or bf16 (OpenVINO) version of "
    "an fp32 model, or with auto the fastest that passes, only if its validation MSE stays "
    "within --margin of fp32's, both on whole sequences and streamed step by step. Otherwise "
    "nothing is written and both figures are reported (exit 12).",
    add_arguments=_add_arguments,
    options=_options,
    run=_run,
)
