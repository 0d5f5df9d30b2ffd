"""`rnnedge export --precision` and `rnnedge optimize`: reduced precision only through the gate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime.quantization")

import rnnedge
from rnnedge.cli.main import main

pytestmark = pytest.mark.torch

TINY = ["--epochs", "3", "--hidden-size", "16", "--window", "16"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("opt")
    ckpt, onnx = folder / "m.pt", folder / "m.onnx"
    assert main(["train", *TINY, "-o", str(ckpt)]) == 0
    assert main(["export", str(ckpt), "-o", str(onnx)]) == 0
    return ckpt, onnx


def test_export_int8_records_both_figures_in_the_spec(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt, _ = trained
    out = tmp_path / "m8.onnx"
    argv = ["export", str(ckpt), "-o", str(out), "--precision", "int8", "--margin", "0.5"]
    assert main([*argv, "--json"]) == 0
    record = json.loads(capsys.readouterr().out)["precision"]
    assert record["precision"] == "int8" and record["margin"] == 0.5
    with rnnedge.load(out) as model:
        stored = model.spec.precision
    assert stored is not None and stored.fp32_value == pytest.approx(record["fp32_value"])
    assert abs(stored.relative_change) <= 0.5


def test_optimize_refuses_past_the_margin_and_writes_nothing(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt, onnx = trained
    out = tmp_path / "m8.onnx"
    argv = ["optimize", str(onnx), "--precision", "int8", "--checkpoint", str(ckpt)]
    # a margin no quantized file can meet (it must be at least as good as fp32 to 1e-9)
    assert main([*argv, "--margin", "1e-9", "-o", str(out)]) == 12
    err = capsys.readouterr().err
    assert "int8 refused" in err and "in fp32" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert main([*argv, "--margin", "0.5", "-o", str(out)]) == 0
    assert "precision gate: int8" in capsys.readouterr().out and out.exists()


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        (["--data", "x.csv"], "--data needs --window"),
        (["--checkpoint", "m.pt", "--window", "8"], "go with --data"),
        (["--checkpoint", "m.pt", "--margin", "nan"], "--margin"),
    ],
)
def test_optimize_bad_command_lines_exit_2(
    trained: tuple[Path, Path], extra: list[str], why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _, onnx = trained
    assert main(["optimize", str(onnx), "--precision", "int8", *extra]) == 2
    assert why in capsys.readouterr().err


def test_a_bf16_file_loads_on_openvino_by_default(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("openvino")
    from rnnedge.runtime.backends.openvino import bf16_support

    if not bf16_support():
        pytest.skip("this CPU has no native bf16")
    ckpt, onnx = trained
    out = tmp_path / "m.bf16.onnx"
    argv = ["optimize", str(onnx), "--precision", "bf16", "--checkpoint", str(ckpt)]
    assert main([*argv, "--margin", "0.5", "-o", str(out)]) == 0
    assert "on openvino" in capsys.readouterr().out
    with rnnedge.load(out) as model:  # "auto" follows the choice the gate recorded
        assert model.runtime == "openvino" and model.spec.precision.precision == "bf16"
    with rnnedge.load(out, "ort-cpu") as model:  # the file itself stays fp32
        assert model.runtime == "ort-cpu"
