"""`import rnnedge` and the runtime path must work with numpy + onnxruntime alone."""

from __future__ import annotations

import subprocess
import sys
import textwrap

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
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120)


def test_import_rnnedge_loads_neither_torch_nor_onnx() -> None:
    out = _run("""
        import sys, rnnedge, rnnedge.runtime.model, rnnedge.runtime.stream, rnnedge.runtime.backends.ort
        import rnnedge.verify.parity, rnnedge.runtime.inputs, rnnedge.tools.render, rnnedge.cli.main
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
    rnnedge.export(SequenceModel(ModelConfig(cell="gru", hidden_size=8)), torch.randn(2, 5, 1),
                   path)
    out = _run(BLOCK_HEAVY + f"""
import numpy as np, rnnedge
m = rnnedge.load({str(path)!r})
s = m.stream()
y = np.concatenate([s.step(np.ones((1, 3, 1), np.float32)) for _ in range(3)], axis=1)
full, _ = m.run(np.ones((1, 9, 1), np.float32))
print(float(np.abs(y - full).max()))
print(sorted(k for k in sys.modules if k.split(".")[0] in ("torch", "onnx")))
""")
    assert out.returncode == 0, out.stderr
    diff, mods = out.stdout.strip().splitlines()
    assert float(diff) < 1e-5
    assert mods == "[]"


def test_cli_help_works_without_torch() -> None:
    out = _run(BLOCK_HEAVY + "from rnnedge.cli.main import main\nraise SystemExit(main(['runtimes']))")
    assert out.returncode == 0, out.stderr
    assert "ort-cpu" in out.stdout
    assert "torch" in out.stdout  # listed, with the reason it is unavailable
