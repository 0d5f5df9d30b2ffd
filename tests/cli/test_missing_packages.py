"""The command line in an install without torch or onnx: exit 5 and the extra to install.

Each check runs `rnnedge.cli.main.main` in a child process whose import system refuses the
blocked packages (as `tests/runtime/test_imports.py` does), so "not installed" is real there
while this process keeps torch to build the files the commands are given.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")

from rnnedge.cli.main import COMMANDS, main

pytestmark = pytest.mark.torch

TORCH = ("torch", "onnxscript")
TORCH_AND_ONNX = ("torch", "onnx", "onnxscript")

CHILD = """
import contextlib, importlib.abc, io, json, sys

BLOCKED = {blocked!r}
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is blocked in this test")
        return None
sys.meta_path.insert(0, _Block())
from rnnedge.cli.main import main
results = []
for argv in {argvs!r}:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as exc:  # --help
            rc = exc.code
    results.append({{"rc": rc, "out": out.getvalue(), "err": err.getvalue()}})
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(json.dumps({{"results": results, "loaded": loaded}}))
"""


@dataclass(frozen=True)
class Result:
    rc: int
    out: str
    err: str


def run_without(blocked: tuple[str, ...], *argvs: list[str]) -> list[Result]:
    code = textwrap.dedent(CHILD).format(blocked=blocked, argvs=list(argvs))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    assert doc["loaded"] == []  # the block held: nothing of it was imported
    return [Result(**r) for r in doc["results"]]


@dataclass(frozen=True)
class Files:
    ckpt: str
    onnx: str
    csv: str


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    folder = tmp_path_factory.mktemp("missing")
    ckpt, onnx = folder / "m.pt", folder / "m.onnx"
    tiny = ["--epochs", "1", "--hidden-size", "4", "--window", "8"]
    assert main(["train", *tiny, "-o", str(ckpt), "--json"]) == 0
    assert main(["export", str(ckpt), "-o", str(onnx), "--json"]) == 0
    csv = folder / "s.csv"
    csv.write_text("SUNACTIVITY\n" + "".join(f"{i % 7}.5\n" for i in range(40)))
    return Files(str(ckpt), str(onnx), str(csv))


def _unavailable(r: Result, command: str, package: str, extra: str) -> str:
    """Exit 5, one line naming the package and `pip install 'rnnedge[extra]'`."""
    assert r.rc == 5, r.err
    assert r.out == "" and "Traceback" not in r.err
    (line,) = r.err.strip().splitlines()
    assert line.startswith(f"rnnedge {command}: error: ")
    assert f"'{package}" in line and f"pip install 'rnnedge[{extra}]'" in line
    return line


def test_torch_commands_exit_5_with_the_export_extra(
    files: Files, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    argvs = {
        "train": ["train", "--epochs", "1", "-o", str(tmp_path / "t.pt")],
        "export": ["export", files.ckpt, "-o", str(tmp_path / "e.onnx")],
        "verify": ["verify", files.onnx, "--checkpoint", files.ckpt],
        "demo": ["demo", "--epochs", "1", "--out-dir", str(tmp_path / "demo")],
        "bench": ["bench", files.ckpt],
        "report": ["report", files.ckpt, "-o", str(tmp_path / "report")],
    }
    results = run_without(TORCH, *argvs.values())
    for command, r in zip(argvs, results, strict=True):
        _unavailable(r, command, "torch", "export")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written, no demo folder


def test_lint_asks_for_the_onnx_extra_and_inspect_still_works(files: Files) -> None:
    lint, inspect, run = run_without(
        TORCH_AND_ONNX,
        ["lint", files.onnx],
        ["inspect", files.onnx, "--json"],
        ["run", files.onnx, "--input", files.csv],
    )
    line = _unavailable(lint, "lint", "onnx", "onnx")
    assert "rnnedge[export]" not in line
    assert inspect.rc == 0, inspect.err
    info = json.loads(inspect.out)
    assert info["ops"] == [] and "pip install 'rnnedge[onnx]'" in info["ops_note"]
    assert [t["name"] for t in info["inputs"]] == ["x", "h0", "c0"]
    assert run.rc == 0, run.err
    assert (
        run.out.splitlines()[0] == "step,horizon,forecast_SUNACTIVITY"
        and len(run.out.splitlines()) == 41
    )


def test_every_command_has_help_without_torch_or_onnx() -> None:
    results = run_without(TORCH_AND_ONNX, *([c.name, "--help"] for c in COMMANDS))
    for command, r in zip(COMMANDS, results, strict=True):
        assert r.rc == 0, (command.name, r.err)
        assert r.out.startswith(f"usage: rnnedge {command.name}")
        assert "--debug" in r.out


def test_a_bad_value_is_exit_2_even_without_torch(tmp_path: Path) -> None:
    """Values are checked before anything is imported: the command line comes first."""
    (r,) = run_without(TORCH, ["train", "--epochs", "0", "-o", str(tmp_path / "m.pt")])
    assert r.rc == 2 and r.err.strip() == "rnnedge train: error: --epochs must be ≥ 1, got 0"
