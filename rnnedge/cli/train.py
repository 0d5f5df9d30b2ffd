"""`rnnedge train`: fit a forecaster and write a checkpoint."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass
from typing import Any

from rnnedge._optional import require
from rnnedge.cli import common, paths
from rnnedge.tools.pipeline import CHECKPOINT_SUFFIXES
from rnnedge.tools.training import SeriesSource, TrainJob, TrainSettings


@dataclass(frozen=True)
class Options:
    job: TrainJob
    json: bool


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        default="sunspots",
        help="'sunspots' (bundled), 'synthetic', or a CSV file with a header row",
    )
    p.add_argument("--columns", help="comma-separated CSV columns to use (default: all numeric)")
    p.add_argument(
        "--target", help="column to forecast (required when more than one column is used)"
    )
    common.add_nan_policy(p)
    common.add_output(p, "checkpoint path, .pt or .pth (model.pt)", default="model.pt")
    common.add_model_settings(p)
    common.add_train_settings(p)
    common.add_json(p)


def train_settings(args: argparse.Namespace) -> TrainSettings:
    """The model and training options of `train` and `demo`, each checked."""
    return TrainSettings(
        cell=args.cell,
        hidden_size=common.at_least(args.hidden_size, "--hidden-size", 1, common.MAX_HIDDEN_SIZE),
        num_layers=common.at_least(args.num_layers, "--num-layers", 1, common.MAX_NUM_LAYERS),
        dropout=common.in_range(args.dropout, "--dropout", 0.0, 1.0),
        epochs=common.at_least(args.epochs, "--epochs", 1),
        batch_size=common.at_least(args.batch_size, "--batch-size", 1),
        lr=common.positive_float(args.lr, "--lr"),
        window=common.at_least(args.window, "--window", 1),
        val_fraction=common.in_range(args.val_fraction, "--val-fraction", 0.0, 1.0, low_open=True),
        seed=common.at_least(args.seed, "--seed", 0),
        patience=common.at_least(args.patience, "--patience", 0),
        strict=bool(args.strict),
    )


def _options(args: argparse.Namespace) -> Options:
    cols = common.columns(args.columns)
    if args.target is not None and cols is not None and args.target not in cols:
        raise common.UsageError(
            f"--target '{args.target}' is not among --columns {', '.join(cols)}"
        )
    source = SeriesSource(args.data, cols, args.target, args.nan_policy)
    out = paths.output_file(
        args.output, "--output", force=args.force, suffixes=CHECKPOINT_SUFFIXES, inputs=(args.data,)
    )
    return Options(TrainJob(source, train_settings(args), out), args.json)


def epoch_progress(epoch: int, epochs: int, train_loss: float, val_loss: float) -> None:
    """Training progress on stderr (train and demo): a line per tenth of the run on a log,
    one updating line on a terminal."""
    every = max(1, epochs // 10)
    line = f"epoch {epoch:>4}/{epochs}  train loss {train_loss:.4f}  val loss {val_loss:.4f}"
    if sys.stderr.isatty():
        end = "\n" if epoch == epochs else ""
        print("\r" + line, end=end, file=sys.stderr, flush=True)
    elif epoch % every == 0 or epoch == epochs:
        print(line, file=sys.stderr, flush=True)


def summary_lines(result: Any) -> list[str]:
    """What was trained, and whether it beat a persistence forecast (train and demo)."""
    from rnnedge.tools.render import fmt

    m = result.metrics()
    mc = result.model_config
    c = result.contract
    lines = []
    if c is not None:
        lines.append(
            f"forecasting {', '.join(c.targets)} one step ahead from {', '.join(c.features)}"
            + (f" (rows labelled by {c.time_column})" if c.time_column else "")
        )
    ran = len(result.history)
    stopped = f", stopped early after {ran}" if ran < result.train_config.epochs else ""
    lines += [
        f"trained {mc.cell} {mc.num_layers}x{mc.hidden_size} in {fmt(result.seconds)} s: best "
        f"epoch {result.best_epoch} of {result.train_config.epochs}{stopped} (its weights kept)",
        f"validation MSE {fmt(m['val_mse'])} vs persistence {fmt(m['persistence_mse'])} "
        f"(skill {fmt(100 * m['skill'])}%)",
    ]
    if not m["skill"] > 0:
        lines.append(
            "warning: the model does not beat a persistence forecast (next = current); check "
            "--target and --columns, train longer, or use --strict to refuse such a model"
        )
    return lines


def _run(opts: Options) -> int:
    require("torch", "rnnedge train", extra="export")
    from rnnedge.tools.render import to_json
    from rnnedge.tools.training import train_forecaster

    trained = train_forecaster(opts.job, progress=None if opts.json else epoch_progress)
    res = trained.result
    if opts.json:
        contract = asdict(res.contract) if res.contract else None
        print(
            to_json(
                {
                    "checkpoint": trained.checkpoint,
                    **res.metrics(),
                    "contract": contract,
                    "history": res.history,
                }
            )
        )
    else:
        print("\n".join([*summary_lines(res), f"checkpoint written to {trained.checkpoint}"]))
    return 0


COMMAND = common.Command(
    name="train",
    help="train a forecaster and write a checkpoint",
    description="Fit an RNN/LSTM/GRU next-step forecaster with Adam + MSE. Reports validation "
    "MSE next to a persistence forecast (next = current) so you can see the model learned "
    "something.",
    add_arguments=_add_arguments,
    options=_options,
    run=_run,
)
