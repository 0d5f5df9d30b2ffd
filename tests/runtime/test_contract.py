"""One contract, run against every registered runtime that can run here.

A runtime that is registered but unavailable is skipped with its reason, so the same test
covers ort-cuda and tensorrt on machines that have them. Their cases carry the `gpu` and
`tensorrt` markers, so `pytest -m gpu` runs the ort-cuda case, and with RNNEDGE_REQUIRE_GPU=1
its skip is a failure.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from rnnedge.errors import RnnEdgeError
from rnnedge.runtime.backends.base import Runner, availability, registered, runner_class

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "foreign_lstm.onnx"


def _ort_factory(cls: type[Runner]) -> Runner:
    return cls(FIXTURE)  # type: ignore[call-arg]


def _tensorrt_factory(cls: type[Runner]) -> Runner:
    """The runner loads plans; the fixture is built into one by the exporter's loader."""
    from rnnedge.exporters.tensorrt import EngineFromOnnx

    return cls(
        FIXTURE,
        loader=EngineFromOnnx(
            FIXTURE,
            batch=(1, 2, 4),  # type: ignore[call-arg]
            seq_len=(1, 5, 16),
        ),
    )


def _torch_factory(cls: type[Runner]) -> Runner:
    import torch

    class TimeMajorLstm(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = torch.nn.LSTM(3, 4)

        def forward(self, x, h0, c0):  # type: ignore[no-untyped-def]
            y, (hn, cn) = self.rnn(x, (h0, c0))
            return y, hn, cn

    return cls(TimeMajorLstm(), ["input", "h0", "c0"], ["output", "hn", "cn"])  # type: ignore


FACTORIES: dict[str, Callable[[type[Runner]], Runner]] = {
    "torch": _torch_factory,
    "tensorrt": _tensorrt_factory,
}
MARKS = {
    "ort-cuda": [pytest.mark.gpu],
    "tensorrt": [pytest.mark.tensorrt],
    "torch": [pytest.mark.torch],
}


@pytest.mark.parametrize("name", [pytest.param(n, marks=MARKS.get(n, [])) for n in registered()])
def test_runner_contract(name: str) -> None:
    why = availability()[name]
    if why is not None:
        pytest.skip(f"{name}: {why}")
    cls = runner_class(name)
    runner = FACTORIES.get(name, _ort_factory)(cls)
    assert runner.name == name
    assert not runner.active
    with pytest.raises(RnnEdgeError, match="not active"):
        runner.infer({})
    rng = np.random.default_rng(0)
    feeds = {
        "input": rng.standard_normal((5, 2, 3)).astype(np.float32),
        "h0": np.zeros((1, 2, 4), np.float32),
        "c0": np.zeros((1, 2, 4), np.float32),
    }
    with runner as active:
        assert active is runner and runner.active
        out = runner.infer(feeds)
        runner.synchronize()
        assert list(out) == runner.output_names() == ["output", "hn", "cn"]
        assert out["output"].shape == (5, 2, 4) and out["hn"].shape == (1, 2, 4)
        assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in out.values())
        again = runner.infer(feeds)
        np.testing.assert_array_equal(again["output"], out["output"])  # deterministic
    assert not runner.active
