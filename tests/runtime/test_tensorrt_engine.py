"""TensorRT engines built from exported models: parity, profiles, the manifest and its cache.

Needs the `tensorrt` module and a GPU; the `tensorrt` marker skips every test without them (a
folder named tensorrt on sys.path is not TensorRT: tests/conftest.py asks for a real module).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rnnedge.errors import InputError, RuntimeUnavailableError
from rnnedge.exporters.tensorrt import (
    EngineFromOnnx,
    Manifest,
    build_engine,
    ensure_engine,
    manifest_path,
    trt_major,
)
from rnnedge.runtime.backends.tensorrt import TensorRTRunner
from rnnedge.runtime.inputs import zero_state
from rnnedge.spec import RnnSpec
from rnnedge.verify.parity import TOLERANCES, check_parity, shape_grid

pytestmark = pytest.mark.tensorrt  # tests/conftest.py skips it without a real tensorrt
BATCH, SEQ = (1, 2, 4), (1, 16, 64)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, RnnSpec]:
    torch = pytest.importorskip("torch")
    from rnnedge.exporters.onnx import example_for, export
    from rnnedge.modeling.models import ModelConfig, SequenceModel

    torch.manual_seed(0)
    cfg = ModelConfig(cell="lstm", input_size=1, hidden_size=64, num_layers=2)
    model = SequenceModel(cfg).eval()
    path = tmp_path_factory.mktemp("trt") / "lstm.onnx"
    return path, model, export(model, example_for(True, 1), path).spec


@pytest.fixture(scope="module")
def plan(exported: tuple[Path, Any, RnnSpec], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path, _, _ = exported
    out = tmp_path_factory.mktemp("plans")
    return build_engine(
        path, out / "model.plan", batch=BATCH, seq_len=SEQ, timing_cache=out / "timing.cache"
    )


def _eager(model: Any, spec: RnnSpec) -> Any:
    from rnnedge.modeling.models import stateful_wrapper
    from rnnedge.modeling.torch_runner import TorchRunner

    return TorchRunner(
        stateful_wrapper(model), [t.name for t in spec.inputs], [t.name for t in spec.outputs]
    )


def test_build_writes_plan_and_manifest(plan: Path, exported: tuple) -> None:
    manifest = Manifest.read(manifest_path(plan))
    assert manifest is not None and plan.stat().st_size > 0
    assert manifest.profiles["x"] == ((1, 1, 1), (2, 16, 1), (4, 64, 1))
    assert manifest.precision == "fp32" and manifest.builder["tf32"] is False
    assert (plan.parent / "timing.cache").stat().st_size > 0


def test_engine_parity_inside_the_profile(plan: Path, exported: tuple) -> None:
    _, model, spec = exported
    with _eager(model, spec) as ref, TensorRTRunner(plan) as engine:
        report = check_parity(ref, [engine], spec, shape_grid([1, 3, 4], [1, 7, 16, 64]))
    report.raise_if_failed()


def test_out_of_profile_inputs_are_refused_with_the_range(plan: Path, exported: tuple) -> None:
    _, _, spec = exported
    x = np.zeros((1, 65, 1), np.float32)
    with TensorRTRunner(plan) as engine, pytest.raises(InputError, match=r"\(4, 64, 1\)"):
        engine.infer({"x": x, **zero_state(spec, 1)})


def test_stale_manifest_is_refused(plan: Path, tmp_path: Path) -> None:
    copy = tmp_path / "stale.plan"
    copy.write_bytes(plan.read_bytes())
    manifest = Manifest.read(manifest_path(plan))
    assert manifest is not None
    dataclasses.replace(manifest, gpu_name="NVIDIA A10").write(manifest_path(copy))
    with pytest.raises(RuntimeUnavailableError, match="gpu_name differs"):
        TensorRTRunner(copy).activate()


def test_engine_cache_reuses_and_rebuilds_with_the_reason(exported: tuple, tmp_path: Path) -> None:
    path, _, _ = exported
    target = tmp_path / "cached.plan"
    _, reused, reason = ensure_engine(path, target, batch=BATCH, seq_len=SEQ)
    assert not reused and "no manifest" in reason
    _, reused, reason = ensure_engine(path, target, batch=BATCH, seq_len=SEQ)
    assert reused, reason
    _, reused, reason = ensure_engine(path, target, batch=BATCH, seq_len=(1, 16, 128))
    assert not reused and "profiles.x differs" in reason


def test_fp16_per_tensorrt_version(exported: tuple, tmp_path: Path) -> None:
    import tensorrt as trt

    path, model, spec = exported
    if trt_major(trt) >= 11:
        with pytest.raises(InputError, match="strongly typed"):
            build_engine(path, tmp_path / "fp16.plan", precision="fp16")
        return
    fp16 = build_engine(path, tmp_path / "fp16.plan", batch=BATCH, seq_len=SEQ, precision="fp16")
    with _eager(model, spec) as ref, TensorRTRunner(fp16) as engine:
        report = check_parity(
            ref, [engine], spec, shape_grid([1, 4], [1, 16]), tolerance=TOLERANCES["fp16"]
        )
    report.raise_if_failed()


def test_runner_builds_through_a_loader_and_reuses_the_cache(
    exported: tuple, tmp_path: Path
) -> None:
    path, model, spec = exported
    loader = EngineFromOnnx(path, tmp_path / "loaded.plan", batch=BATCH, seq_len=SEQ)
    with _eager(model, spec) as ref, TensorRTRunner(path, loader=loader) as engine:
        assert loader.reused is False and "no manifest" in engine.build_reason
        check_parity(ref, [engine], spec, shape_grid([1, 4], [1, 16])).raise_if_failed()
    with TensorRTRunner(loader) as engine:  # Polygraphy style: the loader alone
        assert loader.reused is True and engine.plan == tmp_path / "loaded.plan"
