"""Foreign ONNX files through `rnnedge.load`: detected state, extra inputs, streaming."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import rnnedge
from rnnedge.errors import InputError

FIXTURES = Path(__file__).parent.parent / "fixtures"


def test_extra_inputs_are_given_once_per_stream() -> None:
    model = rnnedge.load(FIXTURES / "foreign_extra_input.onnx")
    x = np.random.default_rng(0).standard_normal((1, 12, 2)).astype(np.float32)
    with pytest.raises(InputError, match=r"needs exactly \['gain'\]"):
        model.stream()
    with pytest.raises(InputError, match=r"extra input 'gain' has shape \(2,\)"):
        model.stream(extra={"gain": np.ones(2, np.float32)})
    full, _ = model.run(x, extra={"gain": np.array([2.0])})
    half, _ = model.run(x, extra={"gain": np.array([1.0])})
    np.testing.assert_allclose(full, 2 * half, rtol=1e-6)
    stream = model.stream(extra={"gain": np.array([2.0])})
    parts = [stream.step(x[:, :5]), stream.step(x[:, 5:])]
    np.testing.assert_allclose(np.concatenate(parts, axis=1), full, atol=1e-6)


def test_time_major_foreign_lstm_streams_like_a_full_pass() -> None:
    model = rnnedge.load(FIXTURES / "foreign_lstm.onnx")
    assert not model.spec.batch_first
    x = np.random.default_rng(1).standard_normal((9, 2, 3)).astype(np.float32)  # (T, B, F)
    full, _ = model.run(x)
    stream = model.stream(batch=2)
    parts = [stream.step(x[i : i + 2]) for i in range(0, 9, 2)]
    np.testing.assert_allclose(np.concatenate(parts, axis=0), full, atol=1e-6)


def test_ambiguous_foreign_model_needs_state_names() -> None:
    with pytest.raises(InputError, match="ambiguous"):
        rnnedge.load(FIXTURES / "foreign_ambiguous.onnx")
    model = rnnedge.load(FIXTURES / "foreign_ambiguous.onnx", state_names={"h": "h_out"})
    assert [(p.input, p.output) for p in model.spec.state_pairs] == [("h", "h_out")]
