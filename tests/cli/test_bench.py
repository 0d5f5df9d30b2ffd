"""`rnnedge bench` end to end on a tiny checkpoint, with a tiny sweep.

These tests check what the command produces (runners, ratios, files, tuning), never how fast
anything ran: timings on a shared machine are not something a test can hold anyone to.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from rnnedge.cli.main import main
from rnnedge.errors import InputError
from rnnedge.tools.benchrun import BenchConfig, run_bench

pytestmark = pytest.mark.torch

TINY_SWEEP = [
    "--seq-lens",
    "1,8",
    "--batches",
    "1",
    "--budget-s",
    "0.02",
    "--warmup",
    "1",
    "--retries",
    "0",
]


@dataclass(frozen=True)
class Built:
    ckpt: str
    onnx: str


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    folder = tmp_path_factory.mktemp("bench")
    ckpt = str(folder / "tiny.pt")
    onnx = str(folder / "tiny.onnx")
    assert (
        main(
            ["train", "--epochs", "1", "--hidden-size", "8", "--window", "8", "-o", ckpt, "--json"]
        )
        == 0
    )
    assert main(["export", ckpt, "-o", onnx, "--json"]) == 0
    return Built(ckpt, onnx)


def bench_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["bench", *argv, "--json"]) == 0
    captured = capsys.readouterr()
    assert "rnnedge bench:" in captured.err  # progress goes to stderr, JSON alone to stdout
    return json.loads(captured.out)


def test_bench_checkpoint_writes_json_markdown_and_plot(
    built: Built, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    md, png = tmp_path / "out" / "bench.md", tmp_path / "bench.png"
    data = bench_json([built.ckpt, *TINY_SWEEP, "--markdown", str(md), "--plot", str(png)], capsys)
    assert {"eager", "ort-raw", "rnnedge"} <= set(data["runners"])
    assert data["environment"]["cores"] >= 1 and data["environment"]["versions"]["onnxruntime"]
    seq = [p for p in data["points"] if p["kind"] == "sequence"]
    steps = [p for p in data["points"] if p["kind"] == "stream_step"]
    ran = [r for r in data["runners"] if r not in data["skipped"]]
    assert {(p["batch"], p["seq_len"]) for p in seq} == {(1, 1), (1, 8)}
    assert len(seq) == 2 * len(ran) and len(steps) == len(ran)
    for p in data["points"]:
        assert p["latency_s"]["samples"] >= 1
        assert 0 < p["latency_s"]["min"] <= p["latency_s"]["p50"] <= p["latency_s"]["p90"]
        assert p["vs_eager"] > 0 and p["vs_ort_raw"] > 0
        assert p["steps_per_s"] == pytest.approx(p["batch"] * p["seq_len"] / p["latency_s"]["p50"])
    eager = [p for p in data["points"] if p["runner"] == "eager"]
    assert all(p["vs_eager"] == pytest.approx(1.0) for p in eager)
    assert md.read_text().count("| eager |") == 3
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_onnx_without_checkpoint_omits_eager(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    data = bench_json([built.onnx, *TINY_SWEEP, "--no-stream"], capsys)
    assert "eager" not in data["runners"] and "eager" in data["skipped"]
    assert any("ratios vs eager omitted" in n for n in data["notes"])
    assert all(p["vs_eager"] is None and p["vs_ort_raw"] > 0 for p in data["points"])
    assert all(p["kind"] == "sequence" for p in data["points"])


class QuietMachine:
    """Stands in for `tune`'s CPU-load monitor: other processes use no CPU. The tuner waits
    for a quiet machine; this test checks what the command writes, not when it may measure."""

    other_cores = 0.0

    def __enter__(self) -> QuietMachine:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def test_bench_tune_writes_a_tuning_that_load_can_use(
    built: Built,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rnnedge.runtime import tuned as tn

    monkeypatch.setattr("rnnedge.tools.tune.CpuLoad", QuietMachine)
    onnx = tmp_path / "tuned.onnx"
    onnx.write_bytes(Path(built.onnx).read_bytes())
    data = bench_json(
        [
            str(onnx),
            "--checkpoint",
            built.ckpt,
            "--tune",
            "--tune-budget-s",
            "0.005",
            "--seq-lens",
            "32",
            "--batches",
            "3",
            "--budget-s",
            "0.01",
            "--retries",
            "0",
            "--no-stream",
            "--runtime",
            "ort-raw",
            "--runtime",
            "rnnedge",
        ],
        capsys,
    )
    assert set(data["runners"]) == {"ort-raw", "rnnedge"}
    tuning, why = tn.read_tuning(onnx)
    assert why is None and tuning is not None
    assert set(tuning["classes"]) == {"bN-long"}  # one class keeps the test quick
    assert tuning["onnx_sha256"] == tn.sha256_file(onnx)
    for entry in tuning["classes"].values():
        assert entry["chosen"] in entry["first_pass_p50_s"]
        assert all(v > 0 for v in entry["p50_s"].values())
    assert (
        data["runners"]["rnnedge"]["settings"]["bN-long"]["settings"]
        == tuning["classes"]["bN-long"]["settings"]
    )
    assert any(c.startswith("split") for c in tuning["classes"]["bN-long"]["first_pass_p50_s"])
    assert any("tuning written to" in n for n in data["notes"])
    import rnnedge

    assert type(rnnedge.load(onnx).runner).__name__ == "TunedOrtRunner"
    assert type(rnnedge.load(onnx, tuned=False).runner).__name__ == "OrtCpuRunner"
    import onnx as onnx_lib

    proto = onnx_lib.load(str(onnx))
    proto.doc_string = "changed after tuning"  # a changed file makes the tuning stale
    onnx_lib.save(proto, str(onnx))
    assert type(rnnedge.load(onnx).runner).__name__ == "OrtCpuRunner"


def test_tuned_runner_split_matches_the_plain_session(built: Built) -> None:
    from rnnedge.runtime.backends.ort import OrtCpuRunner
    from rnnedge.runtime.model import Model
    from rnnedge.runtime.tuned import TunedOrtRunner
    from rnnedge.verify.parity import make_feeds

    tuning = {
        "classes": {
            "bN-long": {"settings": {"intra_op_num_threads": 1}, "batch_split": 2},
            "b1-short": {"settings": {"intra_op_num_threads": 1}, "batch_split": 1},
        }
    }
    with OrtCpuRunner(built.onnx) as plain, TunedOrtRunner(built.onnx, tuning) as tuned:
        assert tuned.spec is not None
        for batch, seq_len in ((3, 40), (1, 1), (5, 2)):
            feeds = make_feeds(tuned.spec, batch, seq_len, np.random.default_rng(batch))
            want, got = plain.infer(feeds), tuned.infer(feeds)
            assert set(got) == set(want)
            for name in want:
                np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-7)
        stream = Model(tuned, tuned.spec).stream(batch=1)
        assert stream.step(np.zeros((1, 3, 1), np.float32)).shape == (1, 3, 1)


@pytest.mark.parametrize(
    ("extra", "code", "needle"),
    [
        (["--seq-lens", "1,x"], 2, "--seq-lens must be comma-separated integers"),
        (["--checkpoint", "CKPT"], 2, "--checkpoint is for an .onnx MODEL"),
        (["--runtime", "no-such-runner"], 2, "--runtime no-such-runner is not a runner"),
        (["--budget-s", "0"], 2, "--budget-s must be a finite number > 0, got 0.0"),
        (["--budget-s", "nan"], 2, "--budget-s must be a finite number > 0, got nan"),
        (["--tune-budget-s", "-1"], 2, "--tune-budget-s must be a finite number > 0"),
        (["--warmup", "-1"], 2, "--warmup must be ≥ 0, got -1"),
        (["--plot", "OUT/latency.jpg"], 2, "must end in .png"),
        (["--markdown", "OUT/exists.md"], 2, "exists; pass --force"),
    ],
    ids=[
        "seq_lens",
        "checkpoint_twice",
        "runtime",
        "budget_0",
        "budget_nan",
        "tune_budget",
        "warmup",
        "plot_suffix",
        "markdown_exists",
    ],
)
def test_bench_refuses_bad_arguments(
    extra: list[str],
    code: int,
    needle: str,
    built: Built,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "exists.md").write_text("keep me")
    argv = [a.replace("CKPT", built.ckpt).replace("OUT", str(tmp_path)) for a in extra]
    assert main(["bench", built.ckpt, *argv]) == code
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.strip().splitlines()  # refused before anything ran
    assert line.startswith("rnnedge bench: error: ") and needle in line
    assert (tmp_path / "exists.md").read_text() == "keep me"


def test_bench_missing_model_is_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", str(tmp_path / "missing.onnx")]) == 3
    assert "does not exist" in capsys.readouterr().err


def test_run_bench_is_a_library_call(built: Built) -> None:
    """What the command does, from Python: a typed config in, plain data out, no argparse."""
    lines: list[str] = []
    data = run_bench(
        BenchConfig(
            Path(built.onnx),
            checkpoint=Path(built.ckpt),
            shapes=((2, 3),),
            budget_s=0.01,
            warmup=1,
            retries=0,
            stream=False,
            runtimes=("eager", "ort-raw"),
        ),
        say=lines.append,
    )
    assert set(data["runners"]) == {"eager", "ort-raw"}
    assert [(p["runner"], p["batch"], p["seq_len"]) for p in data["points"]] == [
        ("eager", 2, 3),
        ("ort-raw", 2, 3),
    ]
    assert len(lines) == 2 and lines[0].startswith("eager batch=2 seq_len=3: p50 ")
    with pytest.raises(InputError, match="budget_s must be > 0"):
        run_bench(BenchConfig(Path(built.onnx), budget_s=0.0))
    with pytest.raises(InputError, match="not available here"):
        run_bench(
            BenchConfig(
                Path(built.onnx), shapes=((1, 1),), budget_s=0.01, runtimes=("no-such-runner",)
            )
        )


def test_bench_of_an_onnx_file_needs_neither_torch_nor_onnx(built: Built) -> None:
    """An edge box with numpy + onnxruntime only can still bench (and tune) a model."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        import sys, importlib.abc, json
        class _Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "onnx", "onnxscript", "matplotlib"):
                    raise ImportError(name + " is blocked in this test")
        sys.meta_path.insert(0, _Block())
        from rnnedge.cli.main import main
        raise SystemExit(main(["bench", {built.onnx!r}, "--seq-lens", "1,4", "--batches", "1",
                               "--budget-s", "0.01", "--warmup", "1", "--retries", "0",
                               "--json"]))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert {"ort-raw", "rnnedge"} <= set(data["runners"]) and "eager" in data["skipped"]
