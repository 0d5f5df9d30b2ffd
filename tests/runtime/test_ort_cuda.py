"""ONNX Runtime on CUDA against eager PyTorch: parity, GPU-resident streams, CUDA graphs, fp16.

Every test here needs an NVIDIA GPU and onnxruntime-gpu and skips itself without them. The
stream's double-buffering, the fallback refusal and the fp16 conversion are also tested on
the CPU, in tests/unit/test_ortdist.py.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rnnedge.errors import StreamError
from rnnedge.runtime.backends.ort_cuda import CUDA_EP, OrtCudaRunner, convert_fp16
from rnnedge.runtime.inputs import zero_state
from rnnedge.spec import RnnSpec
from rnnedge.verify.parity import TOLERANCES, check_parity, compare_arrays, default_grid

FP32 = TOLERANCES["fp32"]


def _chunks(x: np.ndarray, spec: RnnSpec, sizes: list[int]) -> list[np.ndarray]:
    bounds = np.cumsum([0, *sizes])
    return [np.take(x, range(a, b), axis=spec.seq_axis) for a, b in itertools.pairwise(bounds)]


def _sequence(spec: RnnSpec, batch: int, seq_len: int, seed: int = 0) -> np.ndarray:
    features = spec.input(spec.data_input).shape[2]
    shape = (batch, seq_len, features) if spec.batch_first else (seq_len, batch, features)
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Any, RnnSpec]]:
    """LSTM 2×128 batch-first and GRU 1×32 time-major, exported and verified on the CPU."""
    torch = pytest.importorskip("torch")
    from rnnedge.exporters.onnx import example_for, export
    from rnnedge.modeling.models import ModelConfig, SequenceModel

    torch.manual_seed(0)
    out = {}
    for key, cfg in {
        "lstm": ModelConfig(cell="lstm", input_size=1, hidden_size=128, num_layers=2),
        "gru": ModelConfig(cell="gru", input_size=3, hidden_size=32, batch_first=False),
    }.items():
        model = SequenceModel(cfg).eval()
        path = tmp_path_factory.mktemp("models") / f"{key}.onnx"
        result = export(model, example_for(cfg.batch_first, cfg.input_size), path)
        out[key] = (path, model, result.spec)
    return out


def _eager(model: Any, spec: RnnSpec) -> Any:
    from rnnedge.modeling.models import stateful_wrapper
    from rnnedge.modeling.torch_runner import TorchRunner

    return TorchRunner(stateful_wrapper(model), [t.name for t in spec.inputs],
                       [t.name for t in spec.outputs])


@pytest.mark.gpu
@pytest.mark.parametrize("key", ["lstm", "gru"])
@pytest.mark.parametrize("io_binding", [True, False])
def test_ort_cuda_parity_over_a_shape_grid(exported: dict, key: str, io_binding: bool) -> None:
    path, model, spec = exported[key]
    with _eager(model, spec) as ref, OrtCudaRunner(path, io_binding=io_binding) as gpu:
        assert gpu.session.get_providers()[0] == CUDA_EP
        check_parity(ref, [gpu], spec, default_grid(2, 16)).raise_if_failed()


@pytest.mark.gpu
@pytest.mark.parametrize("key", ["lstm", "gru"])
def test_stream_with_state_on_the_gpu_equals_a_full_pass(exported: dict, key: str) -> None:
    path, _, spec = exported[key]
    x = _sequence(spec, 3, 24, seed=1)
    with OrtCudaRunner(path) as gpu:
        full = gpu.infer({spec.data_input: x, **zero_state(spec, 3)})
        stream = gpu.step_session(spec, batch=3)
        y = np.concatenate([stream.step(c) for c in _chunks(x, spec, [1] * 24)],
                           axis=spec.seq_axis)
        state = stream.state
    assert compare_arrays(full[spec.data_output], y, FP32)[2]
    for pair in spec.state_pairs:
        assert compare_arrays(full[pair.output], state[pair.input], FP32)[2]


@pytest.mark.gpu
def test_cuda_graph_stream_equals_plain_stream_and_refuses_a_shape_change(exported: dict
                                                                          ) -> None:
    path, _, spec = exported["lstm"]
    x = _sequence(spec, 1, 20, seed=2)
    steps = _chunks(x, spec, [1] * 20)
    with OrtCudaRunner(path) as plain, OrtCudaRunner(path, cuda_graph=True) as graph:
        a, b = plain.step_session(spec), graph.step_session(spec)
        other = graph.step_session(spec)  # its own graphs and buffers
        other.step(steps[5])
        ys_plain = [a.step(c) for c in steps]
        ys_graph = [b.step(c) for c in steps]
        for ya, yb in zip(ys_plain, ys_graph, strict=True):
            assert compare_arrays(ya, yb, FP32)[2]
        with pytest.raises(StreamError, match="captured at"):
            b.step(_chunks(x, spec, [2])[0])
        full = graph.infer({spec.data_input: x, **zero_state(spec, 1)})  # gpu_graph_id -1
        assert compare_arrays(full[spec.data_output],
                              np.concatenate(ys_graph, axis=spec.seq_axis), FP32)[2]


@pytest.mark.gpu
@pytest.mark.parametrize("key", ["lstm", "gru"])
def test_fp16_parity(exported: dict, key: str, tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    path, model, spec = exported[key]
    fp16 = convert_fp16(path, tmp_path / f"{key}.fp16.onnx")
    with _eager(model, spec) as ref, OrtCudaRunner(fp16, cpu_nodes=False) as gpu:
        report = check_parity(ref, [gpu], spec, default_grid(2, 16),
                              tolerance=TOLERANCES["fp16"])
    report.raise_if_failed()
    assert report.max_abs() > 0  # it really ran in reduced precision
