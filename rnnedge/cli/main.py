"""The `rnnedge` command: the parser built from a table of commands, errors to exit codes.

Every subcommand is one module of this package exposing `COMMAND` (see `common.Command`).
Importing them costs argparse and the commands' typed options, never torch, onnx or a
runtime, so `rnnedge --help` is fast and works in a runtime-only install. Errors are mapped
to exit codes here and nowhere else: an `RnnEdgeError` exits with its class's code and one
line on stderr (2 for a bad command-line value, 3 for bad data, ...), anything else with 1;
`--debug`, before or after the subcommand, adds the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import traceback
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn

from rnnedge import __version__
from rnnedge.cli import (
    batch_infer,
    bench,
    demo,
    export,
    inspect,
    lint,
    optimize,
    report,
    run,
    runtimes,
    serve,
    train,
    triton,
    verify,
)
from rnnedge.cli.common import Command, UsageError
from rnnedge.errors import EXIT_CODES, ModelFileError, RnnEdgeError

#: in the order `rnnedge --help` lists them
COMMANDS: tuple[Command[Any], ...] = (
    demo.COMMAND,
    train.COMMAND,
    export.COMMAND,
    optimize.COMMAND,
    verify.COMMAND,
    run.COMMAND,
    inspect.COMMAND,
    lint.COMMAND,
    runtimes.COMMAND,
    triton.COMMAND,
    serve.COMMAND,
    batch_infer.COMMAND,
    bench.COMMAND,
    report.COMMAND,
)

EPILOG = (
    "exit codes: 0 ok, 1 unexpected error, 2 bad command line, "
    + ", ".join(f"{code} {name}" for name, code in EXIT_CODES.items() if code > 2)
    + ", 130 interrupted"
)


class Parser(argparse.ArgumentParser):
    """argparse's parser with its refusals as one line, like every other `rnnedge` error:
    `rnnedge run: error: argument --chunk: invalid int value: 'x' (see rnnedge run --help)`."""

    def error(self, message: str) -> NoReturn:
        message = one_line(message)
        if len(message) > 300:  # argparse quotes the whole value, however long
            message = message[:300] + "…"
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def one_line(text: str) -> str:
    """`text` on one line: a value quoted in a message may hold line breaks."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _no_nul(args: argparse.Namespace) -> None:
    """No operating system takes a NUL byte in a path or name; say so before one is used."""
    for dest, value in vars(args).items():
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, str) and "\x00" in v for v in values):
            name = dest.replace("_", "-")
            raise UsageError(f"{name} holds a NUL byte, which no file name or value may hold")


def build_parser() -> argparse.ArgumentParser:
    """The whole `rnnedge` parser, one subparser per entry of `COMMANDS`."""
    parser = Parser(
        prog="rnnedge",
        description="Train, export and run recurrent PyTorch models on ONNX Runtime, with "
        "parity against eager PyTorch proven at every sequence length.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"rnnedge {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    # the subcommands take --debug too; SUPPRESS keeps one given before them from being reset
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        p = sub.add_parser(
            command.name, help=command.help, description=command.description, parents=[debug]
        )
        command.add_arguments(p)
        p.set_defaults(handler=command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `rnnedge` with `argv` (default: the process's) and return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    command: Command[Any] = args.handler
    # torch's, numpy's and onnx's warnings would break the one-line contract: kept, and shown
    # only under --debug
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return _run(command, args)
        finally:
            if args.debug:
                for w in caught:
                    print(
                        f"rnnedge {command.name}: warning: {w.category.__name__}: "
                        f"{one_line(str(w.message))} ({w.filename}:{w.lineno})",
                        file=sys.stderr,
                    )


def _run(command: Command[Any], args: argparse.Namespace) -> int:
    """One command, with every failure turned into one line and its exit code."""
    try:
        _no_nul(args)
        return int(command.run(command.options(args)))
    except BrokenPipeError:  # the reader went away (`| head`): not an error of ours
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - interpreter exit flushes it
        return 141
    except RnnEdgeError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"rnnedge {command.name}: error: {one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a user-given path the system refuses (too long, a loop, ...)
        if args.debug:
            traceback.print_exc()
        where = f"'{str(exc.filename)[:120]}': " if exc.filename else ""
        print(
            f"rnnedge {command.name}: error: {where}{exc.strerror or one_line(str(exc))}; check "
            "the path and its permissions",
            file=sys.stderr,
        )
        return ModelFileError.exit_code
    except KeyboardInterrupt:
        print(f"rnnedge {command.name}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        print(
            f"rnnedge {command.name}: unexpected error: {exc.__class__.__name__}: "
            f"{one_line(str(exc))} (run with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
