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
from rnnedge.runtime.foreign import resolve_spec
from rnnedge.runtime.inputs import check_extra, check_sequence, check_state, zero_state
from rnnedge.runtime.normalize import Normalizer
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
        return zero_state(self.spec, batch)

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
        them, using the statistics stored in the model at training time.
        """
        spec = self.spec
        arr = check_sequence(x, spec, nan_policy=nan_policy)
        batch = arr.shape[spec.batch_axis]
        st = check_state(state, spec, batch) or zero_state(spec, batch)
        if normalize and self.normalizer is not None:
            arr = self.normalizer.transform(arr).astype(arr.dtype, copy=False)
        feeds = {spec.data_input: arr, **st, **check_extra(extra, spec)}
        out = self.runner.infer(feeds)
        y = out[spec.data_output]
        if normalize and self.normalizer is not None:
            y = self.normalizer.inverse_targets(y).astype(y.dtype, copy=False)
        return y, {p.input: out[p.output] for p in spec.state_pairs}

    def stream(self, batch: int = 1, **kwargs: Any) -> Stream:
        """A new independent stream over this model; see `rnnedge.runtime.stream.Stream`."""
        if not self.spec.streamable:
            why = (
                "it is bidirectional: its outputs depend on future steps"
                if self.spec.bidirectional
                else "it has no recurrent state inputs/outputs"
            )
            raise StreamError(f"this model cannot stream: {why}; use Model.run on whole sequences")
        from rnnedge.runtime.stream import Stream

        return Stream(self, batch=batch, **kwargs)


def load(
    path: str | os.PathLike[str],
    runtime: str = "auto",
    *,
    settings: Mapping[str, Any] | None = None,
    state_names: Mapping[str, str] | None = None,
    batch_first: bool | None = None,
    tuned: bool = True,
) -> Model:
    """Load an ONNX file on a runtime ("auto", "ort-cpu", …) as a ready `Model`.

    The file is opened once: with a valid tuning file, straight into the tuned runner. If
    anything after opening fails (spec detection, a tuning ONNX Runtime refuses), what was
    opened is closed before the error is raised.

    Args:
        path: an `.onnx` file; one written by `rnnedge export` carries its spec, any other
            gets one detected from its tensor names.
        runtime: "auto" (ort-cuda when usable here, else ort-cpu) or a registered ONNX
            Runtime runtime name.
        settings: ONNX Runtime session settings (threads, optimization level, …); given
            settings are used as they are, without a tuning file.
        state_names: for files not made by rnnedge, which input feeds which output back.
        batch_first: for files not made by rnnedge, the data input's layout if detection
            cannot tell.
        tuned: use `model.onnx.tuning.json` (written by `rnnedge bench --tune`) when it was
            measured for this file, this CPU and this ONNX Runtime; a stale one is ignored.

    Raises:
        ModelFileError: the file is missing or not a loadable ONNX model, or its tuning file
            holds settings ONNX Runtime refuses.
        InputError: `path` is not a path, the recurrent state of a foreign file cannot be
            detected unambiguously, or `runtime` does not load ONNX files.
        RuntimeUnavailableError: the runtime is unknown or not usable here.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise InputError(
            f"path must be the path of an .onnx file (str or os.PathLike); got "
            f"{type(path).__name__}"
        )
    name = resolve_runtime(runtime)
    cls = require_runner(name)
    if not issubclass(cls, OrtRunner):
        raise InputError(
            f"runtime '{name}' does not load ONNX files through rnnedge.load; "
            "use an ONNX Runtime runtime such as 'ort-cpu'"
        )
    detect: dict[str, Any] = {"state_names": state_names, "batch_first": batch_first}
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
        return Model(runner, spec, Path(path))
    except BaseException:
        runner.deactivate()
        raise
