"""`rnnedge.load`: one session per file, nothing left open when a later step fails.

Sessions are real ONNX Runtime sessions: `InferenceSession` is wrapped by a subclass that only
counts and keeps weak references, so a test can tell how many were opened and that the ones a
failed load opened are gone.
"""

from __future__ import annotations

import gc
import json
import shutil
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pytest

import rnnedge
from rnnedge.errors import InputError, ModelFileError, RnnEdgeError
from rnnedge.fileio import sha256_file
from rnnedge.runtime.backends import base
from rnnedge.runtime.backends.base import Runner
from rnnedge.runtime.backends.ort import OrtCpuRunner, OrtRunner
from rnnedge.runtime.tuned import TUNING_FORMAT, TunedOrtRunner, machine_key, tuning_path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
STEP = {"intra_op_num_threads": 1}


class Sessions:
    """Counts the ONNX Runtime sessions created while installed, and which are still alive."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.refs: list[weakref.ref[Any]] = []
        real = onnxruntime.InferenceSession
        refs = self.refs

        class Counted(real):  # type: ignore[misc, valid-type]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                refs.append(weakref.ref(self))

        monkeypatch.setattr(onnxruntime, "InferenceSession", Counted)

    @property
    def opened(self) -> int:
        return len(self.refs)

    def alive(self) -> int:
        gc.collect()
        return sum(ref() is not None for ref in self.refs)


class Runners:
    """Every runner whose activation started while installed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seen: list[Runner] = []
        real = Runner.activate

        def activate(runner: Runner) -> Runner:
            self.seen.append(runner)
            return real(runner)

        monkeypatch.setattr(Runner, "activate", activate)

    def all_released(self) -> bool:
        return bool(self.seen) and all(
            not r.active
            and getattr(r, "session", None) is None
            and not getattr(r, "_sessions", None)
            for r in self.seen
        )


def _tuned_copy(tmp_path: Path, fixture: str, classes: dict[str, Any]) -> Path:
    """A copy of a fixture with a tuning file that is valid for it on this machine."""
    path = tmp_path / fixture
    shutil.copy(FIXTURES / fixture, path)
    tuning = {
        "format": TUNING_FORMAT,
        "onnx_sha256": sha256_file(path),
        **machine_key(),
        "classes": classes,
    }
    tuning_path(path).write_text(json.dumps(tuning))
    return path


def test_load_opens_the_file_once(monkeypatch: pytest.MonkeyPatch) -> None:
    sessions = Sessions(monkeypatch)
    model = rnnedge.load(FIXTURES / "foreign_lstm.onnx")
    assert sessions.opened == 1
    assert type(model.runner) is OrtCpuRunner and model.runner.active
    model.close()
    assert not model.runner.active and sessions.alive() == 0


