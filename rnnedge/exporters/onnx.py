"""PyTorch → ONNX with dynamic batch and sequence axes, proven at lengths other than the example.

torch 2.13's exporters go wrong silently on recurrent models: the dynamo exporter freezes the
sequence axis of many RNN graphs and bakes Reshape constants for time-major LSTM/GRU; the
TorchScript exporter unrolls Python loops over LSTMCell/GRUCell to the example length while
still declaring the axis dynamic. `onnx.checker` catches none of it. So every export here is
written to a temporary file, run under ONNX Runtime at other batch sizes and lengths against
eager PyTorch, and only renamed into place when it matches.

The data input may be features `(batch, seq_len, features)`, integer token ids or audio
`(batch, seq_len)`, or any layout given as letters (`plan.py`); verification draws inputs the
module accepts (`probe.py`); `streamable=True` lifts a module's own RNN state into graph inputs
and outputs (`lift.py`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import os
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rnnedge import __version__
from rnnedge._optional import require
from rnnedge.errors import ExportError, InputError, RnnEdgeError, UnsupportedModelError
from rnnedge.fileio import atomic_write
from rnnedge.runtime.normalize import Normalizer
from rnnedge.spec import (
    SPEC_KEY,
    DataContract,
    Normalization,
    RnnSpec,
    StatePair,
    TensorSpec,
)
from rnnedge.verify.parity import (
    TOLERANCES,
    ParityReport,
    Tolerance,
)

if TYPE_CHECKING:
    from rnnedge.exporters.plan import Plan

EXPORTERS = ("torchscript", "dynamo")
DEFAULT_OPSET = {"torchscript": 17, "dynamo": 18}


@dataclass
class ExportResult:
    """What was written, and the evidence that it is right at other shapes."""

    path: Path
    spec: RnnSpec
    exporter: str
    opset: int
    parity: ParityReport | None
    seconds: float
    #: the precision gate's result when a reduced precision was asked for
    precision: Any = None
    #: the module whose signature the graph has (the lifted wrapper when state was lifted)
    graph_module: Any = None
    #: state pairs added by `streamable=True` (the module's own RNN state, lifted)
    lifted: list[StatePair] = field(default_factory=list)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' warnings and log lines; rnnedge reports what matters itself."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
                yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _as_tuple(example_input: Any) -> tuple[Any, ...]:
    return tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)


def _torch_export(plan: Plan, path: Path, exporter: str, opset: int) -> None:
    from rnnedge.exporters.probe import BATCH, SEQ

    torch = require("torch", "rnnedge export")
    common = dict(input_names=plan.input_names, output_names=plan.output_names, opset_version=opset)
    with _quiet():
        if exporter == "torchscript":
            torch.onnx.export(
                plan.module,
                plan.args,
                str(path),
                dynamo=False,
                dynamic_axes={**plan.input_axes, **plan.output_axes},
                **common,
            )
        else:
            dims = {BATCH: torch.export.Dim(BATCH, min=1), SEQ: torch.export.Dim(SEQ, min=1)}
            shapes: Any = tuple(
                {i: dims.get(n, torch.export.Dim.AUTO) for i, n in plan.input_axes[name].items()}
                or None
                for name in plan.input_names
            )
            params = inspect.signature(plan.module.forward).parameters.values()
            if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
                shapes = {"args": shapes}  # torch.export matches shapes to the signature
            torch.onnx.export(
                plan.module,
                plan.args,
                str(path),
                dynamo=True,
                dynamic_shapes=shapes,
                external_data=False,
                report=False,
                verbose=False,
                **common,
            )


def _finalize(plan: Plan, path: Path, exporter: str, opset: int) -> RnnSpec:
    """Record the spec in the file's metadata; declare output axes that eager showed dynamic.

    The dynamo exporter can annotate an output's seq dim with the example's length although the
    graph computes any length; the annotation is repaired here and the numbers are then checked
    by the verification that follows, so a graph that really is fixed cannot pass. It writes
    the same stale length into the `value_info` of intermediate tensors, from which ONNX
    Runtime re-derives the output's shape and then refuses bound outputs of other lengths;
    those entries are only hints (ONNX Runtime infers shapes itself), so they are dropped.
    """
    onnx = require("onnx", "rnnedge export")
    torch = require("torch", "rnnedge export")
    model = onnx.load(str(path))
    del model.graph.value_info[:]
    for out in model.graph.output:
        axes = plan.output_axes.get(out.name, {})
        dims = out.type.tensor_type.shape.dim
        for i, name in axes.items():
            if i < len(dims):
                dims[i].ClearField("dim_value")
                dims[i].dim_param = name
    spec = plan.spec
    spec.outputs = [
        TensorSpec(
            o.name,
            _dtype_name(onnx, o.type.tensor_type.elem_type),
            tuple(
                d.dim_param if d.dim_param else int(d.dim_value)
                for d in o.type.tensor_type.shape.dim
            ),
        )
        for o in model.graph.output
    ]
    spec.producer = {
        "rnnedge": __version__,
        "torch": torch.__version__.split("+")[0],
        "onnx": onnx.__version__,
        "exporter": exporter,
        "opset": str(opset),
    }
    spec.validate(str(path))
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = SPEC_KEY, spec.to_json()
    model.producer_name, model.producer_version = "rnnedge", __version__
    onnx.save(model, str(path))
    return spec


def _dtype_name(onnx: Any, elem_type: int) -> str:
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).name
    except (KeyError, TypeError, ValueError):
        return "float32"


def _verify(
    plan: Plan,
    spec: RnnSpec,
    tmp: Path,
    exporter: str,
    shapes: Sequence[tuple[int, int]] | None,
    tolerance: Tolerance,
) -> ParityReport:
    from rnnedge.exporters.proof import advice, compare, declared_frozen, grid_for
    from rnnedge.modeling.models import find_cell_loops

    grid = grid_for(plan, spec, shapes)
    frozen = declared_frozen(spec, tmp)
    report = compare(plan, tmp, grid, tolerance)
    if report.ok:
        return report
    x = plan.args[0]
    example_b = 1 if spec.batch_axis is None else int(x.shape[spec.batch_axis])
    example_t = int(x.shape[spec.seq_axis])
    bad_lengths = sorted({c.seq_len for c in report.failures})
    cause = (
        "; ".join(frozen)
        if frozen
        else (
            f"the graph is specialized to the example seq_len={example_t}"
            if example_t not in bad_lengths
            else "the graph computes different values than eager PyTorch"
        )
    )
    what_to_do = advice(exporter, find_cell_loops(plan.module), spec.batch_first)
    raise ExportError(
        f"{exporter} export is wrong at shapes other than the example "
        f"(batch={example_b}, seq_len={example_t}): {cause}; {what_to_do}; no file was written; "
        f"first failure: {report.describe_failures(1)}"
    )


def export(
    module: Any,
    example_input: Any,
    path: str | os.PathLike[str],
    *,
    exporter: str = "torchscript",
    opset: int | None = None,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    batch_first: bool = True,
    layout: str | None = None,
    state_names: Sequence[tuple[str, str] | tuple[str, str, int | None]] = (),
    state_batch_axis: Mapping[str, int | None] | None = None,
    streamable: bool = False,
    normalization: Normalization | None = None,
    contract: DataContract | None = None,
    verify: bool = True,
    shapes: Sequence[tuple[int, int]] | None = None,
    tolerance: Tolerance = TOLERANCES["fp32"],
    precision: str = "fp32",
    validation: Any = None,
    **gate: Any,
) -> ExportResult:
    """Export a recurrent PyTorch module to ONNX and prove the file at other shapes.

    Args:
        module: an rnnedge `SequenceModel` (state becomes `h0`/`c0` → `hn`/`cn`) or any
            `nn.Module` whose first input is a sequence.
        example_input: a tensor (or tuple of tensors) to trace with. The first is the data
            input: float `(batch, seq_len, features)`, integer token ids or audio samples
            `(batch, seq_len)`, or any layout named by `layout`; token ids keep their dtype
            and must be valid for the module's `nn.Embedding`.
        path: where the `.onnx` file goes; it appears only once verification passed.
        exporter: "torchscript" or "dynamo", always passed to torch explicitly.
        input_names: graph input names; by default the names of `forward()`'s parameters.
        output_names: graph output names; by default `y` for the first, the state output
            names for the outputs shaped like their state inputs, `output_<i>` for the rest.
        batch_first: whether a user module's rank-2/3 input has batch before time (ignored for
            SequenceModel); `layout` overrides it.
        layout: the data input's axes, one letter each: `B` batch, `T` time, any other letter
            a fixed axis, e.g. "BT", "TB", "BTF", "BFT"; stored in the spec.
        state_names: for user modules, the state each call takes and returns: `(input,
            output)` pairs, or `(input, output, batch_axis)` when the state is not in PyTorch's
            `(layers, batch, hidden)` layout (None for a state without a batch axis).
        state_batch_axis: the same batch axes as a mapping `{input: axis}`.
        streamable: lift the state of the module's own `nn.RNN`/`nn.LSTM`/`nn.GRU` (called
            once over the whole input, e.g. `y, _ = self.gru(x)`) into graph inputs and
            outputs (`h0`→`hn`, `c0`→`cn`), proven equal to the module before export, so the
            file streams; without it the graph keeps exactly the module's own signature.
        normalization: the statistics the model was trained with; checked before anything is
            written, so a file that could not be loaded is never produced.
        contract: names of the feature and target columns (from the checkpoint), stored in the
            spec so named input is matched by name.
        verify: run the file at other shapes against eager PyTorch (strongly advised).
        shapes: (batch, seq_len) pairs to verify at; by default 1, shorter, the example,
            and 2×+3 longer, at batch 1 and a batch other than the example's.
        precision: "fp32", or "int8"/"bf16"/"auto" to write the verified file through the
            precision gate (`rnnedge.exporters.precision.quantize`), judged on `validation`
            ((x, y) in data units, or a `Validation`); `gate` passes `metric`, `margin`, ….

    Raises:
        InputError: the example, names or axes do not fit the module (e.g. float values fed
            to an `nn.Embedding`, token ids out of its range, a state name it does not take).
        UnsupportedModelError: the model cannot be exported correctly (e.g. proj_size > 0), or
            `streamable=True` cannot be proven (the message says what to change).
        ExportError: torch failed, or the file is wrong at shapes other than the example.
        PrecisionRefusedError: the reduced precision forecasts worse than the margin allows.
    """
    torch = require("torch", "rnnedge export")
    from rnnedge.exporters.plan import plan_module, plan_sequence_model
    from rnnedge.modeling.models import SequenceModel, find_unsupported

    if precision != "fp32":
        from rnnedge.exporters.precision import check_precision

        check_precision(precision)
    if exporter not in EXPORTERS:
        raise InputError(f"exporter '{exporter}' is not known; expected one of {EXPORTERS}")
    if not isinstance(module, torch.nn.Module):
        raise InputError(f"expected a torch.nn.Module to export, got {type(module).__name__}")
    reason = find_unsupported(module)
    if reason:
        raise UnsupportedModelError(f"cannot export: {reason}")
    args = _as_tuple(example_input)
    if not args or not all(isinstance(a, torch.Tensor) for a in args):
        raise InputError("example_input must be a tensor or a tuple of tensors")
    opset = opset or DEFAULT_OPSET[exporter]
    module.eval()
    if isinstance(module, SequenceModel):
        plan = plan_sequence_model(module, args[0], normalization)
    else:
        plan = plan_module(
            module,
            args,
            input_names=input_names,
            output_names=output_names,
            batch_first=batch_first,
            layout=layout,
            state_names=state_names,
            state_batch_axis=state_batch_axis,
            streamable=streamable,
            normalization=normalization,
        )
    _check_data_side(plan.spec, normalization, contract)
    plan.spec.contract = contract
    start = time.perf_counter()
    done: list[tuple[RnnSpec, ParityReport | None]] = []
    done_gate: list[Any] = []

    def write(tmp: Path) -> None:  # renamed into place only when this returns
        try:
            _torch_export(plan, tmp, exporter, opset)
        except RnnEdgeError:
            raise
        except Exception as exc:
            summary = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
            other = "torchscript" if exporter == "dynamo" else "dynamo"
            raise ExportError(
                f"torch.onnx.export ({exporter}) failed: {summary[:300]}; try exporter='{other}'"
            ) from exc
        spec = _finalize(plan, tmp, exporter, opset)
        done.append(
            (spec, _verify(plan, spec, tmp, exporter, shapes, tolerance) if verify else None)
        )
        if precision != "fp32":  # the verified fp32 file, replaced by what passes the gate
            from rnnedge.exporters.precision import quantize

            done_gate.append(quantize(tmp, precision, validation, out=tmp, label=str(path), **gate))

    path = atomic_write(path, write)
    spec, report = done[0]
    gated = done_gate[0] if done_gate else None
    if gated is not None:
        gated.moved_to(path)
        spec = dataclasses.replace(spec, precision=gated.record)
    return ExportResult(
        path,
        spec,
        exporter,
        opset,
        report,
        time.perf_counter() - start,
        gated,
        plan.module,
        list(plan.lifted),
    )


def _check_data_side(
    spec: RnnSpec, normalization: Normalization | None, contract: DataContract | None
) -> None:
    """Statistics and column names must fit the model before a file is written."""
    if normalization is not None:
        norm = Normalizer.from_spec(normalization)  # finite mean, std > 0, targets in range
        x = spec.input(spec.data_input)
        if not x.dtype.startswith(("float", "bfloat")):
            raise InputError(
                f"normalization was given for '{x.name}', which holds {x.dtype} "
                "values (token ids are not normalized); drop normalization"
            )
        feature_axis = next((i for i, c in enumerate(spec.data_layout) if c not in "BT"), None)
        features = 1 if feature_axis is None else x.shape[feature_axis]
        if isinstance(features, int) and norm.n_features != features:
            raise InputError(
                f"normalization has {norm.n_features} features; the model takes {features}"
            )
        if spec.output_size is not None and len(norm.target_index) != spec.output_size:
            raise InputError(
                f"normalization names {len(norm.target_index)} target columns; the "
                f"model forecasts {spec.output_size}"
            )
    if contract is not None:
        # the graph's outputs are known only after export: stand in for the data output
        outputs = [TensorSpec(spec.data_output, "float32", ())]
        probe = RnnSpec(
            spec.inputs,
            outputs,
            spec.data_input,
            spec.data_output,
            normalization=normalization,
            contract=contract,
        )
        try:
            probe.validate("the data contract")
        except RnnEdgeError as exc:
            raise InputError(str(exc)) from None


def example_for(spec_batch_first: bool, input_size: int, batch: int = 2, seq_len: int = 16) -> Any:
    """A random example sequence in the model's layout."""
    torch = require("torch", "rnnedge export")
    shape = (batch, seq_len, input_size) if spec_batch_first else (seq_len, batch, input_size)
    return torch.from_numpy(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
