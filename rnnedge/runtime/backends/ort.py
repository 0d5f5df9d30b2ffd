"""ONNX Runtime runners: the one runtime an embedding app needs (numpy + onnxruntime only).

Every call into ONNX Runtime in `rnnedge.runtime` goes through `OrtErrors`, so its exceptions
become rnnedge's typed errors in one place, worded the same way whoever made the call.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

import numpy as np

from rnnedge._optional import require
from rnnedge.errors import InputError, ModelFileError, RnnEdgeError
from rnnedge.runtime.backends.base import Feeds, Runner, describe_feeds
from rnnedge.runtime.onnxscan import fp16_safe_settings
from rnnedge.spec import SPEC_KEY, RnnSpec, TensorSpec

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(bool)": "bool",
}


def _ort() -> Any:
    return require("onnxruntime", "the ONNX Runtime runner")


def _flag(value: Any) -> bool:
    """A boolean setting from JSON or a command line: true/false, 1/0, yes/no, on/off."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


#: more intra/inter-op threads than this is no setting anyone means (ORT crashes creating 1e5)
MAX_THREADS = 1024


def _count(settings: Mapping[str, Any], key: str) -> int:
    """A thread count 0..MAX_THREADS (0: ONNX Runtime's default), or an InputError naming it."""
    value = settings[key]
    try:
        count = int(value)
    except (TypeError, ValueError, OverflowError):
        count = -1
    if not 0 <= count <= MAX_THREADS or isinstance(value, bool):
        raise InputError(
            f"session setting {key}={value!r} is not a thread count; expected an "
            f"integer from 0 (ONNX Runtime chooses) to {MAX_THREADS}"
        )
    return count


def _choice(settings: Mapping[str, Any], key: str, choices: Mapping[str, Any]) -> Any:
    value = str(settings[key])
    if value not in choices:
        raise InputError(
            f"session setting {key}={value!r} is not known; expected one of {', '.join(choices)}"
        )
    return choices[value]


def session_options(settings: Mapping[str, Any] | None = None) -> Any:
    """SessionOptions from a plain dict, so tuned settings can be stored as JSON.

    Keys: intra_op_num_threads, inter_op_num_threads, graph_optimization_level ("disable",
    "basic", "extended", "all"), execution_mode ("sequential", "parallel"),
    enable_cpu_mem_arena and enable_mem_pattern (booleans), and `config` (a dict of session
    config entries such as "session.intra_op.allow_spinning").
    """
    ort = _ort()
    so = ort.SessionOptions()
    so.log_severity_level = 4  # ORT logs failures to stderr; rnnedge raises them itself
    settings = dict(settings or {})
    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    modes = {
        "sequential": ort.ExecutionMode.ORT_SEQUENTIAL,
        "parallel": ort.ExecutionMode.ORT_PARALLEL,
    }
    if "intra_op_num_threads" in settings:
        so.intra_op_num_threads = _count(settings, "intra_op_num_threads")
    if "inter_op_num_threads" in settings:
        so.inter_op_num_threads = _count(settings, "inter_op_num_threads")
    if "graph_optimization_level" in settings:
        so.graph_optimization_level = _choice(settings, "graph_optimization_level", levels)
    if "execution_mode" in settings:
        so.execution_mode = _choice(settings, "execution_mode", modes)
    if "enable_cpu_mem_arena" in settings:
        so.enable_cpu_mem_arena = _flag(settings["enable_cpu_mem_arena"])
    if "enable_mem_pattern" in settings:
        so.enable_mem_pattern = _flag(settings["enable_mem_pattern"])
    for key, value in dict(settings.get("config", {})).items():
        so.add_session_config_entry(str(key), str(value))
    return so


