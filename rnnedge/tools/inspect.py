"""What `rnnedge inspect` shows: tensors, the stored or detected spec, and the RNN nodes.

Listing nodes needs the `onnx` package (ONNX Runtime cannot list a graph's nodes), so this
lives on the tools side; the runtime's spec detection in `rnnedge.runtime.foreign` does not.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

from rnnedge._optional import is_available, require
from rnnedge.errors import ModelFileError, RuntimeUnavailableError
from rnnedge.runtime.backends.ort import read_spec, session_tensor_specs
from rnnedge.runtime.foreign import RNN_OP_TYPES, check_stored, extra_inputs, survey
from rnnedge.runtime.layouts import output_time_axis
from rnnedge.spec import RnnSpec, TensorSpec

NO_ONNX_NOTE = "onnx not installed: ops not listed (pip install 'rnnedge[onnx]')"


def rnn_ops(path: str | os.PathLike[str]) -> list[str]:
    """`"LSTM(name, hidden_size=4, direction=forward)"` for each RNN/LSTM/GRU node in a file.

    ONNX Runtime cannot list a graph's nodes, so this reads the file with `onnx`; without it
    installed it returns `[]` (and `describe` says so) rather than failing `inspect`.

    Raises:
        ModelFileError: The file cannot be read as ONNX.
    """
    try:
        onnx = require("onnx", "rnnedge inspect")
    except RuntimeUnavailableError:
        return []
    try:  # weights are not needed to read node attributes
        model = onnx.load(os.fspath(path), load_external_data=False)
    except Exception as exc:  # DecodeError, OSError, ...
        raise ModelFileError(f"{path}: not a readable ONNX model ({exc})".splitlines()[0]) from exc

    def walk(graph: Any) -> list[str]:
        found = []
        for i, node in enumerate(graph.node):
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if node.op_type in RNN_OP_TYPES:
                direction = attrs.get("direction", b"forward").decode()
                found.append(
                    f"{node.op_type}({node.name or f'{node.op_type}_{i}'}, "
                    f"hidden_size={attrs.get('hidden_size')}, direction={direction})"
                )
            for value in attrs.values():  # Loop/Scan/If bodies
                for sub in value if isinstance(value, list) else [value]:
                    if isinstance(sub, onnx.GraphProto):
                        found += walk(sub)
        return found

    return walk(model.graph)


def _tensor_info(t: TensorSpec) -> dict[str, Any]:
    dynamic = [i for i, d in enumerate(t.shape) if isinstance(d, str)]
    return {"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "dynamic_axes": dynamic}


def describe(
    session: Any, *, ops: list[str] | None = None, source: str = "model", **detect: Any
) -> dict[str, Any]:
    """Everything `rnnedge inspect` shows about a model, as plain data (rendered elsewhere).

    A detection failure (say an ambiguous pairing) lands in `spec_error` instead of being
    raised, and what detection found before it stopped is kept in `detection`, since
    inspecting a model is how a user finds out which `--state` or `--data-input` to pass.

    Args:
        session: An onnxruntime InferenceSession.
        ops: RNN node descriptions from `rnn_ops(path)`; None when not looked up.
        source: Model name for messages.
        **detect: `rnnedge.load`'s overrides (`state_names`, `data_input`, `layout`, ...),
            used for foreign models only.

    Returns:
        `inputs`/`outputs` (name, dtype, shape, dynamic_axes), `spec_origin` ("stored",
        "detected" or None), `spec` (RnnSpec fields but inputs/outputs, plus `batch_axis`,
        `seq_axis`, `data_layout`, `output_time_axis`, `streamable`; None when incomplete),
        `spec_error`, `state_pairs`, `extra_inputs` (tensor dicts), `detection` (for a
        foreign model: `data_input`, `data_candidates`, `data_output`, `same_shape`,
        `layout`, `layout_reason`, `advice`; None for a stored spec), `ops` and `ops_note`.
    """
    spec: RnnSpec | None = read_spec(session, source)
    origin, error, found = ("stored" if spec else None), None, None
    if spec is not None:
        try:
            check_stored(
                spec,
                session_tensor_specs(session.get_inputs()),
                session_tensor_specs(session.get_outputs()),
                source,
            )
        except ModelFileError as exc:  # shown, not raised: inspect is how one finds out
            error = str(exc)
    else:
        inputs = session_tensor_specs(session.get_inputs())
        outputs = session_tensor_specs(session.get_outputs())
        spec, found = survey(inputs, outputs, source=source, **detect)
        origin, error = ("detected" if spec is not None else None), found.error
    info = None
    if spec is not None:
        info = {k: v for k, v in asdict(spec).items() if k not in ("inputs", "outputs")}
        info.update(
            batch_axis=spec.batch_axis,
            seq_axis=spec.seq_axis,
            data_layout=spec.data_layout,
            output_time_axis=output_time_axis(spec),
            streamable=spec.streamable,
        )
    note = None if ops is not None else "ops not listed (pass ops=rnn_ops(path))"
    if not ops and not is_available("onnx"):
        note = NO_ONNX_NOTE
    pairs = spec.state_pairs if spec is not None else found.state_pairs if found else []
    detection = None
    if found is not None:
        detection = {
            "data_input": found.data_input,
            "data_candidates": found.data_candidates,
            "data_output": found.data_output,
            "same_shape": [list(p) for p in found.same_shape],
            "layout": found.layout,
            "layout_reason": found.layout_reason,
            "advice": found.advice(),
        }
    return {
        "source": source,
        "inputs": [_tensor_info(t) for t in session_tensor_specs(session.get_inputs())],
        "outputs": [_tensor_info(t) for t in session_tensor_specs(session.get_outputs())],
        "spec_origin": origin,
        "spec": info,
        "spec_error": error,
        "state_pairs": [asdict(p) for p in pairs],
        "extra_inputs": [_tensor_info(t) for t in extra_inputs(spec)] if spec else [],
        "detection": detection,
        "ops": list(ops) if ops is not None else None,
        "ops_note": note,
    }


def inspect_model(path: str | os.PathLike[str], **detect: Any) -> dict[str, Any]:
    """`describe` of the file at `path`, with its RNN ops listed when onnx is installed;
    `detect` takes `rnnedge.load`'s overrides (`state_names`, `data_input`, `layout`, ...).

    Raises:
        ModelFileError: The file is missing or not ONNX.
    """
    from rnnedge.runtime.backends.ort import open_session

    return describe(open_session(path), ops=rnn_ops(path), source=os.fspath(path), **detect)
