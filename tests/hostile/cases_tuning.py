"""Hostile `model.onnx.tuning.json` files next to a valid model.

A tuning only changes how fast the model runs, so whatever the file holds (wrong types, nulls,
lists for objects, deeply nested arrays, absurd thread counts, invalid UTF-8, a folder or a
symlink loop in its place) every shape class and a stream must give exactly the reference
forecast, or the load must be refused with one line. A stale or unreadable tuning is ignored.
"""

from __future__ import annotations

import copy
import hashlib
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
    json_stdout_problem,
    numbered,
    short,
)
from tests.hostile.cases_files import act


def _valid_tuning(art: Artifacts) -> dict[str, Any]:
    from rnnedge.runtime.tuned import TUNING_FORMAT, machine_key

    one = {"intra_op_num_threads": 1}
    return {
        "format": TUNING_FORMAT,
        **machine_key(),
        "onnx_sha256": hashlib.sha256(art.onnx_bytes).hexdigest(),
        "classes": {
            "b1-short": {"settings": one, "batch_split": 1},
            "b1-long": {"settings": {"intra_op_num_threads": 2}, "batch_split": 1},
            "bN-short": {
                "settings": {**one, "graph_optimization_level": "extended"},
                "batch_split": 2,
            },
            "bN-long": {"settings": one, "batch_split": 2},
        },
    }


def _tuned_runs(path: Path, art: Artifacts) -> str | None:
    """Every shape class and a stream must give the reference forecast whatever the tuning."""
    import rnnedge

    x4 = np.repeat(art.x, 4, axis=0)
    with rnnedge.load(path) as model:
        for x, t in ((art.x, 5), (art.x, SERIES_LEN), (x4, 5), (x4, SERIES_LEN)):
            bad = equal_forecast(model.run(x[:, :t])[0], np.repeat(art.y, len(x), 0)[:, :t])
            if bad:
                return f"batch {len(x)} seq_len {t}: {bad}"
        stream = model.stream()
        parts = [stream.step(art.x[:, i : i + 1]) for i in range(3)] + [stream.step(art.x[:, 3:])]
        return equal_forecast(np.concatenate(parts, axis=1), art.y)


def _tuning_case(
    content: Callable[[Artifacts], str | bytes | None],
    op: str,
    special: Callable[[Path], None] | None = None,
) -> Callable[[Ctx], Api | Cli]:
    def build(ctx: Ctx) -> Api | Cli:
        model = ctx.copy(ctx.art.onnx, "model.onnx")
        tuning = ctx.dir / "model.onnx.tuning.json"
        if special is not None:
            special(tuning)
        else:
            data = content(ctx.art)
            ctx.write(tuning.name, data if data is not None else "")
        if op == "run":
            return act(ctx, model, "run", True)
        if op == "bench":
            return Cli(
                [
                    "bench",
                    str(model),
                    "--batches",
                    "1,2",
                    "--seq-lens",
                    "2,20",
                    "--budget-s",
                    "0.01",
                    "--warmup",
                    "1",
                    "--retries",
                    "0",
                    "--no-stream",
                    "--runtime",
                    "rnnedge",
                    "--json",
                ],
                check=json_stdout_problem,
            )
        return Api(lambda: _tuned_runs(model, ctx.art), lambda bad: bad)

    return build


