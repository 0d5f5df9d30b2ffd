"""Seeded generators of hostile inputs: what a case is, and the registry of families.

A case is data plus a `build` function: `build(ctx)` writes the case's files into its own
folder and returns what to run, an `Api` call or a `Cli` argv. The same seed always gives the
same cases (RNNEDGE_FUZZ_SEED overrides the default 0), so a failing case id is reproducible.
The families live in `cases_files` (ONNX bytes, spec metadata), `cases_tuning` (tuning
files), `cases_data` (arrays and state), `cases_csv` (CSV files), `cases_checkpoints`
(checkpoints) and `cases_cli` (command-line arguments, controls).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tests.hostile.artifacts import SERIES_LEN, Artifacts, close_enough

DEFAULT_SEED = 0


def fuzz_seed() -> int:
    return int(os.environ.get("RNNEDGE_FUZZ_SEED", DEFAULT_SEED))


# --- what a case runs ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Api:
    """A library call. `check` judges a returned value; `after` runs whether the call was
    refused or not (a stream's state must be unchanged after a refusal); both return a
    problem or None."""

    call: Callable[[], Any]
    check: Callable[[Any], str | None] | None = None
    after: Callable[[bool], str | None] | None = None
    outputs: tuple[Path, ...] = ()  # files the call may create when it succeeds
    must_succeed: bool = False  # a control: a refusal fails it


@dataclass(frozen=True)
class Cli:
    """`rnnedge.cli.main.main(argv)` in-process.

    `outputs` may appear on success (a folder: anything inside it); pre-existing outputs may
    change only with `replace` (the case passed --force), and `inputs` never. `check(stdout)`
    judges a success. `must_succeed` marks a control (a refusal fails it); `must_refuse` a case
    whose success is itself wrong (an output path that is one of the inputs). `lint` exits 1
    when it found errors: with `exit_1_is_result` that exit is judged like a success.
    """

    argv: list[str]
    outputs: tuple[Path, ...] = ()
    replace: bool = False
    check: Callable[[str], str | None] | None = None
    inputs: tuple[Path, ...] = ()
    must_succeed: bool = False
    must_refuse: bool = False
    exit_1_is_result: bool = False


@dataclass(frozen=True)
class Case:
    id: str
    family: str
    kind: str  # the mutation, e.g. "dims-negative"
    summary: str  # the input in one line
    build: Callable[[Ctx], Api | Cli]
    ray: bool = False  # starts Ray: run without the address-space limit


@dataclass
class Ctx:
    """The folder a case works in, the valid artifacts, and objects shared across a family."""

    dir: Path
    marker: Path  # created only if pickled code ran
    art: Artifacts
    shared: dict[str, Any] = field(default_factory=dict)

    def copy(self, src: Path, name: str | None = None) -> Path:
        dst = self.dir / (name or src.name)
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copyfile(src, dst)
        return dst

    def write(self, name: str, data: bytes | str) -> Path:
        path = self.dir / name
        if isinstance(data, str):
            path.write_text(data, encoding="utf-8", newline="")
        else:
            path.write_bytes(data)
        return path

    def model(self) -> Any:
        """The valid model, loaded once per family (the arrays family shares it)."""
        if "model" not in self.shared:
            import rnnedge

            self.shared["model"] = rnnedge.load(self.art.onnx)
        return self.shared["model"]


# --- checks shared by families ------------------------------------------------------------------
def finite_forecast(y: Any, rows: int, batch: int = 1) -> str | None:
    """A forecast must be a finite float array of shape (batch, rows, 1)."""
    arr = np.asarray(y)
    if arr.shape != (batch, rows, 1):
        return f"returned shape {arr.shape}, expected {(batch, rows, 1)}"
    if arr.dtype.kind != "f" or not np.all(np.isfinite(arr)):
        return f"returned non-finite values (dtype {arr.dtype}) from finite input"
    return None


def equal_forecast(y: Any, want: np.ndarray) -> str | None:
    problem = finite_forecast(y, want.shape[1], want.shape[0])
    if problem is None and not close_enough(y, want):
        diff = float(np.max(np.abs(np.asarray(y, np.float64) - want)))
        return f"returned a different forecast than the reference run (max abs diff {diff:.3g})"
    return problem


def load_and_run(path: Any, x: np.ndarray, **kwargs: Any) -> np.ndarray:
    import rnnedge

    with rnnedge.load(path, **kwargs) as model:
        return model.run(x)[0]


def load_and_stream(path: Any, x: np.ndarray, cut: int) -> np.ndarray:
    import rnnedge

    with rnnedge.load(path) as model:
        stream = model.stream()
        return np.concatenate([stream.step(x[:, :cut]), stream.step(x[:, cut:])], axis=1)


# --- checks of a CLI success --------------------------------------------------------------------
def json_stdout_problem(stdout: str) -> str | None:
    try:
        json.loads(stdout)
    except ValueError:
        return f"exit 0 but stdout is not JSON: {short(stdout, 80)}"
    return None


def forecast_csv_problem(path: Path, want: np.ndarray | None, rows: int | None) -> str | None:
    """A forecast CSV: `rows` data rows (if known), finite forecast_* columns, equal to `want`
    if given."""
    if not path.is_file():
        return f"exit 0 but {path.name} was not written"
    with open(path, newline="", encoding="utf-8") as f:
        table = list(csv.reader(f))
    header, body = (table[0], table[1:]) if table else ([], [])
    cols = [j for j, h in enumerate(header) if h.startswith("forecast")]
    if not cols:
        return f"no forecast column in the output header {header}"
    if rows is not None and len(body) != rows:
        return f"wrote {len(body)} forecast rows for {rows} input rows"
    try:
        values = np.array([[float(r[j]) for j in cols] for r in body])
    except (ValueError, IndexError) as exc:
        return f"unreadable forecast ({exc})"
    if not np.all(np.isfinite(values)):
        return "non-finite forecast from finite input"
    if want is not None and not close_enough(values[:, :1], want[0]):
        return "a different forecast than the reference run"
    return None


def onnx_ok(path: Path, art: Artifacts) -> str | None:
    if not path.is_file():
        return f"exit 0 but {path.name} was not written"
    try:
        y = load_and_run(path, art.x)
    except Exception as exc:  # the file export wrote must load: anything else is the escape
        return (
            f"exit 0 but the written model cannot be used: {type(exc).__name__}: "
            f"{short(str(exc), 120)}"
        )
    arr = np.asarray(y)
    if arr.shape != (1, SERIES_LEN, 1) or not np.all(np.isfinite(arr)):
        return f"exit 0 but the written model forecasts shape {arr.shape} / non-finite values"
    return None


def all_of(*checks: Callable[[str], str | None]) -> Callable[[str], str | None]:
    return lambda out: next((bad for c in checks if (bad := c(out))), None)


def mutate_bytes(rng: np.random.Generator, data: bytes) -> tuple[str, bytes]:
    """One random damage to a file's bytes: truncation, flipped bytes or appended junk."""
    choice = rng.integers(0, 10)
    if choice < 4:
        cut = int(rng.integers(0, len(data)))
        return f"truncated to {cut} of {len(data)} bytes", data[:cut]
    if choice < 9:
        buf = bytearray(data)
        spots = sorted(int(i) for i in rng.integers(0, len(buf), size=int(rng.integers(1, 9))))
        for i in spots:
            buf[i] ^= int(rng.integers(1, 256))
        return f"bytes flipped at {spots}", bytes(buf)
    junk = rng.bytes(int(rng.integers(1, 64)))
    return f"{len(junk)} junk bytes appended", data + junk


def short(value: Any, limit: int = 90) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 15] + f"…({len(text)} chars)"


