"""fp16 files on ONNX Runtime's CPU provider: opened at the basic optimization level.

ONNX Runtime 1.32 ends the process with SIGSEGV while building a session for an fp16 LSTM or
GRU file at its default level (`all`); at `basic` it works. A crash cannot be caught, so every
attempt here runs in a subprocess and the test reads its exit status.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rnnedge.modeling.models import ModelConfig, SequenceModel, stateful_wrapper
from rnnedge.runtime import onnxscan

pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.torch


def _export_fp16(cell: str, path: Path) -> Path:
    torch.manual_seed(0)
    model = (
        SequenceModel(
            ModelConfig(cell=cell, input_size=1, hidden_size=16, num_layers=2, output_size=1)
        )
        .eval()
        .half()
    )
    wrapper = stateful_wrapper(model).eval()
    x = torch.randn(2, 5, 1).half()
    state = model.initial_state(x)
    state = state if isinstance(state, tuple) else (state,)
    ins, outs = ["x", "h0", "c0"][: 1 + len(state)], ["y", "hn", "cn"][: 1 + len(state)]
    axes = {
        "x": {0: "batch", 1: "seq_len"},
        "y": {0: "batch", 1: "seq_len"},
        **{n: {1: "batch"} for n in ins[1:] + outs[1:]},
    }
    torch.onnx.export(
        wrapper,
        (x, *state),
        str(path),
        dynamo=False,
        input_names=ins,
        output_names=outs,
        opset_version=17,
        dynamic_axes=axes,
    )
    return path


@pytest.fixture(scope="module", params=["lstm", "gru"])
def fp16_file(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export_fp16(request.param, tmp_path_factory.mktemp("fp16") / "m16.onnx")


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


_FEEDS = """
import numpy as np
def feeds(inputs):
    rng = np.random.default_rng(0)
    return {i.name: rng.standard_normal([d if isinstance(d, int) else 3 for d in i.shape])
            .astype(np.float16) for i in inputs}
"""


def test_the_scan_sees_float16_without_onnx(fp16_file: Path, tmp_path: Path) -> None:
    assert onnxscan.holds_float16(fp16_file)
    assert onnxscan.holds_float16(fp16_file.read_bytes())
    fp32 = tmp_path / "m32.onnx"
    model = SequenceModel(ModelConfig(cell="gru", input_size=1, hidden_size=4)).eval()
    wrapper = stateful_wrapper(model).eval()
    x = torch.randn(1, 3, 1)
    torch.onnx.export(
        wrapper,
        (x, model.initial_state(x)),
        str(fp32),
        dynamo=False,
        input_names=["x", "h0"],
        output_names=["y", "hn"],
        opset_version=17,
    )
    assert not onnxscan.holds_float16(fp32)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\xff\xff\xff not a protobuf")
    assert not onnxscan.holds_float16(junk) and onnxscan.metadata(junk) == {}


def test_guard_lowers_only_the_unsafe_levels(fp16_file: Path) -> None:
    guard = onnxscan.fp16_safe_settings
    assert guard(None, fp16_file) == {"graph_optimization_level": "basic"}
    assert guard({"graph_optimization_level": "all", "intra_op_num_threads": 1}, fp16_file) == {
        "graph_optimization_level": "basic",
        "intra_op_num_threads": 1,
    }
    assert (
        guard({"graph_optimization_level": "extended"}, fp16_file)["graph_optimization_level"]
        == "basic"
    )
    assert guard({"graph_optimization_level": "disable"}, fp16_file) == {
        "graph_optimization_level": "disable"
    }


def test_guarded_session_opens_and_runs(fp16_file: Path) -> None:
    out = _run(
        _FEEDS
        + f"""
from rnnedge.runtime.backends.ort import open_session
from rnnedge.runtime.onnxscan import fp16_safe_settings
path = {str(fp16_file)!r}
s = open_session(path, settings=fp16_safe_settings(None, path))
y = s.run(None, feeds(s.get_inputs()))[0]
assert y.dtype == np.float16 and np.isfinite(y).all(), y
print("ok")
"""
    )
    assert out.returncode == 0 and "ok" in out.stdout, (out.returncode, out.stderr[-2000:])


def test_the_cpu_runner_opens_an_fp16_file_without_crashing(fp16_file: Path) -> None:
    """The runner every `rnnedge.load` uses, with default settings: must not end the process
    (it does, with SIGSEGV, if `open_session` does not apply `fp16_safe_settings`)."""
    out = _run(
        _FEEDS
        + f"""
from rnnedge.runtime.backends.ort import OrtCpuRunner
with OrtCpuRunner({str(fp16_file)!r}) as r:
    y = r.infer(feeds(r.session.get_inputs()))["y"]
assert y.dtype == np.float16 and np.isfinite(y).all(), y
print("ok")
"""
    )
    assert out.returncode == 0 and "ok" in out.stdout, (
        f"exit status {out.returncode} (-11 is SIGSEGV): {out.stderr[-2000:]}"
    )
