"""`rnnedge report` on a checkpoint and on a user module: every section, real numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rnnedge.cli.main import main

USER_MODULE = '''
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
'''

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
    assert main(["train", "--epochs", "1", "--hidden-size", "8", "--window", "8", "-o",
                 str(ckpt), "--json"]) == 0
    capsys.readouterr()
    data = _report([str(ckpt)], tmp_path / "rep", capsys)
    assert data["parity"]["ok"] is True
    assert {(c["batch"], c["seq_len"]) for c in data["parity"]["comparisons"]} == {
        (1, 1), (1, 9), (2, 1), (2, 9)}
    assert data["stream_vs_full_max_abs"] < 1e-5
    assert any(f["code"] == "RNN010" for f in data["lint"])
    runners = {p["runner"] for p in data["bench"]["points"]}
    assert {"eager", "ort-raw", "rnnedge"} <= runners
    md = (tmp_path / "rep" / "report.md").read_text()
    for section in ("## Graph lint", "## Parity against eager PyTorch (pass)", "## Streaming",
                    "## Latency"):
        assert section in md


def test_report_on_a_user_module(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "usermodel.py").write_text(USER_MODULE)
    data = _report([f"{tmp_path / 'usermodel.py'}:build", "--features", "3"],
                   tmp_path / "rep", capsys)
    assert data["parity"]["ok"] is True
    assert data["stream_vs_full_max_abs"] is None  # no state pairs: not streamable
    assert "eager" in {p["runner"] for p in data["bench"]["points"]}


def test_report_refuses_a_bad_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "nothing-here", "-o", str(tmp_path)]) == 3
    assert "neither a .pt checkpoint nor 'module:attr'" in capsys.readouterr().err
