"""Hostile command lines for every command `rnnedge --help` lists, and the controls.

Each command has a cheap valid invocation (its control, which must succeed); a case changes one
thing in it: one option's value (nan, inf, -1, 0, huge, strings, ...), an input path (missing,
a folder, junk, a loop), or an output path (existing without --force, a folder, below a file,
too long, unwritable, `.`, one of the inputs). Commands and options are read from the parser,
so a new option is fuzzed without editing this file; a new command fails its control until it
gets a valid invocation here.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tests.hostile.artifacts import SERIES_LEN, Artifacts
from tests.hostile.cases import (
    Api,
    Case,
    Cli,
    Ctx,
    all_of,
    equal_forecast,
    forecast_csv_problem,
    json_stdout_problem,
    load_and_run,
    load_and_stream,
    numbered,
    onnx_ok,
    short,
)

#: value-option cases per command (each may run the whole command, so the slow ones get few)
BUDGET = {
    "demo": 5,
    "report": 5,
    "batch-infer": 4,
    "bench": 12,
    "train": 22,
    "export": 22,
    "verify": 22,
    "triton": 22,
    "serve": 16,
    "run": 40,
    "inspect": 12,
    "lint": 14,
    "runtimes": 6,
}
#: output-path cases per output option of the slow commands (all kinds elsewhere)
SLOW_OUTPUT_CASES = {"demo": 3, "report": 3, "batch-infer": 2, "bench": 4}
VALUES: tuple[str, ...] = (
    "nan",
    "inf",
    "-inf",
    "-1",
    "0",
    "-0",
    "1e309",
    "1000000000000",
    "9" * 30,
    "1.5",
    "1e3",
    "0x10",
    "abc",
    "",
    " ",
    "\x00",
    "A" * 5000,
    "1,2",
    "-",
    "٣",
)
LIST_VALUES = (
    "",
    ",",
    "1,,2",
    "0",
    "-1",
    "1,-1",
    "nan",
    "1.5",
    "1000000000000",
    "a,b",
    ",".join(["1"] * 5000),
    " 1 , 2 ",
)
EXTRA_VALUES: dict[str, tuple[str, ...]] = {
    "columns": ("x0,x0", "x1,x0", "nope", ",", "date", "x0", "x0,x1,x0"),
    "target": ("x1", "nope", "date"),
    "state": ("h0", "h0:hn:x", ":", "h0:h0", "x:y", "h0:hn,c0:cn"),
    "runtime": ("ort-cuda", "tensorrt", "torch", "openvino", "auto", "ORT-CPU"),
    "nan_policy": ("interpolate", "RAISE"),
    "cell": ("LSTM",),
    "exporter": ("dynamo",),
}
#: command lines issue 12 found escaping, kept whatever the seed: (command, option dest, value)
ISSUE_CASES = (
    ("bench", "budget_s", "nan"),
    ("report", "budget_s", "nan"),
    ("bench", "retries", "-1"),
    ("triton", "idle_timeout", "nan"),
    ("triton", "idle_timeout", "inf"),
    ("serve", "idle_timeout", "nan"),
    ("verify", "batches", "1000000000000"),
    ("train", "hidden_size", "100000000000"),
    ("report", "batches", "0"),
    ("run", "chunk", "0"),
)
OUTPUT_DESTS = ("output", "out_dir", "markdown", "plot", "log_file")
INPUT_DESTS = ("model", "checkpoint", "input", "data")
FOLDER_OUTPUT = {
    ("demo", "out_dir"),
    ("report", "out_dir"),
    ("triton", "output"),
    ("batch-infer", "output"),
}


# --- the valid invocation of each command -------------------------------------------------------
@dataclass
class Base:
    positionals: list[str]
    options: list[tuple[str, str | None]]  # (flag, value or None for a switch)
    outputs: dict[str, Path] = field(default_factory=dict)  # dest -> path
    inputs: dict[str, Path] = field(default_factory=dict)  # dest -> path
    check: Callable[[str], str | None] | None = None
    ray: bool = False


def _base(command: str, ctx: Ctx) -> Base | None:
    art, d = ctx.art, ctx.dir
    onnx = (
        ctx.copy(art.onnx, "model.onnx")
        if command not in ("demo", "train", "runtimes", "export", "report")
        else None
    )
    ckpt = (
        ctx.copy(art.ckpt, "model.pt")
        if command in ("export", "verify", "report", "optimize")
        else None
    )
    data = ctx.copy(art.csv, "series.csv") if command in ("train", "run") else None
    js = [("--json", None)]
    small = [("--batches", "1"), ("--seq-lens", "2"), ("--budget-s", "0.01")]
    if command == "demo":
        return Base(
            [],
            [
                ("--out-dir", str(d / "demo")),
                ("--epochs", "1"),
                ("--hidden-size", "4"),
                ("--window", "8"),
                *js,
            ],
            {"out_dir": d / "demo"},
            check=json_stdout_problem,
        )
    if command == "train":
        out = d / "trained.pt"
        return Base(
            [],
            [
                ("--data", str(data)),
                ("--target", "x0"),
                ("--epochs", "1"),
                ("--hidden-size", "4"),
                ("--window", "8"),
                ("-o", str(out)),
                *js,
            ],
            {"output": out},
            {"data": data},
            check=json_stdout_problem,
        )
    if command == "export":
        out = d / "exported.onnx"
        return Base(
            [str(ckpt)],
            [("-o", str(out)), *js],
            {"output": out},
            {"model": ckpt},
            check=all_of(json_stdout_problem, lambda _: onnx_ok(out, art)),
        )
    if command == "verify":
        return Base(
            [str(onnx)],
            [
                ("--checkpoint", str(ckpt)),
                ("--batches", "1"),
                ("--seq-lens", "3"),
                ("--runtime", "ort-cpu"),
                *js,
            ],
            {},
            {"model": onnx, "checkpoint": ckpt},
            check=json_stdout_problem,
        )
    if command == "optimize":
        out = d / "optimized.onnx"
        return Base(
            [str(onnx)],
            # auto keeps fp32 among its candidates, so a valid call always writes a file
            [("--precision", "auto"), ("--checkpoint", str(ckpt)), ("-o", str(out)), *js],
            {"output": out},
            {"model": onnx, "checkpoint": ckpt},
            check=json_stdout_problem,
        )
    if command == "run":
        out = d / "forecast.csv"
        return Base(
            [str(onnx)],
            [("--input", str(data)), ("-o", str(out))],
            {"output": out},
            {"model": onnx, "input": data},
            check=lambda _: forecast_csv_problem(out, art.y, SERIES_LEN),
        )
    if command in ("inspect", "lint"):
        return Base([str(onnx)], js, {}, {"model": onnx}, check=json_stdout_problem)
    if command == "runtimes":
        return Base([], js, check=json_stdout_problem)
    if command == "triton":
        return Base(
            [str(onnx)],
            [("-o", str(d / "repo")), *js],
            {"output": d / "repo"},
            {"model": onnx},
            check=json_stdout_problem,
        )
    if command == "serve":
        return Base(
            [str(onnx)], [("--http-port", "18000"), ("--grpc-port", "18001")], {}, {"model": onnx}
        )
    if command == "batch-infer":
        batch = ctx.copy(art.batch_dir, "batch")
        return Base(
            [str(onnx)],
            [("--input", str(batch)), ("--output", str(d / "bi")), ("--actors", "1"), *js],
            {"output": d / "bi"},
            {"model": onnx, "input": batch},
            check=json_stdout_problem,
            ray=True,
        )
    if command == "bench":
        return Base(
            [str(onnx)],
            [
                *small,
                ("--warmup", "1"),
                ("--retries", "0"),
                ("--no-stream", None),
                ("--runtime", "ort-raw"),
                *js,
            ],
            {},
            {"model": onnx},
            check=json_stdout_problem,
        )
    if command == "report":
        return Base(
            [str(ckpt)],
            [("-o", str(d / "rep")), *small, *js],
            {"output": d / "rep"},
            {"model": ckpt},
            check=json_stdout_problem,
        )
    return None


# --- the parser, read --------------------------------------------------------------------------
def commands() -> dict[str, argparse.ArgumentParser]:
    """Every subcommand of `rnnedge --help`, in its order."""
    from rnnedge.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _flags(p: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in p._actions for s in a.option_strings}


def _argv(
    command: str,
    base: Base,
    p: argparse.ArgumentParser,
    change: dict[str, str | None] | None = None,
    positional: str | None = None,
    force: bool = False,
) -> list[str]:
    """The base argv with options the parser knows; `change` sets option values by dest."""
    flags = _flags(p)
    change = dict(change or {})
    argv = [command]
    pos = list(base.positionals)
    if positional is not None and pos:
        pos[0] = positional
    for flag, value in base.options:
        action = flags.get(flag)
        if action is None:
            continue
        if action.dest in change:
            value = change.pop(action.dest)
        argv += [flag] if value is None else [f"{flag}={value}"]
    for dest, value in change.items():
        action = next((a for a in p._actions if a.dest == dest and a.option_strings), None)
        if action is not None:
            argv.append(f"{action.option_strings[-1]}={value}")
    if force and "--force" in flags:
        argv.append("--force")
    return [*argv, "--", *pos] if pos and any(s.startswith("-") for s in pos) else argv + pos


def _value_options(p: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        a
        for a in p._actions
        if a.option_strings
        and a.nargs != 0
        and a.dest not in OUTPUT_DESTS + INPUT_DESTS
        and a.dest != "help"
    ]


def _cli(
    command: str, p: argparse.ArgumentParser, make: Callable[[Ctx, Base], Any]
) -> Callable[[Ctx], Api | Cli]:
    def build(ctx: Ctx) -> Api | Cli:
        base = _base(command, ctx)
        assert base is not None
        return make(ctx, base)

    return build


def _plain(
    command: str, p: argparse.ArgumentParser, change: dict[str, str | None]
) -> Callable[[Ctx], Api | Cli]:
    def make(ctx: Ctx, base: Base) -> Cli:
        return Cli(
            _argv(command, base, p, change),
            tuple(base.outputs.values()),
            check=base.check,
            inputs=tuple(base.inputs.values()),
        )

    return _cli(command, p, make)


# --- controls -----------------------------------------------------------------------------------
def controls(art: Artifacts, rng: np.random.Generator) -> list[Case]:
    items: list[tuple[str, str, Callable[[Ctx], Api | Cli], bool]] = [
        (
            "api-run",
            "Model.run on the valid series",
            lambda ctx: Api(
                lambda: load_and_run(ctx.art.onnx, ctx.art.x),
                lambda y: equal_forecast(y, ctx.art.y),
                must_succeed=True,
            ),
            False,
        ),
        (
            "api-stream",
            "a stream fed 7 then 53 steps",
            lambda ctx: Api(
                lambda: load_and_stream(ctx.art.onnx, ctx.art.x, 7),
                lambda y: equal_forecast(y, ctx.art.y),
                must_succeed=True,
            ),
            False,
        ),
        (
            "api-list",
            "Model.run on nested Python lists",
            lambda ctx: Api(
                lambda: load_and_run(ctx.art.onnx, ctx.art.x.tolist()),
                lambda y: equal_forecast(y, ctx.art.y),
                must_succeed=True,
            ),
            False,
        ),
        (
            "api-export",
            "rnnedge.export of the checkpoint with its data contract",
            _export_with_contract,
            False,
        ),
    ]
    for command, p in commands().items():
        if command == "serve":  # serves forever when it works: no valid invocation that ends
            continue

        def make(ctx: Ctx, command: str = command, p: argparse.ArgumentParser = p) -> Api | Cli:
            base = _base(command, ctx)
            if base is None:
                return Api(
                    lambda: (_ for _ in ()).throw(
                        AssertionError(
                            f"no valid invocation for `rnnedge {command}`: add one to _base in "
                            "tests/hostile/cases_cli.py"
                        )
                    )
                )
            return Cli(
                _argv(command, base, p),
                tuple(base.outputs.values()),
                check=base.check,
                inputs=tuple(base.inputs.values()),
                must_succeed=True,
            )

        ray = command == "batch-infer"
        items.append((f"cli-{command}", f"rnnedge {command}, a valid invocation", make, ray))
    return numbered("controls", items)


def _export_with_contract(ctx: Ctx) -> Api:
    path = ctx.copy(ctx.art.ckpt)

    def call() -> str | None:
        import torch

        import rnnedge
        from rnnedge.exporters.onnx import example_for
        from rnnedge.modeling.train import load_checkpoint

        ckpt = load_checkpoint(path)
        out = ctx.dir / "contract.onnx"
        with torch.no_grad():
            res = rnnedge.export(
                ckpt.model,
                example_for(True, 2),
                out,
                normalization=ckpt.normalization,
                contract=ckpt.contract,
            )
        if res.spec.contract is None:
            return "the exported spec has no data contract"
        return equal_forecast(load_and_run(out, ctx.art.x), ctx.art.y)

    return Api(call, lambda bad: bad, outputs=(ctx.dir / "contract.onnx",), must_succeed=True)


# --- hostile command lines ----------------------------------------------------------------------
def _input_kinds(ctx: Ctx, kind: str, base: Base) -> str:
    d = ctx.dir
    if kind == "missing":
        return str(d / "missing.file")
    if kind == "directory":
        (d / "adir").mkdir()
        return str(d / "adir")
    if kind == "empty":
        return str(ctx.write("empty.file", b""))
    if kind == "junk":
        return str(ctx.write("junk.file", bytes(range(256)) * 8))
    if kind == "loop":
        os.symlink(d / "loop2", d / "loop1")
        os.symlink(d / "loop1", d / "loop2")
        return str(d / "loop1")
    if kind == "long-name":
        return str(d / ("n" * 256))
    if kind == "nul":
        return str(d / "a\0b")
    if kind == "stdin":
        return "-"
    if kind == "wrong-kind":  # a CSV where a model is expected, a model where a CSV is
        return str(ctx.copy(ctx.art.csv, "data.onnx"))
    raise AssertionError(kind)


INPUT_KINDS = (
    "missing",
    "directory",
    "empty",
    "junk",
    "loop",
    "long-name",
    "nul",
    "stdin",
    "wrong-kind",
)
OUTPUT_KINDS = (
    "exists",
    "exists-force",
    "is-dir",
    "under-file",
    "long-name",
    "unwritable",
    "dot",
    "same-as-input",
    "same-via-symlink",
    "same-via-hardlink",
    "suffix",
)


def _unwritable(d: Path) -> Path:
    if os.geteuid() == 0:  # root writes anywhere it can create: /proc refuses new files
        return Path("/proc/self/rnnedge-hostile/out")
    locked = d / "locked"
    locked.mkdir()
    os.chmod(locked, 0o500)
    return locked / "out"


def _output_case(
    command: str, p: argparse.ArgumentParser, dest: str, kind: str, pick: int
) -> Callable[[Ctx], Api | Cli]:
    folder = (command, dest) in FOLDER_OUTPUT

    def make(ctx: Ctx, base: Base) -> Cli:
        d = ctx.dir
        inputs = tuple(base.inputs.values())
        out, force, must_refuse, outputs = d / ("out" + _suffix(base, dest)), False, False, None
        if kind in ("exists", "exists-force"):
            out = base.outputs.get(dest, out)
            if folder:
                out.mkdir(parents=True, exist_ok=True)
                for name in ("model.onnx", "report.md", "config.pbtxt", "part.parquet"):
                    (out / name).write_text("precious\n")
            else:
                out.write_text("precious\n")
            force = kind == "exists-force"
        elif kind == "is-dir":
            if folder:
                out = ctx.write("afile", "precious\n")
            else:
                out.mkdir()
        elif kind == "under-file":
            out = ctx.write("afile", "precious\n") / ("x" + _suffix(base, dest))
        elif kind == "long-name":
            out = d / ("o" * (256 - len(_suffix(base, dest))) + _suffix(base, dest))
        elif kind == "unwritable":
            out = _unwritable(d) if not folder else _unwritable(d).parent / "folder"
        elif kind == "dot":
            out, outputs = Path("."), (d,)
        elif kind == "suffix":
            out = d / ("out.txt" if pick % 2 else "out")
        else:
            if kind == "same-via-hardlink":  # a folder cannot be hard-linked
                inputs = tuple(i for i in inputs if i.is_file()) or inputs
            target = inputs[pick % len(inputs)] if inputs else d / "none"
            must_refuse, force = True, True
            link = "same-via-symlink" if target.is_dir() else kind
            if kind == "same-as-input":
                out = Path(os.path.relpath(target, d)) if pick % 2 else target
            else:
                out = d / ("link" + target.suffix)
                (os.symlink if link == "same-via-symlink" else os.link)(target, out)
        argv = _argv(command, base, p, {dest: str(out)}, force=force)
        return Cli(
            argv,
            outputs or (out,),
            replace=force,
            check=base.check,
            inputs=inputs,
            must_refuse=must_refuse,
        )

    return _cli(command, p, make)


def _suffix(base: Base, dest: str) -> str:
    path = base.outputs.get(dest)
    return (
        path.suffix
        if path is not None
        else {"markdown": ".md", "plot": ".png", "log_file": ".log"}.get(dest, "")
    )


def cli_args(art: Artifacts, rng: np.random.Generator) -> list[Case]:
    items: list[tuple[str, str, Callable[[Ctx], Api | Cli], bool]] = []
    probe = Ctx(Path("/nonexistent"), Path("/nonexistent"), art)
    for command, p in commands().items():
        try:
            base = _base(command, _DryCtx(probe))
        except OSError:
            base = None
        if base is None:
            continue
        ray = base.ray
        pool: list[tuple[str, str, str]] = []
        for action in _value_options(p):
            values = LIST_VALUES if action.dest in ("batches", "seq_lens") else VALUES
            values = values + EXTRA_VALUES.get(action.dest, ())
            pool += [(action.dest, action.option_strings[-1], v) for v in values]
        chosen = [pool[int(i)] for i in rng.permutation(len(pool))[: BUDGET.get(command, 10)]]
        chosen += [
            (dest, f"--{dest.replace('_', '-')}", value)
            for cmd, dest, value in ISSUE_CASES
            if cmd == command and any(a.dest == dest for a in _value_options(p))
        ]
        for dest, flag, value in chosen:
            items.append(
                (
                    f"{command}-value",
                    f"rnnedge {command} {flag}={short(value, 40)}",
                    _plain(command, p, {dest: value}),
                    ray,
                )
            )
        for dest in [a.dest for a in p._actions if a.dest in INPUT_DESTS]:
            for kind in rng.choice(INPUT_KINDS, size=3, replace=False):
                items.append(
                    (
                        f"{command}-input",
                        f"rnnedge {command} {dest} is {kind}",
                        _input_case(command, p, dest, str(kind)),
                        ray,
                    )
                )
        for dest in [a.dest for a in p._actions if a.dest in OUTPUT_DESTS]:
            kinds = [k for k in OUTPUT_KINDS if base.inputs or not k.startswith("same")]
            if command in SLOW_OUTPUT_CASES:
                kinds = [
                    str(k)
                    for k in rng.choice(kinds, size=SLOW_OUTPUT_CASES[command], replace=False)
                ]
            for kind in kinds:
                pick = int(rng.integers(0, 4))
                items.append(
                    (
                        f"{command}-output",
                        f"rnnedge {command} {dest}: {kind}",
                        _output_case(command, p, dest, kind, pick),
                        ray,
                    )
                )
    return numbered("cli_args", items)


def _input_case(
    command: str, p: argparse.ArgumentParser, dest: str, kind: str
) -> Callable[[Ctx], Api | Cli]:
    def make(ctx: Ctx, base: Base) -> Cli:
        value = _input_kinds(ctx, kind, base)
        positional = any(a.dest == dest and not a.option_strings for a in p._actions)
        argv = (
            _argv(command, base, p, positional=value)
            if positional
            else _argv(command, base, p, {dest: value})
        )
        return Cli(
            argv, tuple(base.outputs.values()), check=base.check, inputs=tuple(base.inputs.values())
        )

    return _cli(command, p, make)


class _DryCtx(Ctx):
    """A Ctx that writes nothing: to learn which options a command's base uses."""

    def __init__(self, ctx: Ctx) -> None:
        super().__init__(ctx.dir, ctx.marker, ctx.art)

    def copy(self, src: Path, name: str | None = None) -> Path:
        return self.dir / (name or src.name)

    def write(self, name: str, data: bytes | str) -> Path:
        return self.dir / name
