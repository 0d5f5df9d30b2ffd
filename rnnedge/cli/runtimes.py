"""`rnnedge runtimes`: which runtimes work here, and why the others do not."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from rnnedge.cli import common


@dataclass(frozen=True)
class Options:
    json: bool


def _add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_json(p)


def _options(args: argparse.Namespace) -> Options:
    return Options(args.json)


def _run(opts: Options) -> int:
    from rnnedge.runtime.backends.base import availability
    from rnnedge.tools import render

    avail = availability()
    if opts.json:
        print(render.to_json({n: {"available": r is None, "reason": r} for n, r in avail.items()}))
    else:
        print(
            render.table(
                ("runtime", "available", "why not"),
                [[n, r is None, r or ""] for n, r in avail.items()],
            )
        )
    return 0


COMMAND = common.Command(
    name="runtimes",
    help="list runtimes and whether they work here",
    description="List every registered runtime and whether it works here; for one that does "
    "not, the reason (a missing package, no GPU).",
    add_arguments=_add_arguments,
    options=_options,
    run=_run,
)
