"""The public surface of `rnnedge` is `__all__`: declared, complete, lazy and real.

As httpx tests its exported members: a name is public because it was decided, not because a
module happened to be imported.
"""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

import rnnedge
from rnnedge import errors
from rnnedge.runtime import model as model_module
from rnnedge.runtime import stream as stream_module

PUBLIC = {"load", "export", "Model", "Stream", "__version__"}


def test_all_is_the_decided_surface_and_sorted() -> None:
    error_classes = {
        name
        for name, obj in vars(errors).items()
        if isinstance(obj, type) and issubclass(obj, errors.RnnEdgeError)
    }
    assert set(rnnedge.__all__) == PUBLIC | error_classes
    assert rnnedge.__all__ == sorted(rnnedge.__all__)
    assert len(set(rnnedge.__all__)) == len(rnnedge.__all__)


def test_every_public_name_is_the_object_its_module_defines() -> None:
    assert rnnedge.load is model_module.load
    assert rnnedge.Model is model_module.Model
    assert rnnedge.Stream is stream_module.Stream
    for name in rnnedge.__all__:
        if name.endswith("Error"):
            assert getattr(rnnedge, name) is getattr(errors, name)


def test_export_is_the_exporter_without_importing_torch() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, rnnedge; f = rnnedge.export; print(f.__module__, 'torch' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["rnnedge.exporters.onnx", "False"]


@pytest.mark.parametrize(
    ("name", "first"),
    [("load", ["path", "runtime"]), ("export", ["module", "example_input", "path"])],
)
def test_load_and_export_have_real_signatures_and_docstrings(name: str, first: list[str]) -> None:
    func = getattr(rnnedge, name)
    params = inspect.signature(func).parameters
    assert list(params)[: len(first)] == first  # not a (*args, **kwargs) forwarder
    assert all(p.kind is not inspect.Parameter.VAR_POSITIONAL for p in params.values())
    assert func.__doc__ and "Args:" in func.__doc__


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from rnnedge import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(rnnedge.__all__)


def test_no_other_public_names_appear_on_the_package() -> None:
    """In a fresh process, after using every public name: what is public is in `__all__`,
    or is one of rnnedge's own subpackages (which Python sets as attributes on import)."""
    code = (
        "import __future__, types, rnnedge\n"
        "for name in rnnedge.__all__: getattr(rnnedge, name)\n"
        "print(sorted(n for n, v in vars(rnnedge).items() if not n.startswith('_')\n"
        "             and not isinstance(v, (types.ModuleType, __future__._Feature))))\n"
        "print(sorted(set(dir(rnnedge)) >= set(rnnedge.__all__) and ['dir ok'] or []))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    names, dir_ok = out.stdout.strip().splitlines()
    assert sorted(eval(names)) == sorted(n for n in rnnedge.__all__ if not n.startswith("_"))
    assert dir_ok == "['dir ok']"


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'lod'"):
        rnnedge.lod  # noqa: B018
    assert not hasattr(rnnedge, "resolve_runtime")
