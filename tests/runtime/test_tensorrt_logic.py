"""TensorRT logic that needs no GPU: profiles, ORT-TRT strings, manifests, cache decisions.

The plan side (`trt_plan`) is what the runtime loads with; the builder side
(`rnnedge.exporters.tensorrt`) re-exports it, and both are checked here.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from rnnedge.errors import InputError, ModelFileError, RuntimeUnavailableError
from rnnedge.exporters import tensorrt as trt_export
from rnnedge.exporters.tensorrt import default_plan_path
from rnnedge.runtime.backends import trt_plan
from rnnedge.runtime.backends.tensorrt import (
    TensorRTRunner,
    format_shapes,
    ort_trt_options,
    ort_trt_providers,
)
from rnnedge.runtime.backends.trt_plan import (
    COMPARED,
    Manifest,
    cache_decision,
    check_profile,
    check_range,
    manifest_path,
    profile_violations,
    profiles_from_ranges,
    stale_reason,
)
from rnnedge.spec import RnnSpec, StatePair, TensorSpec


def _spec(batch_first: bool = True, *, extra: TensorSpec | None = None) -> RnnSpec:
    x = ("batch", "seq_len", 3) if batch_first else ("seq_len", "batch", 3)
    inputs = [
        TensorSpec("x", "float32", x),
        TensorSpec("h0", "float32", (2, "batch", 16)),
        TensorSpec("c0", "float32", (2, "batch", 16)),
    ]
    if extra is not None:
        inputs.append(extra)
    return RnnSpec(
        inputs=inputs,
        outputs=[
            TensorSpec("y", "float32", (*x[:2], 1)),
            TensorSpec("hn", "float32", (2, "batch", 16)),
            TensorSpec("cn", "float32", (2, "batch", 16)),
        ],
        data_input="x",
        data_output="y",
        state_pairs=[StatePair("h0", "hn", 1), StatePair("c0", "cn", 1)],
        batch_first=batch_first,
    )


def test_profiles_batch_first() -> None:
    p = profiles_from_ranges(_spec(True), batch=(1, 4, 8), seq_len=(1, 32, 512))
    assert p["x"] == ((1, 1, 3), (4, 32, 3), (8, 512, 3))
    assert p["h0"] == ((2, 1, 16), (2, 4, 16), (2, 8, 16))
    assert p["c0"] == p["h0"]


def test_profiles_time_major() -> None:
    p = profiles_from_ranges(_spec(False), batch=(2, 2, 4), seq_len=(1, 16, 64))
    assert p["x"] == ((1, 2, 3), (16, 2, 3), (64, 4, 3))
    assert p["h0"] == ((2, 2, 16), (2, 2, 16), (2, 4, 16))


def test_profiles_follow_the_state_pairs_batch_axis() -> None:
    spec = _spec(True)
    spec.inputs[1] = TensorSpec("h0", "float32", ("batch", 2, 16))
    spec.state_pairs[0] = StatePair("h0", "hn", 0)
    p = profiles_from_ranges(spec, batch=(1, 2, 3), seq_len=(1, 1, 1))
    assert p["h0"] == ((1, 2, 16), (2, 2, 16), (3, 2, 16))


def test_profiles_fix_extra_inputs_and_refuse_unknown_dims() -> None:
    p = profiles_from_ranges(_spec(extra=TensorSpec("gain", "float32", (1,))))
    assert p["gain"] == ((1,), (1,), (1,))
    with pytest.raises(InputError, match=r"'gain' has symbolic dim 'n'"):
        profiles_from_ranges(_spec(extra=TensorSpec("gain", "float32", ("n",))))
    spec = _spec()
    spec.inputs[0] = TensorSpec("x", "float32", ("batch", "seq_len", "features"))
    with pytest.raises(InputError, match="axis 2"):
        profiles_from_ranges(spec)


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ((0, 1, 2), "min must be ≥ 1"),
        ((3, 2, 4), "min ≤ opt ≤ max"),
        ((1, 5, 4), "min ≤ opt ≤ max"),
        ((1, 2), "three integers"),
        ("123", "three integers"),
        ((1.5, 2, 3), "three integers"),
        (None, "three integers"),
    ],
)
def test_range_validation(value: object, match: str) -> None:
    with pytest.raises(InputError, match=match):
        check_range("seq_len", value)
    with pytest.raises(InputError, match="seq_len"):
        profiles_from_ranges(_spec(), seq_len=value)


def test_valid_range_is_returned_as_ints() -> None:
    assert check_range("batch", [1, 1, 1]) == (1, 1, 1)
    assert check_range("batch", (1, 2.0, 3)) == (1, 2, 3)


def test_ort_trt_profile_strings() -> None:
    p = profiles_from_ranges(_spec(), batch=(1, 2, 4), seq_len=(1, 8, 64))
    assert format_shapes(p, 0) == "x:1x1x3,h0:2x1x16,c0:2x1x16"
    assert format_shapes(p, 1) == "x:2x8x3,h0:2x2x16,c0:2x2x16"
    assert format_shapes(p, 2) == "x:4x64x3,h0:2x4x16,c0:2x4x16"
    opts = ort_trt_options(p, fp16=True, cache_dir="/tmp/trt", device_id=1, workspace_gb=1)
    assert opts["trt_profile_min_shapes"] == format_shapes(p, 0)
    assert opts["trt_profile_opt_shapes"] == format_shapes(p, 1)
    assert opts["trt_profile_max_shapes"] == format_shapes(p, 2)
    assert opts["trt_fp16_enable"] == "True" and opts["device_id"] == "1"
    assert opts["trt_engine_cache_enable"] == "True"
    assert opts["trt_engine_cache_path"] == "/tmp/trt"
    assert opts["trt_max_workspace_size"] == str(1 << 30)
    assert all(isinstance(v, str) for v in opts.values())
    assert "trt_engine_cache_enable" not in ort_trt_options(p)
    providers = ort_trt_providers(p)
    assert [x[0] if isinstance(x, tuple) else x for x in providers] == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    # what TensorRT leaves runs on CUDA in true fp32 too, unless TF32 is asked for
    assert providers[1][1] == {"device_id": "0", "use_tf32": "0"}
    assert ort_trt_providers(p, allow_tf32=True, device_id=2)[1][1] == {
        "device_id": "2",
        "use_tf32": "1",
    }


def _manifest(**changes: object) -> Manifest:
    m = Manifest(
        tensorrt_version="10.7.0.23",
        gpu_name="NVIDIA H100 80GB HBM3",
        compute_capability="9.0",
        cuda_version="12.6",
        onnx_sha256="ab" * 32,
        profiles=profiles_from_ranges(_spec(), batch=(1, 1, 8), seq_len=(1, 64, 1024)),
        precision="fp32",
        builder={"workspace_gb": 2.0, "strongly_typed": False, "tf32": False},
        created="2026-11-27T10:00:00+00:00",
    )
    return dataclasses.replace(m, **changes)


def test_manifest_json_round_trip(tmp_path: Path) -> None:
    m = _manifest()
    assert Manifest.from_json(m.to_json()) == m
    path = m.write(tmp_path / "model.plan.json")
    assert Manifest.read(path) == m
    assert Manifest.read(tmp_path / "missing.json") is None
    assert json.loads(path.read_text())["profiles"]["x"] == [[1, 1, 3], [1, 64, 3], [8, 1024, 3]]
    assert not list(tmp_path.glob(".*tmp"))  # atomic write leaves no temporary behind


@pytest.mark.parametrize(
    "text",
    [
        "{",
        "[]",
        '{"tensorrt_version": "10"}',
        json.dumps({**json.loads(_manifest().to_json()), "profiles": {"x": [[1], [1]]}}),
    ],
)
def test_malformed_manifest_is_a_model_file_error(text: str) -> None:
    with pytest.raises(ModelFileError, match=r"manifest|profiles"):
        Manifest.from_json(text, "model.plan.json")


def test_manifest_path() -> None:
    assert manifest_path("out/model.plan") == Path("out/model.plan.json")


def test_cache_reuses_only_a_matching_manifest() -> None:
    wanted = _manifest(created="2026-11-28T00:00:00+00:00")
    reuse, reason = cache_decision(_manifest(), wanted)
    assert reuse and "matches" in reason  # `created` alone never forces a rebuild
    reuse, reason = cache_decision(None, wanted)
    assert not reuse and "no manifest" in reason


_CHANGED: dict[str, object] = {
    "format": 2,
    "tensorrt_version": "10.8.0.43",
    "gpu_name": "NVIDIA H200",
    "compute_capability": "8.9",
    "cuda_version": "13.0",
    "onnx_sha256": "cd" * 32,
    "precision": "fp16",
    "profiles": profiles_from_ranges(_spec(), batch=(1, 1, 8), seq_len=(1, 64, 2048)),
    "builder": {"workspace_gb": 4.0, "strongly_typed": False, "tf32": False},
}


@pytest.mark.parametrize("field", COMPARED)
def test_cache_reason_names_the_field_and_both_values(field: str) -> None:
    on_disk, wanted = _manifest(), _manifest(**{field: _CHANGED[field]})
    reuse, reason = cache_decision(on_disk, wanted)
    assert not reuse
    assert field in reason
    if field == "profiles":
        assert "profiles.x differs" in reason and "1024" in reason and "2048" in reason
    elif field == "builder":
        assert "builder.workspace_gb differs: plan has 2.0, wanted 4.0" in reason
    else:
        assert repr(getattr(on_disk, field)) in reason and repr(_CHANGED[field]) in reason


def test_stale_reason_compares_the_environment_only() -> None:
    env = {
        "tensorrt_version": "10.7.0.23",
        "gpu_name": "NVIDIA H100 80GB HBM3",
        "compute_capability": "9.0",
        "cuda_version": "12.6",
    }
    assert stale_reason(_manifest(), env) is None
    why = stale_reason(_manifest(), {**env, "gpu_name": "NVIDIA A10", "cuda_version": "12.2"})
    assert why is not None
    assert "gpu_name differs: plan has 'NVIDIA H100 80GB HBM3', wanted 'NVIDIA A10'" in why
    assert "cuda_version" in why


def test_inputs_outside_the_profile_are_refused_with_the_range() -> None:
    p = profiles_from_ranges(_spec(), batch=(1, 1, 8), seq_len=(1, 64, 1024))
    ok = {"x": (2, 100, 3), "h0": (2, 2, 16), "c0": (2, 2, 16)}
    assert profile_violations(p, ok) == []
    check_profile(p, ok)
    with pytest.raises(InputError) as err:
        check_profile(p, {**ok, "x": (2, 2000, 3)})
    msg = str(err.value)
    assert "'x' has shape (2, 2000, 3)" in msg and "(1, 1, 3) … (8, 1024, 3)" in msg
    assert "dim 1 = 2000 not in [1, 1024]" in msg and "rebuild" in msg
    with pytest.raises(InputError, match=r"dim 1 = 9 not in \[1, 8\]"):
        check_profile(p, {**ok, "h0": (2, 9, 16)})
    with pytest.raises(InputError, match="rank 2"):
        check_profile(p, {**ok, "x": (2, 100)})


def test_default_plan_path_is_keyed_by_the_onnx_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RNNEDGE_CACHE", str(tmp_path / "cache"))
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"one")
    first = default_plan_path(onnx, "fp32")
    assert first.parent == tmp_path / "cache" / "engines" and first.name.endswith(".fp32.plan")
    onnx.write_bytes(b"two")
    assert default_plan_path(onnx, "fp32") != first


def test_precision_per_tensorrt_major() -> None:
    trt10, trt11 = SimpleNamespace(__version__="10.7.0.23"), SimpleNamespace(__version__="11.4.0")
    for precision in ("fp32", "fp16", "typed"):
        trt_export.check_precision(trt10, precision)
    trt_export.check_precision(trt11, "typed")
    with pytest.raises(InputError, match=r"strongly typed.*convert_fp16.*precision='typed'"):
        trt_export.check_precision(trt11, "fp16")
    with pytest.raises(InputError, match="not one of"):
        trt_export.check_precision(trt10, "int8")
    assert trt_export.builder_settings(trt11, "fp32", 1, False)["strongly_typed"] is True
    assert trt_export.builder_settings(trt10, "fp32", 1, False)["strongly_typed"] is False


def test_parser_errors_are_listed_readably() -> None:
    err = SimpleNamespace(
        desc=lambda: "Unsupported op", node_name=lambda: "lstm_0", node_operator=lambda: "LSTM"
    )
    assert trt_export._parser_error(err) == "Unsupported op (node lstm_0, LSTM)"
    assert trt_export._parser_error("plain") == "plain"


def test_a_tests_folder_named_tensorrt_is_not_tensorrt() -> None:
    """pytest puts tests/ on sys.path, so tests/tensorrt/ is found as a namespace package."""
    import importlib.util

    spec = importlib.util.find_spec("tensorrt")
    if spec is not None and spec.origin is None:
        assert not trt_plan.module_present("tensorrt")
    assert not trt_plan.module_present("no_such_module_for_rnnedge")


def test_tensorrt_runner_says_why_it_is_unavailable() -> None:
    if trt_plan.module_present("tensorrt"):
        pytest.skip("tensorrt is installed here")
    reason = TensorRTRunner.unavailable_reason()
    assert reason is not None and "tensorrt" in reason
    runner = TensorRTRunner("model.plan")  # construction is cheap and imports nothing
    assert not runner.active
    with pytest.raises(RuntimeUnavailableError, match="tensorrt"):
        runner.activate()


def test_build_engine_without_tensorrt_is_refused(tmp_path: Path) -> None:
    if trt_plan.module_present("tensorrt"):
        pytest.skip("tensorrt is installed here")
    with pytest.raises(RuntimeUnavailableError, match="tensorrt"):
        trt_export.build_engine(tmp_path / "m.onnx", tmp_path / "m.plan")
    assert not (tmp_path / "m.plan").exists()
