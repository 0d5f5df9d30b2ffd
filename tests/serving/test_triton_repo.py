"""`rnnedge triton`: the repository's config, its wrapper graph, refusals and atomic writes.

Runs with onnx + onnxruntime; the config checks parse `config.pbtxt` with Triton's own
`ModelConfig` protobuf from tritonclient and skip themselves without it. No Triton server is
needed: the wrapper is judged under ONNX Runtime, with Triton's implicit state emulated by
carrying the batch-first state between chunks from a zero start.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import rnnedge  # noqa: E402
from rnnedge.cli.main import main  # noqa: E402
from rnnedge.errors import ExportError, InputError, UnsupportedModelError  # noqa: E402
from rnnedge.serving import triton_repo, triton_wrapper  # noqa: E402
from rnnedge.serving.triton_repo import (  # noqa: E402
    CONTROLS,
    TritonOptions,
    wrap_for_triton,
    write_repository,
)
from rnnedge.spec import SPEC_KEY, Normalization, RnnSpec, StatePair, TensorSpec  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
GRU = FIXTURES / "foreign_gru_state.onnx"  # batch-first, state (1, batch, 5)
LSTM = FIXTURES / "foreign_lstm.onnx"  # time-major, h0/c0 (1, batch, 4)


def _pb2():
    return pytest.importorskip("tritonclient.grpc.model_config_pb2")


def _parse(path: Path):
    from google.protobuf import text_format

    return text_format.Parse(path.read_text(), _pb2().ModelConfig())


def _gru_model(direction: str = "forward", features: int = 3, hidden: int = 2) -> onnx.ModelProto:
    """Time-major GRU (seq, batch, features) -> (seq, batch, hidden), state (dirs, batch, H)."""
    dirs = 2 if direction == "bidirectional" else 1
    rng = np.random.default_rng(7)

    def w(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.uniform(-0.6, 0.6, shape).astype(np.float32), name)

    nodes = [
        helper.make_node(
            "GRU",
            ["x", "W", "R", "B", "", "h0"],
            ["Y", "hn"],
            hidden_size=hidden,
            direction=direction,
        ),
        helper.make_node("Transpose", ["Y"], ["Yt"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["Yt", "yshape"], ["y"]),
    ]
    inits = [
        w("W", dirs, 3 * hidden, features),
        w("R", dirs, 3 * hidden, hidden),
        w("B", dirs, 6 * hidden),
        numpy_helper.from_array(np.array([0, 0, -1], np.int64), "yshape"),
    ]
    graph = helper.make_graph(
        nodes,
        "gru",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["seq", "batch", features]),
            helper.make_tensor_value_info("h0", TensorProto.FLOAT, [dirs, "batch", hidden]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["seq", "batch", dirs * hidden]),
            helper.make_tensor_value_info("hn", TensorProto.FLOAT, [dirs, "batch", hidden]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    spec = RnnSpec(
        inputs=[
            TensorSpec("x", "float32", ("seq", "batch", features)),
            TensorSpec("h0", "float32", (dirs, "batch", hidden)),
        ],
        outputs=[
            TensorSpec("y", "float32", ("seq", "batch", dirs * hidden)),
            TensorSpec("hn", "float32", (dirs, "batch", hidden)),
        ],
        data_input="x",
        data_output="y",
        state_pairs=[StatePair("h0", "hn", 1)],
        batch_first=False,
        cell="gru",
        num_layers=1,
        hidden_size=hidden,
        input_size=features,
        output_size=dirs * hidden,
        bidirectional=dirs == 2,
        normalization=Normalization((10.0, -3.0, 0.5), (4.0, 0.25, 2.0), (0, 2))
        if dirs * hidden == 2
        else None,
    )
    helper.set_model_props(model, {SPEC_KEY: spec.to_json()})
    onnx.checker.check_model(model)
    return model


@pytest.fixture
def normalized_tm(tmp_path: Path) -> Path:
    path = tmp_path / "gru_norm_tm.onnx"
    onnx.save(_gru_model(), str(path))
    return path


def _stream_wrapped(wrapped: bytes, spec: RnnSpec, x_bf: np.ndarray, chunks: list[int]):
    """Run the wrapper chunk by chunk as Triton would: batch-first state, zero at START."""
    sess = ort.InferenceSession(wrapped, providers=["CPUExecutionProvider"])
    batch = x_bf.shape[0]
    state = {
        p.input: np.zeros(
            triton_wrapper._to_batch_first(
                [batch if isinstance(d, str) else d for d in spec.input(p.input).shape],
                p.batch_axis,
            ),
            np.float32,
        )
        for p in spec.state_pairs
    }
    ys, t = [], 0
    for n in chunks:
        feeds = {spec.data_input: x_bf[:, t : t + n], **state}
        for i, (name, ttype) in enumerate(CONTROLS.values()):
            dtype = np.uint64 if ttype == "TYPE_UINT64" else np.bool_
            feeds[name] = np.full((batch, 1), t == 0 if i == 0 else 1, dtype)
        out = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds), strict=True))
        ys.append(out[spec.data_output])
        state = {p.input: out[p.output] for p in spec.state_pairs}
        t += n
    return np.concatenate(ys, axis=1), state


@pytest.mark.parametrize("path", [GRU, LSTM], ids=["gru-batch-first", "lstm-time-major"])
def test_wrapper_streams_like_the_original(path: Path) -> None:
    model = rnnedge.load(path)
    spec = model.spec
    wrapped = wrap_for_triton(onnx.load(str(path)), spec).SerializeToString()
    x = np.random.default_rng(1).standard_normal((9, 3, spec.input(spec.data_input).shape[-1]))
    x = x.astype(np.float32)  # time-major (9, 3, F) for the LSTM, read as (3 batch) below
    x_native = x if not spec.batch_first else np.swapaxes(x, 0, 1)
    y_ref, st_ref = model.run(x_native)
    x_bf = np.moveaxis(x_native, spec.batch_axis, 0)
    y, st = _stream_wrapped(wrapped, spec, x_bf, [1, 4, 2, 2])
    np.testing.assert_allclose(y, np.moveaxis(y_ref, spec.batch_axis, 0), atol=1e-5, rtol=1e-4)
    for p in spec.state_pairs:
        np.testing.assert_allclose(
            st[p.input], np.moveaxis(st_ref[p.input], p.batch_axis, 0), atol=1e-5, rtol=1e-4
        )


def test_wrapper_normalizes_in_graph(normalized_tm: Path) -> None:
    model = rnnedge.load(normalized_tm)
    spec = model.spec
    x = (np.random.default_rng(2).standard_normal((6, 2, 3)) * 5 + 3).astype(np.float32)
    for normalize in (True, False):
        wrapped = wrap_for_triton(onnx.load(str(normalized_tm)), spec, normalize=normalize)
        y, _ = _stream_wrapped(wrapped.SerializeToString(), spec, np.swapaxes(x, 0, 1), [6])
        y_ref, _ = model.run(x, normalize=normalize)
        np.testing.assert_allclose(y, np.swapaxes(y_ref, 0, 1), atol=1e-5, rtol=1e-4)
    assert SPEC_KEY not in {p.key for p in wrapped.metadata_props}
    info = json.loads(
        next(p.value for p in wrapped.metadata_props if p.key == triton_repo.WRAPPER_KEY)
    )
    assert info["layout"] == "batch-first" and info["state_pairs"] == [["h0", "hn"]]


def test_config_has_sequence_batcher_and_implicit_state(tmp_path: Path) -> None:
    res = write_repository(GRU, tmp_path / "repo", TritonOptions(name="gru", max_batch_size=4))
    assert res.config_parsed and res.max_abs_diff <= 1e-6
    assert res.onnx_path == tmp_path / "repo" / "gru" / "1" / "model.onnx"
    cfg = _parse(res.config_path)
    pb2 = _pb2()
    assert (cfg.name, cfg.platform, cfg.max_batch_size) == ("gru", "onnxruntime_onnx", 4)
    assert [(i.name, list(i.dims)) for i in cfg.input] == [("x", [-1, 2])]
    assert [(o.name, list(o.dims)) for o in cfg.output] == [("y", [-1, 5])]
    sb = cfg.sequence_batching
    assert sb.WhichOneof("strategy_choice") == "oldest"
    assert list(sb.oldest.preferred_batch_size) == [4]
    assert sb.max_sequence_idle_microseconds == 60_000_000  # the one default, as `serve`
    kinds = {c.name: c.control[0] for c in sb.control_input}
    assert set(kinds) == {"START", "READY", "END", "CORRID"}
    assert kinds["START"].kind == pb2.ModelSequenceBatching.Control.CONTROL_SEQUENCE_START
    assert list(kinds["END"].bool_false_true) == [False, True]
    assert kinds["CORRID"].data_type == pb2.TYPE_UINT64
    (state,) = sb.state
    assert (state.input_name, state.output_name, list(state.dims)) == ("state", "stateN", [1, 5])
    assert state.data_type == pb2.TYPE_FP32
    (initial,) = state.initial_state
    assert initial.zero_data and list(initial.dims) == [1, 5] and initial.data_type == pb2.TYPE_FP32
    assert cfg.instance_group[0].kind == pb2.ModelInstanceGroup.KIND_CPU

    # the wrapper's tensors are what the ORT backend will check the config against
    sess = ort.InferenceSession(str(res.onnx_path), providers=["CPUExecutionProvider"])
    ins = {i.name: i for i in sess.get_inputs()}
    assert ins["state"].shape[1:] == list(state.dims)  # batch first, then the config's dims
    assert {o.name: o.shape[1:] for o in sess.get_outputs()}["stateN"] == list(state.dims)
    for name in kinds:
        assert ins[name].shape[1:] == [1]
    assert ins["CORRID"].type == "tensor(uint64)" and ins["START"].type == "tensor(bool)"
    assert len(ins) == len(cfg.input) + len(sb.control_input) + len(sb.state)


def test_config_options_direct_gpu_time_major(tmp_path: Path) -> None:
    opts = TritonOptions(
        name="lstm",
        strategy="direct",
        kind="gpu",
        instances=3,
        max_queue_delay_us=250,
        max_sequence_idle_us=1_000_000,
    )
    res = write_repository(LSTM, tmp_path, opts)
    cfg = _parse(res.config_path)
    pb2 = _pb2()
    sb = cfg.sequence_batching
    assert sb.WhichOneof("strategy_choice") == "direct"
    assert sb.direct.max_queue_delay_microseconds == 250
    assert [(s.input_name, s.output_name) for s in sb.state] == [("h0", "hn"), ("c0", "cn")]
    assert all(list(s.dims) == [1, 4] for s in sb.state)
    assert [(i.name, list(i.dims)) for i in cfg.input] == [("input", [-1, 3])]  # (seq, F)
    group = cfg.instance_group[0]
    assert (group.kind, group.count) == (pb2.ModelInstanceGroup.KIND_GPU, 3)


@pytest.mark.parametrize("direction", ["bidirectional", "stateless"])
def test_unstreamable_models_are_refused(tmp_path: Path, direction: str) -> None:
    path = tmp_path / f"{direction}.onnx"
    if direction == "stateless":
        graph = helper.make_graph(
            [helper.make_node("Relu", ["x"], ["y"])],
            "plain",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 2])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 2])],
        )
        onnx.save(
            helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
            str(path),
        )
        why = "no recurrent state"
    else:
        onnx.save(_gru_model("bidirectional"), str(path))
        why = "bidirectional"
    with pytest.raises(UnsupportedModelError, match=why):
        write_repository(path, tmp_path / "repo", TritonOptions(name="m"))
    assert not (tmp_path / "repo" / "m").exists()


def test_extra_inputs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedModelError, match="gain"):
        write_repository(FIXTURES / "foreign_extra_input.onnx", tmp_path, TritonOptions(name="m"))


def test_bad_options_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"name 'a b'.*max_batch_size"):
        write_repository(GRU, tmp_path, TritonOptions(name="a b", max_batch_size=0))


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob(".*"))


def test_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "repo"
    write_repository(GRU, repo, TritonOptions(name="m", max_batch_size=2))
    before = (repo / "m" / "config.pbtxt").read_text()

    with pytest.raises(InputError, match="exists; pass --force"):
        write_repository(GRU, repo, TritonOptions(name="m", max_batch_size=3))
    assert (repo / "m" / "config.pbtxt").read_text() == before

    def broken(*args: object, **kwargs: object) -> float:
        raise ExportError("the Triton wrapper differs from the original model: injected")

    monkeypatch.setattr(triton_repo, "verify_wrapper", broken)
    with pytest.raises(ExportError, match="injected"):
        write_repository(GRU, repo, TritonOptions(name="m", max_batch_size=3), force=True)
    with pytest.raises(ExportError):
        write_repository(GRU, repo, TritonOptions(name="fresh"))
    monkeypatch.undo()
    assert (repo / "m" / "config.pbtxt").read_text() == before
    assert not (repo / "fresh").exists()

    real_rename = triton_repo.os.rename

    def rename(src: object, dst: object) -> None:
        if Path(str(dst)) == repo / "m" and ".old." not in str(src):
            raise OSError("injected: disk full")
        real_rename(src, dst)

    monkeypatch.setattr(triton_repo.os, "rename", rename)
    with pytest.raises(OSError, match="disk full"):
        write_repository(GRU, repo, TritonOptions(name="m", max_batch_size=3), force=True)
    monkeypatch.undo()
    assert (repo / "m" / "config.pbtxt").read_text() == before  # the old one put back
    assert sorted(p.name for p in (repo / "m").rglob("*")) == ["1", "config.pbtxt", "model.onnx"]

    write_repository(GRU, repo, TritonOptions(name="m", max_batch_size=3), force=True)
    assert "max_batch_size: 3" in (repo / "m" / "config.pbtxt").read_text()
    assert _leftovers(tmp_path) == []


def test_cli_writes_repository(
    tmp_path: Path, normalized_tm: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            [
                "triton",
                str(normalized_tm),
                "-o",
                str(tmp_path / "repo"),
                "--max-batch-size",
                "2",
                "--idle-timeout",
                "2.5",
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["model_dir"] == str(tmp_path / "repo" / "gru_norm_tm")
    assert out["max_abs_diff"] < 1e-4
    text = (tmp_path / "repo" / "gru_norm_tm" / "config.pbtxt").read_text()
    assert "max_sequence_idle_microseconds: 2500000" in text
    assert main(["triton", str(GRU), "-o", str(tmp_path / "repo"), "--name", "g"]) == 0
    assert "wrapper equals the original" in capsys.readouterr().out
