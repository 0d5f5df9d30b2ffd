"""Per-machine tuning of ONNX Runtime for one model file, stored next to it.

What is fastest depends on the model, the shape and the machine: one thread beats two for a
tiny LSTM step (the thread pool's hand-off costs more than the math), two beat one for a long
b1 sequence, and for large batches splitting the batch over cores — each core running its own
sub-batch with one thread, no per-step synchronization — beats ORT's own threading. So the
candidates are measured per model and shape class, the winner is written to
`model.onnx.tuning.json`, and a tuning made for another file, ORT version or CPU is ignored
(with the reason) rather than trusted.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rnnedge._optional import require
from rnnedge.errors import InputError, ModelFileError, RnnEdgeError
from rnnedge.fileio import sha256_file
from rnnedge.runtime.backends.base import Feeds
from rnnedge.runtime.backends.ort import (
    OrtCpuRunner,
    open_session,
    run_session,
    session_tensor_specs,
)
from rnnedge.runtime.foreign import resolve_spec
from rnnedge.spec import RnnSpec

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

TUNING_FORMAT = "rnnedge.tuning/1"
SUFFIX = ".tuning.json"
#: sequences up to this many steps are "short" (streaming chunks); longer ones are "long"
SHORT_MAX = 16
SPIN = "session.intra_op.allow_spinning"
INTER_SPIN = "session.inter_op.allow_spinning"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or what `platform` knows elsewhere."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform  # only where /proc/cpuinfo is missing; it costs an import at load

    return platform.processor() or platform.machine() or "unknown"


def shape_class(batch: int, seq_len: int) -> str:
    """`b1-short`, `b1-long`, `bN-short` or `bN-long`: shapes that want the same settings."""
    return f"{'b1' if batch == 1 else 'bN'}-{'short' if seq_len <= SHORT_MAX else 'long'}"


def tuning_path(model_path: str | os.PathLike[str]) -> Path:
    return Path(str(model_path) + SUFFIX)


def _ort_version() -> str:
    return str(require("onnxruntime", "reading a tuning file").__version__)


def machine_key() -> dict[str, Any]:
    """What a tuning is only valid for, besides the file: CPU model, cores, ORT version."""
    return {"cpu_model": cpu_model(), "cores": os.cpu_count(), "onnxruntime": _ort_version()}


def read_tuning(model_path: str | os.PathLike[str]) -> tuple[dict[str, Any] | None, str | None]:
    """(tuning, None) when the file next to the model is valid here, else (None, why not)."""
    tpath = tuning_path(model_path)
    try:
        if not tpath.is_file():
            return None, f"no tuning file {tpath.name}"
    except (OSError, ValueError) as exc:  # a name too long or with a NUL byte: no tuning here
        return None, f"tuning file unreachable ({exc.__class__.__name__})"
    try:
        tuning = json.loads(tpath.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        return None, f"tuning file {tpath.name} is unreadable ({exc.__class__.__name__})"
    if not isinstance(tuning, dict) or tuning.get("format") != TUNING_FORMAT:
        return None, f"tuning file {tpath.name} is not format '{TUNING_FORMAT}'"
    malformed = _malformed(tuning.get("classes", {}))
    if malformed:
        return None, f"tuning file {tpath.name} is malformed: {malformed}"
    try:
        sha = sha256_file(model_path)
    except OSError as exc:
        return None, f"model file unreadable ({exc.__class__.__name__})"
    if tuning.get("onnx_sha256") != sha:
        return None, "stale: the model file changed since it was tuned (sha256 differs)"
    here = machine_key()
    for key, value in here.items():
        if tuning.get(key) != value:
            return None, f"stale: tuned with {key} {tuning.get(key)!r}, here {value!r}"
    return tuning, None


def _malformed(classes: Any) -> str | None:
    """What is wrong with a tuning's `classes` in shape (not in value), or None."""
    if not isinstance(classes, dict):
        return f"classes is {type(classes).__name__}, expected an object"
    for name, entry in classes.items():
        if not isinstance(entry, dict):
            return f"class {name!r} is {type(entry).__name__}, expected an object"
        if not isinstance(entry.get("settings", {}), dict):
            return f"class {name!r} settings are not an object"
        split = entry.get("batch_split", 1)
        if isinstance(split, bool) or not isinstance(split, int) or split < 1:
            return f"class {name!r} batch_split is {split!r}, expected an integer ≥ 1"
    return None


