"""A Triton model repository for a streamable ONNX model: sequence batcher + implicit state.

Triton's ONNX Runtime backend can keep an RNN's state on the server between the requests of
one sequence ("implicit state"): the state tensors never cross the network, and the sequence
batcher routes each correlation id's requests to the slot that holds its state, zeroed at
START. This module writes `config.pbtxt` for that (and checks it against Triton's own
`ModelConfig` protobuf when tritonclient is installed) next to the wrapped model of
`triton_wrapper` (batch-first state, control inputs, normalization in the graph), after the
wrapper was run against the original; the repository folder appears by one rename.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rnnedge._optional import require
from rnnedge.errors import (
    ExportError,
    InputError,
    RuntimeUnavailableError,
    UnsupportedModelError,
)
from rnnedge.serving.sequences import IDLE_TIMEOUT_S
from rnnedge.serving.triton_wrapper import (
    CONTROLS,
    VERIFY_SHAPES,
    WRAPPER_KEY,
    _to_batch_first,
    check_servable,
    verify_wrapper,
    wrap_for_triton,
)
from rnnedge.spec import RnnSpec

__all__ = [
    "CONTROLS",
    "WRAPPER_KEY",
    "TritonOptions",
    "check_servable",
    "parse_config",
    "render_config",
    "verify_wrapper",
    "wrap_for_triton",
    "write_repository",
]

PLATFORM = "onnxruntime_onnx"
TRITON_TYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "float64": "TYPE_FP64",
    "bfloat16": "TYPE_BF16",
    "int64": "TYPE_INT64",
    "int32": "TYPE_INT32",
    "int16": "TYPE_INT16",
    "int8": "TYPE_INT8",
    "uint8": "TYPE_UINT8",
    "bool": "TYPE_BOOL",
}
_NAME_OK = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass(frozen=True)
class TritonOptions:
    """What `config.pbtxt` says beyond the model's own tensors.

    Args:
        name: model name in the repository (letters, digits, `_.-`).
        max_batch_size: sequences Triton may advance in one ONNX Runtime call (≥ 1).
        instances: model instances (each one ORT session) per device.
        kind: "cpu" or "gpu" instance group.
        strategy: sequence batcher strategy: "oldest" (dynamic batching across sequences)
            or "direct" (one batch slot per live sequence).
        max_queue_delay_us: how long the batcher may hold a request to fill a batch.
        max_sequence_idle_us: a sequence with no request for this long is ended and its
            state slot freed (a client that vanished mid-sequence).
        max_candidate_sequences: live sequences the "oldest" strategy keeps state for.
        normalize: do the model's stored normalization inside the graph.
    """

    name: str
    max_batch_size: int = 8
    instances: int = 1
    kind: str = "cpu"
    strategy: str = "oldest"
    max_queue_delay_us: int = 100
    max_sequence_idle_us: int = int(IDLE_TIMEOUT_S * 1_000_000)
    max_candidate_sequences: int = 256
    normalize: bool = True

    def check(self) -> None:
        problems = []
        if not _NAME_OK.match(self.name):
            problems.append(f"name '{self.name}' may hold only letters, digits and _.-")
        for what in (
            "max_batch_size",
            "instances",
            "max_sequence_idle_us",
            "max_candidate_sequences",
        ):
            if int(getattr(self, what)) < 1:
                problems.append(f"{what} must be ≥ 1, got {getattr(self, what)}")
        if self.max_queue_delay_us < 0:
            problems.append(f"max_queue_delay_us must be ≥ 0, got {self.max_queue_delay_us}")
        if self.kind not in ("cpu", "gpu"):
            problems.append(f"kind must be cpu or gpu, got '{self.kind}'")
        if self.strategy not in ("oldest", "direct"):
            problems.append(f"strategy must be oldest or direct, got '{self.strategy}'")
        if problems:
            raise InputError("Triton options: " + "; ".join(problems))


@dataclass
class RepoResult:
    """What `write_repository` made: paths, the config text and the wrapper's check."""

    model_dir: Path
    onnx_path: Path
    config_path: Path
    config_text: str
    max_abs_diff: float
    shapes: list[tuple[int, int]] = field(default_factory=list)
    config_parsed: bool = False


