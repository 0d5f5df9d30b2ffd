"""Corrupt, truncated and hostile model files are refused with one clear error."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import rnnedge
from rnnedge.errors import ModelFileError
from rnnedge.modeling.models import ModelConfig, SequenceModel
from rnnedge.spec import SPEC_KEY

pytestmark = pytest.mark.torch


def _graph_with_initializer(w: onnx.TensorProto) -> onnx.ModelProto:
    g = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "t", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "t", 1])],
        [w],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_external_data_escaping_the_model_folder_is_refused(tmp_path) -> None:
    w = numpy_helper.from_array(np.zeros((1,), np.float32), "w")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "../../../../etc/passwd"), ("offset", "0"), ("length", "4")):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    path = tmp_path / "hostile.onnx"
    path.write_bytes(_graph_with_initializer(w).SerializeToString())
    with pytest.raises(ModelFileError, match="could not be loaded as an ONNX model"):
        rnnedge.load(path)


def test_truncated_file_is_refused(tmp_path) -> None:
    m = SequenceModel(ModelConfig(cell="lstm", hidden_size=16)).eval()
    good = tmp_path / "good.onnx"
    rnnedge.export(m, torch.randn(2, 5, 1), good)
    data = good.read_bytes()
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match=r"truncated\.onnx"):
        rnnedge.load(bad)


def test_tampered_spec_metadata_is_refused(tmp_path) -> None:
    m = SequenceModel(ModelConfig(cell="gru", hidden_size=4)).eval()
    path = tmp_path / "m.onnx"
    rnnedge.export(m, torch.randn(2, 5, 1), path)
    proto = onnx.load(str(path))
    for prop in proto.metadata_props:
        if prop.key == SPEC_KEY:
            prop.value = prop.value.replace('"data_input": "x"', '"data_input": "nope"')
    onnx.save(proto, str(path))
    with pytest.raises(ModelFileError, match="data input 'nope' is not a graph input"):
        rnnedge.load(path)


def test_empty_and_directory_paths(tmp_path) -> None:
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(ModelFileError, match="empty"):
        rnnedge.load(tmp_path / "empty.onnx")
    with pytest.raises(ModelFileError, match="does not exist"):
        rnnedge.load(tmp_path)
