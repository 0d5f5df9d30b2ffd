"""What a runtime needs to know about a recurrent graph, stored inside the ONNX file itself.

The spec travels as JSON in the model's `metadata_props` under `rnnedge.spec`, so one `.onnx`
file is all an app ships: names of the sequence and state tensors, which axis is batch and
which is time, the normalization the model was trained with, and who produced it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from rnnedge.errors import ModelFileError

SPEC_KEY = "rnnedge.spec"
SPEC_FORMAT = 1
CELLS = ("rnn_tanh", "rnn_relu", "lstm", "gru")

Dim = int | str
#: dtypes a stored spec may name (numpy names, as ONNX Runtime's types map to them)
DTYPES = (
    "float32",
    "float16",
    "float64",
    "bfloat16",
    "int8",
    "uint8",
    "int16",
    "int32",
    "int64",
    "bool",
)
MAX_RANK = 8
MAX_DIM = 2**31 - 1


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: a symbolic dim is a string (`"batch"`, `"seq_len"`)."""

    name: str
    dtype: str
    shape: tuple[Dim, ...]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TensorSpec:
        shape = d["shape"]
        if not isinstance(shape, list) or len(shape) > MAX_RANK:
            raise TypeError(f"tensor '{d['name']}' shape must be a list of ≤ {MAX_RANK} dims")
        for dim in shape:
            ok_int = isinstance(dim, int) and not isinstance(dim, bool) and 0 <= dim <= MAX_DIM
            if not (ok_int or (isinstance(dim, str) and dim)):
                raise ValueError(
                    f"tensor '{d['name']}' has dim {dim!r}; expected a name or an "
                    f"integer 0..{MAX_DIM}"
                )
        dtype = str(d["dtype"])
        if dtype not in DTYPES:
            raise ValueError(
                f"tensor '{d['name']}' has dtype {dtype!r}; expected one of {', '.join(DTYPES)}"
            )
        return cls(str(d["name"]), dtype, tuple(shape))


@dataclass(frozen=True)
class StatePair:
    """A recurrent state carried between calls: fed as `input`, read back from `output`.

    `batch_axis` says where the batch lives in the state tensor, so a stream can check that a
    restored state belongs to a stream of the same batch size.
    """

    input: str
    output: str
    #: None: the state has no batch axis (a graph fixed at one sequence per call)
    batch_axis: int | None = 1

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StatePair:
        axis = d.get("batch_axis", 1)
        if axis is not None and (isinstance(axis, bool) or not isinstance(axis, int)):
            raise TypeError(f"state pair batch_axis must be an integer or null, got {axis!r}")
        return cls(str(d["input"]), str(d["output"]), axis)