def _tuning_mutations(rng: np.random.Generator) -> list[tuple[str, str, Callable[[dict], Any]]]:
    """(kind, summary, edit of the valid tuning dict returning a dict or raw text/bytes)."""
    out: list[tuple[str, str, Callable[[dict], Any]]] = []
    for text in ("null", "[]", '""', "5", "true", "[{}]", "NaN", "", "{", '{"format": '):
        out.append(("not-object", f"tuning file {text!r}", lambda t, text=text: text))
    out += [
        ("deep-json", "100000 nested arrays", lambda t: deep_json(100_000)),
        ("deep-json", "100000 nested objects", lambda t: deep_json(100_000, "dict")),
        ("deep-json", "3000 nested arrays", lambda t: deep_json(3000)),
        ("invalid-utf8", "invalid UTF-8", lambda t: b"\xff\xfe" + json.dumps(t).encode()),
        ("binary", "random bytes", lambda t: bytes(rng.bytes(300))),
        ("bom", "valid tuning with a BOM", lambda t: "\ufeff" + json.dumps(t)),
        ("trailing", "valid tuning + '}'", lambda t: json.dumps(t) + "}"),
        ("huge", "3 MB of padding", lambda t: json.dumps({**t, "pad": "a" * 3_000_000})),
    ]
    for key, values in (
        ("format", ("x", None, 5)),
        ("onnx_sha256", ("0" * 64, None, [])),
        ("cpu_model", (None, 5)),
        ("cores", ("2", None, -1)),
        ("onnxruntime", (None, 5)),
    ):
        for v in values:
            out.append(("header", f"{key} = {short(v, 30)}", lambda t, k=key, v=v: {**t, k: v}))
    classes = ["b1-short", "b1-long", "bN-short", "bN-long"]
    for v in (
        None,
        [],
        "x",
        5,
        deep(200),
        {"b1-short": None},
        {"b1-short": []},
        {"b1-short": "x"},
        {"b1-short": 5},
        {"": {"settings": {}}},
        {"zz": {}},
        {"b1-short": deep(200, kind="dict")},
        {f"c{i}": {"settings": {}} for i in range(10_000)},
    ):
        out.append(("classes", f"classes = {short(v, 50)}", lambda t, v=v: {**t, "classes": v}))
    settings: list[Any] = [None, [], "x", 5, [["intra_op_num_threads", 1]]]
    for v in ("x", -1, 0, 1.5, None, [], "2", True, 2**63, float("nan"), 10**9, 100_000):
        settings.append({"intra_op_num_threads": v})
    for v in ("x", -1, 10**9, None):
        settings.append({"inter_op_num_threads": v})
    for key, values in (
        ("graph_optimization_level", ("bogus", 5, None, [], "ALL")),
        ("execution_mode", ("bogus", None, 1, "parallel")),
        ("enable_cpu_mem_arena", ("no", None, 2, [])),
        ("enable_mem_pattern", ("false", None)),
        (
            "config",
            (
                [],
                None,
                "x",
                5,
                {"session.intra_op.allow_spinning": []},
                {"session.intra_op.allow_spinning": "2"},
                {"bogus.key": "1"},
                {"": ""},
                {"session.intra_op.allow_spinning": deep(100)},
                {"k" * 10_000: "v"},
            ),
        ),
        ("zzz", (1,)),
        ("providers", (["CUDAExecutionProvider"],)),
    ):
        for v in values:
            settings.append({key: v})
    for s in settings:
        cls = classes[int(rng.integers(0, 4))]
        out.append(
            (
                "settings",
                f"{cls}.settings = {short(s, 60)}",
                lambda t, c=cls, s=s: _with_class(t, c, "settings", s),
            )
        )
    for v in ("x", 0, -1, 10**9, None, 1.5, [], True, 3, 1000, 2**63, "2", float("nan")):
        cls = classes[int(rng.integers(0, 4))]
        out.append(
            (
                "batch-split",
                f"{cls}.batch_split = {short(v, 30)}",
                lambda t, c=cls, v=v: _with_class(t, c, "batch_split", v),
            )
        )
    return out


def _with_class(tuning: dict, cls: str, key: str, value: Any) -> dict:
    t = copy.deepcopy(tuning)
    t["classes"][cls][key] = value
    return t


def tuning(art: Artifacts, rng: np.random.Generator) -> list[Case]:
    base = _valid_tuning(art)
    items = []
    for kind, summary, edit in _tuning_mutations(rng):
        op = str(rng.choice(("api", "run"), p=(0.8, 0.2)))

        def content(a: Artifacts, edit: Callable[[dict], Any] = edit) -> str | bytes:
            value = edit(copy.deepcopy(base))
            return json.dumps(value) if isinstance(value, (dict, list)) else value

        items.append(
            (kind, f"{op}: model.onnx.tuning.json {summary}", _tuning_case(content, op), False)
        )
    for kind, summary, special in (
        ("directory", "a directory", lambda p: p.mkdir()),
        ("symlink-loop", "a symlink to itself", lambda p: os.symlink(p, p)),
        ("dangling-link", "a dangling symlink", lambda p: os.symlink(p.parent / "no", p)),
    ):
        items.append(
            (
                kind,
                f"api: model.onnx.tuning.json is {summary}",
                _tuning_case(lambda a: None, "api", special),
                False,
            )
        )
    items.append(
        ("valid", "api: the valid tuning", _tuning_case(lambda a: json.dumps(base), "api"), False)
    )
    for summary, edit in (
        ("valid tuning", lambda t: t),
        ("classes = []", lambda t: {**t, "classes": []}),
        ("bN-long.batch_split = 'x'", lambda t: _with_class(t, "bN-long", "batch_split", "x")),
    ):
        items.append(
            (
                "bench",
                f"bench: model.onnx.tuning.json {summary}",
                _tuning_case(lambda a, edit=edit: json.dumps(edit(copy.deepcopy(base))), "bench"),
                False,
            )
        )
    return numbered("tuning", items)
