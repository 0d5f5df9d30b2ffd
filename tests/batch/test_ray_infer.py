"""Ray Data batch inference: equal to one `Model.run` per sequence, nothing lost or doubled.

One local Ray cluster (2 CPUs) serves the whole module; it is started here and shut down at
the end. The data: 3,000 sequences of lengths 5–40 over four files (parquet and CSV, integer
and string ids, rows shuffled in the CSV).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray")
# ray.data too: without Ray installed, `ray` could resolve to this test folder (a namespace)
pytest.importorskip("ray.data")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
torch = pytest.importorskip("torch")

import ray  # noqa: E402

import rnnedge  # noqa: E402
from rnnedge.batch.infer import FAULT_MARKER_ENV, batch_infer  # noqa: E402
from rnnedge.batch.io import (  # noqa: E402
    list_inputs,
    predict_buckets,
    read_long_file,
    write_forecasts,
)
from rnnedge.cli.main import main as rnnedge_main  # noqa: E402
from rnnedge.errors import InputError, ModelFileError, RnnEdgeError  # noqa: E402
from rnnedge.modeling.models import ModelConfig, SequenceModel  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context"),
    pytest.mark.torch,
    pytest.mark.ray,
]
N_SEQ, FILES = 3000, 4
Reference = dict[str, dict[object, tuple[np.ndarray, np.ndarray]]]


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "gru.onnx"
    rnnedge.export(
        SequenceModel(ModelConfig(cell="gru", hidden_size=16)), torch.randn(2, 8, 1), path
    )
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> tuple[Path, Reference]:
    """Input folder, and per file {seq_id: (steps, forecast of Model.run on it alone)}."""
    folder = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    ref: Reference = {}
    with rnnedge.load(model_path) as model:
        for f in range(FILES):
            ids, steps, vals, seqs = [], [], [], {}
            for k in range(N_SEQ // FILES):
                n = int(rng.integers(5, 41))
                sid: object = f"s{f}-{k:04d}" if f == 2 else f * 10_000 + k
                x = rng.standard_normal(n).astype(np.float32)
                y, _ = model.run(x[None, :, None])
                seqs[sid] = (np.arange(n) + 100, y[0, :, 0])
                ids += [sid] * n
                steps += list(range(100, 100 + n))
                vals += x.tolist()
            table = pa.table({"seq_id": ids, "step": steps, "value": np.float32(vals)})
            if f == 1:
                name = "part-1.csv"
                table.to_pandas().sample(frac=1, random_state=1).to_csv(folder / name, index=False)
            else:
                name = f"part-{f}.parquet"
                pq.write_table(table, folder / name)
            ref[name] = seqs
    return folder, ref


def _check_outputs(out: Path, ref: Reference) -> None:
    """Every expected file, every sequence once, forecasts within 1e-5, no temp files."""
    assert sorted(p.name for p in out.iterdir()) == sorted(
        Path(n).with_suffix(".parquet").name for n in ref
    )
    for name, seqs in ref.items():
        df = pq.read_table(out / Path(name).with_suffix(".parquet").name).to_pandas()
        assert len(df) == sum(len(s) for s, _ in seqs.values())
        assert not df.duplicated(["seq_id", "step"]).any()
        assert set(df["seq_id"]) == set(seqs)
        worst = 0.0
        for sid, group in df.groupby("seq_id", sort=False):
            steps, y = seqs[sid]
            np.testing.assert_array_equal(group["step"].to_numpy(), steps)
            worst = max(worst, float(np.abs(group["forecast_0"].to_numpy() - y).max()))
        assert worst <= 1e-5, (name, worst)


def test_batch_equals_running_each_sequence_alone(cluster, model_path, data, tmp_path):
    folder, ref = data
    res = batch_infer(model_path, folder, tmp_path / "out", num_actors=2, batch_size=256)
    assert res.ok and res.failed == {} and res.runtime == "ort-cpu" and not res.use_gpu
    assert res.sequences_in == res.sequences_out == N_SEQ
    rows = sum(len(s) for seqs in ref.values() for s, _ in seqs.values())
    assert res.rows_in == res.rows_out == rows
    assert res.duplicates_dropped == 0
    _check_outputs(tmp_path / "out", ref)
    df = pq.read_table(tmp_path / "out" / "part-2.parquet").to_pandas()
    assert df["seq_id"].map(type).eq(str).all()
    assert (
        pq.read_table(tmp_path / "out" / "part-0.parquet").schema.field("seq_id").type == pa.int64()
    )


def test_killed_worker_is_retried_without_loss_or_duplicates(
    cluster, model_path, data, tmp_path, monkeypatch
):
    folder, ref = data
    marker = tmp_path / "die-once"
    marker.write_text("the first actor call that finds this file exits")
    monkeypatch.setenv(FAULT_MARKER_ENV, str(marker))
    res = batch_infer(model_path, folder, tmp_path / "out", num_actors=2, batch_size=128)
    assert not marker.exists(), "no actor died: the drill did not run"
    assert res.ok, res.failed
    assert res.sequences_in == res.sequences_out == N_SEQ and res.rows_in == res.rows_out
    assert res.duplicates_dropped == 0
    _check_outputs(tmp_path / "out", ref)


def _cli(*argv: str) -> int:
    return rnnedge_main(["batch-infer", *argv])


def test_bad_files_reported_by_name_others_processed(cluster, model_path, data, tmp_path, capsys):
    folder, ref = data
    mixed = tmp_path / "in"
    mixed.mkdir()
    keep = ["part-0.parquet", "part-1.csv"]
    for name in keep:
        shutil.copy(folder / name, mixed / name)
    (mixed / "corrupt.parquet").write_bytes(b"PAR1 this is not a parquet file")
    (mixed / "holes.csv").write_text("seq_id,step,value\n1,0,0.5\n1,1,nan\n")
    (mixed / "notes.txt").write_text("not data")
    code = _cli(
        str(model_path),
        "--input",
        str(mixed),
        "--output",
        str(tmp_path / "out"),
        "--actors",
        "2",
        "--json",
    )
    out = json.loads(capsys.readouterr().out)
    assert code == ModelFileError.exit_code
    assert out["failed"]["corrupt.parquet"]["error"] == "ModelFileError"
    assert "corrupt.parquet" in out["failed"]["corrupt.parquet"]["message"]
    assert out["failed"]["holes.csv"]["error"] == "InputError"
    assert "step 1" in out["failed"]["holes.csv"]["message"]
    assert out["skipped"] == ["notes.txt"]
    assert sorted(out["outputs"]) == keep
    _check_outputs(tmp_path / "out", {n: ref[n] for n in keep})


def test_worker_errors_come_back_as_rnnedge_errors(cluster, model_path, data, tmp_path):
    from rnnedge.errors import RuntimeUnavailableError
    from rnnedge.runtime.backends.base import availability

    if availability().get("ort-cuda") is None:
        pytest.skip("ort-cuda works here, so actors on it would not fail")
    folder, _ = data
    with pytest.raises(RuntimeUnavailableError, match="ort-cuda"):
        batch_infer(model_path, folder / "part-0.parquet", tmp_path / "out", runtime="ort-cuda")


# -- the pieces, without Ray -----------------------------------------------------------------
def test_read_long_file_sorts_and_rejects_what_would_be_silently_wrong(tmp_path):
    good = tmp_path / "good.csv"
    good.write_text("step,seq_id,a\n1,b,2.0\n0,b,1.0\n0,a,3.0\n")
    f = read_long_file(good, n_features=1)
    assert f.ids == ["a", "b"] and not f.ids_are_int
    assert [s.tolist() for s in f.steps] == [[0], [0, 1]]
    assert [v[:, 0].tolist() for v in f.values] == [[3.0], [1.0, 2.0]]
    cases = {
        "seq_id,step,a\n1,0,1\n1,0,2\n": "step 0 twice",
        "seq_id,a\n1,1\n": "expected long format",
        "seq_id,step,a,b\n1,0,1,2\n": "expects 1",
        "seq_id,step,a\n1,0,x\n": "expected numeric",
        "seq_id,step,a\n1,0,\n1,1,2\n": "empty or NaN cell.*step 0",
        "seq_id,step,a\n1,0.5,1\n": "expected integer",
        "seq_id,step,a\n": "no rows",
    }
    for i, (text, why) in enumerate(cases.items()):
        bad = tmp_path / f"bad{i}.csv"
        bad.write_text(text)
        with pytest.raises(InputError, match=why):
            read_long_file(bad, n_features=1)
    (tmp_path / "x.parquet").write_bytes(b"nope")
    with pytest.raises(ModelFileError, match=r"x\.parquet"):
        read_long_file(tmp_path / "x.parquet")


def test_list_inputs_skips_and_refuses_output_clashes(tmp_path):
    for name in ("a.csv", "b.parquet", "_SUCCESS", ".a.csv.swp", "readme.md"):
        (tmp_path / name).write_text("")
    files, skipped = list_inputs(tmp_path)
    assert [p.name for p in files] == ["a.csv", "b.parquet"]
    assert sorted(skipped) == [".a.csv.swp", "_SUCCESS", "readme.md"]
    (tmp_path / "a.parquet").write_text("")
    with pytest.raises(InputError, match=r"a\.parquet"):
        list_inputs(tmp_path)
    with pytest.raises(ModelFileError):
        list_inputs(tmp_path / "missing")


def test_write_forecasts_publishes_only_a_file_whose_counts_match(tmp_path):
    steps, ys = [np.arange(3), np.arange(2)], [np.ones(3, np.float32), np.zeros(2, np.float32)]
    assert write_forecasts(tmp_path / "ok.parquet", [7, 8], True, steps, ys) == (5, 2)
    table = pq.read_table(tmp_path / "ok.parquet")
    assert table.column_names == ["seq_id", "step", "forecast_0"]
    assert table["seq_id"].to_pylist() == [7, 7, 7, 8, 8]
    with pytest.raises(RnnEdgeError, match="not published"):  # one id for two sequences
        write_forecasts(tmp_path / "bad.parquet", ["a", "a"], False, steps, ys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.parquet"]


def test_predict_buckets_equals_single_runs(model_path):
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((int(n), 1)).astype(np.float32) for n in rng.integers(1, 12, size=60)]
    with rnnedge.load(model_path) as model:
        ys = predict_buckets(model, xs)
        for x, y in zip(xs, ys, strict=True):
            alone, _ = model.run(x[None])
            np.testing.assert_allclose(y, alone[0], atol=1e-5, rtol=0)


def test_importing_the_modules_loads_neither_ray_nor_torch_nor_pyarrow():
    code = (
        "import sys, rnnedge.batch.infer, rnnedge.cli.batch_infer\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'torch', 'pyarrow')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_without_ray_the_error_says_what_to_install(model_path, tmp_path):
    (tmp_path / "a.csv").write_text("seq_id,step,value\n1,0,0.5\n")
    code = f"""
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "ray":
            raise ImportError("ray is blocked in this test")
