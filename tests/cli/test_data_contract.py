"""The newcomer path on public multivariate data: columns by name, honest training, clear output.

Real CSVs from statsmodels' data sets (copied into tests/fixtures/public): macrodata, whose
first numeric columns are `year` and `quarter`, and co2, whose date is written `19580329` and
which has empty cells for missing weeks.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")

import rnnedge
from rnnedge.cli.main import main

pytestmark = pytest.mark.torch

PUBLIC = Path(__file__).resolve().parents[1] / "fixtures" / "public"
MACRO = PUBLIC / "macrodata.csv"
CO2 = PUBLIC / "co2.csv"
FEATURES = ["unemp", "infl", "tbilrate", "realint"]
TINY = ["--epochs", "3", "--hidden-size", "8", "--window", "16"]


def _csv(path: Path) -> tuple[list[str], list[list[str]]]:
    lines = path.read_text().strip().splitlines()
    return lines[0].replace('"', "").split(","), [ln.split(",") for ln in lines[1:]]


def _write(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.write_text("\n".join([",".join(header), *(",".join(r) for r in rows)]) + "\n")
    return path


def _forecasts(text: str) -> tuple[list[str], np.ndarray]:
    lines = text.strip().splitlines()
    header = lines[0].split(",")
    col = header.index("forecast_unemp")
    return header, np.array([float(ln.split(",")[col]) for ln in lines[1:]])


@pytest.fixture(scope="module")
def macro_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("macro")
    ckpt, onnx = folder / "macro.pt", folder / "macro.onnx"
    argv = ["train", "--data", str(MACRO), "--columns", ",".join(FEATURES), "--target", "unemp"]
    assert main([*argv, *TINY, "-o", str(ckpt)]) == 0
    assert main(["export", str(ckpt), "-o", str(onnx)]) == 0
    return onnx


def test_train_without_target_lists_the_columns_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m.pt"
    assert main(["train", "--data", str(MACRO), *TINY, "-o", str(out)]) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--target" in err
    assert "'realgdp'" in err and "'unemp'" in err
    assert "time-like, not used: year, quarter" in err  # never taken as a feature or target
    assert not out.exists()


def test_summary_names_target_features_and_best_epoch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--data", str(MACRO), "--columns", "unemp,infl", "--target", "infl"]
    assert main([*argv, *TINY, "-o", str(tmp_path / "m.pt"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["contract"]["features"] == ["unemp", "infl"]
    assert doc["contract"]["targets"] == ["infl"] and doc["contract"]["time_column"] == "year"
    assert 1 <= doc["best_epoch"] <= doc["epochs_run"] <= 3
    assert main([*argv, *TINY, "-o", str(tmp_path / "n.pt")]) == 0
    text = capsys.readouterr().out
    assert "forecasting infl one step ahead from unemp, infl (rows labelled by year)" in text
    assert "best epoch" in text


def test_strict_refuses_a_model_that_does_not_beat_persistence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m.pt"
    argv = ["train", "--data", str(MACRO), "--columns", "realgdp", "--target", "realgdp"]
    # one epoch of a tiny model cannot beat "next = current" on a smooth trending series
    assert main([*argv, "--epochs", "1", "--hidden-size", "2", "--strict", "-o", str(out)]) == 12
    err = capsys.readouterr().err
    assert "does not beat a persistence forecast" in err and "no checkpoint written" in err
    assert not out.exists()
    assert main([*argv, "--epochs", "1", "--hidden-size", "2", "-o", str(out)]) == 0
    assert "warning: the model does not beat a persistence forecast" in capsys.readouterr().out
    assert out.exists()


def test_reordered_columns_give_the_same_forecasts(
    macro_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(macro_model), "--input", str(MACRO)]) == 0
    header, base = _forecasts(capsys.readouterr().out)
    assert header == ["step", "year", "horizon", "forecast_unemp"]
    names, rows = _csv(MACRO)
    order = list(reversed(range(len(names))))
    shuffled = _write(
        tmp_path / "reordered.csv", [names[i] for i in order], [[r[i] for i in order] for r in rows]
    )
    assert main(["run", str(macro_model), "--input", str(shuffled)]) == 0
    np.testing.assert_array_equal(_forecasts(capsys.readouterr().out)[1], base)
    cols = ",".join(reversed(FEATURES))  # --columns in another order: matched by name too
    assert main(["run", str(macro_model), "--input", str(MACRO), "--columns", cols]) == 0
    np.testing.assert_array_equal(_forecasts(capsys.readouterr().out)[1], base)
    # and the library on the same numbers, in the model's order
    x = np.array([[float(r[names.index(c)]) for c in FEATURES] for r in rows], np.float32)
    with rnnedge.load(macro_model) as model:
        y, _ = model.run(x[None])
    np.testing.assert_allclose(base, y[0, :, 0], rtol=0, atol=1e-5)


def test_missing_or_foreign_columns_are_refused_naming_both_sets(
    macro_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names, rows = _csv(MACRO)
    keep = [i for i, n in enumerate(names) if n != "infl"]
    lacking = _write(
        tmp_path / "no_infl.csv", [names[i] for i in keep], [[r[i] for i in keep] for r in rows]
    )
    assert main(["run", str(macro_model), "--input", str(lacking)]) == 3
    err = capsys.readouterr().err
    assert "lacks column(s) ['infl']" in err and "'tbilrate'" in err
    argv = ["run", str(macro_model), "--input", str(MACRO), "--columns", "unemp,infl,cpi,m1"]
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert "missing: ['realint', 'tbilrate']" in err and "extra: ['cpi', 'm1']" in err


def test_run_json_and_chunk_needs_stream(
    macro_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(macro_model), "--input", str(MACRO), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["horizon"] == 1 and doc["time_column"] == "year" and doc["columns"] == ["unemp"]
    assert len(doc["rows"]) == 203 and doc["rows"][0]["year"] == "1959"
    assert main(["run", str(macro_model), "--input", str(MACRO), "--chunk", "4"]) == 2
    assert "--stream" in capsys.readouterr().err


def test_live_stdin_answers_each_row_as_it_arrives(
    macro_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(macro_model), "--input", str(MACRO)]) == 0
    _, full = _forecasts(capsys.readouterr().out)
    lines = MACRO.read_text().splitlines()
    cmd = [
        sys.executable,
        "-m",
        "rnnedge.cli",
        "run",
        str(macro_model),
        "--input",
        "-",
        "--stream",
        "--json",
    ]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(lines[0] + "\n")
    got = []
    for line in lines[1:6]:  # one row in, one answer out, before the next row is written
        proc.stdin.write(line + "\n")
        proc.stdin.flush()
        got.append(json.loads(proc.stdout.readline()))
    proc.stdin.close()
    assert proc.wait(timeout=60) == 0
    assert [g["step"] for g in got] == [0, 1, 2, 3, 4]
    assert [g["year"] for g in got] == ["1959"] * 4 + ["1960"]
    np.testing.assert_allclose([g["forecast_unemp"] for g in got], full[:5], rtol=0, atol=1e-5)


def test_co2_date_is_a_label_and_gaps_follow_one_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "co2.pt"
    assert main(["train", "--data", str(CO2), *TINY, "-o", str(out)]) == 3
    err = capsys.readouterr().err
    assert "column 'co2' is missing a value at data row 7 (file line 8)" in err
    assert "--nan-policy" in err
    argv = ["train", "--data", str(CO2), *TINY, "--nan-policy", "interpolate", "-o", str(out)]
    assert main([*argv, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["contract"]["features"] == ["co2"] and doc["contract"]["time_column"] == "date"
