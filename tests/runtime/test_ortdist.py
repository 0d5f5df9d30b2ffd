"""ONNX Runtime installs diagnosed from injected metadata, and the CUDA runner's CPU-side logic.

The second half runs `CudaStepSession`'s double-buffered stream on the CPU provider, the
refusal of a session that fell back to the CPU, and the fp16 conversion, so that logic is
covered on machines without a GPU (test_ort_cuda.py runs it on CUDA; test_gpu_paths.py has
the CPU-side checks of the other GPU-path defenses).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rnnedge.errors import (
    DeviceError,
    InputError,
    ModelFileError,
    RuntimeUnavailableError,
    StreamError,
)
from rnnedge.runtime.backends import ortdist
from rnnedge.runtime.backends.ort import open_session
from rnnedge.runtime.backends.ort_cuda import CUDA_EP, CudaStepSession, OrtCudaRunner, convert_fp16
from rnnedge.runtime.backends.ortdist import GPU_FIX, DistRecord, ModuleInfo, OrtDist, diagnose
from rnnedge.runtime.foreign import resolve_spec
from rnnedge.runtime.inputs import zero_state
from rnnedge.spec import RnnSpec

FIXTURES = Path(__file__).parent.parent / "fixtures"

SITE = "/venv/lib/python3.12/site-packages"
OTHER = "/tmp/site"


def _lookup(*records: DistRecord):  # type: ignore[no-untyped-def]
    by_name = {r.name: r for r in records}
    return lambda name: by_name.get(name)


def _probe(location: str | None, providers: tuple[str, ...] | None = None):  # type: ignore
    def probe(import_module: bool) -> ModuleInfo:
        if not import_module or providers is None:
            return ModuleInfo(location)
        return ModuleInfo(location, "1.31.1", providers)

    return probe


CPU = DistRecord("onnxruntime", "1.32.0", SITE)
GPU = DistRecord("onnxruntime-gpu", "1.31.1", SITE)
GPU_ELSEWHERE = DistRecord("onnxruntime-gpu", "1.31.1", OTHER)
CUDA_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


def test_cpu_only_says_onnxruntime_gpu_is_needed_and_how() -> None:
    d = diagnose(_lookup(CPU), _probe(SITE, ("CPUExecutionProvider",)))
    assert d.active == "onnxruntime" and d.conflict is None
    assert d.gpu_installed == [] and d.has_cuda_provider is False
    problem = d.gpu_problem()
    assert problem is not None
    assert "needs onnxruntime-gpu" in problem and "onnxruntime 1.32.0 (CPU)" in problem
    assert GPU_FIX in problem


def test_gpu_only_is_fine() -> None:
    d = diagnose(_lookup(GPU), _probe(SITE, CUDA_PROVIDERS))
    assert d.active == "onnxruntime-gpu"
    assert d.conflict is None and d.gpu_problem() is None
    assert d.has_cuda_provider is True
    assert d.module_version == "1.31.1"


def test_both_in_one_site_directory_is_a_conflict_with_the_fix() -> None:
    d = diagnose(_lookup(CPU, GPU), _probe(SITE))
    assert d.active is None  # nobody can tell whose files the module holds now
    assert d.conflict is not None
    assert "onnxruntime 1.32.0" in d.conflict and "onnxruntime-gpu 1.31.1" in d.conflict
    assert "overwrote" in d.conflict
    assert "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu" in (
        d.conflict
    )
    assert d.gpu_problem() == d.conflict
    assert "CONFLICT" in d.describe()


def test_gpu_wheel_in_its_own_directory_first_on_the_path_is_no_conflict() -> None:
    """The GPU benchmark's layout: onnxruntime-gpu in --target dir, CPU wheel in the venv."""
    d = diagnose(_lookup(CPU, GPU_ELSEWHERE), _probe(OTHER, CUDA_PROVIDERS))
    assert d.conflict is None
    assert d.active == "onnxruntime-gpu"
    assert d.gpu_problem() is None