def deep(depth: int, leaf: Any = 0, kind: str = "list") -> Any:
    """`depth` levels of nested lists (or dicts), built without recursion."""
    value = leaf
    for _ in range(depth):
        value = [value] if kind == "list" else {"a": value}
    return value


def deep_json(depth: int, kind: str = "list") -> str:
    return (
        ("[" * depth + "0" + "]" * depth)
        if kind == "list"
        else ('{"a":' * depth + "0" + "}" * depth)
    )


# --- the registry -------------------------------------------------------------------------------
def family_rng(family: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(family.encode())])


def families() -> dict[str, Callable[[Artifacts, np.random.Generator], list[Case]]]:
    from tests.hostile import (
        cases_checkpoints,
        cases_cli,
        cases_csv,
        cases_data,
        cases_files,
        cases_tuning,
    )

    return {
        "controls": cases_cli.controls,
        "onnx_bytes": cases_files.onnx_bytes,
        "onnx_spec": cases_files.onnx_spec,
        "tuning": cases_tuning.tuning,
        "arrays": cases_data.arrays,
        "csv": cases_csv.csv_files,
        "checkpoints": cases_checkpoints.checkpoints,
        "cli_args": cases_cli.cli_args,
    }


FAMILIES = (
    "controls",
    "onnx_bytes",
    "onnx_spec",
    "tuning",
    "arrays",
    "csv",
    "checkpoints",
    "cli_args",
)


def generate(family: str, art: Artifacts, seed: int | None = None) -> list[Case]:
    seed = fuzz_seed() if seed is None else seed
    cases = families()[family](art, family_rng(family, seed))
    ids = [c.id for c in cases]
    assert len(set(ids)) == len(ids), f"duplicate case ids in {family}"
    return cases


def numbered(
    family: str, items: list[tuple[str, str, Callable[[Ctx], Api | Cli], bool]]
) -> list[Case]:
    """Cases from (kind, summary, build, ray) tuples, with ids `family-0007-kind`."""
    return [
        Case(f"{family}-{i:04d}-{kind}", family, kind, summary, build, ray)
        for i, (kind, summary, build, ray) in enumerate(items)
    ]
