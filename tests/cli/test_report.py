"""`rnnedge report` on a checkpoint and on a user module: every section, real numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rnnedge.cli.main import main

pytestmark = pytest.mark.torch

USER_MODULE = """
import torch
from torch import nn


class Forecaster(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(3, 8, batch_first=True)
        self.head = nn.Linear(8, 1)

    def forward(self, x):
        return self.head(self.rnn(x)[0])


def build():
    torch.manual_seed(0)
    return Forecaster()
"""

FAST = ["--batches", "1,2", "--seq-lens", "1,9", "--budget-s", "0.01"]


def _report(args: list[str], out: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    assert main(["report", *args, "-o", str(out), *FAST, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (out / "report.md").is_file() and (out / "latency.png").stat().st_size > 1000
    assert json.loads((out / "report.json").read_text())["onnx"] == data["onnx"]
    assert not list(out.glob(".*.tmp"))
    return data


def test_report_on_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tmp_path / "m.pt"
    tiny = ["--epochs", "1", "--hidden-size", "8", "--window", "8"]
    assert main(["train", *tiny, "-o", str(ckpt), "--json"]) == 0
    capsys.readouterr()
    data = _report([str(ckpt)], tmp_path / "rep", capsys)
    assert data["parity"]["ok"] is True
    assert {(c["batch"], c["seq_len"]) for c in data["parity"]["comparisons"]} == {
        (1, 1),
        (1, 9),
        (2, 1),
        (2, 9),
    }
    assert data["stream_vs_full_max_abs"] < 1e-5
    assert any(f["code"] == "RNN010" for f in data["lint"])
    runners = {p["runner"] for p in data["bench"]["points"]}
    assert {"eager", "ort-raw", "rnnedge"} <= runners
    md = (tmp_path / "rep" / "report.md").read_text()
    for section in (
        "## Graph lint",
        "## Parity against eager PyTorch (pass)",
        "## Streaming",
        "## Latency",
    ):
        assert section in md


def test_report_on_a_user_module(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "usermodel.py").write_text(USER_MODULE)
    data = _report(
        [f"{tmp_path / 'usermodel.py'}:build", "--features", "3"], tmp_path / "rep", capsys
    )
    assert data["parity"]["ok"] is True
    assert data["stream_vs_full_max_abs"] is None  # no state pairs: not streamable
    assert "eager" in {p["runner"] for p in data["bench"]["points"]}


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["nothing-here"], "neither a .pt checkpoint nor 'module:attr'"),
        (["usermodel.py:build"], "a user module needs --features"),
        (["usermodel.py:build", "--features", "0"], "--features must be ≥ 1, got 0"),
        (["m.pt", "--features", "3"], "a checkpoint knows its own"),
        (["m.pt", "--budget-s", "-1"], "--budget-s must be a finite number > 0"),
        (["m.pt", "--seq-lens", "4,0"], "--seq-lens must be positive integers; got '4,0'"),
        (["m.pt", "-o", "OLD"], "already holds report.md; pass --force"),
    ],
    ids=[
        "target",
        "no_features",
        "features_0",
        "features_for_checkpoint",
        "budget",
        "seq_lens",
        "existing_report",
    ],
)
def test_report_refuses_bad_arguments(
    argv: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad command line is exit 2 and one line, before anything is exported or written."""
    old = tmp_path / "old"
    old.mkdir()
    (old / "report.md").write_text("the previous report")
    argv = [a.replace("OLD", str(old)) for a in argv]
    if "-o" not in argv:
        argv += ["-o", str(tmp_path / "new")]
    assert main(["report", *argv]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("rnnedge report: error: ") and needle in line
    assert not (tmp_path / "new").exists()
    assert (old / "report.md").read_text() == "the previous report"
