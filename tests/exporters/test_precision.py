"""The precision gate: reduced files only where the forecast holds, refusals with both figures,
bad input refused before anything is written, int8 streaming equal to its own full pass."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import rnnedge
from rnnedge.errors import InputError, ModelFileError, RuntimeUnavailableError
from rnnedge.exporters import precision as prec
from rnnedge.exporters.precision import PrecisionRefusedError, Validation, quantize
from rnnedge.modeling.data import load_sunspots
from rnnedge.modeling.models import ModelConfig, SequenceModel
from rnnedge.modeling.train import TrainConfig, load_checkpoint, save_checkpoint, train
from rnnedge.runtime.backends import openvino as ov_backend
from rnnedge.runtime.onnxscan import stored_spec
from rnnedge.spec import Normalization, PrecisionRecord, RnnSpec

pytest.importorskip("onnxruntime.quantization", reason="int8 needs onnxruntime's quantizer")

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A 2×32 LSTM trained on the bundled sunspots, its checkpoint and its fp32 file."""
    folder = tmp_path_factory.mktemp("sunspots")
    result = train(
        load_sunspots(),
        ModelConfig(cell="lstm", input_size=1, hidden_size=32, num_layers=2, output_size=1),
        TrainConfig(epochs=8, patience=0),
    )
    ckpt = save_checkpoint(folder / "sun.pt", result)
    loaded = load_checkpoint(ckpt)
    path = folder / "sun.onnx"
    rnnedge.export(loaded.model, torch.randn(1, 8, 1), path, normalization=loaded.normalization)
    return {
        "path": path,
        "ckpt": loaded,
        "validation": Validation.from_checkpoint(loaded),
        "val_mse": result.val_mse,
    }


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_checkpoint_validation_reproduces_the_training_score(trained: dict) -> None:
    v = trained["validation"]
    assert v.warmup == 8 and v.x.shape[1:] == (32, 1) and v.y.shape == v.x.shape
    out = quantize(trained["path"], "fp32", v, out=trained["path"].parent / "fp32.onnx")
    # the fp32 file scores what training reported for the eager model, on the same windows
    assert out.record.fp32_value == pytest.approx(trained["val_mse"], rel=1e-5)
    assert out.record.value == out.record.fp32_value and out.record.execution is None


def test_int8_passes_the_gate_and_the_spec_records_it(trained: dict, tmp_path: Path) -> None:
    out = quantize(trained["path"], "int8", trained["validation"], out=tmp_path / "m.int8.onnx")
    assert out.path == tmp_path / "m.int8.onnx" and _files(tmp_path) == ["m.int8.onnx"]
    schemes = {c.scheme for c in out.candidates}
    assert schemes == {"dynamic-int8-per-tensor", "dynamic-int8-per-channel"}
    rec = stored_spec(out.path).precision  # read back from the file itself
    assert rec == out.record
    assert (rec.precision, rec.metric, rec.margin, rec.execution) == ("int8", "mse", 0.01, "int8")
    assert abs(rec.relative_change) <= 0.01 and rec.stream_value is not None
    assert abs(rec.stream_value - rec.fp32_value) <= 0.01 * rec.fp32_value
    assert rec.fp32_value == pytest.approx(trained["val_mse"], rel=1e-5)
    assert out.path.stat().st_size < trained["path"].stat().st_size
    assert out.notes == []  # LSTM weights did become int8


def test_int8_streaming_equals_its_own_full_pass(trained: dict, tmp_path: Path) -> None:
    """Dynamic int8 quantizes activations on each call's own scale, so a one-step call rounds
    differently from a whole-sequence call: equal up to int8 rounding, not bit for bit."""
    out = quantize(trained["path"], "int8", trained["validation"], out=tmp_path / "q.onnx")
    model = rnnedge.load(out.path)
    x = trained["validation"].x[:6]
    full, state = model.run(x)
    for chunk in (1, 5):
        stream = model.stream(batch=6)
        parts = [stream.step(x[:, i : i + chunk]) for i in range(0, x.shape[1], chunk)]
        streamed = np.concatenate(parts, axis=1)
        assert stream._core.bound  # the fast bound-buffer step path ran the int8 graph
        span = float(full.max() - full.min())
        np.testing.assert_allclose(streamed, full, atol=0.03 * span, rtol=0)
        np.testing.assert_allclose(stream.state["h0"], state["h0"], atol=0.05, rtol=0)
    # and the fp32 file streams exactly like its full pass, as always
    fp32 = rnnedge.load(trained["path"])
    stream = fp32.stream(batch=6)
    np.testing.assert_allclose(
        np.concatenate([stream.step(x[:, i : i + 1]) for i in range(x.shape[1])], axis=1),
        fp32.run(x)[0],
        atol=1e-4,
        rtol=1e-5,
    )


