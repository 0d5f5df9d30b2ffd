"""What every `rnnedge` command shares: argument groups, value checks and the command record.

A command is three functions: one adds its arguments, one turns the parsed Namespace into a
typed options object (checking every value here, once), one calls the library with it. The
checks raise `UsageError`, which `rnnedge.cli.main` turns into exit code 2 and one line, so a
bad command-line value (`--chunk 0`, `--lr nan`, an existing output without `--force`) is told
apart from bad *data* (exit 3); `rnnedge.cli.paths` checks the paths a command will write the
same way. Importing it imports neither torch nor onnx nor a runtime.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from rnnedge.errors import InputError, RnnEdgeError
from rnnedge.exporters.onnx import EXPORTERS
from rnnedge.runtime.gaps import MISSING_POLICIES

OptionsT = TypeVar("OptionsT")

#: the largest count any option takes: past int32, a number is a slip, and C code overflows
INT_MAX = 2**31 - 1
#: the largest forecaster `train`/`demo` build: one 4096-wide LSTM layer is already 0.5 GB
MAX_HIDDEN_SIZE = 4096
MAX_NUM_LAYERS = 64
#: time budgets per measured point (`bench`, `report`): an hour is far past any useful one
MAX_BUDGET_S = 3600.0
#: idle timeouts of served sequences: past this, "never" is meant, and Triton's µs overflow
MAX_IDLE_S = 1e9


_PLAIN_NUMBER = re.compile(
    r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(nan|inf|infinity)", re.I | re.A
)
_PLAIN_INT = re.compile(r"[+-]?\d+", re.A)


def real(text: str) -> float:
    """argparse type: a plain ASCII decimal number (`float()` would also take `٣` or `1_0`)."""
    if not _PLAIN_NUMBER.fullmatch(text.strip()):
        raise argparse.ArgumentTypeError(f"expected a number like 0.5 or 1e-3, got {text!r}")
    return float(text)


def whole(text: str) -> int:
    """argparse type: a plain ASCII integer (`int()` would also take `٣` or `1_000`)."""
    if not _PLAIN_INT.fullmatch(text.strip()):
        raise argparse.ArgumentTypeError(f"expected a whole number like 3, got {text!r}")
    return int(text)


class UsageError(RnnEdgeError):
    """A command-line value is out of range, malformed or conflicts with another one."""

    exit_code = 2


@dataclass(frozen=True)
class Command(Generic[OptionsT]):
    """One subcommand: its help, its arguments, and how its arguments become a library call.

    Attributes:
        name: The word after `rnnedge`.
        help: One line for `rnnedge --help`.
        description: The paragraph at the top of `rnnedge NAME --help`.
        add_arguments: Adds the command's arguments to its subparser.
        options: Turns the parsed Namespace into the command's typed options; raises
            `UsageError` for a bad value. The only place a Namespace is read.
        run: Does the work with those options and returns the exit code.
    """

    name: str
    help: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    options: Callable[[argparse.Namespace], OptionsT]
    run: Callable[[OptionsT], int]


# --- argument groups ----------------------------------------------------------------------------
def add_json(p: argparse.ArgumentParser, what: str = "the result") -> None:
    """`--json`: machine-readable output on stdout, progress and errors on stderr."""
    p.add_argument("--json", action="store_true", help=f"print {what} as JSON on stdout")


def add_model(p: argparse.ArgumentParser, help: str = "the .onnx file") -> None:
    """The positional MODEL every inference-side command starts with."""
    p.add_argument("model", help=help)


def add_shape_grid(p: argparse.ArgumentParser, batches: str, seq_lens: str, what: str = "") -> None:
    """`--batches` and `--seq-lens`: the (batch, seq_len) grid a command runs over."""
    prefix = f"{what} " if what else ""
    p.add_argument("--batches", default=batches, help=f"{prefix}batch sizes ({batches})")
    p.add_argument("--seq-lens", default=seq_lens, help=f"{prefix}sequence lengths ({seq_lens})")


def add_state(p: argparse.ArgumentParser) -> None:
    """`--state IN:OUT[@AXIS]`, repeatable: the state pairs of a model rnnedge did not write."""
    p.add_argument(
        "--state",
        action="append",
        metavar="IN:OUT[@AXIS]",
        help="state pairs of a foreign model, e.g. --state h0:hn --state c0:cn; @AXIS gives "
        "the state's batch axis (@none: it has none), e.g. --state input_3:stack_2@0",
    )


def add_load_overrides(p: argparse.ArgumentParser) -> None:
    """What `rnnedge.load` may be told about a file rnnedge did not write (detection rules:
    `rnnedge.runtime.foreign`); a spec stored in the file wins."""
    g = p.add_argument_group(
        "foreign models (ignored for files rnnedge exported; `rnnedge inspect` shows what "
        "is detected without them)"
    )
    g.add_argument("--data-input", metavar="NAME", help="the graph input carrying the sequence")
    g.add_argument("--data-output", metavar="NAME", help="the graph output carrying the result")
    g.add_argument(
        "--layout",
        metavar="LETTERS",
        help="the data input's axes, one letter each: B batch, T time, others fixed, "
        "e.g. BT (batch, samples), TF (frames, features; no batch), BFTC",
    )
    add_state(g)  # type: ignore[arg-type]


def add_extra(p: argparse.ArgumentParser) -> None:
    """`--extra NAME=VALUE`, repeatable: the graph's inputs besides the data and the state."""
    p.add_argument(
        "--extra",
        action="append",
        metavar="NAME=VALUE",
        help="an extra graph input, its value as JSON at the graph's dtype and rank, e.g. "
        "--extra sr=16000 for an int64 scalar, --extra gain=[0.5] for a float (1,)",
    )


