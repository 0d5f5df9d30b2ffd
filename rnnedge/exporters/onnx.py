"""PyTorch → ONNX with dynamic batch and sequence axes, proven at lengths other than the example.

torch 2.13's exporters go wrong silently on recurrent models: the dynamo exporter freezes the
sequence axis of many RNN graphs and bakes Reshape constants for time-major LSTM/GRU; the
TorchScript exporter unrolls Python loops over LSTMCell/GRUCell to the example length while
still declaring the axis dynamic. `onnx.checker` catches none of it. So every export here is
written to a temporary file, run under ONNX Runtime at other batch sizes and lengths against
eager PyTorch, and only renamed into place when it matches.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from rnnedge.verify.parity import TOLERANCES, ParityReport, Tolerance, check_parity, default_grid

EXPORTERS = ("torchscript", "dynamo")
DEFAULT_OPSET = {"torchscript": 17, "dynamo": 18}
BATCH, SEQ = "batch", "seq_len"


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


@dataclass
class _Plan:
    """The module to trace, its example args, names and dynamic axes, decided before export."""

    module: Any
    args: tuple[Any, ...]
    input_names: list[str]
    output_names: list[str]
    input_axes: dict[str, dict[int, str]]
    output_axes: dict[str, dict[int, str]]
    spec: RnnSpec


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


def _tensor_spec(name: str, t: Any, axes: dict[int, str]) -> TensorSpec:
    dtype = str(t.dtype).replace("torch.", "")
    return TensorSpec(name, dtype, tuple(axes.get(i, int(d)) for i, d in enumerate(t.shape)))


def _resize(t: Any, axes: dict[int, str], batch: int, seq_len: int) -> Any:
    """A random tensor like `t` with its batch/seq axes resized, for probing output axes."""
    torch = require("torch", "rnnedge export")
    shape = [batch if axes.get(i) == BATCH else seq_len if axes.get(i) == SEQ else d
             for i, d in enumerate(t.shape)]
    return torch.randn(shape, dtype=t.dtype)


def _probe_output_axes(
    module: Any, args: tuple[Any, ...], input_axes: list[dict[int, str]]
) -> list[dict[int, str]]:
    """Which output dims follow the input's batch and seq axes, found by running twice."""
    torch = require("torch", "rnnedge export")
    x_axes = input_axes[0]
    b0 = next(int(args[0].shape[i]) for i, n in x_axes.items() if n == BATCH)
    t0 = next((int(args[0].shape[i]) for i, n in x_axes.items() if n == SEQ), 1)
    b1, t1 = b0 + 3, t0 + 5
    with torch.inference_mode():
        out0 = _as_tuple(module(*args))
        resized = tuple(_resize(a, ax, b1, t1) for a, ax in zip(args, input_axes, strict=True))
        out1 = _as_tuple(module(*resized))
    axes_list = []
    for o0, o1 in zip(out0, out1, strict=True):
        axes: dict[int, str] = {}
        for i, (d0, d1) in enumerate(zip(o0.shape, o1.shape, strict=True)):
            if d0 == d1:
                continue
            if (d0, d1) == (b0, b1):
                axes[i] = BATCH
            elif (d0, d1) == (t0, t1):
                axes[i] = SEQ
            else:
                axes[i] = f"dim{i}"
        axes_list.append(axes)
    return axes_list


def _plan_sequence_model(model: Any, x: Any, normalization: Normalization | None) -> _Plan:
    from rnnedge.modeling.models import stateful_wrapper

    cfg = model.config
    wrapper = stateful_wrapper(model).eval()
    state = model.initial_state(x)
    state_t = state if isinstance(state, tuple) else (state,)
    n_state = len(state_t)
    in_names = ["x", "h0", "c0"][: 1 + n_state]
    out_names = ["y", "hn", "cn"][: 1 + n_state]
    x_axes = {0: BATCH, 1: SEQ} if cfg.batch_first else {0: SEQ, 1: BATCH}
    in_axes = {"x": x_axes, **{n: {1: BATCH} for n in in_names[1:]}}
    out_axes = {"y": dict(x_axes), **{n: {1: BATCH} for n in out_names[1:]}}
    args = (x, *state_t)
    spec = RnnSpec(
        inputs=[_tensor_spec(n, a, in_axes[n]) for n, a in zip(in_names, args, strict=True)],
        outputs=[],
        data_input="x",
        data_output="y",
        state_pairs=[StatePair(i, o, 1) for i, o in zip(in_names[1:], out_names[1:],
                                                         strict=True)],
        batch_first=cfg.batch_first,
        cell=cfg.cell,
        num_layers=cfg.num_layers,
        hidden_size=cfg.hidden_size,
        input_size=cfg.input_size,
        output_size=cfg.output_size,
        bidirectional=cfg.bidirectional,
        normalization=normalization,
    )
    return _Plan(wrapper, args, in_names, out_names, in_axes, out_axes, spec)