def test_a_tuned_load_opens_only_the_tuned_sessions(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = _tuned_copy(
        tmp_path, "foreign_lstm.onnx", {"b1-short": {"settings": STEP, "batch_split": 1}}
    )
    sessions = Sessions(monkeypatch)
    model = rnnedge.load(path)
    assert isinstance(model.runner, TunedOrtRunner)
    assert sessions.opened == 1  # no throwaway session to read the spec first
    assert not model.spec.batch_first and model.runner.spec is model.spec
    x = np.random.default_rng(0).standard_normal((5, 1, 3)).astype(np.float32)
    with OrtCpuRunner(FIXTURES / "foreign_lstm.onnx") as plain:
        want = plain.infer({"input": x, **model.initial_state(1)})["output"]
    np.testing.assert_allclose(model.run(x)[0], want, rtol=1e-6, atol=1e-7)
    model.close()
    assert sessions.alive() == 0


def test_spec_detection_failure_closes_the_session(monkeypatch: pytest.MonkeyPatch) -> None:
    sessions, runners = Sessions(monkeypatch), Runners(monkeypatch)
    with pytest.raises(InputError, match="ambiguous"):
        rnnedge.load(FIXTURES / "foreign_ambiguous.onnx")
    assert sessions.opened == 1
    assert runners.all_released()
    assert sessions.alive() == 0


def test_spec_detection_failure_on_the_tuned_path_closes_every_session(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = _tuned_copy(
        tmp_path,
        "foreign_ambiguous.onnx",
        {
            "b1-short": {"settings": STEP, "batch_split": 1},
            "bN-long": {"settings": {"intra_op_num_threads": 2}, "batch_split": 2},
        },
    )
    sessions, runners = Sessions(monkeypatch), Runners(monkeypatch)
    with pytest.raises(InputError, match="ambiguous"):
        rnnedge.load(path)
    assert sessions.opened == 2
    assert [type(r) for r in runners.seen] == [TunedOrtRunner] and runners.all_released()
    assert sessions.alive() == 0
    model = rnnedge.load(path, state_names={"h": "h_out"})  # detection options reach it
    assert isinstance(model.runner, TunedOrtRunner)
    assert [(p.input, p.output) for p in model.spec.state_pairs] == [("h", "h_out")]


def test_a_tuning_that_onnx_runtime_refuses_is_an_error_and_closes_what_opened(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = _tuned_copy(
        tmp_path,
        "foreign_lstm.onnx",
        {
            "b1-short": {"settings": STEP, "batch_split": 1},
            "bN-long": {"settings": {"graph_optimization_level": "fastest"}, "batch_split": 1},
        },
    )
    sessions, runners = Sessions(monkeypatch), Runners(monkeypatch)
    with pytest.raises(
        ModelFileError,
        match=r"foreign_lstm\.onnx\.tuning\.json.*bN-long.*"
        r"graph_optimization_level='fastest'",
    ):
        rnnedge.load(path)
    assert sessions.opened == 1 and runners.all_released()
    assert sessions.alive() == 0
    assert type(rnnedge.load(path, tuned=False).runner) is OrtCpuRunner


def test_a_failed_activation_releases_what_it_took() -> None:
    released: list[str] = []

    class HalfBuilt(Runner):
        name = "half-built"

        def _activate_impl(self) -> None:
            self.buffer = np.zeros(4)
            raise RnnEdgeError("device gone")

        def _deactivate_impl(self) -> None:
            released.append("buffer")
            del self.buffer

    runner = HalfBuilt()
    with pytest.raises(RnnEdgeError, match="device gone"):
        runner.activate()
    assert released == ["buffer"] and not runner.active
    runner.deactivate()  # nothing held: nothing released twice
    assert released == ["buffer"]


def test_a_release_that_fails_after_a_failed_activation_keeps_the_first_error() -> None:
    class Broken(Runner):
        name = "broken"

        def _activate_impl(self) -> None:
            raise RnnEdgeError("the real reason")

        def _deactivate_impl(self) -> None:
            raise AttributeError("nothing to release")

    with pytest.raises(RnnEdgeError, match="the real reason"):
        Broken().activate()


def test_runtimes_are_probed_statically(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        base._REGISTRY,
        "needs-missing",
        base.Backend(
            "tests.runtime.no_such_module:Nothing",
            requires=("no_such_module_here",),
            install_hint="pip install nothing",
        ),
    )
    monkeypatch.setitem(
        base._REGISTRY,
        "needs-file",
        base.Backend(
            "tests.runtime.no_such_module:Nothing",
            requires=("onnxruntime",),
            files=(("onnxruntime", "capi/*no_such_provider_library*"),),
        ),
    )
    # neither target module exists: a static failure must not try to import it
    assert base.usable("needs-missing") == "missing no_such_module_here (pip install nothing)"
    assert "has no capi/*no_such_provider_library*" in (base.usable("needs-file") or "")
    assert base.probe("ort-cpu") is None and base.usable("ort-cpu") is None
    assert base.probe("not-registered") == "unknown runtime 'not-registered'"


def test_registering_a_name_twice_for_another_target_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        base.register("ort-cpu", "somewhere.else:Runner")
    base.register(
        "ort-cpu",
        base._REGISTRY["ort-cpu"].target,
        requires=("onnxruntime",),
        install_hint=base._REGISTRY["ort-cpu"].install_hint,
    )  # the same: fine


def test_a_runtime_that_is_not_onnx_runtime_is_refused_by_load() -> None:
    if base.usable("torch") is not None:
        pytest.skip("torch is not installed here")
    with pytest.raises(InputError, match="does not load ONNX files"):
        rnnedge.load(FIXTURES / "foreign_lstm.onnx", "torch")
    assert issubclass(base.runner_class("ort-cpu"), OrtRunner)


def test_closing_frees_the_session_at_once_even_with_a_bound_stream_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No reference cycle holds a closed model's session until the garbage collector runs."""
    sessions = Sessions(monkeypatch)
    model = rnnedge.load(FIXTURES / "foreign_lstm.onnx")
    stream = model.stream()
    for _ in range(2):
        stream.step(np.zeros((1, 1, 3), np.float32))
    assert stream._core.bound  # the IO bindings refer to the session too
    gc.disable()
    try:
        stream.close()
        model.close()
        assert sum(ref() is not None for ref in sessions.refs) == 0
    finally:
        gc.enable()


@pytest.mark.parametrize(
    "classes",
    [
        [],
        {"b1-short": None},
        {"b1-short": {"settings": []}},
        {"b1-short": {"batch_split": 0}},
        {"b1-short": {"batch_split": "2"}},
    ],
    ids=["list", "null-class", "list-settings", "zero-split", "text-split"],
)
def test_a_malformed_tuning_is_ignored_like_a_stale_one(tmp_path: Path, classes: Any) -> None:
    from rnnedge.runtime.tuned import read_tuning

    path = _tuned_copy(tmp_path, "foreign_lstm.onnx", classes)
    tuning, why = read_tuning(path)
    assert tuning is None and "is malformed" in (why or "")
    assert type(rnnedge.load(path).runner) is OrtCpuRunner


@pytest.mark.parametrize("threads", [-1, 100_000, 2**63, "many", True])
def test_thread_counts_are_checked_before_onnx_runtime_sees_them(threads: Any) -> None:
    with pytest.raises(InputError, match=r"intra_op_num_threads=.* is not a thread count"):
        rnnedge.load(FIXTURES / "foreign_lstm.onnx", settings={"intra_op_num_threads": threads})


@pytest.mark.parametrize("path", [None, 5, b"model.onnx", ["m.onnx"]])
def test_a_path_that_is_not_a_path_is_an_input_error(path: Any) -> None:
    with pytest.raises(InputError, match=r"path of an \.onnx file"):
        rnnedge.load(path)


def test_a_path_the_os_refuses_is_a_model_file_error(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="cannot be read"):
        rnnedge.load(tmp_path / ("x" * 5000 + ".onnx"))  # longer than any file name may be
    with pytest.raises(ModelFileError, match="does not exist"):
        rnnedge.load(str(tmp_path / "a\0b.onnx"))  # a NUL byte: no such file can exist