sys.meta_path.insert(0, Block())
from rnnedge.batch.infer import batch_infer
from rnnedge.errors import RuntimeUnavailableError
try:
    batch_infer({str(model_path)!r}, {str(tmp_path)!r}, {str(tmp_path / "out")!r})
except RuntimeUnavailableError as exc:
    print(exc.exit_code, exc)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("5 rnnedge batch-infer needs the Python package")
    assert "pip install" in out.stdout


def test_columns_are_taken_by_the_models_names(tmp_path):
    a = tmp_path / "a.csv"
    a.write_text("seq_id,step,infl,unemp\n1,0,2.0,5.0\n1,1,3.0,6.0\n")
    b = tmp_path / "b.csv"  # the same numbers, columns in another order
    b.write_text("unemp,step,seq_id,infl\n5.0,0,1,2.0\n6.0,1,1,3.0\n")
    fa = read_long_file(a, 2, features=["unemp", "infl"])
    fb = read_long_file(b, 2, features=["unemp", "infl"])
    np.testing.assert_array_equal(fa.values[0], [[5.0, 2.0], [6.0, 3.0]])
    np.testing.assert_array_equal(fb.values[0], fa.values[0])
    c = tmp_path / "c.csv"
    c.write_text("seq_id,step,infl,rate\n1,0,2.0,5.0\n")
    with pytest.raises(InputError, match=r"missing: \['unemp'\], extra: \['rate'\]"):
        read_long_file(c, 2, features=["unemp", "infl"])
    steps, ys = [np.arange(2)], [np.ones((2, 1), np.float32)]
    write_forecasts(tmp_path / "out.parquet", [1], True, steps, ys, names=["unemp"])
    assert pq.read_table(tmp_path / "out.parquet").column_names == [
        "seq_id",
        "step",
        "forecast_unemp",
    ]