def _plan_generic(
    module: Any,
    args: tuple[Any, ...],
    input_names: Sequence[str] | None,
    output_names: Sequence[str] | None,
    batch_first: bool,
    state_names: Sequence[tuple[str, str]],
    normalization: Normalization | None,
) -> _Plan:
    in_names = list(input_names or (["x"] if len(args) == 1 else
                                     [f"input_{i}" for i in range(len(args))]))
    if len(in_names) != len(args):
        raise InputError(f"{len(in_names)} input names given for {len(args)} example inputs")
    state_in = {i: o for i, o in state_names}
    x_axes = {0: BATCH, 1: SEQ} if batch_first else {0: SEQ, 1: BATCH}
    axes_list = [x_axes] + [{1: BATCH} if n in state_in else {} for n in in_names[1:]]
    out_axes_list = _probe_output_axes(module, args, axes_list)
    out_names = list(output_names or (["y"] + [f"output_{i}" for i in
                                               range(1, len(out_axes_list))]))
    if len(out_names) != len(out_axes_list):
        raise InputError(f"{len(out_names)} output names given; the module returns "
                         f"{len(out_axes_list)} outputs")
    unknown = [f"{i}->{o}" for i, o in state_names if i not in in_names or o not in out_names]
    if unknown:
        raise InputError(f"state pairs {unknown} do not name inputs {in_names} and outputs "
                         f"{out_names}")
    in_axes = dict(zip(in_names, axes_list, strict=True))
    spec = RnnSpec(
        inputs=[_tensor_spec(n, a, in_axes[n]) for n, a in zip(in_names, args, strict=True)],
        outputs=[],
        data_input=in_names[0],
        data_output=out_names[0],
        state_pairs=[StatePair(i, o, 1) for i, o in state_names],
        batch_first=batch_first,
        normalization=normalization,
    )
    return _Plan(module.eval(), args, in_names, out_names, in_axes,
                 dict(zip(out_names, out_axes_list, strict=True)), spec)


def _torch_export(plan: _Plan, path: Path, exporter: str, opset: int) -> None:
    torch = require("torch", "rnnedge export")
    common = dict(input_names=plan.input_names, output_names=plan.output_names,
                  opset_version=opset)
    with _quiet():
        if exporter == "torchscript":
            torch.onnx.export(plan.module, plan.args, str(path), dynamo=False,
                              dynamic_axes={**plan.input_axes, **plan.output_axes}, **common)
        else:
            dims = {BATCH: torch.export.Dim(BATCH, min=1), SEQ: torch.export.Dim(SEQ, min=1)}
            shapes = tuple(
                {i: dims.get(n, torch.export.Dim.AUTO) for i, n in plan.input_axes[name].items()}
                or None
                for name in plan.input_names
            )
            torch.onnx.export(plan.module, plan.args, str(path), dynamo=True,
                              dynamic_shapes=shapes, external_data=False, report=False,
                              verbose=False, **common)


def _finalize(plan: _Plan, path: Path, exporter: str, opset: int) -> RnnSpec:
    """Record the spec in the file's metadata; declare output axes that eager showed dynamic.

    The dynamo exporter can annotate an output's seq dim with the example's length although the
    graph computes any length; the annotation is repaired here and the numbers are then checked
    by the verification that follows, so a graph that really is fixed cannot pass.
    """
    onnx = require("onnx", "rnnedge export")
    torch = require("torch", "rnnedge export")
    model = onnx.load(str(path))
    for out in model.graph.output:
        axes = plan.output_axes.get(out.name, {})
        dims = out.type.tensor_type.shape.dim
        for i, name in axes.items():
            if i < len(dims):
                dims[i].ClearField("dim_value")
                dims[i].dim_param = name
    spec = plan.spec
    spec.outputs = [
        TensorSpec(o.name, "float32", tuple(
            d.dim_param if d.dim_param else int(d.dim_value)
            for d in o.type.tensor_type.shape.dim))
        for o in model.graph.output
    ]
    spec.producer = {"rnnedge": __version__, "torch": torch.__version__.split("+")[0],
                     "onnx": onnx.__version__, "exporter": exporter, "opset": str(opset)}
    spec.validate(str(path))
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = SPEC_KEY, spec.to_json()
    model.producer_name, model.producer_version = "rnnedge", __version__
    onnx.save(model, str(path))
    return spec


def _declared_frozen(spec: RnnSpec, path: Path) -> list[str]:
    """Axes of the data input that the graph declares as fixed numbers."""
    from rnnedge.runtime.backends.ort import open_session, session_tensor_specs

    session = open_session(path)
    declared = {t.name: t for t in session_tensor_specs(session.get_inputs())}
    x = declared.get(spec.data_input)
    found = []
    if x is not None:
        for axis, label in ((spec.seq_axis, SEQ), (spec.batch_axis, BATCH)):
            if axis < len(x.shape) and isinstance(x.shape[axis], int):
                found.append(f"{label} axis of '{x.name}' frozen at {x.shape[axis]}")
    return found


def _advice(exporter: str, cell_loops: list[str], batch_first: bool) -> str:
    if cell_loops:
        return (f"the model loops over {', '.join(cell_loops)} in Python, which the exporter "
                "unrolls to the example length; use nn.RNN/nn.LSTM/nn.GRU over the whole "
                "sequence instead")
    if exporter == "dynamo":
        extra = "" if batch_first else " (time-major graphs get Reshape constants baked in)"
        return f"re-export with exporter='torchscript'{extra}"
    return "re-export with exporter='dynamo' or simplify the model's control flow"


