"""`rnnedge bench` end to end on a tiny checkpoint, with a tiny sweep.

These tests check what the command produces (runners, ratios, files, tuning), never how fast
anything ran: timings on a shared machine are not something a test can hold anyone to.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from rnnedge.cli.bench import add_bench_parser, cmd_bench
from rnnedge.cli.main import main
from rnnedge.errors import InputError

TINY_SWEEP = ["--seq-lens", "1,8", "--batches", "1", "--budget-s", "0.02", "--warmup", "1",
              "--retries", "0"]


@dataclass(frozen=True)
class Built:
    ckpt: str
    onnx: str


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    folder = tmp_path_factory.mktemp("bench")
    ckpt = str(folder / "tiny.pt")
    onnx = str(folder / "tiny.onnx")
    assert main(["train", "--epochs", "1", "--hidden-size", "8", "--window", "8", "-o", ckpt,
                 "--json"]) == 0
    assert main(["export", ckpt, "-o", onnx, "--json"]) == 0
    return Built(ckpt, onnx)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="rnnedge")
    add_bench_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["bench", *argv])


def bench_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    assert cmd_bench(parse([*argv, "--json"])) == 0
    captured = capsys.readouterr()
    assert "rnnedge bench:" in captured.err  # progress goes to stderr, JSON alone to stdout
    return json.loads(captured.out)


def test_bench_checkpoint_writes_json_markdown_and_plot(
        built: Built, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    md, png = tmp_path / "out" / "bench.md", tmp_path / "bench.png"
    data = bench_json([built.ckpt, *TINY_SWEEP, "--markdown", str(md), "--plot", str(png)],
                      capsys)
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
        assert p["steps_per_s"] == pytest.approx(p["batch"] * p["seq_len"]
                                                 / p["latency_s"]["p50"])
    eager = [p for p in data["points"] if p["runner"] == "eager"]
    assert all(p["vs_eager"] == pytest.approx(1.0) for p in eager)
    assert md.read_text().count("| eager |") == 3
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_onnx_without_checkpoint_omits_eager(
        built: Built, capsys: pytest.CaptureFixture[str]) -> None:
    data = bench_json([built.onnx, *TINY_SWEEP, "--no-stream"], capsys)
    assert "eager" not in data["runners"] and "eager" in data["skipped"]
    assert any("ratios vs eager omitted" in n for n in data["notes"])
    assert all(p["vs_eager"] is None and p["vs_ort_raw"] > 0 for p in data["points"])
    assert all(p["kind"] == "sequence" for p in data["points"])


def test_bench_tune_writes_a_tuning_that_load_can_use(
        built: Built, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rnnedge.runtime import tuned as tn


    onnx = tmp_path / "tuned.onnx"
    onnx.write_bytes(Path(built.onnx).read_bytes())
    data = bench_json([str(onnx), "--checkpoint", built.ckpt, "--tune", "--tune-budget-s",
                       "0.005", "--seq-lens", "32", "--batches", "3", "--budget-s", "0.01",
                       "--retries", "0", "--no-stream", "--runtime", "ort-raw", "--runtime",
                       "rnnedge"], capsys)
    assert set(data["runners"]) == {"ort-raw", "rnnedge"}
    tuning, why = tn.read_tuning(onnx)
    assert why is None and tuning is not None
    assert set(tuning["classes"]) == {"bN-long"}  # one class keeps the test quick
    assert tuning["onnx_sha256"] == tn.sha256_file(onnx)
    for entry in tuning["classes"].values():
        assert entry["chosen"] in entry["first_pass_p50_s"]
        assert all(v > 0 for v in entry["p50_s"].values())
    assert data["runners"]["rnnedge"]["settings"]["bN-long"]["settings"] == \
        tuning["classes"]["bN-long"]["settings"]
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

    tuning = {"classes": {"bN-long": {"settings": {"intra_op_num_threads": 1},
                                      "batch_split": 2},
                          "b1-short": {"settings": {"intra_op_num_threads": 1},
                                       "batch_split": 1}}}
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


def test_bench_refuses_bad_arguments(built: Built, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--seq-lens"):
        cmd_bench(parse([built.ckpt, "--seq-lens", "1,x"]))
    with pytest.raises(InputError, match="--checkpoint is for an"):
        cmd_bench(parse([built.ckpt, "--checkpoint", built.ckpt]))
    with pytest.raises(InputError, match="does not exist"):
        cmd_bench(parse([str(tmp_path / "missing.onnx")]))
    with pytest.raises(InputError, match="--runtime"):
        cmd_bench(parse([built.onnx, *TINY_SWEEP, "--runtime", "no-such-runner"]))


def test_bench_of_an_onnx_file_needs_neither_torch_nor_onnx(built: Built) -> None:
    """An edge box with numpy + onnxruntime only can still bench (and tune) a model."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        import sys, importlib.abc, argparse, json
        class _Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "onnx", "onnxscript", "matplotlib"):
                    raise ImportError(name + " is blocked in this test")
        sys.meta_path.insert(0, _Block())
        from rnnedge.cli.bench import add_bench_parser, cmd_bench
        p = argparse.ArgumentParser()
        add_bench_parser(p.add_subparsers(dest="command"))
        args = p.parse_args(["bench", {built.onnx!r}, "--seq-lens", "1,4", "--batches", "1",
                             "--budget-s", "0.01", "--warmup", "1", "--retries", "0",
                             "--json"])
        raise SystemExit(cmd_bench(args))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert {"ort-raw", "rnnedge"} <= set(data["runners"]) and "eager" in data["skipped"]
