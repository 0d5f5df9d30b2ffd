"""`rnnedge.load(path)`: the model object an app embeds, with numpy + onnxruntime alone.

The `.onnx` file carries its spec (names, axes, state pairs, normalization), so loading needs
nothing else; files made by other tools get a spec detected from their tensor names.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rnnedge.errors import InputError, RuntimeUnavailableError, StreamError
from rnnedge.runtime.backends.base import Runner, require_runner, usable
from rnnedge.runtime.backends.ort import OrtRunner
from rnnedge.runtime.foreign import extra_inputs, resolve_spec, same_shape_pairs
from rnnedge.runtime.inputs import (
    batch_of,
    check_batch,
    check_extra,
    check_output,
    check_sequence,
    check_state,
    zero_state,
)
from rnnedge.runtime.named import from_columns, is_named
from rnnedge.runtime.normalize import Normalizer
from rnnedge.runtime.overrides import Overrides
from rnnedge.runtime.tuned import TunedOrtRunner, read_tuning
from rnnedge.spec import RnnSpec

if TYPE_CHECKING:
    from rnnedge.runtime.stream import Stream

State = dict[str, np.ndarray]


#: what "auto" tries, best first
AUTO_ORDER = ("ort-cuda", "ort-cpu")


def resolve_runtime(runtime: str) -> str:
    """Map "auto" to the best runtime available here that can run an ONNX file.

    Each candidate is probed statically first (`usable`), so on a CPU-only install nothing
    of the CUDA runner is imported and no package metadata is read.
    """
    if runtime != "auto":
        return runtime
    reasons = {}
    for name in AUTO_ORDER:
        reasons[name] = usable(name)
        if reasons[name] is None:
            return name
    why = "; ".join(f"{n}: {r}" for n, r in reasons.items())
    raise RuntimeUnavailableError(
        f"no ONNX runtime is available here ({why}); install one with pip install 'rnnedge[cpu]'"
    )


class Model:
    """A loaded recurrent model: `run` whole sequences, or `stream` them chunk by chunk.

    One Model (one ONNX Runtime session) may be shared by many threads and streams: ONNX
    Runtime's `run` is thread-safe and every call here passes its state explicitly.
    """

    def __init__(self, runner: Runner, spec: RnnSpec, path: Path | None = None) -> None:
        self.runner = runner
        self.spec = spec
        self.path = path
        self.normalizer = Normalizer.from_spec(spec.normalization) if spec.normalization else None

    @property
    def runtime(self) -> str:
        return self.runner.name

    def close(self) -> None:
        self.runner.deactivate()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def initial_state(self, batch: int = 1) -> State:
        """Zeros of each state's declared shape and dtype, `batch` on its batch axis."""
        return zero_state(self.spec, check_batch(self.spec, batch, "batch"))

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the graph as it is: feeds and outputs by name, no normalization."""
        return self.runner.infer(feeds)

    def run(
        self,
        x: Any,
        state: Mapping[str, np.ndarray] | None = None,
        *,
        normalize: bool = True,
        nan_policy: str = "raise",
        extra: Mapping[str, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, State]:
        """Forecast for whole sequences; returns (y, final state by input name).

        With `normalize` (the default), `x` is in the data's own units and `y` comes back in
        them, using the statistics stored in the model at training time. `x` follows the
        data input's layout (`spec.data_layout`) and dtype: float features, or integer token
        ids for a model that takes them. `extra` gives the graph's other inputs (a sample
        rate, ...) at their declared dtype and rank.
        """
        spec = self.spec
        if is_named(x):  # a dict of columns or a data frame: matched to the features by name
            x = from_columns(x, spec)
        arr = check_sequence(x, spec, nan_policy=nan_policy)
        batch = check_batch(spec, batch_of(arr, spec), "x's batch")
        st = check_state(state, spec, batch) or zero_state(spec, batch)
        if normalize and self.normalizer is not None:
            arr = self.normalizer.transform(arr).astype(arr.dtype, copy=False)
        feeds = {spec.data_input: arr, **st, **check_extra(extra, spec)}
        out = self.runner.infer(feeds)
        y = out[spec.data_output]
        if normalize and self.normalizer is not None:
            y = self.normalizer.inverse_targets(y).astype(y.dtype, copy=False)
        return check_output(y), {p.input: out[p.output] for p in spec.state_pairs}

    def stream(self, batch: int = 1, **kwargs: Any) -> Stream:
        """A new independent stream over this model; see `rnnedge.runtime.stream.Stream`.

        `kwargs`: `nan_policy`, `extra` (the graph's other inputs, fixed for the stream),
        `normalize`, and for protocols that carry part of the input, `context` (steps of each
        call's input carried into the next) and `frame` (new steps per call; pushed chunks of
        any length are buffered), e.g. `stream(context=64, frame=512, extra={"sr": 16000})`.
        """
        if not self.spec.streamable:
            raise StreamError(f"this model cannot stream: {self._why_not_streamable()}")
        from rnnedge.runtime.stream import Stream

        return Stream(self, batch=batch, **kwargs)

    def _why_not_streamable(self) -> str:
        spec = self.spec
        if spec.bidirectional:
            return (
                "it is bidirectional: its outputs depend on future steps; use Model.run on "
                "whole sequences"
            )
        outputs = [t for t in spec.outputs if t.name != spec.data_output]
        same = same_shape_pairs(extra_inputs(spec), outputs)
        if same:
            pairs = ", ".join(f"'{i}': '{o}'" for i, o in same)
            flags = ",".join(f"{i}:{o}" for i, o in same)
            return (
                f"no state pairs were found by name, but inputs and outputs of equal shape "
                f"are: if they carry the state, load with state_names={{{pairs}}} (CLI "
                f"--state {flags})"
            )
        return (
            "it has no recurrent state inputs/outputs; use Model.run on whole sequences, "
            "or name the state with state_names={input: output} if it has one"
        )


def load(
    path: str | os.PathLike[str],
    runtime: str = "auto",
    *,
    settings: Mapping[str, Any] | None = None,
    data_input: str | None = None,
    data_output: str | None = None,
    state_names: Mapping[str, str] | None = None,
    state_batch_axis: Mapping[str, int | None] | None = None,
    batch_first: bool | None = None,
    layout: str | None = None,
    tuned: bool = True,
) -> Model:
    """Load an ONNX file on a runtime ("auto", "ort-cpu", …) as a ready `Model`.

    The file is opened once: with a valid tuning file, straight into the tuned runner. If
    anything after opening fails (spec detection, a tuning ONNX Runtime refuses), what was
    opened is closed before the error is raised.

    Args:
        path: an `.onnx` file; one written by `rnnedge export` carries its spec, any other
            gets one detected from its tensor names.
        runtime: "auto" (ort-cuda when usable here, else ort-cpu; OpenVINO when the file's
            precision gate chose it and it is installed), a registered ONNX Runtime runtime
            name, or "openvino".
        settings: ONNX Runtime session settings (threads, optimization level, …); given
            settings are used as they are, without a tuning file.
        data_input: the graph input that carries the sequence (default: detected).
        data_output: the graph output that carries the result (default: detected).
        state_names: which input each state output is fed back into, `{input: output}`;
            `{}` says the model has no state.
        state_batch_axis: `{state input: axis}` where a state keeps the batch; None for a
            state without one.
        batch_first: for a rank-2 or rank-3 data input, whether batch comes before time.
        layout: the data input's axes as letters, `B` batch, `T` time, any other letter a
            fixed axis: "BT" audio or tokens, "TF" frames with no batch axis, "BFTC" time
            on axis 2.
        tuned: use `model.onnx.tuning.json` (written by `rnnedge bench --tune`) when it was
            measured for this file, this CPU and this ONNX Runtime; a stale one is ignored.

    Raises:
        ModelFileError: the file is missing or not a loadable ONNX model, or its tuning file
            holds settings ONNX Runtime refuses, or its stored spec contradicts its graph.
        InputError: `path` is not a path, an override has the wrong type or names no graph
            tensor, the recurrent state of a foreign file cannot be detected unambiguously,
            or `runtime` does not load ONNX files.

    The overrides (`data_input` to `layout`) apply to files rnnedge did not write: a spec
    stored in the file wins, though the tensors they name must exist. How each is detected
    when not given is written out in `rnnedge.runtime.foreign`.
        RuntimeUnavailableError: the runtime is unknown or not usable here.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise InputError(
            f"path must be the path of an .onnx file (str or os.PathLike); got "
            f"{type(path).__name__}"
        )
    if settings is not None and not isinstance(settings, Mapping):
        raise InputError(
            f"settings must be a mapping of ONNX Runtime session settings, e.g. "
            f"{{'intra_op_num_threads': 1}}; got {type(settings).__name__}"
        )
    if not isinstance(tuned, bool):
        raise InputError(f"tuned must be True or False, got {tuned!r}")
    if not isinstance(runtime, str):
        raise InputError(
            f"runtime must be a runtime name such as 'auto' or 'ort-cpu', got {runtime!r}"
        )
    detect: dict[str, Any] = {
        "data_input": data_input,
        "data_output": data_output,
        "state_names": state_names,
        "state_batch_axis": state_batch_axis,
        "batch_first": batch_first,
        "layout": layout,
    }
    Overrides.of(**detect)  # a wrong type is refused before the file is opened
    if runtime == "openvino":
        return _load_openvino(path)
    name = resolve_runtime(runtime)
    cls = require_runner(name)
    if not issubclass(cls, OrtRunner):
        raise InputError(
            f"runtime '{name}' does not load ONNX files through rnnedge.load; "
            "use an ONNX Runtime runtime such as 'ort-cpu'"
        )
    tuning = read_tuning(path)[0] if tuned and settings is None and name == "ort-cpu" else None
    runner: OrtRunner
    if tuning is not None:
        runner = TunedOrtRunner(path, tuning, detect=detect)
    else:
        runner = cls(path, settings=settings)
    runner.activate()
    try:
        if isinstance(runner, TunedOrtRunner):
            assert runner.spec is not None  # resolved on activation
            spec = runner.spec
        else:
            spec = resolve_spec(runner.session, source=str(path), **detect)
        model = Model(runner, spec, Path(path))
    except BaseException:
        runner.deactivate()
        raise
    if runtime == "auto" and settings is None and _chose_openvino(spec):
        runner.deactivate()  # the file's precision gate picked OpenVINO (bf16) for this file
        return _load_openvino(path)
    return model


def _chose_openvino(spec: RnnSpec) -> bool:
    """The spec records OpenVINO as the runtime its precision was judged on, and it is usable."""
    record = spec.precision
    return record is not None and record.runtime == "openvino" and usable("openvino") is None


def _load_openvino(path: str | os.PathLike[str]) -> Model:
    from rnnedge.runtime.backends.openvino import load_model

    return load_model(path)
