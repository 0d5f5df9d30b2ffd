"""Streaming chunk by chunk equals one full pass, on every runner, under threads, after errors."""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnnedge
from rnnedge.errors import InputError, StreamError
from rnnedge.modeling.models import ModelConfig, SequenceModel, stateful_wrapper
from rnnedge.modeling.torch_runner import TorchRunner
from rnnedge.runtime.model import Model
from rnnedge.spec import Normalization

pytestmark = pytest.mark.torch

CELLS = ("rnn_tanh", "lstm", "gru")
T = 40


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, tuple[SequenceModel, str]]:
    out = {}
    norm = Normalization((0.5, -1.0), (2.0, 3.0), (1,))
    for cell in CELLS:
        torch.manual_seed(0)
        m = SequenceModel(
            ModelConfig(cell=cell, input_size=2, hidden_size=8, num_layers=2, output_size=1)
        ).eval()
        path = tmp_path_factory.mktemp(cell) / "m.onnx"
        rnnedge.export(m, torch.randn(2, 6, 2), path, normalization=norm)
        out[cell] = (m, str(path))
    return out


def _models(module: SequenceModel, path: str) -> list[Model]:
    """The same model on ONNX Runtime and on eager torch, behind one Model interface."""
    onnx_model = rnnedge.load(path)
    spec = onnx_model.spec
    runner = TorchRunner(
        stateful_wrapper(module), [t.name for t in spec.inputs], [t.name for t in spec.outputs]
    ).activate()
    return [onnx_model, Model(runner, spec)]


def _series(batch: int = 1, steps: int = T, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, steps, 2)).astype(np.float32)


def _streamed(model: Model, x: np.ndarray, sizes: list[int], batch: int = 1) -> np.ndarray:
    stream = model.stream(batch=batch)
    parts, i = [], 0
    for n in sizes:
        parts.append(stream.step(x[:, i : i + n]))
        i += n
    assert stream.steps == x.shape[1]
    return np.concatenate(parts, axis=1)


def _partition(total: int, cuts: list[int]) -> list[int]:
    points = sorted({c for c in cuts if 0 < c < total})
    edges = [0, *points, total]
    return [b - a for a, b in itertools.pairwise(edges)]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("chunk", [1, 7])
def test_fixed_chunks_equal_full_pass_on_every_runner(exported, cell, chunk) -> None:
    x = _series(batch=2)
    sizes = _partition(T, list(range(chunk, T, chunk)))
    for model in _models(*exported[cell]):
        full, _final = model.run(x)
        np.testing.assert_allclose(
            _streamed(model, x, sizes, batch=2),
            full,
            rtol=1e-5,
            atol=1e-5,
            err_msg=f"{cell} on {model.runtime}",
        )


@pytest.mark.parametrize("cell", CELLS)
@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cuts=st.lists(st.integers(min_value=1, max_value=T - 1), max_size=12))
def test_random_partitions_equal_full_pass(exported, cell, cuts) -> None:
    x = _series(seed=len(cuts))
    for model in _models(*exported[cell]):
        full, _ = model.run(x)
        np.testing.assert_allclose(
            _streamed(model, x, _partition(T, cuts)), full, rtol=1e-5, atol=1e-5
        )


def test_state_checkpoint_and_resume(exported) -> None:
    model = rnnedge.load(exported["lstm"][1])
    x = _series()
    full, _ = model.run(x)
    first = model.stream()
    head = first.step(x[:, :15])
    saved = first.state
    first.close()
    resumed = model.stream()
    resumed.state = saved
    tail = resumed.step(x[:, 15:])
    np.testing.assert_allclose(np.concatenate([head, tail], axis=1), full, atol=1e-5)
    resumed.reset()
    np.testing.assert_allclose(resumed.step(x), full, atol=1e-5)


def test_streams_are_independent_across_threads(exported) -> None:
    model = rnnedge.load(exported["gru"][1])
    n_threads, streams_per_thread, steps = 8, 2, 150
    inputs = {
        (t, s): _series(steps=steps, seed=100 * t + s)
        for t in range(n_threads)
        for s in range(streams_per_thread)
    }
    expected = {k: _streamed(model, x, [1] * steps) for k, x in inputs.items()}
    results: dict[tuple[int, int], np.ndarray] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(n_threads)

    def work(t: int) -> None:
        try:
            streams = [model.stream() for _ in range(streams_per_thread)]
            outs: list[list[np.ndarray]] = [[] for _ in streams]
            barrier.wait()
            for i in range(steps):  # interleave this thread's streams step by step
                for s, stream in enumerate(streams):
                    outs[s].append(stream.step(inputs[(t, s)][:, i : i + 1]))
            for s in range(streams_per_thread):
                results[(t, s)] = np.concatenate(outs[s], axis=1)
        except BaseException as exc:  # surfaced below; a thread must not die silently
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    for key, exp in expected.items():
        np.testing.assert_array_equal(results[key], exp)


def test_bad_calls_leave_the_state_as_it_was(exported) -> None:
    model = rnnedge.load(exported["lstm"][1])
    stream = model.stream(batch=2)
    stream.step(_series(batch=2, steps=5))
    before = stream.state
    nan_chunk = _series(batch=2, steps=3)
    nan_chunk[1, 2, 0] = np.nan
    bad_calls = [
        (_series(batch=1, steps=3), r"batch 1 .* opened with batch=2"),
        (np.zeros((2, 3, 5), np.float32), "5 features"),
        (np.zeros((2, 3), np.float32), "rank 2"),
        (np.zeros((2, 3, 2), np.int32), "dtype int32"),
        (np.zeros((2, 0, 2), np.float32), "empty"),
        (nan_chunk, r"NaN at index \(1, 2, 0\)"),
    ]
    for chunk, message in bad_calls:
        with pytest.raises(InputError, match=message):
            stream.step(chunk)
        for name, value in stream.state.items():
            np.testing.assert_array_equal(value, before[name])
    with pytest.raises(InputError, match=r"expected \(2, 2, 8\) for batch 2"):
        stream.state = {"h0": np.zeros((2, 1, 8)), "c0": np.zeros((2, 1, 8))}
    assert stream.steps == 5
    stream.close()
    with pytest.raises(StreamError, match="closed"):
        stream.step(_series(batch=2, steps=1))
    with pytest.raises(StreamError, match="closed"):
        _ = stream.state


def test_nan_policy_per_stream(exported) -> None:
    model = rnnedge.load(exported["gru"][1])
    x = _series(steps=6)
    x[0, 3, 1] = np.nan
    filled = x.copy()
    filled[0, 3, 1] = x[0, 2, 1]
    y = model.stream(nan_policy="ffill").step(x)
    np.testing.assert_allclose(y, model.run(filled)[0], atol=1e-6)


def test_bidirectional_models_refuse_to_stream(tmp_path) -> None:
    m = SequenceModel(ModelConfig(cell="gru", hidden_size=4, bidirectional=True)).eval()
    rnnedge.export(m, torch.randn(2, 5, 1), tmp_path / "bi.onnx")
    model = rnnedge.load(tmp_path / "bi.onnx")
    with pytest.raises(StreamError, match="bidirectional"):
        model.stream()
    y, _ = model.run(np.zeros((1, 5, 1), np.float32))  # whole sequences still work
    assert y.shape == (1, 5, 1)
