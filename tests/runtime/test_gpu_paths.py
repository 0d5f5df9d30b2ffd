"""The ORT CUDA runner's defenses, shown on the CPU where a CPU can show them.

Each test names the defect of issue 14 it covers: the fp16 crash on the CPU provider (run in a
subprocess, since it kills the interpreter), the Python wrapper's silent CPU retry, the probe
that proves the CUDA provider is live, nodes placed on the CPU inside a CUDA session, the
`nvidia` lib folders of a `--target` install, provider options that bypass their argument, and
CUDA failures said as device errors.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from rnnedge.errors import EXIT_CODES, DeviceError, InputError, ModelFileError
from rnnedge.errors import RuntimeUnavailableError as Unavailable
from rnnedge.runtime.backends.cuda_step import device_failure
from rnnedge.runtime.backends.ort import open_session
from rnnedge.runtime.backends.ort_cuda import (
    CUDA_EP,
    NO_CPU_FALLBACK,
    RECORD_PLACEMENT,
    OrtCudaRunner,
    cpu_placed,
    cuda_settings,
    placement,
    placement_problem,
)
from rnnedge.runtime.backends.ortdist import nvidia_lib_dirs, preload_calls, probe_model

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "foreign_lstm.onnx"
ROOT = Path(__file__).resolve().parents[2]


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def fp16_lstm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A batch-first 2-layer LSTM, exported by rnnedge and converted to fp16 weights."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from rnnedge.exporters.onnx import example_for, export
    from rnnedge.modeling.models import ModelConfig, SequenceModel
    from rnnedge.runtime.backends.ort_cuda import convert_fp16

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("fp16")
    model = SequenceModel(ModelConfig(cell="lstm", input_size=1, hidden_size=16, num_layers=2))
    export(model.eval(), example_for(True, 1), folder / "lstm.onnx")
    return convert_fp16(folder / "lstm.onnx", folder / "lstm.fp16.onnx")


# -- 3: an fp16 RNN on the CPU provider crashes ONNX Runtime inside session creation ---------
@pytest.mark.torch
def test_fp16_rnn_crash_is_real_and_the_runner_refuses_before_it(fp16_lstm: Path) -> None:
    opened = (
        "import onnxruntime as ort\n"  # ORT itself, without rnnedge's guards
        "so = ort.SessionOptions()\n"
        "so.graph_optimization_level = ort.GraphOptimizationLevel.LEVEL\n"
        f"ort.InferenceSession({str(fp16_lstm)!r}, so, providers=['CPUExecutionProvider'])"
    )
    crash = _python(opened.replace("LEVEL", "ORT_ENABLE_ALL"))
    assert crash.returncode < 0, (
        "ONNX Runtime no longer crashes on an fp16 LSTM at ORT_ENABLE_ALL on the CPU provider "
        f"(exit {crash.returncode}); the probe stays right, but update docs/gpu.md"
    )
    # ... and not at `extended`, which is why CUDA sessions are made there
    assert _python(opened.replace("LEVEL", "ORT_ENABLE_EXTENDED")).returncode == 0
    opened_by_runner = _python(f"""
        from rnnedge.errors import RuntimeUnavailableError
        from rnnedge.runtime.backends.ort_cuda import OrtCudaRunner
        for cpu_nodes in (True, False):
            try:
                runner = OrtCudaRunner({str(fp16_lstm)!r}, cpu_nodes=cpu_nodes).activate()
                print("active:", runner.session.get_providers()[0])
            except RuntimeUnavailableError as exc:
                print("refused:", exc)
    """)
    assert opened_by_runner.returncode == 0, f"the runner crashed ({opened_by_runner.returncode})"
    lines = opened_by_runner.stdout.strip().splitlines()
    expected = (
        f"active: {CUDA_EP}"
        if _cuda_provider_works()
        else "probe session runs on CPUExecutionProvider"
    )
    assert len(lines) == 2 and all(expected in line for line in lines), lines


def _cuda_provider_works() -> bool:
    """Whether the CUDA provider is live here (a GPU machine with onnxruntime-gpu)."""
    try:
        OrtCudaRunner(FIXTURE).activate().deactivate()
    except Unavailable:
        return False
    return True


def test_the_probe_model_is_a_valid_one_node_graph() -> None:
    session = open_session(probe_model())
    (y,) = session.run(None, {"x": np.array([1.5], np.float32)})
    np.testing.assert_array_equal(y, [3.0])
    onnx = pytest.importorskip("onnx")
    model = onnx.load_from_string(probe_model())
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node] == ["Add"]


def test_cuda_sessions_default_to_extended_and_record_placement() -> None:
    s = cuda_settings(None, cpu_nodes=True)
    assert s["graph_optimization_level"] == "extended"
    assert s["config"] == {RECORD_PLACEMENT: "1"}
    s = cuda_settings({"graph_optimization_level": "basic", "config": {"a": "b"}}, False)
    assert s["graph_optimization_level"] == "basic"
    assert s["config"] == {"a": "b", RECORD_PLACEMENT: "1", NO_CPU_FALLBACK: "1"}


# -- 7: the Python wrapper retries a failed session on the CPU and prints to stdout ---------
def test_cuda_sessions_are_made_without_the_python_cpu_retry(
    capfd: pytest.CaptureFixture[str],
) -> None:
    broken = [(CUDA_EP, "not a dict")]  # any ValueError/RuntimeError while creating
    session = open_session(FIXTURE, broken)  # ORT's default: retry on the CPU, print, carry on
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert "Falling back to ['CPUExecutionProvider']" in capfd.readouterr().out
    with pytest.raises(ModelFileError, match="must be either strings"):
        open_session(FIXTURE, broken, fallback=False)
    assert "Falling back" not in capfd.readouterr().out
    for cpu_nodes in (True, False):
        try:
            OrtCudaRunner(FIXTURE, cpu_nodes=cpu_nodes).activate().deactivate()
        except Unavailable as exc:
            assert "probe session runs on CPUExecutionProvider" in str(exc)
    assert "Falling back" not in capfd.readouterr().out


# -- 8: nodes left to the CPU provider inside a CUDA session ---------------------------------
def _gru(linear_before_reset: int, path: Path) -> Path:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    hidden, features = 4, 3
    weights = [
        numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
        for n, s in (("W", (1, 3 * hidden, features)), ("R", (1, 3 * hidden, hidden)))
    ]
    node = helper.make_node(
        "GRU",
        ["x", "W", "R"],
        ["", "hn"],
        name="gru",
        hidden_size=hidden,
        linear_before_reset=linear_before_reset,
    )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["t", 1, features])],
        [helper.make_tensor_value_info("hn", TensorProto.FLOAT, [1, 1, hidden])],
        weights,
    )
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
        str(path),
    )
    return path


def test_placement_is_read_back_and_heavy_cpu_nodes_are_reported(tmp_path: Path) -> None:
    path = _gru(0, tmp_path / "gru.onnx")
    recorded = open_session(path, settings=cuda_settings(None, cpu_nodes=True))
    assigned = placement(recorded)
    assert assigned == {"CPUExecutionProvider": ["GRU gru"]}
    assert cpu_placed(assigned, heavy_only=True) == ["GRU gru"]
    for cpu_nodes in (True, False):
        problem = placement_problem(assigned, cpu_nodes)
        assert problem is not None and "GRU gru" in problem and "linear_before_reset" in problem
        assert ("cpu_nodes=True" in problem) is (not cpu_nodes)
    assert placement(open_session(path)) == {}  # not recorded: nothing claimed


def test_shape_bookkeeping_on_the_cpu_is_only_refused_when_no_cpu_node_is_allowed() -> None:
    assigned = {CUDA_EP: ["LSTM lstm"], "CPUExecutionProvider": ["Shape s", "Gather g"]}
    assert placement_problem(assigned, cpu_nodes=True) is None
    assert "Shape s, Gather g" in (placement_problem(assigned, cpu_nodes=False) or "")
    assert placement_problem({CUDA_EP: ["LSTM lstm"]}, cpu_nodes=False) is None


# -- 11: preload_dlls() misses the CUDA libraries of a `pip install --target` tree -----------
def _touch(*paths: Path) -> None:
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")


def test_nvidia_lib_folders_are_found_in_every_part_of_the_namespace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system, target = tmp_path / "system", tmp_path / "target"
    _touch(
        system / "nvidia" / "cu13" / "lib" / "libcudart.so.13",
        system / "nvidia" / "cu13" / "lib" / "libcublas.so.13",
        system / "nvidia" / "cu13" / "include" / "cuda.h",
        target / "nvidia" / "cudnn" / "lib" / "libcudnn.so.9",
        target / "nvidia" / "nccl" / "lib" / "libnccl.so.2",
    )
    for site in (target, system):
        monkeypatch.syspath_prepend(str(site))
    import importlib

    importlib.invalidate_caches()
    monkeypatch.delitem(sys.modules, "nvidia", raising=False)
    found = nvidia_lib_dirs()
    cu13, cudnn = str(system / "nvidia" / "cu13" / "lib"), str(target / "nvidia" / "cudnn" / "lib")
    assert {cu13, cudnn, str(target / "nvidia" / "nccl" / "lib")} <= set(found)
    calls = [c for c in preload_calls(found) if c[0].startswith(str(tmp_path))]
    assert calls == [(cu13, True, False), (cudnn, False, True)]  # CUDA first, nccl not asked


# -- 12: provider options that bypass their argument ----------------------------------------
@pytest.mark.parametrize(
    ("key", "argument"),
    [("enable_cuda_graph", "cuda_graph="), ("use_tf32", "use_tf32="), ("device_id", "device_id=")],
)
def test_provider_options_with_their_own_argument_are_refused(key: str, argument: str) -> None:
    with pytest.raises(InputError, match=f"'{key}'.*{argument}"):
        OrtCudaRunner(FIXTURE, provider_options={key: "1"})
    other = OrtCudaRunner(FIXTURE, provider_options={"cudnn_conv_algo_search": "DEFAULT"})
    assert other.cuda_options()["cudnn_conv_algo_search"] == "DEFAULT"
    assert "enable_cuda_graph" not in other.cuda_options()


# -- 13: CUDA failures are not the inputs' fault --------------------------------------------
@pytest.mark.parametrize(
    "message",
    [
        "CUDA failure 2: out of memory ; GPU=0 ; hostname=h ; file=cuda_allocator.cc ; line=47",
        "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : CUDNN failure 4: CUDNN_STATUS_INTERNAL_ERROR",
        "CUBLAS failure 13: CUBLAS_STATUS_EXECUTION_FAILED ; GPU=0",
        "CUDA failure 700: an illegal memory access was encountered",
        "Failed to allocate memory for requested buffer of size 4294967296",
    ],
)
def test_cuda_failures_are_device_errors_with_their_own_exit_code(message: str) -> None:
    error = device_failure(RuntimeError(message), "running the model")
    assert isinstance(error, DeviceError) and message[:20] in str(error)
    assert error.exit_code == EXIT_CODES["DeviceError"] != EXIT_CODES["InputError"]
    assert device_failure(RuntimeError("Got invalid dimensions for input: x"), "x") is None
