"""OpenVINO behind the Runner contract: explicit precision, parity with eager at f32, streams
equal to their own full pass, bf16 refused without native bf16, listed without importing it."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import rnnedge
from rnnedge.errors import InputError, ModelFileError, RuntimeUnavailableError
from rnnedge.modeling.models import ModelConfig, SequenceModel, stateful_wrapper
from rnnedge.modeling.torch_runner import TorchRunner
from rnnedge.runtime.backends import openvino as ovb
from rnnedge.runtime.backends.base import availability, require_runner
from rnnedge.spec import Normalization
from rnnedge.verify.parity import TOLERANCES, check_parity, shape_grid

pytestmark = pytest.mark.torch


def test_listed_with_a_reason_and_probed_without_importing_openvino() -> None:
    code = (
        "import sys; from rnnedge.runtime.backends.base import availability; "
        "a = availability(); assert 'openvino' in a, a; "
        "print(a['openvino']); assert 'openvino' not in sys.modules"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    reason = availability()["openvino"]
    try:
        import openvino  # noqa: F401
    except ImportError:
        assert reason is not None and "rnnedge[openvino]" in reason
    else:
        assert reason is None


def test_bad_arguments_are_refused_before_anything_heavy() -> None:
    with pytest.raises(InputError, match="precision 'int8' is not known"):
        ovb.OpenVINORunner("m.onnx", precision="int8")
    with pytest.raises(InputError, match="performance_hint"):
        ovb.OpenVINORunner("m.onnx", performance_hint="FAST")
    with pytest.raises(InputError, match="num_threads"):
        ovb.OpenVINORunner("m.onnx", num_threads=0)


def test_cpu_flags_decide_bf16(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f amx_bf16 amx_tile\n")
    assert ovb.bf16_support(info) == "amx_bf16"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2\n")
    assert ovb.bf16_support(info) is None
    assert ovb.bf16_support(tmp_path / "missing") is None
    monkeypatch.setattr(ovb, "CPUINFO", str(info))
    with pytest.raises(RuntimeUnavailableError, match="has none of the flags avx512_bf16"):
        ovb.require_bf16("test")


ov = pytest.importorskip(
    "openvino", reason="openvino is not installed (pip install 'rnnedge[openvino]')"
)

CELLS = ("lstm", "gru", "rnn_tanh")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[SequenceModel, Path]]:
    out = {}
    norm = Normalization((0.5, -1.0), (2.0, 3.0), (1,))
    for cell in CELLS:
        torch.manual_seed(0)
        m = SequenceModel(
            ModelConfig(cell=cell, input_size=2, hidden_size=16, num_layers=2, output_size=1)
        ).eval()
        path = tmp_path_factory.mktemp(cell) / "m.onnx"
        rnnedge.export(m, torch.randn(2, 6, 2), path, normalization=norm)
        out[cell] = (m, path)
    return out


def test_registered_runner_is_this_class() -> None:
    assert require_runner("openvino") is ovb.OpenVINORunner


@pytest.mark.parametrize("cell", CELLS)
def test_parity_with_eager_at_f32(exported: dict, cell: str) -> None:
    module, path = exported[cell]
    spec = ovb.stored_spec(path)
    runner = ovb.OpenVINORunner(path)
    ref = TorchRunner(
        stateful_wrapper(module), [t.name for t in spec.inputs], [t.name for t in spec.outputs]
    )
    with ref, runner:
        assert runner.precision == "f32"  # set explicitly, although this CPU defaults to bf16
        report = check_parity(
            ref, [runner], spec, shape_grid([1, 3], [1, 7, 40]), tolerance=TOLERANCES["fp32"]
        )
    assert report.ok, report.describe_failures()


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("precision", ["f32", "bf16"])
def test_stream_equals_its_own_full_pass(exported: dict, cell: str, precision: str) -> None:
    if precision == "bf16" and ovb.bf16_support() is None:
        pytest.skip("this CPU has no native bf16")
    _, path = exported[cell]
    model = ovb.load_model(path, precision=precision)
    assert model.runner.precision == precision and model.runtime == "openvino"
    x = np.random.default_rng(1).standard_normal((3, 30, 2)).astype(np.float32)
    full, state = model.run(x)
    tol = {"f32": (1e-5, 1e-4), "bf16": (2e-2, 2e-2)}[precision]
    for chunk in (1, 4, 30):
        stream = model.stream(batch=3)
        parts = [stream.step(x[:, i : i + chunk]) for i in range(0, 30, chunk)]
        np.testing.assert_allclose(np.concatenate(parts, axis=1), full, atol=tol[0], rtol=tol[1])
        for name, value in stream.state.items():
            np.testing.assert_allclose(value, state[name], atol=tol[0], rtol=tol[1])
    model.close()


def test_precision_comes_from_the_gate_record_or_the_caller(exported: dict) -> None:
    _, path = exported["lstm"]
    spec = ovb.stored_spec(path)
    assert ovb.chosen_precision(spec) == "f32"
    from rnnedge.spec import PrecisionRecord

    spec.precision = PrecisionRecord("bf16", "mse", 0.01, 1.0, 1.0, "bf16", "openvino")
    assert ovb.chosen_precision(spec) == "bf16"
    spec.precision = PrecisionRecord("int8", "mse", 0.01, 1.0, 1.0, "int8", "ort-cpu")
    assert ovb.chosen_precision(spec) == "f32"


def test_bf16_refused_on_a_cpu_without_it(
    exported: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("flags\t\t: fpu avx2 avx512f\n")
    monkeypatch.setattr(ovb, "CPUINFO", str(info))
    runner = ovb.OpenVINORunner(exported["lstm"][1], precision="bf16")
    with pytest.raises(RuntimeUnavailableError, match="bf16"):
        runner.activate()
    assert not runner.active
    with ovb.OpenVINORunner(exported["lstm"][1]) as r:  # f32 still works there
        assert r.precision == "f32"


def test_bad_inputs_and_files(exported: dict, tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="does not exist"):
        ovb.OpenVINORunner(tmp_path / "none.onnx").activate()
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="OpenVINO could not compile"):
        ovb.OpenVINORunner(junk).activate()
    with pytest.raises(ModelFileError, match="no rnnedge spec"):
        ovb.load_model(junk)
    with ovb.OpenVINORunner(exported["lstm"][1]) as r:
        with pytest.raises(InputError, match="OpenVINO refused the inputs x"):
            r.infer({"x": np.zeros((1, 3, 5), np.float32)})
        names = [t.name for t in r.input_specs()]
        assert names == ["x", "h0", "c0"] and r.output_names() == ["y", "hn", "cn"]


def test_concurrent_calls_from_threads(exported: dict) -> None:
    model = ovb.load_model(exported["gru"][1])
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((1, 12, 2)).astype(np.float32) for _ in range(8)]
    expected = [model.run(x)[0] for x in xs]
    got: list[np.ndarray | None] = [None] * 8

    def work(i: int) -> None:
        for _ in range(5):
            got[i] = model.run(xs[i])[0]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_array_equal(g, e)