def add_output(
    p: argparse.ArgumentParser, help: str, *, default: str | None = None, required: bool = False
) -> None:
    """`-o/--output PATH` and `--force`: an existing file is replaced only when asked."""
    p.add_argument("-o", "--output", default=default, required=required, help=help)
    add_force(p)


def add_force(p: argparse.ArgumentParser, what: str = "an existing output") -> None:
    """`--force` alone, for commands whose outputs have other names (`--markdown`, ...)."""
    p.add_argument("--force", action="store_true", help=f"replace {what}")


def add_model_settings(p: argparse.ArgumentParser) -> None:
    """The forecaster's shape: cell, width, depth, dropout (train and demo)."""
    g = p.add_argument_group("model")
    g.add_argument(
        "--cell",
        default="lstm",
        choices=["lstm", "gru", "rnn_tanh", "rnn_relu"],
        help="recurrent cell (default lstm)",
    )
    g.add_argument("--hidden-size", type=whole, default=32, help="hidden units per layer (32)")
    g.add_argument("--num-layers", type=whole, default=1, help="stacked recurrent layers (1)")
    g.add_argument(
        "--dropout",
        type=real,
        default=0.0,
        help="dropout between stacked layers, training only (0)",
    )


def add_train_settings(p: argparse.ArgumentParser) -> None:
    """The training loop's knobs (train and demo)."""
    g = p.add_argument_group("training (Adam + MSE, next-step forecasting)")
    g.add_argument("--epochs", type=whole, default=60, help="passes over the windows (60)")
    g.add_argument("--batch-size", type=whole, default=32, help="windows per step (32)")
    g.add_argument("--lr", type=real, default=5e-3, help="Adam learning rate (5e-3)")
    g.add_argument("--window", type=whole, default=32, help="time steps per training window (32)")
    g.add_argument(
        "--val-fraction",
        type=real,
        default=0.2,
        help="last fraction of the series kept for validation (0.2)",
    )
    g.add_argument("--seed", type=whole, default=0, help="random seed (0)")
    g.add_argument(
        "--patience",
        type=whole,
        default=10,
        help="stop after this many epochs without a better validation loss; the best "
        "epoch's weights are kept (10; 0 never stops early)",
    )
    g.add_argument(
        "--strict",
        action="store_true",
        help="fail (exit 12, no checkpoint) when the model does not beat persistence",
    )


def add_precision(p: argparse.ArgumentParser, default: str = "fp32") -> None:
    """`--precision` and `--margin`: a reduced-precision file only if the forecast holds up."""
    p.add_argument(
        "--precision",
        default=default,
        choices=["fp32", "int8", "bf16", "auto"],
        help="fp32, int8 (ONNX Runtime dynamic quantization), bf16 (OpenVINO on a CPU with "
        "bf16), or auto (the fastest that passes); a reduced one is kept only if validation "
        f"MSE stays within --margin of fp32 ({default})",
    )
    p.add_argument(
        "--margin",
        type=real,
        default=0.01,
        help="allowed relative worsening of validation MSE vs fp32 (0.01 = 1%%)",
    )


def add_nan_policy(p: argparse.ArgumentParser) -> None:
    """`--nan-policy`: one way to fill gaps in a CSV, the same in training and inference."""
    p.add_argument(
        "--nan-policy",
        default="raise",
        choices=list(MISSING_POLICIES),
        help="what to do with empty or NaN cells: refuse them (raise), or fill "
        "with zero, the last value (ffill) or a straight line (interpolate)",
    )