def _verify(plan: _Plan, spec: RnnSpec, tmp: Path, exporter: str, shapes: Sequence[tuple[int,
            int]] | None, tolerance: Tolerance) -> ParityReport:
    from rnnedge.modeling.models import find_cell_loops
    from rnnedge.modeling.torch_runner import TorchRunner
    from rnnedge.runtime.backends.ort import OrtCpuRunner

    x = plan.args[0]
    example_b = int(x.shape[spec.batch_axis])
    example_t = int(x.shape[spec.seq_axis])
    grid = list(shapes) if shapes else default_grid(example_b, example_t)
    frozen = _declared_frozen(spec, tmp)
    with TorchRunner(plan.module, plan.input_names, plan.output_names) as ref, \
            OrtCpuRunner(tmp) as ort_runner:
        report = check_parity(ref, [ort_runner], spec, grid, tolerance=tolerance)
    if report.ok:
        return report
    bad_lengths = sorted({c.seq_len for c in report.failures})
    cause = "; ".join(frozen) if frozen else (
        f"the graph is specialized to the example seq_len={example_t}" if example_t not in
        bad_lengths else "the graph computes different values than eager PyTorch")
    advice = _advice(exporter, find_cell_loops(plan.module), spec.batch_first)
    raise ExportError(
        f"{exporter} export is wrong at shapes other than the example "
        f"(batch={example_b}, seq_len={example_t}): {cause}; {advice}; no file was written; "
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
    state_names: Sequence[tuple[str, str]] = (),
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
        example_input: a tensor (or tuple of tensors) to trace with.
        path: where the `.onnx` file goes; it appears only once verification passed.
        exporter: "torchscript" or "dynamo", always passed to torch explicitly.
        batch_first: layout of a user module's first input (ignored for SequenceModel).
        state_names: for user modules, (input, output) names that carry recurrent state.
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
        UnsupportedModelError: the model cannot be exported correctly (e.g. proj_size > 0).
        ExportError: torch failed, or the file is wrong at shapes other than the example.
        PrecisionRefusedError: the reduced precision forecasts worse than the margin allows.
    """
    torch = require("torch", "rnnedge export")
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
    if args[0].dim() != 3:
        raise InputError(f"the example sequence must have rank 3 (batch, seq_len, features), "
                         f"got shape {tuple(args[0].shape)}")
    opset = opset or DEFAULT_OPSET[exporter]
    module.eval()
    if isinstance(module, SequenceModel):
        plan = _plan_sequence_model(module, args[0], normalization)
    else:
        plan = _plan_generic(module, args, input_names, output_names, batch_first,
                             state_names, normalization)
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
            raise ExportError(f"torch.onnx.export ({exporter}) failed: {summary[:300]}; "
                              f"try exporter='{other}'") from exc
        spec = _finalize(plan, tmp, exporter, opset)
        done.append((spec, _verify(plan, spec, tmp, exporter, shapes, tolerance)
                     if verify else None))
        if precision != "fp32":  # the verified fp32 file, replaced by what passes the gate
            from rnnedge.exporters.precision import quantize

            done_gate.append(quantize(tmp, precision, validation, out=tmp, **gate))

    path = atomic_write(path, write)
    spec, report = done[0]
    gated = done_gate[0] if done_gate else None
    if gated is not None:
        gated.moved_to(path)
        spec = dataclasses.replace(spec, precision=gated.record)
    return ExportResult(path, spec, exporter, opset, report, time.perf_counter() - start,
                        gated)


def _check_data_side(spec: RnnSpec, normalization: Normalization | None,
                     contract: DataContract | None) -> None:
    """Statistics and column names must fit the model before a file is written."""
    if normalization is not None:
        norm = Normalizer.from_spec(normalization)  # finite mean, std > 0, targets in range
        features = spec.input(spec.data_input).shape[-1]
        if isinstance(features, int) and norm.n_features != features:
            raise InputError(f"normalization has {norm.n_features} features; the model takes "
                             f"{features}")
        if spec.output_size is not None and len(norm.target_index) != spec.output_size:
            raise InputError(f"normalization names {len(norm.target_index)} target columns; the "
                             f"model forecasts {spec.output_size}")
    if contract is not None:
        # the graph's outputs are known only after export: stand in for the data output
        outputs = [TensorSpec(spec.data_output, "float32", ())]
        probe = RnnSpec(spec.inputs, outputs, spec.data_input, spec.data_output,
                        normalization=normalization, contract=contract)
        try:
            probe.validate("the data contract")
        except RnnEdgeError as exc:
            raise InputError(str(exc)) from None


def example_for(spec_batch_first: bool, input_size: int, batch: int = 2,
                seq_len: int = 16) -> Any:
    """A random example sequence in the model's layout."""
    torch = require("torch", "rnnedge export")
    shape = (batch, seq_len, input_size) if spec_batch_first else (seq_len, batch, input_size)
    return torch.from_numpy(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
