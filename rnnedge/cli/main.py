"""The `rnnedge` command: argument parsing, error-to-exit-code mapping, lazy dispatch.

Each subcommand's work lives in `rnnedge.cli.commands`, imported only when a command runs, so
`rnnedge --help` works (and is fast) even where torch or onnx are missing.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from rnnedge import __version__
from rnnedge.cli.batch_infer import add_batch_parser
from rnnedge.cli.bench import add_bench_parser
from rnnedge.cli.report import add_report_parser
from rnnedge.cli.serving import add_serving_parsers
from rnnedge.errors import EXIT_CODES, RnnEdgeError

EPILOG = """exit codes: 0 ok, 1 unexpected error, 2 bad command line, """ + ", ".join(
    f"{code} {name}" for name, code in EXIT_CODES.items() if code > 2
) + ", 130 interrupted"


def _common(p: argparse.ArgumentParser, json_flag: bool = True) -> None:
    if json_flag:
        p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")


def _model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--cell", default="lstm", choices=["lstm", "gru", "rnn_tanh", "rnn_relu"],
                   help="recurrent cell (default lstm)")
    g.add_argument("--hidden-size", type=int, default=32, help="hidden units per layer (32)")
    g.add_argument("--num-layers", type=int, default=1, help="stacked recurrent layers (1)")
    g.add_argument("--dropout", type=float, default=0.0,
                   help="dropout between stacked layers, training only (0)")


def _train_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training (Adam + MSE, next-step forecasting)")
    g.add_argument("--epochs", type=int, default=60, help="passes over the windows (60)")
    g.add_argument("--batch-size", type=int, default=32, help="windows per step (32)")
    g.add_argument("--lr", type=float, default=5e-3, help="Adam learning rate (5e-3)")
    g.add_argument("--window", type=int, default=32, help="time steps per training window (32)")
    g.add_argument("--val-fraction", type=float, default=0.2,
                   help="last fraction of the series kept for validation (0.2)")
    g.add_argument("--seed", type=int, default=0, help="random seed (0)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rnnedge",
        description="Train, export and run recurrent PyTorch models on ONNX Runtime, with "
        "parity against eager PyTorch proven at every sequence length.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"rnnedge {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("demo", help="train on sunspots, export, verify: the whole pipeline",
                       description="Train a forecaster on the bundled yearly sunspot series, "
                       "export it to ONNX, verify it against eager PyTorch on every runtime "
                       "available here at several batch sizes and lengths, and print a summary.")
    p.add_argument("--out-dir", default="runs/demo", help="where artifacts go (runs/demo)")
    p.add_argument("--exporter", default="torchscript", choices=["torchscript", "dynamo"])
    _model_args(p)
    _train_args(p)
    _common(p)

    p = sub.add_parser("train", help="train a forecaster and write a checkpoint",
                       description="Fit an RNN/LSTM/GRU next-step forecaster with Adam + MSE. "
                       "Reports validation MSE next to a persistence forecast (next = current) "
                       "so you can see the model learned something.")
    p.add_argument("--data", default="sunspots",
                   help="'sunspots' (bundled), 'synthetic', or a CSV file with a header row")
    p.add_argument("--columns", help="comma-separated CSV columns to use (default: all numeric)")
    p.add_argument("--target", help="column to forecast (default: the first one used)")
    p.add_argument("-o", "--output", default="model.pt", help="checkpoint path (model.pt)")
    _model_args(p)
    _train_args(p)
    _common(p)

    p = sub.add_parser("export", help="export a checkpoint to ONNX and verify it",
                       description="Export with dynamic batch and seq_len axes and state as "
                       "named inputs/outputs (h0/c0 -> hn/cn), then run the file at other "
                       "batch sizes and lengths against eager PyTorch. A file that is wrong "
                       "anywhere is not written.")
    p.add_argument("checkpoint", help="a .pt checkpoint written by `rnnedge train`")
    p.add_argument("-o", "--output", help="ONNX path (default: the checkpoint's, .onnx)")
    p.add_argument("--exporter", default="torchscript", choices=["torchscript", "dynamo"],
                   help="torch exporter; passed to torch explicitly (torchscript)")
    p.add_argument("--opset", type=int, help="ONNX opset (17 torchscript, 18 dynamo)")
    p.add_argument("--time-major", action="store_true",
                   help="export with (seq_len, batch, features) inputs instead of batch-first")
    p.add_argument("--no-verify", action="store_true", help="skip verification (not advised)")
    _common(p)

    p = sub.add_parser("verify", help="prove an ONNX file equals eager PyTorch on runtimes",
                       description="Run the ONNX file on each runtime over a grid of batch "
                       "sizes and seq_len values and compare every output with eager PyTorch "
                       "(fp32: |a-e| <= 1e-5 + 1e-4*|e|).")
    p.add_argument("model", help="the .onnx file")
    p.add_argument("--checkpoint", required=True, help="the checkpoint it was exported from")
    p.add_argument("--runtime", action="append",
                   help="runtime to check, repeatable (default: every available one)")
    p.add_argument("--batches", default="1,3", help="batch sizes (1,3)")
    p.add_argument("--seq-lens", default="1,5,64,257", help="sequence lengths (1,5,64,257)")
    _common(p)

    p = sub.add_parser("run", help="forecast with an ONNX model from a CSV series",
                       description="Run the model over a CSV series (one sequence) and write "
                       "per-step forecasts in the data's units, using the normalization stored "
                       "in the model. --stream feeds it chunk by chunk, carrying state.")
    p.add_argument("model", help="the .onnx file")
    p.add_argument("--input", required=True, help="CSV file with a header row")
    p.add_argument("--columns", help="comma-separated input columns (default: all numeric)")
    p.add_argument("-o", "--output", help="write .csv, .npy or .json (default: CSV on stdout)")
    p.add_argument("--runtime", default="auto", help="runtime (auto)")
    p.add_argument("--stream", action="store_true", help="feed the series chunk by chunk")
    p.add_argument("--chunk", type=int, default=1, help="steps per chunk with --stream (1)")
    p.add_argument("--state", action="append",
                   help="state pairs of a foreign model, e.g. --state h0:hn --state c0:cn")
    p.add_argument("--nan-policy", default="raise", choices=["raise", "zero", "ffill"],
                   help="what to do with NaN/Inf in the input (raise)")

    p = sub.add_parser("inspect", help="show inputs, outputs, state pairs and RNN ops",
                       description="Describe an ONNX file: its tensors, dynamic dims, the state "
                       "pairs rnnedge found (or was told), extra inputs and RNN ops.")
    p.add_argument("model", help="the .onnx file")
    p.add_argument("--state", action="append", help="state pairs, e.g. --state h0:hn")
    _common(p)

    p = sub.add_parser("lint", help="find what goes silently wrong in RNN graphs",
                       description="Check RNN/LSTM/GRU nodes and the graph around them: frozen "
                       "sequence axes, baked Reshape lengths, unrolled loops, GRU "
                       "linear_before_reset, layout/direction vs spec, opset and IR version.")
    p.add_argument("model", help="the .onnx file")
    p.add_argument("--seq-len", type=int, help="the example length used at export, if known")
    _common(p)

    p = sub.add_parser("runtimes", help="list runtimes and whether they work here")
    _common(p)
    add_serving_parsers(sub)
    add_batch_parser(sub)
    add_bench_parser(sub)
    add_report_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        from rnnedge.cli import commands

        return int(getattr(commands, "cmd_" + args.command.replace("-", "_"))(args) or 0)
    except RnnEdgeError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"rnnedge {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"rnnedge {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        print(f"rnnedge {args.command}: unexpected error: {exc.__class__.__name__}: {exc} "
              "(run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
