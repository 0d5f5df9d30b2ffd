"""Named input (a dict of columns, or a data frame) is matched to the model's features by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rnnedge.errors import InputError
from rnnedge.runtime.named import from_columns, is_named
from rnnedge.spec import DataContract, RnnSpec, TensorSpec


def _spec(contract: DataContract | None, layout: str | None = None) -> RnnSpec:
    shape = ("batch", "seq_len", 3) if layout != "TF" else ("seq_len", 3)
    return RnnSpec(
        [TensorSpec("x", "float32", shape)],
        [TensorSpec("y", "float32", ())],
        "x",
        "y",
        contract=contract,
        layout=layout,
    )


CONTRACT = DataContract(("unemp", "infl", "rate"), ("unemp",))


class Frame:
    """The part of a data frame `from_columns` relies on: `.columns` and `frame[name]`."""

    def __init__(self, cols: dict[str, list[float]]) -> None:
        self._cols = cols
        self.columns = list(cols)

    def __getitem__(self, name: str) -> np.ndarray:
        return np.asarray(self._cols[name])


def test_columns_in_any_order_come_out_in_the_models_order() -> None:
    cols = {"rate": [7.0, 8.0], "unemp": [1.0, 2.0], "infl": [4.0, 5.0]}
    x = from_columns(cols, _spec(CONTRACT))
    assert x.shape == (1, 2, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(x[0], [[1, 4, 7], [2, 5, 8]])
    np.testing.assert_array_equal(from_columns(Frame(cols), _spec(CONTRACT)), x)
    assert from_columns(cols, _spec(CONTRACT, "TF")).shape == (2, 3)
    assert is_named(cols) and is_named(Frame(cols)) and not is_named(np.zeros((2, 3)))


@pytest.mark.parametrize(
    ("cols", "why"),
    [
        ({"unemp": [1.0], "infl": [2.0]}, r"missing: \['rate'\], extra: none"),
        ({"unemp": [1.0], "infl": [2.0], "rate": [3.0], "cpi": [4.0]}, r"extra: \['cpi'\]"),
        ({"unemp": [1.0], "infl": [2.0, 3.0], "rate": [3.0]}, "different lengths"),
        ({"unemp": ["a"], "infl": [2.0], "rate": [3.0]}, "expected numbers"),
        ({"unemp": [[1.0]], "infl": [2.0], "rate": [3.0]}, "one value per step"),
    ],
)
def test_bad_named_input_is_refused_naming_both_sets(cols: dict, why: str) -> None:
    with pytest.raises(InputError, match=why):
        from_columns(cols, _spec(CONTRACT))


def test_a_model_without_names_refuses_named_input() -> None:
    with pytest.raises(InputError, match="no data contract"):
        from_columns({"a": [1.0]}, _spec(None))


def test_duplicate_frame_columns_are_refused() -> None:
    frame = Frame({"unemp": [1.0]})
    frame.columns = ["unemp", "unemp"]
    with pytest.raises(InputError, match="more than once"):
        from_columns(frame, _spec(CONTRACT))


def test_model_run_takes_named_columns(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    import rnnedge
    from rnnedge.modeling.models import ModelConfig, SequenceModel

    torch.manual_seed(0)
    model = SequenceModel(ModelConfig(input_size=3, output_size=1, hidden_size=4))
    path = tmp_path / "m.onnx"
    rnnedge.export(model, torch.randn(1, 6, 3), path, contract=CONTRACT)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((9, 3)).astype(np.float32)
    with rnnedge.load(path) as m:
        y, _ = m.run(x[None])
        named = {"rate": x[:, 2], "infl": x[:, 1], "unemp": x[:, 0]}
        y_named, _ = m.run(named)
        np.testing.assert_array_equal(y_named, y)
        with pytest.raises(InputError, match="missing"):
            m.run({"unemp": x[:, 0]})