def test_gpu_wheel_shadowed_by_the_cpu_wheel_names_both_places() -> None:
    d = diagnose(_lookup(CPU, GPU_ELSEWHERE), _probe(SITE))
    assert d.conflict is None and d.active == "onnxruntime"
    problem = d.gpu_problem()
    assert problem is not None
    assert OTHER in problem and SITE in problem and "sys.path" in problem


def test_two_non_gpu_wheels_together_get_a_generic_fix() -> None:
    dml = DistRecord("onnxruntime-directml", "1.24.4", SITE)
    ov = DistRecord("onnxruntime-openvino", "1.24.1", SITE)
    d = diagnose(_lookup(dml, ov), _probe(SITE))
    assert d.conflict is not None
    assert "pip uninstall -y onnxruntime-directml onnxruntime-openvino" in d.conflict


def test_providers_are_only_listed_when_the_module_is_imported() -> None:
    d = diagnose(_lookup(GPU), _probe(SITE, CUDA_PROVIDERS), import_module=False)
    assert d.providers is None and d.has_cuda_provider is None


def test_nothing_installed() -> None:
    d = diagnose(_lookup(), _probe(None))
    assert d.distributions == {} and d.active is None and d.conflict is None
    assert "no ONNX Runtime distribution" in (d.gpu_problem() or "")


def test_this_machine_is_diagnosed_from_real_metadata() -> None:
    d = diagnose()
    assert isinstance(d, OrtDist)
    assert d.distributions, "onnxruntime is a core dependency, so one distribution is installed"
    assert d.module.location is not None
    assert d.active in d.distributions
    assert d.providers is not None and "CPUExecutionProvider" in d.providers


def test_hidden_gpus_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert "CUDA_VISIBLE_DEVICES" in (ortdist.cuda_device_missing() or "")


def test_no_device_nodes_means_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(ortdist.glob, "glob", lambda pattern: [])
    monkeypatch.setattr(ortdist.os.path, "exists", lambda path: False)
    assert "no NVIDIA GPU" in (ortdist.cuda_device_missing() or "")
    monkeypatch.setattr(ortdist.glob, "glob", lambda pattern: ["/dev/nvidia0"])
    assert ortdist.cuda_device_missing() is None


def test_ort_cuda_unavailable_reason_names_onnxruntime_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from rnnedge.runtime.backends import ort_cuda

    monkeypatch.setattr(
        ort_cuda,
        "diagnose",
        lambda **kw: diagnose(_lookup(CPU), _probe(SITE, ("CPUExecutionProvider",)), **kw),
    )
    reason = ort_cuda.OrtCudaRunner.unavailable_reason()
    assert reason is not None and "onnxruntime-gpu" in reason


def test_ort_cuda_unavailable_reason_on_this_machine() -> None:
    from rnnedge.runtime.backends.ort_cuda import OrtCudaRunner

    if diagnose(import_module=False).gpu_installed:
        pytest.skip("onnxruntime-gpu is installed here")
    reason = OrtCudaRunner.unavailable_reason()
    assert reason is not None and "onnxruntime-gpu" in reason


def test_ort_cuda_without_a_gpu_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    from rnnedge.runtime.backends import ort_cuda

    monkeypatch.setattr(
        ort_cuda,
        "diagnose",
        lambda **kw: diagnose(_lookup(GPU), _probe(SITE, CUDA_PROVIDERS), **kw),
    )
    monkeypatch.setattr(ort_cuda, "cuda_device_missing", lambda: "no NVIDIA GPU is visible")
    assert ort_cuda.OrtCudaRunner.unavailable_reason() == "no NVIDIA GPU is visible"
    monkeypatch.setattr(ort_cuda, "cuda_device_missing", lambda: None)
    assert ort_cuda.OrtCudaRunner.unavailable_reason() is None
    monkeypatch.setattr(
        ort_cuda,
        "diagnose",
        lambda **kw: diagnose(_lookup(GPU), _probe(SITE, ("CPUExecutionProvider",)), **kw),
    )
    assert "lists no CUDAExecutionProvider" in (ort_cuda.OrtCudaRunner.unavailable_reason() or "")


# -- the CUDA runner's logic, on the CPU provider ---------------------------------------


