"""End-to-end tests of the `rnnedge` command: in-process through `rnnedge.cli.main`, plus a few
real subprocesses of `python -m rnnedge.cli`.

One tiny checkpoint and its ONNX export are built once per module and reused; every failure
case checks the exit code of its error class, a one-line `rnnedge <cmd>: error:` message on
stderr, and that no traceback is shown unless `--debug` is given.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import rnnedge  # noqa: E402
from rnnedge.cli.common import UsageError  # noqa: E402
from rnnedge.cli.main import main  # noqa: E402
from rnnedge.errors import EXIT_CODES, ExportError, RnnEdgeError  # noqa: E402
from rnnedge.modeling import data  # noqa: E402

pytestmark = pytest.mark.torch

TINY = ["--epochs", "2", "--hidden-size", "8", "--window", "16"]
SERIES_LEN = 120


# --- a checkpoint that carries code ------------------------------------------------------------
def _touch_marker(path: str) -> None:
    """What unpickling `Evil` would call: proof that loading ran code from the file."""
    Path(path).write_text("pickled code ran\n")


class Evil:
    """Pickles as a call to `_touch_marker`; saving it runs nothing, loading it would."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Callable[[str], None], tuple[str]]:
        return _touch_marker, (self.marker,)


#: the time column `run` carries over from the series CSV
TIME = ["date"]