def add_exporter(p: argparse.ArgumentParser, help: str = "torch exporter (torchscript)") -> None:
    p.add_argument("--exporter", default="torchscript", choices=list(EXPORTERS), help=help)


# --- value checks: each raises UsageError naming the flag, the value and what is expected -------
def parse_positive_ints(text: str, flag: str) -> list[int]:
    """`"1,3,64"` → `[1, 3, 64]`; anything else is a UsageError naming `flag`."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(
            f"{flag} must be comma-separated integers like 1,3; got '{text}'"
        ) from None
    if not values or min(values) < 1:
        raise UsageError(f"{flag} must be positive integers; got '{text}'")
    if max(values) > INT_MAX:
        raise UsageError(f"{flag} must be integers ≤ {INT_MAX}; got '{text}'")
    return values


def shape_grid(batches: str, seq_lens: str) -> list[tuple[int, int]]:
    """Every (batch, seq_len) of `--batches` × `--seq-lens`, in order, without repeats."""
    bs = parse_positive_ints(batches, "--batches")
    ts = parse_positive_ints(seq_lens, "--seq-lens")
    return list(dict.fromkeys((b, t) for b in bs for t in ts))


def at_least(value: int, flag: str, low: int, high: int = INT_MAX) -> int:
    """An integer option that must be ≥ `low` (1 for counts, 0 for retries and delays) and
    ≤ `high`."""
    if value < low:
        raise UsageError(f"{flag} must be ≥ {low}, got {value}")
    if value > high:
        raise UsageError(f"{flag} must be ≤ {high}, got {value}")
    return value


def positive_float(value: float, flag: str, high: float = math.inf) -> float:
    """A finite float > 0 (`type=real` lets nan, inf and negatives through), at most `high`."""
    if not (math.isfinite(value) and value > 0):
        raise UsageError(f"{flag} must be a finite number > 0, got {value}")
    if value > high:
        raise UsageError(f"{flag} must be ≤ {high:g}, got {value:g}")
    return value


def in_range(
    value: float,
    flag: str,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    high_open: bool = True,
) -> float:
    """A finite float in [low, high) by default; the brackets say which ends count."""
    ok = (
        math.isfinite(value)
        and (value > low if low_open else value >= low)
        and (value < high if high_open else value <= high)
    )
    if not ok:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise UsageError(f"{flag} must be in {interval}, got {value}")
    return value


def port(value: int, flag: str) -> int:
    """A TCP port number a server can listen on."""
    if not 1 <= value <= 65535:
        raise UsageError(f"{flag} must be a TCP port in 1..65535, got {value}")
    return value


def columns(text: str | None, flag: str = "--columns") -> tuple[str, ...] | None:
    """`"a, b"` → `("a", "b")`; None when not given; an empty name is a UsageError."""
    if text is None:
        return None
    names = tuple(c.strip() for c in text.split(","))
    if not all(names):
        raise UsageError(f"{flag} must be comma-separated column names like a,b; got '{text}'")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UsageError(
            f"{flag} names {', '.join(repr(n) for n in twice)} twice; each "
            "column is one feature, named once"
        )
    return names


def state_names(values: Sequence[str] | None) -> dict[str, str] | None:
    """Repeated `--state h0:hn` flags → `{"h0": "hn", ...}`; None when none were given."""
    if not values:
        return None
    from rnnedge.runtime.overrides import parse_state_arg

    try:
        return parse_state_arg(list(values))
    except InputError as exc:
        raise UsageError(str(exc)) from None


def load_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """`rnnedge.load` keyword arguments from the `add_load_overrides` flags (given ones only)."""
    from rnnedge.runtime.overrides import Overrides, parse_state_axes

    given = getattr(args, "state", None)
    try:
        out: dict[str, Any] = {
            "data_input": getattr(args, "data_input", None),
            "data_output": getattr(args, "data_output", None),
            "layout": getattr(args, "layout", None),
            "state_names": state_names(given),
            "state_batch_axis": parse_state_axes(list(given)) if given else None,
        }
        Overrides.of(**out)
    except InputError as exc:
        raise UsageError(str(exc)) from None
    return {k: v for k, v in out.items() if v}


def extra_values(values: Sequence[str] | None) -> dict[str, Any] | None:
    """Repeated `--extra name=value` flags → `{name: value}`; None when none were given."""
    if not values:
        return None
    from rnnedge.runtime.overrides import parse_extra_arg

    try:
        return parse_extra_arg(list(values))
    except InputError as exc:
        raise UsageError(str(exc)) from None