def _chunks(x: np.ndarray, spec: RnnSpec, sizes: list[int]) -> list[np.ndarray]:
    bounds = np.cumsum([0, *sizes])
    return [np.take(x, range(a, b), axis=spec.seq_axis) for a, b in itertools.pairwise(bounds)]


def _sequence(spec: RnnSpec, batch: int, seq_len: int, seed: int = 0) -> np.ndarray:
    features = spec.input(spec.data_input).shape[2]
    shape = (batch, seq_len, features) if spec.batch_first else (seq_len, batch, features)
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _full_pass(session: Any, spec: RnnSpec, x: np.ndarray, extra: dict | None = None) -> dict:
    batch = x.shape[spec.batch_axis]
    feeds = {spec.data_input: x, **zero_state(spec, batch), **(extra or {})}
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


@pytest.mark.parametrize("fixture", ["foreign_lstm", "foreign_gru_state", "foreign_extra_input"])
@pytest.mark.parametrize("sizes", [[1] * 9, [3, 1, 5], [9]])
def test_double_buffered_stream_equals_one_full_pass(fixture: str, sizes: list[int]) -> None:
    session = open_session(FIXTURES / f"{fixture}.onnx")
    spec = resolve_spec(session)
    extra = {"gain": np.array([1.5], np.float32)} if fixture == "foreign_extra_input" else None
    x = _sequence(spec, 2, sum(sizes))
    stream = CudaStepSession(
        session, spec, batch=2, chunk_len=sizes[0], extra=extra, device=("cpu", 0)
    )
    y = np.concatenate([stream.step(c) for c in _chunks(x, spec, sizes)], axis=spec.seq_axis)
    full = _full_pass(session, spec, x, extra)
    np.testing.assert_allclose(y, full[spec.data_output], atol=1e-6)
    for pair in spec.state_pairs:
        np.testing.assert_allclose(stream.state[pair.input], full[pair.output], atol=1e-6)
    assert stream.steps == sum(sizes)


def test_stream_state_can_be_read_set_and_reset() -> None:
    session = open_session(FIXTURES / "foreign_lstm.onnx")
    spec = resolve_spec(session)
    x = _sequence(spec, 1, 6)
    stream = CudaStepSession(session, spec, device=("cpu", 0))
    first = [stream.step(c) for c in _chunks(x, spec, [1] * 3)]
    saved = stream.state
    rest = [stream.step(c) for c in _chunks(x, spec, [1] * 6)[3:]]
    stream.state = saved
    again = [stream.step(c) for c in _chunks(x, spec, [1] * 6)[3:]]
    for a, b in zip(rest, again, strict=True):
        np.testing.assert_array_equal(a, b)
    stream.reset()
    assert stream.steps == 0 and all(not v.any() for v in stream.state.values())
    np.testing.assert_array_equal(stream.step(_chunks(x, spec, [1])[0]), first[0])
    with pytest.raises(InputError, match="batch"):
        stream.step(_sequence(spec, 2, 1))
    with pytest.raises(InputError, match="state"):
        stream.state = {"h0": np.zeros((1, 1, 4), np.float32)}
    stream.close()
    with pytest.raises(StreamError, match="closed"):
        stream.step(_chunks(x, spec, [1])[0])


def test_graph_stream_refuses_a_shape_change_before_running() -> None:
    """With graph ids the chunk shape is fixed; the CPU provider ignores the ids."""
    session = open_session(FIXTURES / "foreign_gru_state.onnx")
    spec = resolve_spec(session)
    stream = CudaStepSession(session, spec, chunk_len=2, device=("cpu", 0), graph_ids=[7, 8])
    x = _sequence(spec, 1, 5)
    y = stream.step(_chunks(x, spec, [2])[0])
    before = stream.state
    with pytest.raises(StreamError, match=r"captured at.*step_session"):
        stream.step(_chunks(x, spec, [2, 3])[1])
    for name, value in stream.state.items():
        np.testing.assert_array_equal(value, before[name])  # a refused step changes nothing
    assert y.shape == (1, 2, 5) and stream.steps == 2


def test_stream_needs_the_models_other_inputs() -> None:
    session = open_session(FIXTURES / "foreign_extra_input.onnx")
    with pytest.raises(StreamError, match="gain"):
        CudaStepSession(session, resolve_spec(session), device=("cpu", 0))