# --- shared artifacts ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Built:
    folder: Path
    ckpt: str
    onnx: str
    csv: str  # date (skipped: not numeric) + SUNACTIVITY, SERIES_LEN rows
    values: np.ndarray  # (SERIES_LEN, 1) float32, the CSV's numeric column
    train_json: dict[str, Any]
    export_json: dict[str, Any]


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> str:
    lines = [",".join(header)] + [",".join(str(c) for c in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _main_stdout(argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(argv)
    assert rc == 0, f"rnnedge {argv} exited {rc}"
    return out.getvalue()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    folder = tmp_path_factory.mktemp("cli")
    ckpt, onnx_path = folder / "model.pt", folder / "model.onnx"
    train_json = json.loads(_main_stdout(["train", *TINY, "-o", str(ckpt), "--json"]))
    export_json = json.loads(_main_stdout(["export", str(ckpt), "-o", str(onnx_path), "--json"]))
    values = data.load_sunspots().values[:SERIES_LEN].astype(np.float32)
    csv = _write_csv(
        folder / "series.csv",
        ["date", "SUNACTIVITY"],
        [[f"{1700 + i}-12-31", repr(float(v))] for i, v in enumerate(values[:, 0])],
    )
    return Built(folder, str(ckpt), str(onnx_path), csv, values, train_json, export_json)


def _expected(built: Built, values: np.ndarray | None = None, **kwargs: Any) -> np.ndarray:
    """What the library gives for the same series: the CLI must write exactly this."""
    x = (built.values if values is None else values)[None]
    with rnnedge.load(built.onnx) as model:
        return model.run(x, **kwargs)[0][0]


def _read_csv_forecast(text: str) -> tuple[list[str], np.ndarray]:
    """(header, forecast columns) of `run`'s CSV; checks the step and horizon columns."""
    lines = text.strip().splitlines()
    header = lines[0].split(",")
    rows = [ln.split(",") for ln in lines[1:]]
    assert [int(r[0]) for r in rows] == list(range(len(rows)))  # the step column
    h = header.index("horizon")
    assert {r[h] for r in rows} == {"1"}  # row t forecasts step t + 1
    cols = [i for i, c in enumerate(header) if c.startswith("forecast_")]
    return header, np.array([[float(r[i]) for i in cols] for r in rows])


def _no_temp_files(folder: Path) -> None:
    leftovers = [n for n in os.listdir(folder) if n.endswith(".tmp") or n.startswith(".")]
    assert leftovers == []


def _one_error_line(err: str, command: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith(f"rnnedge {command}: error: ")
    return lines[0]


# --- happy paths --------------------------------------------------------------------------------
def test_train_and_export_json(built: Built) -> None:
    t = built.train_json
    assert set(t) >= {
        "checkpoint",
        "val_mse",
        "persistence_mse",
        "skill",
        "train_seconds",
        "history",
    }
    assert t["checkpoint"] == built.ckpt
    assert [h["epoch"] for h in t["history"]] == [1, 2]
    assert all(np.isfinite([t["val_mse"], t["persistence_mse"]]))

    e = built.export_json
    assert set(e) >= {
        "path",
        "exporter",
        "opset",
        "seconds",
        "verified",
        "max_abs_diff",
        "inputs",
        "outputs",
    }
    assert e["path"] == built.onnx and Path(built.onnx).is_file()
    assert (e["exporter"], e["opset"], e["verified"]) == ("torchscript", 17, True)
    assert e["max_abs_diff"] < 1e-4
    assert [t["name"] for t in e["inputs"]] == ["x", "h0", "c0"]
    assert [t["name"] for t in e["outputs"]] == ["y", "hn", "cn"]
    assert e["inputs"][0]["shape"] == ["batch", "seq_len", 1]
    _no_temp_files(built.folder)


def test_verify_json(built: Built, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(
        [
            "verify",
            built.onnx,
            "--checkpoint",
            built.ckpt,
            "--batches",
            "1,2",
            "--seq-lens",
            "1,9",
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert set(out) == {"ok", "comparisons"} and out["ok"] is True
    comps = out["comparisons"]
    assert {c["runner"] for c in comps} == {"ort-cpu"}
    assert {(c["batch"], c["seq_len"]) for c in comps} == {(1, 1), (1, 9), (2, 1), (2, 9)}
    assert {c["output"] for c in comps} >= {"y", "hn", "cn"}
    assert all(c["ok"] and c["max_abs"] < 1e-4 for c in comps)


def test_export_and_verify_text(
    built: Built, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_path = tmp_path / "again.onnx"
    assert main(["export", built.ckpt, "-o", str(out_path)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {out_path}" in out and "verified against eager PyTorch" in out
    assert main(["verify", str(out_path), "--checkpoint", built.ckpt, "--seq-lens", "3"]) == 0
    out = capsys.readouterr().out
    assert "runtime" in out and "ort-cpu" in out and "pass" in out and "FAIL" not in out
    _no_temp_files(tmp_path)


@pytest.mark.parametrize("dest", ["stdout", "out.csv", "out.npy", "out.json"])
def test_run_writes_what_the_library_computes(
    dest: str, built: Built, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = _expected(built)
    assert expected.shape == (SERIES_LEN, 1)
    argv = ["run", built.onnx, "--input", built.csv]
    if dest != "stdout":
        argv += ["-o", str(tmp_path / dest)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    if dest == "stdout":
        header, got = _read_csv_forecast(out)
        assert header == ["step", *TIME, "horizon", "forecast_SUNACTIVITY"]
    else:
        assert out == ""
        path = tmp_path / dest
        if dest.endswith(".csv"):
            header, got = _read_csv_forecast(path.read_text())
            assert header == ["step", *TIME, "horizon", "forecast_SUNACTIVITY"]
        elif dest.endswith(".npy"):
            got = np.load(path)
        else:
            doc = json.loads(path.read_text())
            assert doc["columns"] == ["SUNACTIVITY"] and doc["horizon"] == 1
            got = np.array([[r["forecast_SUNACTIVITY"]] for r in doc["rows"]])
        _no_temp_files(tmp_path)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("nan_policy", ["raise", "ffill"])
def test_run_stream_equals_full_pass(nan_policy: str, built: Built, tmp_path: Path) -> None:
    csv = built.csv
    if nan_policy == "ffill":  # gaps at, and right after, chunk boundaries (chunk 7)
        values = built.values.copy()
        values[[6, 7, 8, 20, 21], 0] = np.nan
        csv = _write_csv(
            tmp_path / "gaps.csv", ["SUNACTIVITY"], [[repr(float(v))] for v in values[:, 0]]
        )
    full, streamed = tmp_path / "full.npy", tmp_path / "stream.npy"
    base = ["run", built.onnx, "--input", csv, "--nan-policy", nan_policy]
    assert main([*base, "-o", str(full)]) == 0
    assert main([*base, "--stream", "--chunk", "7", "-o", str(streamed)]) == 0
    a, b = np.load(full), np.load(streamed)
    assert a.shape == b.shape == (SERIES_LEN, 1) and np.all(np.isfinite(b))
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)


def test_stream_ffill_carries_across_chunks(built: Built) -> None:
    """Library check behind the CLI's --stream: a gap at a chunk's start is filled from the
    previous chunk, as one full pass fills it (it used to be filled with zeros)."""
    x = built.values[None].copy()
    x[0, [7, 14, 15, 16], 0] = np.nan
    with rnnedge.load(built.onnx) as model:
        full, _ = model.run(x, nan_policy="ffill")
        for chunk in (1, 7):
            stream = model.stream(nan_policy="ffill")
            parts = [stream.step(x[:, i : i + chunk]) for i in range(0, x.shape[1], chunk)]
            np.testing.assert_allclose(np.concatenate(parts, axis=1), full, rtol=0, atol=1e-5)


def test_nan_policy_zero_accepts_nan(
    built: Built, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    values = built.values.copy()
    values[4, 0] = np.nan
    csv = _write_csv(
        tmp_path / "nan.csv", ["SUNACTIVITY"], [[repr(float(v))] for v in values[:, 0]]
    )
    assert main(["run", built.onnx, "--input", csv, "--nan-policy", "zero"]) == 0
    _, got = _read_csv_forecast(capsys.readouterr().out)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, _expected(built, values, nan_policy="zero"), atol=1e-6)


def test_nan_policy_interpolate_fills_gaps_as_training_does(
    built: Built, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    values = built.values.copy()
    values[[4, 5], 0] = np.nan
    csv = _write_csv(
        tmp_path / "gap.csv", ["SUNACTIVITY"], [[repr(float(v))] for v in values[:, 0]]
    )
    filled = values.copy()
    step = (built.values[6, 0] - built.values[3, 0]) / 3
    filled[[4, 5], 0] = [built.values[3, 0] + step, built.values[3, 0] + 2 * step]
    assert main(["run", built.onnx, "--input", csv, "--nan-policy", "interpolate"]) == 0
    _, got = _read_csv_forecast(capsys.readouterr().out)
    np.testing.assert_allclose(got, _expected(built, filled), atol=1e-5)


def test_runtimes_lists_ort_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runtimes", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["ort-cpu"] == {"available": True, "reason": None}
    assert main(["runtimes"]) == 0
    row = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("ort-cpu"))
    assert "yes" in row


def test_demo_runs_the_whole_pipeline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "demo"
    assert main(["demo", "--epochs", "2", "--out-dir", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert "parity against eager PyTorch:" in out
    table = out.split("parity against eager PyTorch:")[1]
    assert "max abs diff" in table and "ort-cpu" in table and "pass" in table
    assert "FAIL" not in table
    assert "streaming chunk by chunk" in out
    assert (out_dir / "model.pt").is_file() and (out_dir / "model.onnx").is_file()
    _no_temp_files(out_dir)


# --- bad input: one line, its own exit code, no traceback --------------------------------------
def _case(name: str, built: Built, tmp: Path) -> tuple[list[str], int, list[str]]:
    """(argv, exit code, substrings of the message) for each class of bad input."""
    run = ["run", built.onnx, "--input", built.csv]
    verify = ["verify", built.onnx, "--checkpoint", built.ckpt]
    if name == "missing_onnx":
        return (
            ["run", str(tmp / "gone.onnx"), "--input", built.csv],
            4,
            ["gone.onnx", "does not exist"],
        )
    if name == "random_bytes_onnx":
        (tmp / "model.onnx").write_bytes(np.random.default_rng(0).bytes(512))
        return (
            ["run", str(tmp / "model.onnx"), "--input", built.csv],
            4,
            ["model.onnx", "could not be loaded as an ONNX model"],
        )
    if name == "text_checkpoint":
        (tmp / "notes.pt").write_text("these are my notes, not a checkpoint\n")
        return (
            ["export", str(tmp / "notes.pt"), "-o", str(tmp / "notes.onnx")],
            4,
            ["notes.pt", "not a PyTorch file"],
        )
    if name == "missing_csv":
        return (["run", built.onnx, "--input", str(tmp / "gone.csv")], 4, ["gone.csv"])
    if name == "missing_column":
        return [*run, "--columns", "nope"], 3, ["'nope'", "SUNACTIVITY"]
    if name == "non_numeric_cell":
        rows = [[repr(float(v))] for v in built.values[:30, 0]]
        rows[2] = ["abc"]
        csv = _write_csv(tmp / "text.csv", ["SUNACTIVITY"], rows)
        return (
            ["run", built.onnx, "--input", csv, "--columns", "SUNACTIVITY"],
            3,
            ["'abc'", "data row 3", "file line 4"],
        )
    if name in ("nan", "nan_stream"):
        values = built.values[:30].copy()
        values[12, 0] = np.nan
        csv = _write_csv(tmp / "nan.csv", ["SUNACTIVITY"], [[repr(float(v))] for v in values[:, 0]])
        stream = ["--stream", "--chunk", "5"] if name == "nan_stream" else []
        # the row is the file's own, also when streaming in chunks
        return (
            ["run", built.onnx, "--input", csv, *stream],
            3,
            ["'SUNACTIVITY' is missing a value", "data row 13", "file line 14", "--nan-policy"],
        )
    if name == "two_features":
        rows = [[repr(float(v)), repr(float(-v))] for v in built.values[:20, 0]]
        csv = _write_csv(tmp / "two.csv", ["a", "b"], rows)  # not the model's column names
        return ["run", built.onnx, "--input", csv], 3, ["lacks column(s) ['SUNACTIVITY']", "'b'"]
    if name == "unknown_runtime_run":
        return [*run, "--runtime", "nope"], 5, ["'nope'", "ort-cpu"]
    if name == "unknown_runtime_verify":
        return [*verify, "--runtime", "nope"], 5, ["'nope'", "ort-cpu"]
    # bad command-line values: exit 2, whatever the data
    if name == "chunk_0":
        return [*run, "--stream", "--chunk", "0"], 2, ["--chunk", "0"]
    if name == "seq_lens_0":
        return [*verify, "--seq-lens", "0"], 2, ["--seq-lens", "'0'"]
    if name == "seq_lens_text":
        return [*verify, "--seq-lens", "1,x"], 2, ["--seq-lens", "'1,x'"]
    if name == "bad_output_suffix":
        return [*run, "-o", str(tmp / "out.txt")], 2, ["out.txt", ".csv, .npy or .json"]
    if name == "existing_output":
        (tmp / "out.csv").write_text("keep me\n")
        return [*run, "-o", str(tmp / "out.csv")], 2, ["out.csv", "exists", "--force"]
    if name == "existing_checkpoint":
        (tmp / "model.pt").write_text("keep me\n")
        return ["train", *TINY, "-o", str(tmp / "model.pt")], 2, ["model.pt", "--force"]
    if name == "existing_export_default":
        ckpt = tmp / "m.pt"
        ckpt.write_bytes(Path(built.ckpt).read_bytes())
        (tmp / "m.onnx").write_text("keep me\n")  # where export writes without -o
        return ["export", str(ckpt)], 2, ["m.onnx", "exists", "--force"]
    if name == "export_suffix":
        return ["export", built.ckpt, "-o", str(tmp / "m.bin")], 2, ["m.bin", ".onnx"]
    if name == "train_suffix":
        return ["train", *TINY, "-o", str(tmp / "m.onnx")], 2, ["m.onnx", ".pt or .pth"]
    if name == "epochs_0":
        return ["train", "--epochs", "0", "-o", str(tmp / "m.pt")], 2, ["--epochs", "≥ 1", "0"]
    if name == "lr_nan":
        return ["train", *TINY, "--lr", "nan", "-o", str(tmp / "m.pt")], 2, ["--lr", "nan"]
    if name == "lr_negative":
        return ["train", *TINY, "--lr", "-0.1", "-o", str(tmp / "m.pt")], 2, ["--lr", "-0.1"]
    if name == "dropout_1":
        return ["train", "--dropout", "1", "-o", str(tmp / "m.pt")], 2, ["--dropout", "[0, 1)"]
    if name == "val_fraction_0":
        return (
            ["train", "--val-fraction", "0", "-o", str(tmp / "m.pt")],
            2,
            ["--val-fraction", "(0, 1)"],
        )
    if name == "empty_column_name":
        return [*run, "--columns", "SUNACTIVITY,"], 2, ["--columns", "'SUNACTIVITY,'"]
    if name == "state_malformed":
        return [*run, "--state", "h0"], 2, ["--state", "'h0'", "input:output"]
    if name == "lint_seq_len_0":
        return ["lint", built.onnx, "--seq-len", "0"], 2, ["--seq-len", "0"]
    if name == "opset_0":
        return ["export", built.ckpt, "-o", str(tmp / "m.onnx"), "--opset", "0"], 2, ["--opset"]
    if name == "output_under_a_file":
        (tmp / "afile").write_text("keep me\n")
        return [*run, "-o", str(tmp / "afile" / "out.csv")], 2, ["afile", "is a file"]
    if name == "output_is_the_input":  # not even --force
        data = tmp / "series.csv"
        data.write_bytes(Path(built.csv).read_bytes())
        argv = ["run", built.onnx, "--input", str(data), "-o", str(data), "--force"]
        return argv, 2, ["is the input", "--force does not change that"]
    if name == "output_links_to_the_input":
        data = tmp / "series.csv"
        data.write_bytes(Path(built.csv).read_bytes())
        os.link(data, tmp / "link.csv")
        argv = ["run", built.onnx, "--input", str(data), "-o", str(tmp / "link.csv"), "--force"]
        return argv, 2, ["link.csv", "is the input"]
    if name == "output_name_too_long":
        return [*run, "-o", str(tmp / ("o" * 250 + ".csv"))], 2, ["name of 254 bytes"]
    if name == "duplicate_columns":
        return [*run, "--columns", "SUNACTIVITY,SUNACTIVITY"], 2, ["'SUNACTIVITY' twice"]
    if name == "nul_in_path":
        return ["run", built.onnx, "--input", "a\x00b.csv"], 2, ["input holds a NUL byte"]
    if name == "newline_in_value":
        return [*run, "--state", "h0\nhn"], 2, ["'h0\\nhn'"]
    if name == "hidden_size_huge":
        argv = ["train", "--hidden-size", "9" * 30, "-o", str(tmp / "m.pt")]
        return argv, 2, ["--hidden-size must be ≤ 4096"]
    if name == "batches_huge":
        return [*verify, "--batches", "1000000000000"], 2, ["--batches", "≤ 2147483647"]
    raise AssertionError(name)


CASES = [
    "missing_onnx",
    "random_bytes_onnx",
    "text_checkpoint",
    "missing_csv",
    "missing_column",
    "non_numeric_cell",
    "nan",
    "nan_stream",
    "two_features",
    "unknown_runtime_run",
    "unknown_runtime_verify",
    "chunk_0",
    "seq_lens_0",
    "seq_lens_text",
    "bad_output_suffix",
    "existing_output",
    "existing_checkpoint",
    "existing_export_default",
    "export_suffix",
    "train_suffix",
    "epochs_0",
    "lr_nan",
    "lr_negative",
    "dropout_1",
    "val_fraction_0",
    "empty_column_name",
    "state_malformed",
    "lint_seq_len_0",
    "opset_0",
    "output_under_a_file",
    "output_is_the_input",
    "output_links_to_the_input",
    "output_name_too_long",
    "duplicate_columns",
    "nul_in_path",
    "newline_in_value",
    "hidden_size_huge",
    "batches_huge",
]


@pytest.mark.parametrize("debug", ["plain", "before", "after"])
@pytest.mark.parametrize("name", CASES)
def test_bad_input(
    name: str, debug: str, built: Built, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """`--debug` works before the command (`rnnedge --debug run ...`) and after it."""
    argv, code, needles = _case(name, built, tmp_path)
    before = {
        n: (tmp_path / n).read_bytes() for n in os.listdir(tmp_path) if (tmp_path / n).is_file()
    }
    rc = main({"plain": argv, "before": ["--debug", *argv], "after": [*argv, "--debug"]}[debug])
    out, err = capfd.readouterr()
    assert rc == code
    assert out == ""
    if debug != "plain":
        assert "Traceback" in err
        line = err.strip().splitlines()[-1]
        assert line.startswith(f"rnnedge {argv[0]}: error: ")
    else:
        line = _one_error_line(err, argv[0])
    for needle in needles:
        assert needle in line
    after = {
        n: (tmp_path / n).read_bytes() for n in os.listdir(tmp_path) if (tmp_path / n).is_file()
    }
    assert after == before  # nothing written or replaced, not even in part


def test_exit_codes_are_distinct() -> None:
    """One code per error class; 0, 1 and 2 (the command line, `UsageError`) are not theirs."""
    codes = [c for name, c in EXIT_CODES.items() if name != "RnnEdgeError"]
    assert len(set(codes)) == len(codes) and min(codes) == 3
    assert UsageError.exit_code == 2 and issubclass(UsageError, RnnEdgeError)


@pytest.mark.parametrize("command", ["export", "verify"])
def test_checkpoint_with_pickled_code_is_refused_not_run(
    command: str, built: Built, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "rnnedge.checkpoint/1", "evil": Evil(marker)}, evil)
    assert not marker.exists()  # saving only records the call
    if command == "export":
        argv = ["export", str(evil), "-o", str(tmp_path / "evil.onnx")]
    else:
        argv = ["verify", built.onnx, "--checkpoint", str(evil)]
    rc = main(argv)
    line = _one_error_line(capfd.readouterr().err, command)
    assert rc == 4
    assert "pickled" in line and "evil.pt" in line
    assert not marker.exists()
    assert not (tmp_path / "evil.onnx").exists()
    # the file really carries code: an unsafe load runs it, so the refusal above mattered
    torch.load(evil, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize(
    ("argv", "prefix", "needle"),
    [
        (["run", "m.onnx"], "rnnedge run", "the following arguments are required: --input"),
        (
            ["run", "m.onnx", "--input", "s.csv", "--chunk", "seven"],
            "rnnedge run",
            "argument --chunk: expected a whole number like 3, got 'seven'",
        ),
        (
            ["verify", "m.onnx", "--checkpoint", "m.pt", "--runtime"],
            "rnnedge verify",
            "argument --runtime: expected one argument",
        ),
        (
            ["run", "m.onnx", "--input", "s.csv", "--nan-policy", "a\nb"],
            "rnnedge run",
            "invalid choice: 'a\\nb'",
        ),
        (["frobnicate"], "rnnedge", "invalid choice: 'frobnicate'"),
    ],
    ids=["missing", "not_an_int", "no_value", "newline_in_value", "unknown_command"],
)
def test_argparse_errors_exit_2_in_one_line(
    argv: list[str], prefix: str, needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """What argparse refuses is one line too, pointing at the help instead of printing it."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith(f"{prefix}: error: ") and line.endswith(f"(see {prefix} --help)")
    assert needle in line


def test_help_and_no_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["run", "--help"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("usage: rnnedge run [-h] [--debug]")
    assert main([]) == 2  # no command: help, and the usage exit code
    assert "usage: rnnedge" in capsys.readouterr().out


# --- atomic writes ------------------------------------------------------------------------------
@pytest.mark.parametrize("existing", [False, True], ids=["new", "overwrite"])
def test_failed_export_writes_nothing(
    existing: bool,
    built: Built,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "model.onnx"
    if existing:
        out.write_bytes(b"the previous model")
    temp_existed: list[bool] = []

    def failing_verify(*args: Any, **kwargs: Any) -> None:
        temp_existed.append(Path(args[2]).is_file())  # the exported temporary file
        raise ExportError("simulated: wrong at other lengths")

    monkeypatch.setattr("rnnedge.exporters.onnx._verify", failing_verify)
    rc = main(["export", built.ckpt, "-o", str(out), *(["--force"] if existing else [])])
    line = _one_error_line(capsys.readouterr().err, "export")
    assert rc == 7 and "simulated" in line
    assert temp_existed == [True]  # the export was really written, then thrown away
    if existing:
        assert out.read_bytes() == b"the previous model"
        assert os.listdir(tmp_path) == ["model.onnx"]
    else:
        assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("exc", "code", "message"),
    [
        (KeyboardInterrupt(), 130, "rnnedge train: interrupted"),
        (RuntimeError("boom"), 1, "rnnedge train: unexpected error: RuntimeError: boom"),
    ],
    ids=["interrupt", "crash"],
)
def test_train_failing_midway_writes_no_checkpoint(
    exc: BaseException,
    code: int,
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    epochs: list[int] = []

    def progress(epoch: int, *args: Any) -> None:  # called by the loop after each epoch
        epochs.append(epoch)
        raise exc

    monkeypatch.setattr("rnnedge.cli.train.epoch_progress", progress)
    out = tmp_path / "model.pt"
    rc = main(["train", *TINY, "-o", str(out)])
    err = capsys.readouterr().err
    assert epochs == [1]  # training had started
    assert rc == code
    assert err.strip().splitlines() == [
        message + (" (run with --debug for the traceback)" if code == 1 else "")
    ]
    assert os.listdir(tmp_path) == []


def test_train_failing_while_saving_keeps_the_old_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "model.pt"
    out.write_bytes(b"the previous checkpoint")
    real_save = torch.save

    def save_half(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        buf = io.BytesIO()
        real_save(obj, buf)
        Path(f).write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", save_half)
    rc = main(["train", *TINY, "-o", str(out), "--force", "--json"])
    err = capsys.readouterr().err
    assert rc == 4 and "No space left on device" in err  # an OSError: one line, exit 4
    assert out.read_bytes() == b"the previous checkpoint"
    assert os.listdir(tmp_path) == ["model.pt"]


# --- real processes -----------------------------------------------------------------------------
def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rnnedge.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_subprocess_runs_and_fails_cleanly(built: Built, tmp_path: Path) -> None:
    out = tmp_path / "forecast.json"
    ok = _cli("run", built.onnx, "--input", built.csv, "-o", str(out), cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == "" and ok.stderr == ""
    np.testing.assert_allclose(
        np.array([[r["forecast_SUNACTIVITY"]] for r in json.loads(out.read_text())["rows"]]),
        _expected(built),
        rtol=0,
        atol=1e-6,
    )

    bad = _cli("run", "missing.onnx", "--input", built.csv, cwd=tmp_path)
    assert bad.returncode == 4 and bad.stdout == ""
    line = _one_error_line(bad.stderr, "run")
    assert "missing.onnx" in line

    (tmp_path / "model.onnx").write_bytes(os.urandom(300))
    for argv in (
        ("--debug", "run", "model.onnx", "--input", built.csv),
        ("run", "model.onnx", "--input", built.csv, "--debug"),
    ):
        dbg = _cli(*argv, cwd=tmp_path)
        assert dbg.returncode == 4
        assert "Traceback" in dbg.stderr
        assert dbg.stderr.strip().splitlines()[-1].startswith("rnnedge run: error: ")

    usage = _cli("run", built.onnx, "--input", built.csv, "--stream", "--chunk", "0", cwd=tmp_path)
    assert usage.returncode == 2 and usage.stdout == ""
    assert "--chunk must be ≥ 1, got 0" in _one_error_line(usage.stderr, "run")


def test_subprocess_usage_error_and_runtimes(tmp_path: Path) -> None:
    usage = _cli("verify", "x.onnx", cwd=tmp_path)  # --checkpoint is required
    assert usage.returncode == 2
    assert "rnnedge verify: error:" in usage.stderr and "Traceback" not in usage.stderr
    rts = _cli("runtimes", "--json", cwd=tmp_path)
    assert rts.returncode == 0, rts.stderr
    assert json.loads(rts.stdout)["ort-cpu"]["available"] is True


def test_console_script_is_the_cli_main() -> None:
    """`pyproject`'s `rnnedge` script points at `rnnedge.cli.main:main`, and it loads."""
    from importlib.metadata import entry_points

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "rnnedge"]
    assert script.value == "rnnedge.cli.main:main"
    assert script.load() is main