def open_session(
    model: str | os.PathLike[str] | bytes,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    settings: Mapping[str, Any] | None = None,
    *,
    fallback: bool = True,
    rule: Callable[[Exception], RnnEdgeError | None] | None = None,
) -> Any:
    """An InferenceSession, with missing/corrupt/non-ONNX files reported as one line.

    With the CPU provider in `providers`, a float16 file is opened at the "basic" optimization
    level at most (`onnxscan.fp16_safe_settings`): at ORT's default the process would crash.

    `fallback=False` stops ONNX Runtime's Python wrapper from retrying a failed session on
    the CPU provider (it prints the error to stdout and carries on), which a GPU runner needs.
    `rule` is the caller's own translation of ORT's errors, tried first (see `OrtErrors`).
    """
    ort = _ort()
    if not isinstance(model, (bytes, str, os.PathLike)):
        raise InputError(
            f"model must be the path of an .onnx file (str or os.PathLike) or its bytes; "
            f"got {type(model).__name__}"
        )
    source = "<bytes>" if isinstance(model, bytes) else str(model)
    if not isinstance(model, bytes):
        path = Path(model)
        try:
            found, size = path.is_file(), path.stat().st_size if path.is_file() else 0
        except (OSError, ValueError) as exc:  # a name too long, a NUL byte, no permission
            raise ModelFileError(
                f"model file '{path}' cannot be read ({type(exc).__name__}: "
                f"{' '.join(str(exc).split())[:200]}); expected an .onnx file"
            ) from exc
        if not found:
            raise ModelFileError(f"model file '{path}' does not exist (expected an .onnx file)")
        if size == 0:
            raise ModelFileError(f"model file '{path}' is empty (expected an ONNX protobuf)")
        model = str(path)
    if any((p if isinstance(p, str) else p[0]) == "CPUExecutionProvider" for p in providers):
        settings = fp16_safe_settings(settings, model)  # an fp16 RNN would crash ORT's CPU EP
    options = session_options(settings)
    extra = {} if fallback else {"enable_fallback": 0}
    with OrtErrors(source=source, rule=rule):
        return ort.InferenceSession(model, sess_options=options, providers=list(providers), **extra)


def session_tensor_specs(args: Sequence[Any]) -> list[TensorSpec]:
    """TensorSpecs from `session.get_inputs()`/`get_outputs()`; unknown dims become names."""
    specs = []
    for a in args:
        shape = tuple(
            d if isinstance(d, int) else (d or f"{a.name}_dim{i}") for i, d in enumerate(a.shape)
        )
        specs.append(TensorSpec(a.name, _ORT_TYPES.get(a.type, a.type), shape))
    return specs


def read_spec(session: Any, source: str = "model") -> RnnSpec | None:
    """The rnnedge spec stored in the model's metadata, or None for a foreign model."""
    try:
        meta = session.get_modelmeta().custom_metadata_map
    except UnicodeDecodeError as exc:  # ORT hands metadata to Python as UTF-8
        raise ModelFileError(
            f"{source}: the model's metadata is not valid UTF-8 ({exc.reason} at byte "
            f"{exc.start}); expected an .onnx file written by `rnnedge export` or another exporter"
        ) from exc
    text = meta.get(SPEC_KEY)
    return RnnSpec.from_json(text, source) if text else None


def _first_line(exc: BaseException, limit: int) -> str:
    text = " ".join(str(exc).split()) if str(exc).strip() else type(exc).__name__
    return text[:limit]


#: ONNX Runtime's exception class names (onnxruntime.capi.onnxruntime_pybind11_state) and what
#: to tell the user, for a model that failed to load; looked up most specific first, the
#: catch-all last. Every entry is a ModelFileError: the file is what the user can change.
_LOAD_HINTS: tuple[tuple[str, str], ...] = (
    ("NoSuchFile", "the file (or its external data) was not found"),
    ("InvalidProtobuf", "it is not an ONNX protobuf (truncated, or another format)"),
    (
        "InvalidGraph",
        "ONNX Runtime finds its graph invalid (an operator it does not know, or "
        "mismatched types); export it again",
    ),
    (
        "NotImplemented",
        "this onnxruntime has no kernel for one of its operators or opsets; "
        "upgrade onnxruntime or export with a lower opset",
    ),
    ("", "expected a valid .onnx file, e.g. one written by `rnnedge export`"),
)


