"""`import rnnedge` and the runtime path must work with numpy + onnxruntime alone.

What an app embeds is L0 (`rnnedge.errors`, `spec`, `fileio`, `_optional`) plus
`rnnedge.runtime`: loading a model and stepping a stream must import nothing else of rnnedge,
and none of the packages the tooling uses.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
L0 = {"rnnedge", "rnnedge.errors", "rnnedge.spec", "rnnedge.fileio", "rnnedge._optional"}
#: packages that must never come in through the runtime path
HEAVY = ("torch", "onnx", "onnxscript", "tensorrt", "matplotlib", "ray", "pyarrow")

BLOCK_HEAVY = """
import sys, importlib.abc
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "onnx", "onnxscript", "tensorrt"):
            raise ImportError(f"{name} is blocked in this test")
        return None
sys.meta_path.insert(0, _Block())
"""


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_import_rnnedge_loads_neither_torch_nor_onnx() -> None:
    out = _run("""
        import sys, rnnedge, rnnedge.runtime.model, rnnedge.runtime.stream
        import rnnedge.runtime.backends.ort, rnnedge.runtime.inputs
        import rnnedge.verify.parity, rnnedge.tools.render, rnnedge.cli.main
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "onnx",
                       "onnxscript", "tensorrt"))
        print(heavy)
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_runtime_streams_a_model_with_torch_and_onnx_unimportable(tmp_path) -> None:
    """Export here (torch present), then load and stream in a process where torch can't load."""
    import torch

    import rnnedge
    from rnnedge.modeling.models import ModelConfig, SequenceModel

    path = tmp_path / "m.onnx"
    rnnedge.export(
        SequenceModel(ModelConfig(cell="gru", hidden_size=8)), torch.randn(2, 5, 1), path
    )
    out = _run(
        BLOCK_HEAVY
        + f"""
import numpy as np, rnnedge
m = rnnedge.load({str(path)!r})
s = m.stream()
y = np.concatenate([s.step(np.ones((1, 3, 1), np.float32)) for _ in range(3)], axis=1)
full, _ = m.run(np.ones((1, 9, 1), np.float32))
print(float(np.abs(y - full).max()))
print(sorted(k for k in sys.modules if k.split(".")[0] in ("torch", "onnx")))
"""
    )
    assert out.returncode == 0, out.stderr
    diff, mods = out.stdout.strip().splitlines()
    assert float(diff) < 1e-5
    assert mods == "[]"


def test_cli_help_works_without_torch() -> None:
    out = _run(
        BLOCK_HEAVY + "from rnnedge.cli.main import main\nraise SystemExit(main(['runtimes']))"
    )
    assert out.returncode == 0, out.stderr
    assert "ort-cpu" in out.stdout
    assert "torch" in out.stdout  # listed, with the reason it is unavailable


LOAD_AND_STEP = """
import json, sys
import numpy as np
import rnnedge
m = rnnedge.load(sys.argv[1])
y = m.stream(batch=1).step(np.zeros((1, 1, 3), np.float32))  # time-major (seq, batch, 3)
print(json.dumps({"runner": type(m.runner).__name__, "shape": list(y.shape),
                  "modules": sorted(sys.modules)}))
"""


def _load_and_step(path: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", LOAD_AND_STEP, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _outside_runtime(modules: list[str]) -> list[str]:
    return [
        m
        for m in modules
        if m.split(".")[0] == "rnnedge"
        and m not in L0
        and m != "rnnedge.runtime"
        and not m.startswith("rnnedge.runtime.")
    ]


@pytest.mark.parametrize("tuned", [False, True], ids=["plain", "with-tuning-file"])
def test_load_and_one_step_import_only_l0_and_the_runtime(tmp_path: Path, tuned: bool) -> None:
    path = tmp_path / "foreign_lstm.onnx"
    shutil.copy(FIXTURES / "foreign_lstm.onnx", path)
    if tuned:  # the tuned runner must stay inside the runtime too
        from rnnedge.fileio import sha256_file
        from rnnedge.runtime.tuned import TUNING_FORMAT, machine_key, tuning_path

        tuning = {
            "format": TUNING_FORMAT,
            "onnx_sha256": sha256_file(path),
            **machine_key(),
            "classes": {"b1-short": {"settings": {"intra_op_num_threads": 1}, "batch_split": 1}},
        }
        tuning_path(path).write_text(json.dumps(tuning))
    got = _load_and_step(path)
    assert got["runner"] == ("TunedOrtRunner" if tuned else "OrtCpuRunner")
    assert got["shape"] == [1, 1, 4]
    modules = got["modules"]
    assert _outside_runtime(modules) == []
    assert sorted(m for m in modules if m.split(".")[0] in HEAVY) == []


def test_a_backend_that_fails_its_static_probe_is_not_imported(tmp_path: Path) -> None:
    from rnnedge.runtime.backends.base import probe

    why = probe("ort-cuda")
    if why is None:
        pytest.skip("this onnxruntime ships the CUDA provider: auto may pick ort-cuda")
    modules = _load_and_step(FIXTURES / "foreign_lstm.onnx")["modules"]
    backends = [m for m in modules if m.startswith("rnnedge.runtime.backends.")]
    assert backends == ["rnnedge.runtime.backends.base", "rnnedge.runtime.backends.ort"]
    bare = _run("import sys, numpy, onnxruntime; print('importlib.metadata' in sys.modules)")
    if bare.stdout.strip() == "False":  # package metadata is never read to load
        assert "importlib.metadata" not in modules


def test_import_rnnedge_imports_no_submodule() -> None:
    out = _run("""
        import sys, rnnedge
        print(sorted(m for m in sys.modules if m.startswith("rnnedge.")))
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
