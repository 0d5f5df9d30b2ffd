"""The streaming fast path: bound buffers, same numbers, same errors, state untouched on failure."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import rnnedge
from rnnedge.errors import InputError, RnnEdgeError
from rnnedge.modeling.models import ModelConfig, SequenceModel
from rnnedge.spec import Normalization

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    torch.manual_seed(0)
    m = SequenceModel(ModelConfig(cell="lstm", input_size=2, hidden_size=8, num_layers=2)).eval()
    p = tmp_path_factory.mktemp("m") / "m.onnx"
    rnnedge.export(
        m, torch.randn(2, 6, 2), p, normalization=Normalization((0.5, -1.0), (2.0, 3.0), (1,))
    )
    return str(p)


def test_bound_and_equal(path):
    from rnnedge.runtime.step import STEP_SETTINGS

    for settings in (None, STEP_SETTINGS):
        model = rnnedge.load(path, settings=settings)
        x = np.random.default_rng(0).standard_normal((1, 30, 2))  # float64 on purpose
        full, fin = model.run(x)
        s = model.stream()
        outs = [s.step(x[:, i : i + 1]) for i in range(30)]
        assert s._core.bound
        got = np.concatenate(outs, 1)
        np.testing.assert_allclose(got, full, atol=1e-6)
        for k, v in s.state.items():
            np.testing.assert_allclose(v, fin[k], atol=1e-6)
        # outputs are fresh arrays
        assert not np.shares_memory(outs[0], outs[1])


def test_nan_on_fast_shape_raises_and_keeps_state(path):
    model = rnnedge.load(path)
    s = model.stream()
    s.step(np.zeros((1, 1, 2), np.float32))
    s.step(np.ones((1, 1, 2), np.float32))
    before = s.state
    steps = s.steps
    bad = np.ones((1, 1, 2), np.float32)
    bad[0, 0, 1] = np.inf
    with pytest.raises(InputError, match=r"Inf at index \(0, 0, 1\)"):
        s.step(bad)
    big = np.full((1, 1, 2), 1e300)  # finite float64, Inf as float32
    with pytest.raises(InputError, match="Inf"):
        s.step(big)
    for k, v in s.state.items():
        np.testing.assert_array_equal(v, before[k])
    assert s.steps == steps
    s.step(np.ones((1, 1, 2), np.float32))


def test_ffill_fast_path_carries(path):
    model = rnnedge.load(path)
    x = np.random.default_rng(1).standard_normal((1, 12, 2)).astype(np.float32)
    x[0, 5, 0] = np.nan
    x[0, 6, 1] = np.nan
    full, _ = model.run(x, nan_policy="ffill")
    s = model.stream(nan_policy="ffill")
    got = np.concatenate([s.step(x[:, i : i + 1]) for i in range(12)], 1)
    np.testing.assert_allclose(got, full, atol=1e-6)


def test_zero_policy(path):
    model = rnnedge.load(path)
    x = np.random.default_rng(1).standard_normal((1, 12, 2)).astype(np.float32)
    x[0, 5, 0] = np.nan
    full, _ = model.run(x, nan_policy="zero")
    s = model.stream(nan_policy="zero")
    got = np.concatenate([s.step(x[:, i : i + 1]) for i in range(12)], 1)
    np.testing.assert_allclose(got, full, atol=1e-6)


def test_closed_model_refuses(path):
    model = rnnedge.load(path)
    s = model.stream()
    s.step(np.zeros((1, 1, 2), np.float32))
    s.step(np.zeros((1, 1, 2), np.float32))
    model.close()
    with pytest.raises(RnnEdgeError, match="not active"):
        s.step(np.zeros((1, 1, 2), np.float32))


def test_state_set_reset_and_alternating_shapes(path):
    model = rnnedge.load(path)
    x = np.random.default_rng(2).standard_normal((3, 20, 2)).astype(np.float32)
    full, _ = model.run(x)
    s = model.stream(batch=3)
    parts, i = [], 0
    for n in [1, 2, 1, 2, 1, 3, 3, 1, 1, 5]:
        parts.append(s.step(x[:, i : i + n]))
        i += n
    np.testing.assert_allclose(np.concatenate(parts, 1), full, atol=1e-6)
    st = s.state
    s.reset()
    assert s.steps == 0
    y0 = s.step(x[:, :1])
    np.testing.assert_allclose(y0, full[:, :1], atol=1e-6)
    s.state = st
    s2 = model.stream(batch=3)
    s2.state = st
    np.testing.assert_array_equal(s.step(x[:, :1]), s2.step(x[:, :1]))
    # non-contiguous chunk on the fast path
    xf = np.asfortranarray(x[:, :1])
    s.step(xf)
    s2.step(np.ascontiguousarray(xf))
    for k in st:
        np.testing.assert_array_equal(s.state[k], s2.state[k])