class OrtErrors:
    """Context manager: ONNX Runtime's exceptions in the block become rnnedge's typed errors.

    The one translator for every call into ONNX Runtime (the httpx
    `map_httpcore_exceptions` pattern), most specific first:

    1. rnnedge's own errors, `MemoryError` and anything not an `Exception` pass unchanged;
    2. the caller's `rule`, for what only it can recognize (a CUDA runner: a device failure
       is a `DeviceError`, a CUDA graph that cannot be captured a `RuntimeUnavailableError`);
    3. loading a model (`source` given): a `ModelFileError` naming the file, with a hint
       chosen by ORT's exception class (`_LOAD_HINTS`);
    4. running it (`feeds` given): an `InputError` showing what was fed, for ORT's refusals
       (`InvalidArgument`, the Python wrapper's `ValueError` for a missing feed, a kernel's
       `Fail`/`RuntimeException`).

    Reusable and cheap to enter, so a hot loop keeps one instance; `feeds` may be a callable,
    called only when an error is being described.

    Args:
        source: the model being loaded, for messages; None when running.
        feeds: what was fed (or a callable that returns it), for messages when running.
        runtime: how to name the runtime in messages ("ONNX Runtime (CUDA)", …).
        rule: returns the error for an exception the caller knows better, else None.
    """

    __slots__ = ("feeds", "rule", "runtime", "source")

    def __init__(
        self,
        *,
        source: str | None = None,
        feeds: Feeds | Callable[[], Feeds] | None = None,
        runtime: str = "ONNX Runtime",
        rule: Callable[[Exception], RnnEdgeError | None] | None = None,
    ) -> None:
        self.source = source
        self.feeds = feeds
        self.runtime = runtime
        self.rule = rule

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False
        if isinstance(exc, (RnnEdgeError, MemoryError)):
            return False
        raise self.translate(exc) from exc

    def translate(self, exc: Exception) -> RnnEdgeError:
        """The rnnedge error for `exc`, as `__exit__` would raise it."""
        if self.rule is not None:
            known = self.rule(exc)
            if known is not None:
                return known
        if self.source is not None:
            kind = type(exc).__name__
            hint = next(h for name, h in _LOAD_HINTS if name in ("", kind))
            return ModelFileError(
                f"'{self.source}' could not be loaded as an ONNX model "
                f"({_first_line(exc, 300)}); {hint}"
            )
        feeds = self.feeds() if callable(self.feeds) else self.feeds
        return InputError(
            f"{self.runtime} refused the inputs {describe_feeds(feeds or {})}: "
            f"{_first_line(exc, 400)}"
        )


def run_session(session: Any, output_names: Sequence[str], feeds: Feeds) -> dict[str, np.ndarray]:
    """`session.run` with outputs by name and ORT's refusals as `InputError`."""
    with OrtErrors(feeds=feeds):
        values = session.run(output_names, dict(feeds))
    return dict(zip(output_names, values, strict=True))


class OrtRunner(Runner):
    """Runs an ONNX file with a list of execution providers."""

    name: ClassVar[str] = "ort"
    requires: ClassVar[tuple[str, ...]] = ("onnxruntime",)
    install_hint: ClassVar[str] = "pip install 'rnnedge[cpu]'"
    providers: ClassVar[tuple[str, ...]] = ("CPUExecutionProvider",)

    def __init__(
        self,
        model: str | os.PathLike[str] | bytes,
        *,
        settings: Mapping[str, Any] | None = None,
        session: Any | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.settings = dict(settings or {})
        self.session: Any | None = session
        self._inputs: list[TensorSpec] = []
        self._outputs: list[str] = []

    def _activate_impl(self) -> None:
        if self.session is None:
            self.session = open_session(self.model, self.providers, self.settings)
        self._inputs = session_tensor_specs(self.session.get_inputs())
        self._outputs = [o.name for o in self.session.get_outputs()]

    def _deactivate_impl(self) -> None:
        self.session = None

    def _input_specs_impl(self) -> list[TensorSpec]:
        return list(self._inputs)

    def _output_names_impl(self) -> list[str]:
        return list(self._outputs)

    def _infer_impl(self, feeds: Feeds) -> dict[str, np.ndarray]:
        assert self.session is not None
        return run_session(self.session, self._outputs, feeds)


class OrtCpuRunner(OrtRunner):
    """ONNX Runtime on the CPU execution provider."""

    name: ClassVar[str] = "ort-cpu"