def test_a_session_that_landed_on_the_cpu_is_refused() -> None:
    session = open_session(FIXTURES / "foreign_lstm.onnx")  # what a silent fallback leaves
    runner = OrtCudaRunner(FIXTURES / "foreign_lstm.onnx", session=session)
    with pytest.raises(RuntimeUnavailableError, match=f"asked for {CUDA_EP}.*CPUExecutionProvider"):
        runner.activate()
    assert not runner.active


def test_cuda_options_keep_fp32_exact_unless_asked() -> None:
    runner = OrtCudaRunner(
        "m.onnx", device_id=1, provider_options={"arena_extend_strategy": "kSameAsRequested"}
    )
    assert runner.cuda_options() == {
        "device_id": "1",
        "use_tf32": "0",
        "arena_extend_strategy": "kSameAsRequested",
    }
    graph = OrtCudaRunner("m.onnx", cuda_graph=True, use_tf32=True).cuda_options()
    assert graph["enable_cuda_graph"] == "1" and graph["use_tf32"] == "1"


def test_session_errors_about_cuda_are_said_as_such() -> None:
    runner = OrtCudaRunner("m.onnx")
    for cause, match in [
        ("This session cannot use the graph capture feature as requested", "cuda_graph=False"),
        ("fallback to CPU EP has been explicitly disabled by the user", "cpu_nodes=False"),
    ]:
        err = ModelFileError("could not be loaded")
        err.__cause__ = RuntimeError(cause)
        explained = runner._explain(err)
        assert isinstance(explained, RuntimeUnavailableError) and match in str(explained)
    plain = ModelFileError("truncated protobuf")
    assert runner._explain(plain) is plain


def test_convert_fp16_writes_a_sorted_checked_fp16_graph(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    dst = convert_fp16(FIXTURES / "foreign_lstm.onnx", tmp_path / "fp16.onnx")
    model = onnx.load(str(dst))
    onnx.checker.check_model(model)  # raises on nodes out of topological order
    f32, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [f32] * 3
    assert {t.data_type for t in model.graph.initializer if t.data_type in (f32, f16)} == {f16}
    # ORT's CPU provider crashes on an fp16 LSTM: run it only on CUDA (test_fp16_parity).
    with pytest.raises(ModelFileError, match="does not exist"):
        convert_fp16(tmp_path / "missing.onnx", tmp_path / "x.onnx")


@pytest.mark.parametrize(
    ("graph_ids", "message", "error"),
    [
        (None, "CUDA failure 2: out of memory ; GPU=0 ; expr=cudaMalloc", DeviceError),
        (None, "CUDNN failure 8: CUDNN_STATUS_EXECUTION_FAILED ; GPU=0", DeviceError),
        (None, "Got invalid dimensions for input: x", InputError),
        (
            [1, 2],
            "CUDA failure 900: operation not permitted when stream is capturing",
            RuntimeUnavailableError,
        ),
        ([1, 2], "CUDA failure 700: an illegal memory access was encountered", DeviceError),
    ],
)
def test_a_failed_step_is_said_as_what_it_is_and_leaves_the_state_alone(
    graph_ids: list[int] | None, message: str, error: type[Exception]
) -> None:
    session = open_session(FIXTURES / "foreign_gru_state.onnx")
    spec = resolve_spec(session)
    x = _sequence(spec, 1, 2)
    stream = CudaStepSession(session, spec, device=("cpu", 0), graph_ids=graph_ids)
    stream.step(_chunks(x, spec, [1])[0])
    before = stream.state

    class Failing:
        def __getattr__(self, name: str) -> Any:
            return getattr(session, name)

        def run_with_iobinding(self, *args: Any) -> None:
            raise RuntimeError(message)

    stream.session = Failing()
    with pytest.raises(error, match=message.split(":")[0]) as caught:
        stream.step(_chunks(x, spec, [1, 1])[1])
    assert type(caught.value) is error
    assert stream.steps == 1
    for name, value in stream.state.items():
        np.testing.assert_array_equal(value, before[name])
