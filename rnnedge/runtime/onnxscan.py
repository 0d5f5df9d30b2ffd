"""A few facts read straight from an ONNX file's protobuf, without the `onnx` package.

The runtime layer ships with numpy + onnxruntime only, yet two decisions must be made before
any session exists: ONNX Runtime 1.32 crashes the process (SIGSEGV, nothing to catch) when it
builds a session for an fp16 LSTM/GRU file at its default optimization level, so whether a file
holds float16 tensors has to be known first; and OpenVINO keeps none of the file's
`metadata_props`, so its runner reads the rnnedge spec from the file itself. Both need only the
top of the protobuf: the file is memory-mapped and weights are skipped by their length, never
decoded.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator, Mapping
from typing import Any

from rnnedge.errors import ModelFileError
from rnnedge.spec import SPEC_KEY, RnnSpec

#: TensorProto.DataType of IEEE half floats (10) and bfloat16 (16)
FLOAT16, BFLOAT16 = 10, 16

# field numbers of onnx.proto3 that are read here
_MODEL_GRAPH, _MODEL_METADATA = 7, 14
_GRAPH_INITIALIZER, _GRAPH_INPUT, _GRAPH_OUTPUT = 5, 11, 12
_TENSOR_DATA_TYPE = 2
_VALUEINFO_TYPE, _TYPE_TENSOR, _TENSORTYPE_ELEM = 2, 1, 1
_ENTRY_KEY, _ENTRY_VALUE = 1, 2

Span = tuple[int, int]


class _Malformed(ValueError):
    """The bytes are not a protobuf message (a truncated or foreign file)."""


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= end or shift > 63:
            raise _Malformed("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(buf: memoryview, span: Span) -> Iterator[tuple[int, int | Span]]:
    """(field number, varint value or (start, end) of a length-delimited value) in order."""
    pos, end = span
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            yield number, value
        elif wire == 2:
            size, pos = _varint(buf, pos, end)
            if pos + size > end:
                raise _Malformed("length past the end of the message")
            yield number, (pos, pos + size)
            pos += size
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise _Malformed(f"wire type {wire}")
    if pos != end:
        raise _Malformed("field runs past the end of the message")


def _sub(buf: memoryview, span: Span, number: int) -> Iterator[Span]:
    for n, value in _fields(buf, span):
        if n == number and isinstance(value, tuple):
            yield value


def _varint_field(buf: memoryview, span: Span, number: int) -> int | None:
    for n, value in _fields(buf, span):
        if n == number and isinstance(value, int):
            return value
    return None


def _elem_type(buf: memoryview, value_info: Span) -> int | None:
    for type_span in _sub(buf, value_info, _VALUEINFO_TYPE):
        for tensor_span in _sub(buf, type_span, _TYPE_TENSOR):
            return _varint_field(buf, tensor_span, _TENSORTYPE_ELEM)
    return None


Source = str | os.PathLike[str] | bytes


class _Mapped:
    """The model's bytes as a memoryview: a file is memory-mapped (weights are never read)."""

    def __init__(self, source: Source) -> None:
        self._file = self._map = None
        if isinstance(source, bytes):
            self.view = memoryview(source)
            return
        self._file = open(source, "rb")  # noqa: SIM115 - closed in __exit__
        size = os.fstat(self._file.fileno()).st_size
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        self.view = memoryview(self._map) if self._map is not None else memoryview(b"")

    def __enter__(self) -> _Mapped:
        return self

    def __exit__(self, *exc: object) -> None:
        self.view.release()
        if self._map is not None:
            self._map.close()
        if self._file is not None:
            self._file.close()


def metadata(path: Source) -> dict[str, str]:
    """The model's `metadata_props` as a dict; {} for a file that is not an ONNX model.

    Raises:
        OSError: the file cannot be opened.
    """
    out: dict[str, str] = {}
    with _Mapped(path) as m:
        buf = m.view
        try:
            for entry in _sub(buf, (0, len(buf)), _MODEL_METADATA):
                key = value = ""
                for n, v in _fields(buf, entry):
                    if isinstance(v, tuple) and n in (_ENTRY_KEY, _ENTRY_VALUE):
                        text = bytes(buf[v[0] : v[1]]).decode("utf-8", errors="replace")
                        key, value = (text, value) if n == _ENTRY_KEY else (key, text)
                out[key] = value
        except _Malformed:
            return {}
    return out


def reduced_float_types(path: Source) -> set[int]:
    """Which of FLOAT16/BFLOAT16 the graph's inputs, outputs or initializers use (empty: none).

    A file that cannot be parsed gives an empty set: the session that follows reports it.

    Raises:
        OSError: the file cannot be opened.
    """
    found: set[int] = set()
    wanted = {FLOAT16, BFLOAT16}
    with _Mapped(path) as m:
        buf = m.view
        try:
            for graph in _sub(buf, (0, len(buf)), _MODEL_GRAPH):
                for n, v in _fields(buf, graph):
                    if not isinstance(v, tuple):
                        continue
                    if n in (_GRAPH_INPUT, _GRAPH_OUTPUT):
                        t = _elem_type(buf, v)
                    elif n == _GRAPH_INITIALIZER:
                        t = _varint_field(buf, v, _TENSOR_DATA_TYPE)
                    else:
                        continue
                    if t in wanted:
                        found.add(t)
        except _Malformed:
            return set()
    return found


def holds_float16(path: Source) -> bool:
    """True when the graph declares float16 inputs, outputs or weights (see module docstring)."""
    return FLOAT16 in reduced_float_types(path)


#: optimization levels at or below which ONNX Runtime 1.32 builds fp16 RNN sessions safely
SAFE_FP16_LEVELS = ("disable", "basic")


def fp16_safe_settings(settings: Mapping[str, Any] | None, model: Source) -> dict[str, Any]:
    """`settings` for an ONNX Runtime session, the optimization level lowered to "basic" for a
    float16 file (at "all", ORT's default, session creation for fp16 LSTM/GRU ends the process
    with SIGSEGV). fp16 is no faster than fp32 on the CPU; this only keeps a user's fp16 file
    from crashing the process.
    """
    out = dict(settings or {})
    level = str(out.get("graph_optimization_level", "all"))
    if level in SAFE_FP16_LEVELS:
        return out
    try:
        fp16 = holds_float16(model)
    except OSError:  # unreadable: the session that follows reports it as a model-file error
        fp16 = False
    if fp16:
        out["graph_optimization_level"] = "basic"
    return out


def stored_spec(path: str | os.PathLike[str]) -> RnnSpec | None:
    """The rnnedge spec stored in an ONNX file, read without onnx or a session (None: none).

    Raises:
        ModelFileError: the file is missing or unreadable, or its spec is malformed.
    """
    if not os.path.isfile(path):
        raise ModelFileError(f"model file '{path}' does not exist (expected an .onnx file)")
    try:
        text = metadata(path).get(SPEC_KEY)
    except OSError as exc:
        raise ModelFileError(
            f"model file '{path}' cannot be read ({exc.__class__.__name__}: "
            f"{exc}); expected an .onnx file"
        ) from exc
    return RnnSpec.from_json(text, str(path)) if text else None