def default_name(path: str | os.PathLike[str]) -> str:
    """The file's stem with anything Triton would refuse replaced by `_`."""
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", Path(path).stem) or "model"


def triton_type(dtype: str) -> str:
    try:
        return TRITON_TYPES[dtype]
    except KeyError:
        raise UnsupportedModelError(
            f"dtype '{dtype}' has no Triton data type; supported: {', '.join(TRITON_TYPES)}"
        ) from None


# -- config.pbtxt ---------------------------------------------------------------------------
def _pb(value: Any, indent: int = 0) -> str:
    """Protobuf text format for nested dicts/lists; enum values are passed as `Enum(...)`."""
    pad = "  " * indent
    lines = []
    for key, v in value.items():
        if isinstance(v, dict):
            lines += [f"{pad}{key} {{", _pb(v, indent + 1), f"{pad}}}"]
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            items = [f"{pad}  {{\n{_pb(item, indent + 2)}\n{pad}  }}" for item in v]
            lines.append(f"{pad}{key} [\n" + ",\n".join(items) + f"\n{pad}]")
        elif isinstance(v, list):
            lines.append(f"{pad}{key}: [ {', '.join(_scalar(x) for x in v)} ]")
        else:
            lines.append(f"{pad}{key}: {_scalar(v)}")
    return "\n".join(lines)


class Enum(str):
    """A protobuf enum value, written bare (`TYPE_FP32`) instead of quoted."""


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, Enum):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    return str(v)


def _config_dims(shape: Sequence[Any]) -> list[int]:
    return [d if isinstance(d, int) else -1 for d in shape]


def render_config(spec: RnnSpec, opts: TritonOptions) -> str:
    """`config.pbtxt` for the wrapper of `spec`'s model (see `wrap_for_triton`)."""
    opts.check()
    check_servable(spec)
    x = spec.input(spec.data_input)
    y = spec.output(spec.data_output)
    states = []
    for p in spec.state_pairs:
        t = spec.input(p.input)
        dims = _to_batch_first(t.shape, p.batch_axis)[1:]
        dtype = Enum(triton_type(t.dtype))
        states.append(
            {
                "input_name": p.input,
                "output_name": p.output,
                "data_type": dtype,
                "dims": dims,
                "initial_state": [
                    {
                        "data_type": dtype,
                        "dims": dims,
                        "zero_data": True,
                        "name": f"{p.input}_zeros",
                    }
                ],
            }
        )
    controls = []
    for kind, (name, ttype) in CONTROLS.items():
        control: dict[str, Any] = {"kind": Enum(kind)}
        if ttype == "TYPE_BOOL":
            control["bool_false_true"] = [False, True]
        else:
            control["data_type"] = Enum(ttype)
        controls.append({"name": name, "control": [control]})
    if opts.strategy == "oldest":
        strategy: dict[str, Any] = {
            "oldest": {
                "max_candidate_sequences": max(opts.max_candidate_sequences, opts.max_batch_size),
                "preferred_batch_size": [opts.max_batch_size],
                "max_queue_delay_microseconds": opts.max_queue_delay_us,
            }
        }
    else:
        strategy = {"direct": {"max_queue_delay_microseconds": opts.max_queue_delay_us}}
    config = {
        "name": opts.name,
        "platform": PLATFORM,
        "max_batch_size": opts.max_batch_size,
        "input": [
            {
                "name": x.name,
                "data_type": Enum(triton_type(x.dtype)),
                "dims": _config_dims(_to_batch_first(x.shape, spec.batch_axis)[1:]),
            }
        ],
        "output": [
            {
                "name": y.name,
                "data_type": Enum(triton_type(y.dtype)),
                "dims": _config_dims(_to_batch_first(y.shape, spec.batch_axis)[1:]),
            }
        ],
        "sequence_batching": {
            "max_sequence_idle_microseconds": opts.max_sequence_idle_us,
            **strategy,
            "control_input": controls,
            "state": states,
        },
        "instance_group": [
            {
                "count": opts.instances,
                "kind": Enum("KIND_GPU" if opts.kind == "gpu" else "KIND_CPU"),
            }
        ],
    }
    return _pb(config) + "\n"


