"""Hostile model files: damaged ONNX bytes and tampered `rnnedge.spec` metadata.

Every case writes a file next to (or instead of) a copy of the valid model, then loads it through
the API or a CLI command chosen by the seed. A file that still loads must give finite forecasts
of the right shape; one whose meaning is unchanged (a benign spec edit, any tuning file) must
give exactly the reference forecast, since a tuning only changes how fast it is computed.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tests.hostile.artifacts import SERIES_LEN, Artifacts
from tests.hostile.cases import (
    Api,
    Case,
    Cli,
    Ctx,
    deep,
    deep_json,
    equal_forecast,
    finite_forecast,
    forecast_csv_problem,
    json_stdout_problem,
    load_and_run,
    load_and_stream,
    mutate_bytes,
    numbered,
    short,
)

OPS = ("load", "stream", "run", "inspect", "lint")
JUNK: tuple[Any, ...] = (None, [], {}, "", "zz", -1, 0, 10**12, 1.5, True, "NaN", deep(60))
Writer = Callable[[Ctx], Any]  # writes the model (or not) and returns what to pass as the path


def act(ctx: Ctx, path: Any, op: str, equal: bool) -> Api | Cli:
    """The operation `op` on the model at `path`; `equal`: must match the reference run."""
    art = ctx.art
    want = art.y if equal else None
    if op == "load" or (op != "stream" and not isinstance(path, (str, Path))):
        return Api(
            lambda: load_and_run(path, art.x),
            lambda y: equal_forecast(y, want) if equal else finite_forecast(y, SERIES_LEN),
        )
    if op == "stream":
        return Api(
            lambda: load_and_stream(path, art.x, 7),
            lambda y: equal_forecast(y, want) if equal else finite_forecast(y, SERIES_LEN),
        )
    if op == "run":
        out = ctx.dir / "forecast.csv"
        csv = ctx.copy(art.csv, "input.csv")
        return Cli(
            ["run", str(path), "--input", str(csv), "-o", str(out)],
            outputs=(out,),
            check=lambda _: forecast_csv_problem(out, want, SERIES_LEN),
        )
    return Cli([op, str(path), "--json"], check=json_stdout_problem, exit_1_is_result=op == "lint")


def _cases(
    family: str,
    rng: np.random.Generator,
    specs: list[tuple[str, str, Writer, bool]],
    ops: tuple[str, ...] = OPS,
    weights: tuple[float, ...] = (0.5, 0.15, 0.15, 0.1, 0.1),
) -> list[Case]:
    items = []
    for kind, summary, write, equal in specs:
        op = str(rng.choice(ops, p=weights))

        def build(ctx: Ctx, write: Writer = write, op: str = op, equal: bool = equal) -> Any:
            return act(ctx, write(ctx), op, equal)

        items.append((kind, f"{op}: {summary}", build, False))
    return numbered(family, items)


# --- ONNX bytes ---------------------------------------------------------------------------------
def _bytes_writer(data: bytes, name: str = "model.onnx") -> Writer:
    return lambda ctx: ctx.write(name, data)


def _symlink_loop(ctx: Ctx) -> Path:
    a, b = ctx.dir / "a.onnx", ctx.dir / "b.onnx"
    os.symlink(b, a)
    os.symlink(a, b)
    return a


def _linked(kind: str) -> Writer:
    def write(ctx: Ctx) -> Path:
        real = ctx.copy(ctx.art.onnx, "real.onnx")
        link = ctx.dir / "model.onnx"
        (os.symlink if kind == "symlink" else os.link)(real, link)
        return link

    return write


def onnx_bytes(art: Artifacts, rng: np.random.Generator) -> list[Case]:
    data = art.onnx_bytes
    specs: list[tuple[str, str, Writer, bool]] = []
    for _ in range(110):
        what, damaged = mutate_bytes(rng, data)
        kind = what.split()[0]
        specs.append((kind, f"model.onnx {what}", _bytes_writer(damaged), damaged == data))
    for n in (1, 2, 16, len(data) // 2, len(data) - 1):
        specs.append(("truncated", f"model.onnx cut to {n} bytes", _bytes_writer(data[:n]), False))
    for n in (1, 7, 100, 5000, 200_000):
        junk = rng.bytes(n)
        specs.append(("garbage", f"{n} random bytes", _bytes_writer(junk), False))
    for label, blob in (
        ("nul-bytes", b"\0" * 4096),
        ("text", b"not an onnx model\n"),
        ("json", json.dumps(art.spec).encode()),
        ("zip-header", b"PK\x03\x04" + rng.bytes(200)),
        ("checkpoint", art.ckpt_bytes),
        ("csv", art.csv.read_bytes()),
        ("twice", data + data),
        ("varint-overflow", b"\x0a" + b"\xff" * 12),
    ):
        specs.append((label, f"model.onnx holding {label}", _bytes_writer(blob), False))
    specs += [
        ("empty", "empty model.onnx", _bytes_writer(b""), False),
        (
            "directory",
            "a directory named model.onnx",
            lambda ctx: (ctx.dir / "model.onnx").mkdir() or ctx.dir / "model.onnx",
            False,
        ),
        ("symlink-loop", "a.onnx -> b.onnx -> a.onnx", _symlink_loop, False),
        (
            "dangling-link",
            "a symlink to a missing file",
            lambda ctx: os.symlink(ctx.dir / "gone.onnx", ctx.dir / "m.onnx") or ctx.dir / "m.onnx",
            False,
        ),
        ("missing", "a path that does not exist", lambda ctx: ctx.dir / "missing.onnx", False),
        (
            "under-file",
            "a path below a regular file",
            lambda ctx: ctx.copy(ctx.art.onnx) / "inner.onnx",
            False,
        ),
        (
            "name-256",
            "a 256-character file name",
            lambda ctx: ctx.dir / ("m" * 251 + ".onnx"),
            False,
        ),
        ("nul-in-path", "a path with a NUL byte", lambda ctx: str(ctx.dir / "a\0b.onnx"), False),
        ("symlink", "a symlink to the valid model", _linked("symlink"), True),
        ("hardlink", "a hard link to the valid model", _linked("hardlink"), True),
    ]
    for n in (244, 245, 250, 255):
        specs.append(
            (
                f"name-{n}",
                f"the valid model under a {n}-character name",
                _bytes_writer(data, "m" * (n - 5) + ".onnx"),
                True,
            )
        )
    for name in (
        "my model.onnx",
        "modèle-模型.onnx",
        "new\nline.onnx",
        "model",
        "MODEL.ONNX",
        ".hidden.onnx",
        "-dash.onnx",
        "semi;colon $(x).onnx",
    ):
        specs.append(
            ("odd-name", f"the valid model named {name!r}", _bytes_writer(data, name), True)
        )
    cases = _cases("onnx_bytes", rng, specs)
    api_only: list[tuple[str, str, Writer, bool]] = [
        ("path-bytes", "the path as bytes", lambda ctx: os.fsencode(ctx.copy(ctx.art.onnx)), True),
        (
            "model-bytes",
            "the model's bytes instead of a path",
            lambda ctx: ctx.art.onnx_bytes,
            True,
        ),
        ("path-none", "None as the path", lambda ctx: None, False),
        ("path-int", "3 as the path", lambda ctx: 3, False),
        ("path-float", "1.5 as the path", lambda ctx: 1.5, False),
        ("path-list", "[path] as the path", lambda ctx: [str(ctx.copy(ctx.art.onnx))], False),
        ("path-dict", "{'path': path}", lambda ctx: {"path": str(ctx.copy(ctx.art.onnx))}, False),
        (
            "path-relative",
            "'./model.onnx' relative to the working directory",
            lambda ctx: ctx.copy(ctx.art.onnx) and "./model.onnx",
            True,
        ),
    ]
    more = _cases("onnx_bytes", rng, api_only, ops=("load",), weights=(1.0,))
    return numbered("onnx_bytes", [(c.kind, c.summary, c.build, False) for c in cases + more])


# --- spec metadata ------------------------------------------------------------------------------
def _with_spec(
    art: Artifacts, text: str | bytes | None, extra: tuple[tuple[str, str], ...] = ()
) -> bytes:
    """The valid model with its spec replaced (None: removed); bytes may be invalid UTF-8."""
    import onnx

    from rnnedge.spec import SPEC_KEY

    proto = onnx.ModelProto()
    proto.ParseFromString(art.onnx_bytes)
    del proto.metadata_props[:]
    placeholder = None
    if text is not None:
        entry = proto.metadata_props.add()
        entry.key = SPEC_KEY
        if isinstance(text, bytes):
            placeholder = "Q" * len(text)
            entry.value = placeholder
        else:
            entry.value = text
    for key, value in extra:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    blob = proto.SerializeToString()
    if placeholder is not None:
        assert isinstance(text, bytes)
        blob = blob.replace(placeholder.encode(), text)
    return blob


def _spec_writer(text: str | bytes | None, extra: tuple[tuple[str, str], ...] = ()) -> Writer:
    return lambda ctx: ctx.write("model.onnx", _with_spec(ctx.art, text, extra))


def _set(spec: dict, path: tuple[Any, ...], value: Any) -> dict:
    d = copy.deepcopy(spec)
    target = d
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return d


_DELETE = object()
DTYPES: tuple[Any, ...] = (
    "float64",
    "float16",
    "int64",
    "int8",
    "bool",
    "string",
    "complex64",
    "bfloat16",
    "float128",
    "",
    "object",
    None,
    5,
    ["float32"],
    "tensor(float)",
)
DIMS: tuple[Any, ...] = (
    -1,
    0,
    10**12,
    2**63,
    10**9,
    3,
    "",
    None,
    1.5,
    True,
    "seq_len",
    [],
    "batch",
)


def _spec_mutations(spec: dict, rng: np.random.Generator) -> list[tuple[str, str, dict | str]]:
    out: list[tuple[str, str, dict | str]] = []

    def add(kind: str, path: tuple[Any, ...], value: Any) -> None:
        where = ".".join(str(p) for p in path)
        shown = "deleted" if value is _DELETE else short(value, 40)
        out.append((kind, f"spec {where} = {shown}", _set(spec, path, value)))

    for key in sorted(spec):
        add("missing-key", (key,), _DELETE)
        for i in rng.choice(len(JUNK), size=4, replace=False):
            add("wrong-type", (key,), JUNK[int(i)])
    tensors = [("inputs", 0), ("inputs", 1), ("inputs", 2), ("outputs", 0), ("outputs", 1)]
    for t in tensors[:4]:
        for i in rng.choice(len(DTYPES), size=4, replace=False):
            add("dtype", (*t, "dtype"), DTYPES[int(i)])
    for t in tensors:
        for axis in range(3):
            for i in rng.choice(len(DIMS), size=3, replace=False):
                add("dim", (*t, "shape", axis), DIMS[int(i)])
        shape = spec[t[0]][t[1]]["shape"]
        for value in (shape[:-1], [*shape, 1], [], "abc", None, {"0": 1}):
            add("rank", (*t, "shape"), value)
    pairs = spec["state_pairs"]
    for value in (
        [],
        pairs[::-1],
        [{"input": "x", "output": "y", "batch_axis": 0}],
        pairs + pairs,
        [{"input": "h0"}],
        {"input": "h0", "output": "hn"},
        [["h0", "hn"]],
        [{"input": "hn", "output": "h0", "batch_axis": 1}],
    ):
        add("state-pairs", ("state_pairs",), value)
    for value in (-1, 0, 2, 3, 10**9, "1", None, 1.5):
        add("state-axis", ("state_pairs", 0, "batch_axis"), value)
    for key in ("data_input", "data_output"):
        for i in rng.choice(9, size=5, replace=False):
            add("names", (key,), ("h0", "y", "hn", "nope", "", None, 5, ["x"], "x")[int(i)])
    for key, values in (
        ("batch_first", (False, "no", None, "false")),
        ("bidirectional", (True, "yes")),
        ("cell", ("bogus", 5)),
        ("hidden_size", (-1, 10**12, "4")),
        ("input_size", (3, 0)),
        ("num_layers", (2, -5)),
        ("output_size", (0, 10**12)),
    ):
        for value in values:
            add("layout", (key,), value)
    nan, inf = float("nan"), float("inf")
    norm = [
        ("mean", [nan, 0.0]),
        ("mean", [inf, 0.0]),
        ("mean", [1e308, 1e308]),
        ("mean", [-1e308, 1e308]),
        ("std", [0.0, 1.0]),
        ("std", [-1.0, 1.0]),
        ("std", [nan, 1.0]),
        ("std", [1e-310, 1.0]),
        ("std", [1e-300, 1e-300]),
        ("mean", [0.0]),
        ("mean", [0.0, 0.0, 0.0]),
        ("mean", []),
        ("std", [1.0]),
        ("std", [1.0, 1.0, 1.0]),
        ("target_index", [5]),
        ("target_index", [-3]),
        ("target_index", [2]),
        ("target_index", []),
        ("target_index", [0, 0]),
        ("target_index", ["0"]),
        ("target_index", [1.5]),
        ("target_index", [10**30]),
        ("target_index", None),
        ("target_index", "0"),
        ("target_index", [[0]]),
        ("mean", "abc"),
        ("mean", ["a", "b"]),
        ("mean", [[0.0, 0.0]]),
        ("mean", None),
        ("std", _DELETE),
        ("target_index", [1]),
    ]
    for key, value in norm:
        add("normalization", ("normalization", key), value)
    for value in ([], "x", 5, {"mean": [0.0, 0.0]}):
        add("normalization", ("normalization",), value)
    if spec.get("contract"):
        for key, value in (
            ("features", ["x0", "x0"]),
            ("targets", ["zz"]),
            ("horizon", 0),
            ("horizon", -1),
            ("horizon", "1"),
            ("horizon", 1.5),
            ("horizon", 10**30),
            ("horizon", True),
            ("features", []),
            ("features", [1, 2]),
            ("features", "x0,x1"),
            ("features", None),
            ("features", ["x1", "x0"]),
            ("features", ["x0", "x1", "x2"]),
            ("units", []),
            ("units", "m"),
            ("fingerprint", 5),
            ("time_column", []),
            ("targets", []),
        ):
            add("contract", ("contract", key), value)
    for value in ([], "x"):
        add("contract", ("contract",), value)
    for value in (2, 10**30, -1, "1", "x", None, 1.5):
        add("format", ("format",), value)
    for value in (
        "fp32",
        [],
        {},
        {"precision": "int8"},
        {"precision": "int8", "metric": "mse", "margin": "x", "fp32_value": 1, "value": 1},
    ):
        add("precision", ("precision",), value)
    for value in ([], None, 5, {"a": {"b": 1}}, deep(100, kind="dict")):
        add("producer", ("producer",), value)
    return out


def onnx_spec(art: Artifacts, rng: np.random.Generator) -> list[Case]:
    spec = art.spec
    text = json.dumps(spec)
    specs: list[tuple[str, str, Writer, bool]] = []
    for kind, summary, mutated in _spec_mutations(spec, rng):
        specs.append((kind, summary, _spec_writer(json.dumps(mutated)), False))
    for cut in sorted(int(c) for c in rng.integers(1, len(text), size=8)):
        specs.append(
            (
                "truncated-json",
                f"spec JSON cut at {cut} of {len(text)} chars",
                _spec_writer(text[:cut]),
                False,
            )
        )
    raw: list[tuple[str, str, str | bytes | None]] = [
        ("invalid-utf8", "spec bytes 0xff 0xfe", b"\xff\xfe" + text.encode()[2:]),
        ("invalid-utf8", "spec with a lone continuation byte", text.encode()[:-1] + b"\x80"),
        ("invalid-utf8", "spec with an encoded surrogate", text.encode()[:-3] + b"\xed\xa0\x80"),
        ("not-object", "spec '[]'", "[]"),
        ("not-object", "spec '\"s\"'", '"s"'),
        ("not-object", "spec '5'", "5"),
        ("not-object", "spec 'null'", "null"),
        ("not-object", "spec 'true'", "true"),
        ("empty", "spec ''", ""),
        ("empty", "spec of spaces", "   "),
        ("deep-json", "spec: 100000 nested arrays", deep_json(100_000)),
        ("deep-json", "spec: 100000 nested objects", deep_json(100_000, "dict")),
        ("deep-json", "spec: 2000 nested arrays", deep_json(2000)),
        (
            "deep-json",
            "spec.producer: 5000 nested objects",
            text[:-1] + ', "extra": ' + deep_json(5000, "dict") + "}",
        ),
        (
            "huge",
            "spec with a 5 MB string field",
            text[:-1] + ', "pad": "' + "a" * 5_000_000 + '"}',
        ),
        (
            "duplicate-key",
            "spec with 'inputs' given twice (second: 5)",
            text[:-1] + ', "inputs": 5}',
        ),
        ("nan-literal", "spec 'NaN'", "NaN"),
        ("bom", "spec with a UTF-8 BOM", "\ufeff" + text),
        ("trailing", "spec followed by '}}'", text + "}}"),
        ("missing", "no spec (a foreign model)", None),
    ]
    for kind, summary, value in raw:
        specs.append((kind, summary, _spec_writer(value), False))
    specs.append(
        (
            "duplicate-entry",
            "two rnnedge.spec entries, the second junk",
            _spec_writer(text, (("rnnedge.spec", "junk"),)),
            False,
        )
    )
    specs.append(
        (
            "other-key",
            "the spec under key 'rnnedge.spec ' (trailing space)",
            lambda ctx: ctx.write(
                "model.onnx", _with_spec(ctx.art, None, (("rnnedge.spec ", text),))
            ),
            False,
        )
    )
    benign = [
        ("unknown-key", "spec with an unknown top-level key", {**spec, "future": [1]}),
        ("unknown-key", "spec input with an unknown key", _set(spec, ("inputs", 0, "doc"), "x")),
        ("producer", "spec producer replaced", {**spec, "producer": {"who": "me"}}),
        ("reordered", "spec keys in reverse order", dict(reversed(list(spec.items())))),
    ]
    for kind, summary, value in benign:
        specs.append((kind, summary, _spec_writer(json.dumps(value)), True))
    specs.append(("indented", "spec JSON indented", _spec_writer(json.dumps(spec, indent=2)), True))
    return _cases("onnx_spec", rng, specs)