def _degraded(trained: dict, folder: Path) -> tuple[Path, Validation]:
    """The trained model with a second input that is always 0 and weights of 1000 on it.

    In fp32 those weights multiply zeros: the forecast is exactly the trained model's. In int8
    each row's scale is set by its 1000, so the real input weights round to 0 and the model
    goes blind: a model int8 deliberately ruins.
    """
    src: SequenceModel = trained["ckpt"].model
    cfg = ModelConfig(cell="lstm", input_size=2, hidden_size=32, num_layers=2, output_size=1)
    model = SequenceModel(cfg).eval()
    state = {k: v.clone() for k, v in src.state_dict().items()}
    w = state["rnn.weight_ih_l0"]
    state["rnn.weight_ih_l0"] = torch.cat([w, torch.full_like(w, 1000.0)], dim=1)
    model.load_state_dict(state)
    norm: Normalization = trained["ckpt"].normalization
    norm2 = Normalization((norm.mean[0], 0.0), (norm.std[0], 1.0), norm.target_index)
    path = folder / "degraded.onnx"
    rnnedge.export(model, torch.randn(1, 8, 2), path, normalization=norm2)
    v = trained["validation"]
    x2 = np.concatenate([v.x, np.zeros_like(v.x)], axis=2)
    return path, Validation(x2, v.y, v.warmup, "degraded validation")


def test_gate_refuses_a_deliberately_degraded_model(trained: dict, tmp_path: Path) -> None:
    path, v = _degraded(trained, tmp_path)
    fp32 = quantize(path, "fp32", v, out=tmp_path / "check.onnx")
    assert fp32.record.fp32_value == pytest.approx(trained["val_mse"], rel=1e-4)
    before = _files(tmp_path)
    with pytest.raises(PrecisionRefusedError) as info:
        quantize(path, "int8", v, out=tmp_path / "degraded.int8.onnx")
    err = info.value
    assert err.exit_code == 12 and err.fp32_value == pytest.approx(fp32.record.fp32_value)
    assert err.value > err.fp32_value * 1.01
    msg = str(err)
    assert f"{err.value:.6g}" in msg and f"{err.fp32_value:.6g}" in msg
    assert "per-tensor" in msg and "per-channel" in msg and "nothing was written" in msg
    assert _files(tmp_path) == before  # no file, no temporary left behind
    # "auto" falls back to fp32, the only precision that passes
    auto = quantize(path, "auto", v, out=tmp_path / "auto.onnx")
    assert auto.precision == "fp32"
    assert not any(c.passed for c in auto.candidates if c.precision == "int8")


def test_export_with_precision_writes_only_what_passes(trained: dict, tmp_path: Path) -> None:
    model, v = trained["ckpt"].model, trained["validation"]
    norm = trained["ckpt"].normalization
    res = rnnedge.export(
        model,
        torch.randn(1, 8, 1),
        tmp_path / "m.onnx",
        normalization=norm,
        precision="int8",
        validation=v,
    )
    assert res.spec.precision.precision == "int8" and res.precision.path == res.path
    assert stored_spec(res.path).precision == res.spec.precision
    assert _files(tmp_path) == ["m.onnx"]
    with pytest.raises(InputError, match="validation data"):
        rnnedge.export(
            model, torch.randn(1, 8, 1), tmp_path / "n.onnx", normalization=norm, precision="int8"
        )
    with pytest.raises(InputError, match="precision 'int4' is not known"):
        rnnedge.export(model, torch.randn(1, 8, 1), tmp_path / "n.onnx", precision="int4")
    assert _files(tmp_path) == ["m.onnx"]