@dataclass(frozen=True)
class Normalization:
    """Per-feature statistics a model was trained with; outputs are the `target_index` columns."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    target_index: tuple[int, ...]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Normalization:
        return cls(
            tuple(float(v) for v in d["mean"]),
            tuple(float(v) for v in d["std"]),
            tuple(int(v) for v in d["target_index"]),
        )


@dataclass(frozen=True)
class DataContract:
    """What the model's columns mean, so named input is matched by name, never by position.

    `features` are the input columns in the model's order, `targets` the forecast columns,
    `horizon` how many steps ahead each output row looks (row t forecasts t + horizon),
    `time_column` the column that labelled the training rows, `units` per column where known,
    and `fingerprint` a hash of the training data, to tell which data a model was fitted on.
    """

    features: tuple[str, ...]
    targets: tuple[str, ...]
    horizon: int = 1
    time_column: str | None = None
    units: dict[str, str] = field(default_factory=dict)
    fingerprint: str | None = None

    def __post_init__(self) -> None:
        problems = []
        if not self.features or not all(isinstance(f, str) and f for f in self.features):
            problems.append(f"features {list(self.features)!r} must be non-empty names")
        if len(set(self.features)) != len(self.features):
            problems.append(f"features {list(self.features)!r} repeat a name")
        if not self.targets or any(t not in self.features for t in self.targets):
            problems.append(f"targets {list(self.targets)!r} must be among the features")
        if isinstance(self.horizon, bool) or not isinstance(self.horizon, int) or self.horizon < 1:
            problems.append(f"horizon {self.horizon!r} must be a whole number >= 1")
        if problems:
            raise ModelFileError(f"invalid data contract: {'; '.join(problems)}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DataContract:
        if not isinstance(d, Mapping):
            raise TypeError(f"data contract must be an object, got {type(d).__name__}")
        tc = d.get("time_column")
        units = d.get("units") or {}
        if not isinstance(units, Mapping):
            raise TypeError("data contract units must be an object")
        return cls(
            tuple(str(v) for v in _strings(d["features"], "features")),
            tuple(str(v) for v in _strings(d["targets"], "targets")),
            int(d.get("horizon", 1)),
            None if tc is None else str(tc),
            {str(k): str(v) for k, v in units.items()},
            None if d.get("fingerprint") is None else str(d["fingerprint"]),
        )


def _strings(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{what} must be a list of names")
    return value


@dataclass(frozen=True)
class PrecisionRecord:
    """How a file's precision was chosen: judged on the task metric against fp32, not element-wise.

    `precision` is what the weights or the execution use ("fp32", "int8", "bf16"); `execution`
    says where that precision is applied when the file itself stays fp32 (bf16 is applied by
    OpenVINO when it compiles the model, so the stored graph is fp32). `fp32_value` and
    `value` are the metric on the same validation data before and after (whole sequences in
    one call); `stream_value` is the reduced file's metric when streamed one step at a time
    (dynamic int8 rounds each call's activations on their own scale, so it differs); `margin`
    is the relative change that was allowed for both.
    """

    precision: str
    metric: str
    margin: float
    fp32_value: float
    value: float
    execution: str | None = None
    runtime: str | None = None
    scheme: str | None = None
    stream_value: float | None = None

    @property
    def relative_change(self) -> float:
        """(value − fp32_value) / |fp32_value|; +inf when fp32 scored exactly 0 and this did not."""
        if self.fp32_value == 0:
            return 0.0 if self.value == 0 else float("inf")
        return (self.value - self.fp32_value) / abs(self.fp32_value)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PrecisionRecord:
        def opt(key: str) -> str | None:
            return None if d.get(key) is None else str(d[key])

        stream = d.get("stream_value")
        return cls(
            str(d["precision"]),
            str(d["metric"]),
            float(d["margin"]),
            float(d["fp32_value"]),
            float(d["value"]),
            opt("execution"),
            opt("runtime"),
            opt("scheme"),
            None if stream is None else float(stream),
        )


@dataclass
class RnnSpec:
    """The recurrent contract of an exported graph.

    `cell` and the sizes are known for models rnnedge built and for PyTorch RNN modules it could
    inspect; for a foreign ONNX file they stay `None` and only names, axes and state pairs are
    filled in (by detection or by the user).
    """

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    data_input: str
    data_output: str
    state_pairs: list[StatePair] = field(default_factory=list)
    batch_first: bool = True
    cell: str | None = None
    num_layers: int | None = None
    hidden_size: int | None = None
    input_size: int | None = None
    output_size: int | None = None
    bidirectional: bool = False
    normalization: Normalization | None = None
    contract: DataContract | None = None
    producer: dict[str, str] = field(default_factory=dict)
    format: int = SPEC_FORMAT
    precision: PrecisionRecord | None = None
    #: the data input's axes, one letter each: `B` batch, `T` time, anything else a fixed
    #: axis (`F` features, `C` channels, ...). None means `BTF` (batch_first) or `TBF`.
    #: E.g. `BT` for token ids or audio samples, `TF` for frames with no batch axis, `BFTC`
    #: for a spectrogram with time on axis 2.
    layout: str | None = None

    @property
    def data_layout(self) -> str:
        return self.layout or ("BTF" if self.batch_first else "TBF")

    @property
    def batch_axis(self) -> int | None:
        """The data input's batch axis; None when it has none (one sequence per call)."""
        axis = self.data_layout.find("B")
        return None if axis < 0 else axis

    @property
    def seq_axis(self) -> int:
        return self.data_layout.index("T")

    @property
    def streamable(self) -> bool:
        """A model streams when it carries state and reads time in one direction only."""
        return bool(self.state_pairs) and not self.bidirectional

    def _axis_problems(self, in_names: set[str]) -> list[str]:
        """Layout and state batch axes must fit the declared ranks, so runtimes can index."""
        rank = len(self.input(self.data_input).shape) if self.data_input in in_names else None
        problems = _layout_problems(self.data_layout, rank)
        for p in self.state_pairs:
            if p.input in in_names and p.batch_axis is not None:
                srank = len(self.input(p.input).shape)
                if not 0 <= p.batch_axis < srank:
                    problems.append(
                        f"state '{p.input}' batch axis {p.batch_axis} is outside its rank {srank}"
                    )
        return problems

    def input(self, name: str) -> TensorSpec:
        for t in self.inputs:
            if t.name == name:
                return t
        raise KeyError(name)

    def output(self, name: str) -> TensorSpec:
        for t in self.outputs:
            if t.name == name:
                return t
        raise KeyError(name)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "model") -> RnnSpec:
        """Parse a stored spec; anything malformed is reported as a broken model file."""
        try:
            d = json.loads(text)
            if int(d.get("format", 0)) > SPEC_FORMAT:
                raise ModelFileError(
                    f"{source}: its rnnedge spec has format {d['format']}, this rnnedge reads "
                    f"format ≤ {SPEC_FORMAT}; upgrade rnnedge"
                )
            norm = d.get("normalization")
            prec = d.get("precision")
            contract = d.get("contract")
            spec = cls(
                inputs=[TensorSpec.from_dict(t) for t in d["inputs"]],
                outputs=[TensorSpec.from_dict(t) for t in d["outputs"]],
                data_input=str(d["data_input"]),
                data_output=str(d["data_output"]),
                state_pairs=[StatePair.from_dict(p) for p in d.get("state_pairs", [])],
                batch_first=bool(d.get("batch_first", True)),
                cell=d.get("cell"),
                num_layers=d.get("num_layers"),
                hidden_size=d.get("hidden_size"),
                input_size=d.get("input_size"),
                output_size=d.get("output_size"),
                bidirectional=bool(d.get("bidirectional", False)),
                normalization=Normalization.from_dict(norm) if norm else None,
                contract=DataContract.from_dict(contract) if contract else None,
                producer={str(k): str(v) for k, v in d.get("producer", {}).items()},
                format=int(d.get("format", SPEC_FORMAT)),
                precision=PrecisionRecord.from_dict(prec) if prec else None,
                layout=None if d.get("layout") is None else str(d["layout"]),
            )
        except ModelFileError:
            raise
        except RecursionError as exc:
            raise ModelFileError(
                f"{source}: metadata '{SPEC_KEY}' is nested too deeply to be an rnnedge spec; "
                "re-export the model with rnnedge"
            ) from exc
        except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
            raise ModelFileError(
                f"{source}: metadata '{SPEC_KEY}' is not a valid rnnedge spec "
                f"({exc.__class__.__name__}: {exc}); re-export the model with rnnedge"
            ) from exc
        spec.validate(source)
        return spec

    def validate(self, source: str = "model") -> None:
        """Check that every name the spec refers to exists, so runtimes can trust it."""
        in_names = {t.name for t in self.inputs}
        out_names = {t.name for t in self.outputs}
        problems = []
        if self.data_input not in in_names:
            problems.append(f"data input '{self.data_input}' is not a graph input")
        if self.data_output not in out_names:
            problems.append(f"data output '{self.data_output}' is not a graph output")
        for p in self.state_pairs:
            if p.input not in in_names or p.output not in out_names:
                problems.append(f"state pair {p.input}->{p.output} does not name graph tensors")
        c, n = self.contract, self.normalization
        if (
            c is not None
            and n is not None
            and (
                len(c.features) != len(n.mean)
                or list(c.targets)
                != [c.features[i] for i in n.target_index if 0 <= i < len(c.features)]
            )
        ):
            problems.append(
                f"data contract features {list(c.features)} / targets "
                f"{list(c.targets)} disagree with the normalization's "
                f"{len(n.mean)} features and target columns {list(n.target_index)}"
            )
        if self.cell is not None and self.cell not in CELLS:
            problems.append(f"cell '{self.cell}' is not one of {', '.join(CELLS)}")
        problems += self._axis_problems(in_names)
        if problems:
            raise ModelFileError(f"{source}: inconsistent rnnedge spec: {'; '.join(problems)}")


def _layout_problems(layout: str, rank: int | None) -> list[str]:
    problems = []
    if not (layout.isalpha() and layout.isupper()):
        problems.append(f"layout {layout!r} must be capital letters, one per axis")
    if layout.count("T") != 1 or layout.count("B") > 1:
        problems.append(f"layout {layout!r} needs exactly one T (time) and at most one B (batch)")
    if rank is not None and len(layout) != rank:
        problems.append(f"layout {layout!r} has {len(layout)} axes; the data input has rank {rank}")
    return problems


def dims_to_str(shape: Sequence[Dim]) -> str:
    """Render a shape with symbolic dims for messages: `(batch, seq_len, 1)`."""
    return "(" + ", ".join(str(d) for d in shape) + ")"
