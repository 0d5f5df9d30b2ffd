"""`rnnedge inspect`: what an ONNX file holds, as rnnedge sees it."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from rnnedge.cli import common


@dataclass(frozen=True)
class Options:
    model: Path
    state_names: dict[str, str] | None
    json: bool


def _add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_model(p)
    common.add_state(p)
    common.add_json(p)


def _options(args: argparse.Namespace) -> Options:
    return Options(Path(args.model), common.state_names(args.state), args.json)


def _run(opts: Options) -> int:
    from rnnedge.tools import render
    from rnnedge.tools.inspect import inspect_model

    info = inspect_model(opts.model, state_names=opts.state_names)
    print(render.to_json(info) if opts.json else render.inspect_text(info))
    return 0


COMMAND = common.Command(
    name="inspect",
    help="show inputs, outputs, state pairs and RNN ops",
    description="Describe an ONNX file: its tensors, dynamic dims, the state pairs rnnedge "
    "found (or was told), extra inputs and RNN ops (listed when onnx is installed: "
    "pip install 'rnnedge[onnx]').",
    add_arguments=_add_arguments,
    options=_options,
    run=_run,
)
