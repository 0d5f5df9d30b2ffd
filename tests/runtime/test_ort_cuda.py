"""ONNX Runtime on CUDA against eager PyTorch: parity, GPU-resident streams, CUDA graphs, fp16.

Every test here is marked `gpu`: it skips without an NVIDIA GPU and onnxruntime-gpu, and fails
instead under RNNEDGE_REQUIRE_GPU=1 (tests/conftest.py), which also keeps TF32 off
(NVIDIA_TF32_OVERRIDE=0) so fp32 parity means fp32. The stream's double-buffering, the fallback
refusals and the fp16 conversion are also tested on the CPU, in test_ortdist.py and
test_gpu_paths.py.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rnnedge.errors import RuntimeUnavailableError, StreamError
from rnnedge.runtime.backends.ort_cuda import CUDA_EP, OrtCudaRunner, convert_fp16
from rnnedge.runtime.inputs import zero_state
from rnnedge.spec import RnnSpec
from rnnedge.verify.parity import (
    TOLERANCES,
    check_parity,
    compare_arrays,
    default_grid,
    shape_grid,
)

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

    return TorchRunner(
        stateful_wrapper(model), [t.name for t in spec.inputs], [t.name for t in spec.outputs]
    )


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
        y = np.concatenate([stream.step(c) for c in _chunks(x, spec, [1] * 24)], axis=spec.seq_axis)
        state = stream.state
    assert compare_arrays(full[spec.data_output], y, FP32)[2]
    for pair in spec.state_pairs:
        assert compare_arrays(full[pair.output], state[pair.input], FP32)[2]


@pytest.mark.gpu
def test_cuda_graph_stream_is_replayed_equals_plain_stream_and_refuses_a_shape_change(
    exported: dict, capfd: pytest.CaptureFixture[str]
) -> None:
    import onnxruntime as ort

    path, _, spec = exported["lstm"]
    x = _sequence(spec, 1, 20, seed=2)
    steps = _chunks(x, spec, [1] * 20)
    replayed = re.compile(r"Replaying CUDA graph")
    ort.set_default_logger_severity(1)  # ORT says each replay at INFO, on stderr
    try:
        with OrtCudaRunner(path) as plain, OrtCudaRunner(path, cuda_graph=True) as graph:
            a, b = plain.step_session(spec), graph.step_session(spec)
            other = graph.step_session(spec)  # its own graphs and buffers
            other.step(steps[5])
            capfd.readouterr()
            ys_plain = [a.step(c) for c in steps]
            assert not replayed.findall(capfd.readouterr().err)  # no graph, no replay
            ys_graph = [b.step(c) for c in steps]
            # two bindings, each captured once on first use; every later step is a replay
            assert len(replayed.findall(capfd.readouterr().err)) >= len(steps) - 2
            for ya, yb in zip(ys_plain, ys_graph, strict=True):
                assert compare_arrays(ya, yb, FP32)[2]
            with pytest.raises(StreamError, match="captured at"):
                b.step(_chunks(x, spec, [2])[0])
            full = graph.infer({spec.data_input: x, **zero_state(spec, 1)})  # gpu_graph_id -1
            assert not replayed.findall(capfd.readouterr().err)
            assert compare_arrays(
                full[spec.data_output], np.concatenate(ys_graph, axis=spec.seq_axis), FP32
            )[2]
    finally:
        ort.set_default_logger_severity(2)  # its default: warnings


def _half_reference(model: Any, spec: RnnSpec) -> Any:
    """Eager torch in fp16 on the GPU (fp32 in and out): the same-precision reference."""
    import copy

    import torch

    from rnnedge.modeling.models import stateful_wrapper
    from rnnedge.modeling.torch_runner import TorchRunner

    class HalfIO(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner.half()

        def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return tuple(o.float() for o in self.inner(*(a.half() for a in args)))

    return TorchRunner(
        HalfIO(stateful_wrapper(copy.deepcopy(model))),
        [t.name for t in spec.inputs],
        [t.name for t in spec.outputs],
        device="cuda",
    )


@pytest.mark.gpu
@pytest.mark.parametrize("key", ["lstm", "gru"])
def test_fp16_runs_in_fp16_on_cuda_and_matches_torch_half(
    exported: dict, key: str, tmp_path: Path
) -> None:
    onnx = pytest.importorskip("onnx")
    path, model, spec = exported[key]
    fp16 = convert_fp16(path, tmp_path / f"{key}.fp16.onnx")
    rnn_ops = {"LSTM", "GRU", "RNN"}
    weights = {t.name: t.data_type for t in onnx.load(str(fp16)).graph.initializer}
    rnn_nodes = [n for n in onnx.load(str(fp16)).graph.node if n.op_type in rnn_ops]
    assert rnn_nodes and all(
        weights[n.input[1]] == onnx.TensorProto.FLOAT16 for n in rnn_nodes
    )  # the recurrent weights are fp16
    grid = shape_grid([1, 4], [1, 7, 32])
    with (
        OrtCudaRunner(fp16, cpu_nodes=False) as gpu,
        _half_reference(model, spec) as half,
        _eager(model, spec) as ref32,
    ):
        on_cuda = [n.split(" ")[0] for n in gpu.placement.get(CUDA_EP, [])]
        assert rnn_ops & set(on_cuda) and not gpu.cpu_nodes_placed  # fp16 RNN kernels on CUDA
        same = check_parity(half, [gpu], spec, grid, tolerance=TOLERANCES["fp16"])
        ort_err = check_parity(ref32, [gpu], spec, grid, tolerance=TOLERANCES["fp16"])
        torch_err = check_parity(ref32, [half], spec, grid, tolerance=TOLERANCES["fp16"])
    same.raise_if_failed()
    # against fp32, ORT's fp16 may be no worse than torch's own fp16 (plus rounding)
    assert ort_err.max_abs() <= 2 * torch_err.max_abs() + TOLERANCES["fp16"].atol


@pytest.mark.gpu
def test_a_gru_the_cuda_provider_cannot_take_is_reported(tmp_path: Path) -> None:
    from tests.runtime.test_gpu_paths import _gru

    path = _gru(0, tmp_path / "gru_lbr0.onnx")  # linear_before_reset=0: no CUDA kernel
    with pytest.warns(RuntimeWarning, match="GRU gru"), OrtCudaRunner(path) as gpu:
        assert "GRU gru" in gpu.cpu_nodes_placed
    with pytest.raises(RuntimeUnavailableError, match=r"GRU gru.*cpu_nodes=True"):
        OrtCudaRunner(path, cpu_nodes=False).activate()
    with OrtCudaRunner(_gru(1, tmp_path / "gru_lbr1.onnx")) as gpu:
        assert not gpu.cpu_nodes_placed
