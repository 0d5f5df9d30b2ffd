"""ONNX Runtime runners: the one runtime an embedding app needs (numpy + onnxruntime only)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rnnedge._optional import require
from rnnedge.errors import InputError, ModelFileError
from rnnedge.runtime.backends.base import Feeds, Runner, describe_feeds
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
        so.intra_op_num_threads = int(settings["intra_op_num_threads"])
    if "inter_op_num_threads" in settings:
        so.inter_op_num_threads = int(settings["inter_op_num_threads"])
    if "graph_optimization_level" in settings:
        so.graph_optimization_level = levels[str(settings["graph_optimization_level"])]
    if "execution_mode" in settings:
        so.execution_mode = modes[str(settings["execution_mode"])]
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
) -> Any:
    """An InferenceSession, with missing/corrupt/non-ONNX files reported as one line."""
    ort = _ort()
    source = "<bytes>" if isinstance(model, bytes) else str(model)
    if not isinstance(model, bytes):
        path = Path(model)
        if not path.is_file():
            raise ModelFileError(f"model file '{path}' does not exist (expected an .onnx file)")
        if path.stat().st_size == 0:
            raise ModelFileError(f"model file '{path}' is empty (expected an ONNX protobuf)")
        model = str(path)
    try:
        return ort.InferenceSession(
            model, sess_options=session_options(settings), providers=list(providers)
        )
    except Exception as exc:  # ORT raises its own Fail/InvalidProtobuf/… classes
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(
            f"'{source}' could not be loaded as an ONNX model ({first[:300]}); "
            "expected a valid .onnx file, e.g. one written by `rnnedge export`"
        ) from exc


def session_tensor_specs(args: Sequence[Any]) -> list[TensorSpec]:
    """TensorSpecs from `session.get_inputs()`/`get_outputs()`; unknown dims become names."""
    specs = []
    for a in args:
        shape = tuple(d if isinstance(d, int) else (d or f"{a.name}_dim{i}") for i, d in
                      enumerate(a.shape))
        specs.append(TensorSpec(a.name, _ORT_TYPES.get(a.type, a.type), shape))
    return specs


def read_spec(session: Any, source: str = "model") -> RnnSpec | None:
    """The rnnedge spec stored in the model's metadata, or None for a foreign model."""
    meta = session.get_modelmeta().custom_metadata_map
    text = meta.get(SPEC_KEY)
    return RnnSpec.from_json(text, source) if text else None


def refused(feeds: Feeds, exc: Exception, runtime: str = "ONNX Runtime") -> InputError:
    """ORT's own error for a run, as one line that also shows what was fed."""
    msg = str(exc).strip().replace("\n", " ")
    return InputError(f"{runtime} refused the inputs {describe_feeds(feeds)}: {msg[:400]}")


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
        try:
            values = self.session.run(self._outputs, dict(feeds))
        except Exception as exc:
            raise refused(feeds, exc) from exc
        return dict(zip(self._outputs, values, strict=True))


class OrtCpuRunner(OrtRunner):
    """ONNX Runtime on the CPU execution provider."""

    name: ClassVar[str] = "ort-cpu"