def test_gru_int8_says_its_recurrent_weights_stay_fp32(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = SequenceModel(
        ModelConfig(cell="gru", input_size=1, hidden_size=16, num_layers=1, output_size=1)
    ).eval()
    rnnedge.export(model, torch.randn(1, 8, 1), tmp_path / "gru.onnx")
    x = np.random.default_rng(0).standard_normal((4, 20, 1)).astype(np.float32)
    with torch.inference_mode():
        y = model(torch.from_numpy(x))[0].numpy() + 0.1  # targets near its own forecast
    out = quantize(tmp_path / "gru.onnx", "int8", (x, y), margin=0.5)
    assert any("recurrent weights stay fp32" in n for n in out.notes)


# --- bad input: clear errors, nothing written ------------------------------------------------
def _bad(trained: dict, tmp_path: Path, **kw: object) -> None:
    kw.setdefault("validation", trained["validation"])
    kw.setdefault("precision", "int8")
    quantize(
        trained["path"], kw.pop("precision"), kw.pop("validation"), out=tmp_path / "out.onnx", **kw
    )


@pytest.mark.parametrize(
    ("validation", "match"),
    [
        (lambda v: (v.x[..., [0, 0]], v.y), r"x has shape \(30, 32, 2\).*features=1"),
        (lambda v: (v.x[0], v.y[0]), "x has shape"),
        (lambda v: (v.x, v.y[:, :5]), r"y has shape \(30, 5, 1\)"),
        (lambda v: (v.x[:1, :20], v.y[:1, :20]), "too short"),
        (lambda v: Validation(v.x[:1], v.y[:1], warmup=31), "too short"),
        (lambda v: (np.where(np.arange(32)[None, :, None] == 3, np.nan, v.x), v.y), "NaN"),
        (lambda v: None, "none was given"),
        (lambda v: v.x, "pair"),
    ],
)
def test_bad_validation_is_refused(trained: dict, tmp_path: Path, validation, match) -> None:
    with pytest.raises(InputError, match=match):
        _bad(trained, tmp_path, validation=validation(trained["validation"]))
    assert _files(tmp_path) == []


def test_metric_returning_nan_or_failing_is_refused(trained: dict, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="returned nan"):
        _bad(trained, tmp_path, metric=lambda p, t: math.nan)
    with pytest.raises(InputError, match="metric failed"):
        _bad(trained, tmp_path, metric=lambda p, t: "not a number")
    assert _files(tmp_path) == []


def test_unknown_precision_and_bad_margin(trained: dict, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="'fp8' is not known; expected one of fp32, int8"):
        _bad(trained, tmp_path, precision="fp8")
    for margin in (-0.1, math.nan, True):
        with pytest.raises(InputError, match="margin"):
            _bad(trained, tmp_path, margin=margin)
    with pytest.raises(ModelFileError, match="does not exist"):
        quantize(tmp_path / "missing.onnx", "int8", trained["validation"])
    assert _files(tmp_path) == []


def test_bf16_where_the_cpu_has_none_is_refused(
    trained: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n")
    monkeypatch.setattr(ov_backend, "CPUINFO", str(cpuinfo))
    with pytest.raises(RuntimeUnavailableError, match="avx512_bf16, amx_bf16") as info:
        _bad(trained, tmp_path, precision="bf16")
    assert info.value.exit_code == 5
    assert _files(tmp_path) == ["cpuinfo"]
    auto = quantize(trained["path"], "auto", trained["validation"], out=tmp_path / "a.onnx")
    assert "no native bf16" in " ".join(auto.notes)
    assert all(c.precision != "bf16" for c in auto.candidates)


def test_an_int8_file_is_not_quantized_again(trained: dict, tmp_path: Path) -> None:
    out = quantize(trained["path"], "int8", trained["validation"], out=tmp_path / "q.onnx")
    with pytest.raises(InputError, match="already int8"):
        quantize(out.path, "int8", trained["validation"], out=tmp_path / "qq.onnx")


@pytest.mark.skipif(ov_backend.bf16_support() is None, reason="this CPU has no native bf16")
def test_bf16_keeps_the_file_fp32_and_records_bf16_execution(trained: dict, tmp_path: Path) -> None:
    pytest.importorskip("openvino", reason="bf16 runs on OpenVINO (pip install openvino)")
    out = quantize(trained["path"], "bf16", trained["validation"], out=tmp_path / "b.onnx")
    rec = stored_spec(out.path).precision
    assert (rec.precision, rec.execution, rec.runtime) == ("bf16", "bf16", "openvino")
    assert abs(rec.relative_change) <= 0.01
    runner = ov_backend.OpenVINORunner(out.path).activate()  # bf16 taken from the spec
    assert runner.precision == "bf16"
    assert {i.type for i in _onnx_inputs(out.path)} == {"tensor(float)"}  # fp32 graph


def _onnx_inputs(path: Path) -> list:
    from rnnedge.runtime.backends.ort import open_session

    return open_session(path).get_inputs()


def test_precision_record_round_trips_in_the_spec(trained: dict) -> None:
    spec = stored_spec(trained["path"])
    assert spec.precision is None
    rec = PrecisionRecord("int8", "mse", 0.01, 2.0, 2.01, "int8", "ort-cpu", "x", 2.02)
    spec.precision = rec
    back = RnnSpec.from_json(spec.to_json())
    assert back.precision == rec and back.precision.relative_change == pytest.approx(0.005)
    assert PrecisionRecord("fp32", "mse", 0.0, 0.0, 0.0).relative_change == 0.0
    assert prec.default_out("/a/m.onnx", "int8") == Path("/a/m.int8.onnx")


def test_checkpoint_windows_judge_a_time_major_export(trained: dict, tmp_path: Path) -> None:
    """Validation windows are batch-first; a time-major file gets them transposed, same score."""
    src: SequenceModel = trained["ckpt"].model
    cfg = ModelConfig(
        cell="lstm", input_size=1, hidden_size=32, num_layers=2, output_size=1, batch_first=False
    )
    model = SequenceModel(cfg).eval()
    model.load_state_dict(src.state_dict())
    path = tmp_path / "tm.onnx"
    rnnedge.export(model, torch.randn(8, 1, 1), path, normalization=trained["ckpt"].normalization)
    out = quantize(path, "int8", trained["validation"], out=tmp_path / "tm.int8.onnx")
    assert out.record.fp32_value == pytest.approx(trained["val_mse"], rel=1e-5)