def parse_config(text: str) -> Any:
    """Parse `text` as Triton's `ModelConfig` protobuf (needs `tritonclient`)."""
    pb2 = require("tritonclient.grpc.model_config_pb2", "checking a Triton config")
    from google.protobuf import text_format  # a dependency of tritonclient

    try:
        return text_format.Parse(text, pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise ExportError(
            f"the Triton config written does not parse as ModelConfig: {exc}"
        ) from exc


# -- writing -----------------------------------------------------------------------------------
def _scratch_dir(repo_dir: Path) -> Path:
    """Where to build: beside the repository (Triton never scans it), else inside it."""
    parent = repo_dir.resolve().parent
    return parent if os.access(parent, os.W_OK) else repo_dir


def _publish(tmp: Path, final: Path, scratch: Path) -> None:
    """Rename `tmp` to `final`; an existing `final` is set aside first and restored on failure."""
    aside = None
    if final.exists():
        aside = Path(tempfile.mkdtemp(prefix=f".{final.name}.old.", dir=scratch)) / final.name
        os.rename(final, aside)
    try:
        os.rename(tmp, final)
    except BaseException:
        if aside is not None:
            os.rename(aside, final)
            shutil.rmtree(aside.parent, ignore_errors=True)
        raise
    if aside is not None:
        shutil.rmtree(aside.parent, ignore_errors=True)


def write_repository(
    model_path: str | os.PathLike[str],
    repo: str | os.PathLike[str],
    opts: TritonOptions,
    *,
    force: bool = False,
    state_names: dict[str, str] | None = None,
) -> RepoResult:
    """Write `repo/<name>/1/model.onnx` and `repo/<name>/config.pbtxt`, or nothing at all.

    Everything is built and checked in a temporary folder beside `repo` and then renamed into
    place, so a failure (or a crash) never leaves a half-written model that Triton would try
    to load. An existing `repo/<name>` is replaced only with `force`, and kept if that fails.
    """
    from rnnedge.runtime.model import load

    onnx = require("onnx", "writing a Triton repository")
    opts.check()
    repo_dir = Path(repo)
    final = repo_dir / opts.name
    if final.exists() and not force:
        raise InputError(f"{final} exists; pass --force to replace it")
    with load(model_path, "ort-cpu", state_names=state_names) as source:
        spec = source.spec
        check_servable(spec)
        text = render_config(spec, opts)
        try:
            parse_config(text)
            parsed = True
        except RuntimeUnavailableError:  # tritonclient missing: the config is still written
            parsed = False
        wrapped = wrap_for_triton(onnx.load(str(model_path)), spec, normalize=opts.normalize)
        onnx.checker.check_model(wrapped)
        data = wrapped.SerializeToString()
        diff = verify_wrapper(source, data, normalize=opts.normalize)
    repo_dir.mkdir(parents=True, exist_ok=True)
    scratch = _scratch_dir(repo_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".{repo_dir.name}.{opts.name}.", dir=scratch))
    try:
        (tmp / "1").mkdir()
        (tmp / "1" / "model.onnx").write_bytes(data)
        (tmp / "config.pbtxt").write_text(text)
        _publish(tmp, final, scratch)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return RepoResult(
        final,
        final / "1" / "model.onnx",
        final / "config.pbtxt",
        text,
        diff,
        [tuple(s) for s in VERIFY_SHAPES],
        parsed,
    )
