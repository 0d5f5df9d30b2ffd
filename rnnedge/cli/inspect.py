"""`rnnedge inspect`: what an ONNX file holds, as rnnedge sees it."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rnnedge.cli import common


@dataclass(frozen=True)
class Options:
    model: Path
    overrides: dict[str, Any] = field(default_factory=dict)
    json: bool = False


def _add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_model(p)
    common.add_load_overrides(p)
    common.add_json(p)


def _options(args: argparse.Namespace) -> Options:
    return Options(Path(args.model), common.load_overrides(args), args.json)


def _run(opts: Options) -> int:
    from rnnedge.tools import render
    from rnnedge.tools.inspect import inspect_model

    info = inspect_model(opts.model, **opts.overrides)
    print(render.to_json(info) if opts.json else render.inspect_text(info))
    return 0


COMMAND = common.Command(
    name="inspect",
    help="show inputs, outputs, state pairs and RNN ops",
    description="Describe an ONNX file: its tensors, dynamic dims, the recurrent contract "
    "rnnedge found (or was told): data input and output, their layout, state pairs and their "
    "batch axes, extra inputs; for a file it cannot complete, what it found and which option "
    "completes it; and RNN ops (listed when onnx is installed: pip install 'rnnedge[onnx]').",
    add_arguments=_add_arguments,
    options=_options,
    run=_run,
)