def load_tuning(model_path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The valid tuning for this model here, or None (missing or stale; see `read_tuning`)."""
    return read_tuning(model_path)[0]


def _entry(tuning: Mapping[str, Any] | None, batch: int, seq_len: int) -> Mapping[str, Any]:
    """The class entry for a shape: its own class, else one with the same batch group."""
    classes = (tuning or {}).get("classes", {})
    cls = shape_class(batch, seq_len)
    if cls in classes:
        return classes[cls]
    group = cls.split("-")[0]
    return next((v for k, v in sorted(classes.items()) if k.startswith(group + "-")), {})


def settings_for(tuning: Mapping[str, Any] | None, batch: int, seq_len: int) -> dict[str, Any]:
    """Session settings for a shape; ORT's defaults ({}) when untuned or no class fits."""
    return json.loads(json.dumps(_entry(tuning, batch, seq_len).get("settings", {})))


def split_for(tuning: Mapping[str, Any] | None, batch: int, seq_len: int) -> int:
    """Sub-batches to run concurrently for a shape (1: no split)."""
    return int(_entry(tuning, batch, seq_len).get("batch_split", 1))


def _output_batch_axis(spec: RnnSpec) -> int | None:
    """Where the data output keeps the batch: the axis named like the data input's batch."""
    if spec.batch_axis is None:
        return None
    x_dim = spec.input(spec.data_input).shape[spec.batch_axis]
    try:
        y_shape = spec.output(spec.data_output).shape
    except KeyError:
        return None
    if isinstance(x_dim, str) and x_dim in y_shape:
        return y_shape.index(x_dim)
    return None


def splittable(spec: RnnSpec) -> bool:
    """True when every input and output is the sequence or a state, so batch rows are free."""
    state_in = {p.input for p in spec.state_pairs}
    state_out = {p.output for p in spec.state_pairs}
    return (
        all(t.name == spec.data_input or t.name in state_in for t in spec.inputs)
        and all(t.name == spec.data_output or t.name in state_out for t in spec.outputs)
        and _output_batch_axis(spec) is not None
        and all(p.batch_axis is not None for p in spec.state_pairs)
    )


def split_feeds(spec: RnnSpec, feeds: Feeds, parts: int) -> list[dict[str, np.ndarray]]:
    """Feeds cut into `parts` sub-batches (sequence and states alike)."""
    axes = {spec.data_input: spec.batch_axis, **{p.input: p.batch_axis for p in spec.state_pairs}}
    pieces = {k: np.array_split(np.asarray(v), parts, axis=axes[k]) for k, v in feeds.items()}
    return [{k: np.ascontiguousarray(v[i]) for k, v in pieces.items()} for i in range(parts)]


def join_outputs(spec: RnnSpec, outs: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    axes = {
        spec.data_output: _output_batch_axis(spec),
        **{p.output: p.batch_axis for p in spec.state_pairs},
    }
    return {k: np.concatenate([o[k] for o in outs], axis=axes[k]) for k in outs[0]}


class TunedOrtRunner(OrtCpuRunner):
    """ONNX Runtime on CPU with per-shape settings from a tuning: one session per distinct
    settings (all opened on activation), and large batches split over cores where that won.

    Thread-safe like a plain session: sessions are opened under a lock and `run` is.

    Args:
        model: the ONNX file the tuning was measured on.
        tuning: the tuning (`read_tuning`); None runs ORT's defaults for every shape.
        spec: the model's spec; None resolves it from the file on activation.
        detect: `resolve_spec` keyword arguments (the overrides of `rnnedge.load`) for a
            file rnnedge did not write, used when `spec` is None.
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        tuning: Mapping[str, Any] | None,
        spec: RnnSpec | None = None,
        *,
        detect: Mapping[str, Any] | None = None,
    ) -> None:
        self.tuning = dict(tuning or {})
        super().__init__(model, settings=settings_for(self.tuning, 1, 1))
        self.spec = spec
        self.detect = dict(detect or {})
        self._sessions: dict[str, Any] = {}
        self._pools: dict[int, ThreadPoolExecutor] = {}
        self._routes: dict[str, tuple[Any, int]] = {}
        self._lock = threading.Lock()
        self._splittable = False
        self._split_inputs: set[str] = set()

    @property
    def splittable(self) -> bool:
        """Whether batches may be split over cores (every input/output is data or state)."""
        return self._splittable

    def _session(self, settings: Mapping[str, Any]) -> Any:
        """The session for `settings`, opened on first use."""
        key = json.dumps(settings, sort_keys=True)
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                session = open_session(self.model, self.providers, settings)
                self._sessions[key] = session
            return session

    def drop(self, settings: Mapping[str, Any]) -> None:
        """Close the session for `settings` (tuning frees the candidates that lost); the base
        session stays, as `session` refers to it."""
        key = json.dumps(settings, sort_keys=True)
        with self._lock:
            session = self._sessions.get(key)
            if session is None or session is self.session:
                return
            del self._sessions[key]
            self._routes = {k: v for k, v in self._routes.items() if v[0] is not session}

    def _pool(self, parts: int) -> ThreadPoolExecutor:
        from concurrent.futures import ThreadPoolExecutor  # only a split batch needs threads

        with self._lock:
            if parts not in self._pools:
                self._pools[parts] = ThreadPoolExecutor(parts, thread_name_prefix="rnnedge")
            return self._pools[parts]

    def _activate_impl(self) -> None:
        # every tuned setting is opened now, so no call pays for a session being created
        for name, entry in self.tuning.get("classes", {}).items():
            try:
                self._session(entry.get("settings", {}))
            except RnnEdgeError as exc:
                if not isinstance(exc, InputError):  # the file itself, not the settings
                    raise
                raise self._bad_tuning(name, exc) from exc
            except Exception as exc:  # what ONNX Runtime's SessionOptions refuse
                raise self._bad_tuning(name, exc) from exc
        self.session = self._session(self.settings)
        self._inputs = session_tensor_specs(self.session.get_inputs())
        self._outputs = [o.name for o in self.session.get_outputs()]
        if self.spec is None:
            self.spec = resolve_spec(self.session, source=str(self.model), **self.detect)
        self._splittable = splittable(self.spec)
        self._split_inputs = {self.spec.data_input, *(p.input for p in self.spec.state_pairs)}

    def _bad_tuning(self, shape_class: str, exc: Exception) -> ModelFileError:
        why = " ".join(str(exc).split())[:300] or type(exc).__name__
        return ModelFileError(
            f"tuning file {tuning_path(self.model).name} has settings for {shape_class} that "
            f"cannot be used ({why}); delete it or tune again with `rnnedge bench --tune`"
        )

    def _deactivate_impl(self) -> None:
        for pool in self._pools.values():
            pool.shutdown(wait=True)
        self._sessions.clear()
        self._pools.clear()
        self._routes.clear()
        self.session = None

    def shape_of(self, feeds: Feeds) -> tuple[int, int] | None:
        """(batch, seq_len) of the sequence input, or None when it is missing or not of the
        layout's rank; a data input without a batch axis counts as batch 1."""
        spec = self.spec
        assert spec is not None
        x = feeds.get(spec.data_input)
        shape = getattr(x, "shape", None)
        if shape is None or len(shape) != len(spec.data_layout):
            return None
        b = spec.batch_axis
        return (1 if b is None else int(shape[b])), int(shape[spec.seq_axis])

    def run_with(
        self, settings: Mapping[str, Any], batch_split: int, feeds: Feeds
    ) -> dict[str, np.ndarray]:
        """Run with given settings and split (used by `tune` to try candidates)."""
        self._check_active()
        return self._run(self._session(settings), batch_split, feeds, self.shape_of(feeds))

    def _run(
        self, session: Any, batch_split: int, feeds: Feeds, shape: tuple[int, int] | None
    ) -> dict[str, np.ndarray]:
        outputs = self._outputs
        if (
            batch_split <= 1
            or not self._splittable
            or shape is None
            or shape[0] < batch_split
            or not self._split_inputs.issuperset(feeds)
        ):
            return run_session(session, outputs, feeds)
        assert self.spec is not None
        parts = split_feeds(self.spec, feeds, batch_split)
        pool = self._pool(batch_split)
        done = pool.map(lambda part: run_session(session, outputs, part), parts)
        return join_outputs(self.spec, list(done))

    def _infer_impl(self, feeds: Feeds) -> dict[str, np.ndarray]:
        shape = self.shape_of(feeds)
        b, t = shape or (1, 1)
        cls = shape_class(b, t)
        route = self._routes.get(cls)  # settings depend on the class only: decide once
        if route is None:
            route = (self._session(settings_for(self.tuning, b, t)), split_for(self.tuning, b, t))
            with self._lock:
                self._routes[cls] = route
        session, split = route
        if split <= 1:
            return run_session(session, self._outputs, feeds)
        return self._run(session, split, feeds, shape)
