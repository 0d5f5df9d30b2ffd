"""Errors cross the Ray boundary as data: a class name and a message in the rows, typed again
by the driver. Checked here on the actor class and the driver's collector, without Ray."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyarrow")

from rnnedge.batch.infer import Predictor, read_files
from rnnedge.batch.results import BatchResult, _Collector, error_from_data
from rnnedge.errors import InputError, RnnEdgeError, RuntimeUnavailableError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _rows(tmp_path: Path) -> object:
    good = tmp_path / "good.csv"
    good.write_text("seq_id,step,a,b,c\n1,0,0.1,0.2,0.3\n1,1,0.4,0.5,0.6\n2,0,1.0,1.0,1.0\n")
    bad = tmp_path / "bad.csv"
    bad.write_text("seq_id,step,a,b,c\n1,0,0.1,,0.3\n")
    return read_files({"path": np.array([str(good), str(bad)])}, n_features=3, dtype="float32")


def _predictor(runtime: str) -> Predictor:
    return Predictor(
        (FIXTURES / "foreign_lstm.onnx").read_bytes(),
        runtime,
        threads=1,
        n_features=3,
        dtype="float32",
        out_dtype="float32",
    )


def test_a_bad_file_becomes_an_error_row_naming_its_class(tmp_path: Path) -> None:
    rows = _rows(tmp_path).to_pylist()
    bad = [r for r in rows if r["file"] == "bad.csv"]
    assert len(bad) == 1 and bad[0]["error_kind"] == "InputError" and not bad[0]["fatal"]
    assert bad[0]["error"].startswith("bad.csv: column 'b'")


def test_an_actor_that_cannot_load_the_model_answers_with_fatal_rows(tmp_path: Path) -> None:
    actor = _predictor("no-such-runtime")  # constructing it must not raise: Ray would retry
    assert actor.model is None and actor.startup_error is not None
    out = actor(_rows(tmp_path)).to_pylist()
    fatal = [r for r in out if r["fatal"]]
    assert len(fatal) == 2  # both sequences of good.csv; bad.csv keeps its own error
    assert {r["error_kind"] for r in fatal} == {"RuntimeUnavailableError"}
    assert all("no-such-runtime" in r["error"] for r in fatal)
    collector = _Collector(tmp_path / "out", "float32", BatchResult())
    with pytest.raises(RuntimeUnavailableError, match="unknown runtime 'no-such-runtime'"):
        collector.add(actor(_rows(tmp_path)))
    assert not (tmp_path / "out").exists()


def test_a_working_actor_forecasts_and_passes_file_errors_through(tmp_path: Path) -> None:
    actor = _predictor("ort-cpu")
    out = actor(_rows(tmp_path)).to_pylist()
    assert not any(r["fatal"] for r in out)
    by_file = {(r["file"], r["seq_index"]): r for r in out}
    assert by_file[("bad.csv", -1)]["error_kind"] == "InputError"
    y = np.frombuffer(by_file[("good.csv", 0)]["data"], np.float32)
    assert y.size == 2 * 4  # two steps of the LSTM's 4 outputs


@pytest.mark.parametrize(
    ("kind", "cls"),
    [
        ("InputError", InputError),
        ("RuntimeUnavailableError", RuntimeUnavailableError),
        ("RnnEdgeError", RnnEdgeError),
        ("EXIT_CODES", RnnEdgeError),  # a name in the module that is not an error class
        ("OSError", RnnEdgeError),  # not rnnedge's: never rebuilt as such
        ("no such name", RnnEdgeError),
    ],
)
def test_errors_are_rebuilt_only_as_rnnedge_classes(kind: str, cls: type) -> None:
    err = error_from_data(kind, "what went wrong")
    assert type(err) is cls and str(err) == "what went wrong"
