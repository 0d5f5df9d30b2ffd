"""Hostile arrays and state for `Model.run`, `Model.stream`, `Stream.step` and `Stream.state`.

Arrays: whatever a caller can pass (ragged or 70-deep lists, strings, objects, bools, ints,
NaN/Inf, empty axes, wrong rank, features or batch) must be refused with an `RnnEdgeError` or
give a finite forecast; an input that means the same numbers (lists, float64, Fortran order,
strided, big-endian) must give the reference forecast. A refused stream call must leave the
stream exactly as it was: same state, same step count, and the rest of the series fed after it
gives the reference forecast.
"""

from __future__ import annotations

import collections
import types
from collections.abc import Callable
from typing import Any

import numpy as np

from tests.hostile.artifacts import SERIES_LEN, Artifacts, close_enough
from tests.hostile.cases import (
    Api,
    Case,
    Cli,
    Ctx,
    deep,
    equal_forecast,
    numbered,
    short,
)

Build = Callable[[Ctx], Api | Cli]
CUT = 10  # the stream consumes this many steps before the hostile call


def finite_any(y: Any) -> str | None:
    arr = np.asarray(y)
    if arr.ndim != 3 or arr.shape[-1] != 1 or arr.dtype.kind != "f":
        return f"returned shape {arr.shape} dtype {arr.dtype}, expected (batch, seq_len, 1)"
    return None if np.all(np.isfinite(arr)) else "returned non-finite values"


# --- arrays given to Model.run ------------------------------------------------------------------
def _x_variants(
    rng: np.random.Generator,
) -> list[tuple[str, str, Callable[[np.ndarray], Any], str, str]]:
    """(kind, summary, make(x), expect, nan_policy); expect is 'equal', 'tiled' or 'any'."""
    f64 = np.float64
    out: list[tuple[str, str, Callable[[np.ndarray], Any], str, str]] = [
        ("list", "nested Python lists", lambda x: x.tolist(), "equal", "raise"),
        ("tuple", "a tuple of lists", lambda x: tuple(x.tolist()), "equal", "raise"),
        ("float64", "float64", lambda x: x.astype(f64), "equal", "raise"),
        ("longdouble", "longdouble", lambda x: x.astype(np.longdouble), "equal", "raise"),
        ("fortran", "Fortran order", np.asfortranarray, "equal", "raise"),
        ("strided", "a strided view", lambda x: np.repeat(x, 2, axis=1)[:, ::2], "equal", "raise"),
        ("reversed", "negative strides", lambda x: x[:, ::-1][:, ::-1], "equal", "raise"),
        ("readonly", "a read-only array", _readonly, "equal", "raise"),
        ("big-endian", "big-endian >f4", lambda x: x.astype(">f4"), "equal", "raise"),
        ("masked", "a masked array", lambda x: np.ma.array(x), "equal", "raise"),
        ("batch-3", "the series tiled to batch 3", lambda x: np.repeat(x, 3, 0), "tiled", "raise"),
        ("float16", "float16", lambda x: x.astype(np.float16), "any", "raise"),
        ("long", "5000 steps", lambda x: np.tile(x, (1, 84, 1))[:, :5000], "any", "raise"),
        ("batch-1000", "batch 1000", lambda x: np.repeat(x, 1000, 0), "any", "raise"),
        (
            "transposed",
            "(seq_len, batch, features) given to a batch-first model",
            lambda x: x.transpose(1, 0, 2),
            "any",
            "raise",
        ),
        ("huge", "values of 1e38", lambda x: np.full_like(x, 1e38), "any", "raise"),
        ("huge", "values of -3.4e38", lambda x: np.full_like(x, -3.4e38), "any", "raise"),
        ("overflow", "float64 values of 1e300", lambda x: np.full(x.shape, 1e300), "any", "raise"),
        (
            "subnormal",
            "float64 values of 1e-320",
            lambda x: np.full(x.shape, 1e-320),
            "any",
            "raise",
        ),
        ("deep-70", "70-deep nested lists", lambda x: deep(70, 0.5), "any", "raise"),
        ("deep-40", "40-deep nested lists", lambda x: deep(40, 0.5), "any", "raise"),
        (
            "deep-70",
            "the series inside 67 more lists",
            lambda x: deep(67, x.tolist()),
            "any",
            "raise",
        ),
        ("string", "a string", lambda x: "abc", "any", "raise"),
        ("string", "the series as strings", lambda x: x.astype(str), "any", "raise"),
        ("string", "lists of numeric strings", lambda x: [[["1", "2"]]], "any", "raise"),
        ("bytes", "bytes", lambda x: x.tobytes(), "any", "raise"),
        ("object", "an object array of floats", lambda x: x.astype(object), "any", "raise"),
        ("object", "[object()]", lambda x: [object()], "any", "raise"),
        ("object", "a dict of arrays", lambda x: {"x": x}, "any", "raise"),
        ("object", "None", lambda x: None, "any", "raise"),
        ("object", "a set", lambda x: {1.0, 2.0}, "any", "raise"),
        ("object", "a generator", lambda x: (v for v in x), "any", "raise"),
        ("object", "a function", lambda x: len, "any", "raise"),
        ("bool", "a bool array", lambda x: x > 0, "any", "raise"),
        ("bool", "True", lambda x: True, "any", "raise"),
        ("int", "an int64 array", lambda x: x.astype(np.int64), "any", "raise"),
        ("int", "an int8 array", lambda x: x.astype(np.int8), "any", "raise"),
        ("int", "the int 5", lambda x: 5, "any", "raise"),
        ("int", "nested int lists", lambda x: [[[1, 2]]], "any", "raise"),
        ("complex", "complex64", lambda x: x.astype(np.complex64), "any", "raise"),
        (
            "datetime",
            "datetime64",
            lambda x: np.full((1, 3, 2), np.datetime64("2020-01-01")),
            "any",
            "raise",
        ),
        (
            "structured",
            "a structured array",
            lambda x: np.zeros((1, 5), dtype=[("a", "f4"), ("b", "f4")]),
            "any",
            "raise",
        ),
        ("empty", "batch 0", lambda x: x[:0], "any", "raise"),
        ("empty", "seq_len 0", lambda x: x[:, :0], "any", "raise"),
        ("empty", "0 features", lambda x: x[..., :0], "any", "raise"),
        ("empty", "shape (0, 0, 0)", lambda x: np.zeros((0, 0, 0), np.float32), "any", "raise"),
        ("empty", "an empty list", lambda x: [], "any", "raise"),
        ("rank", "rank 2", lambda x: x[0], "any", "raise"),
        ("rank", "rank 1", lambda x: x[0, 0], "any", "raise"),
        ("rank", "a float scalar", lambda x: x[0, 0, 0], "any", "raise"),
        ("rank", "rank 4", lambda x: x[None], "any", "raise"),
        ("rank", "rank 4 (trailing axis)", lambda x: x[..., None], "any", "raise"),
        ("features", "1 feature", lambda x: x[..., :1], "any", "raise"),
        ("features", "3 features", lambda x: np.concatenate([x, x[..., :1]], -1), "any", "raise"),
        ("features", "100 features", lambda x: np.tile(x, (1, 1, 50)), "any", "raise"),
    ]
    for _ in range(6):
        where = tuple(int(rng.integers(0, s)) for s in (1, SERIES_LEN, 2))
        depth = int(rng.integers(0, 3))
        out.append(
            (
                "ragged",
                f"ragged lists (cut at level {depth}, {where})",
                lambda x, w=where, d=depth: _ragged(x, w, d),
                "any",
                "raise",
            )
        )
    for _ in range(10):
        n = int(rng.integers(1, 20))
        value = (np.nan, np.inf, -np.inf)[int(rng.integers(0, 3))]
        policy = ("raise", "zero", "ffill")[int(rng.integers(0, 3))]
        seed = int(rng.integers(0, 2**31))
        out.append(
            (
                "non-finite",
                f"{n} x {value} with nan_policy={policy}",
                lambda x, n=n, v=value, s=seed: _poison(x, n, v, s),
                "any",
                policy,
            )
        )
    out.append(
        (
            "non-finite",
            "all NaN, nan_policy=ffill",
            lambda x: np.full_like(x, np.nan),
            "any",
            "ffill",
        )
    )
    return out


def _readonly(x: np.ndarray) -> np.ndarray:
    y = x.copy()
    y.flags.writeable = False
    return y


def _ragged(x: np.ndarray, where: tuple[int, int, int], depth: int) -> Any:
    lst = x.tolist()
    b, t, _ = where
    if depth == 0:
        lst.append(lst[0][:-1])
    elif depth == 1:
        lst[b][t] = lst[b][t][:1]
    else:
        lst[b][t] = [lst[b][t], 1.0]
    return lst


def _poison(x: np.ndarray, n: int, value: float, seed: int) -> np.ndarray:
    y = x.copy()
    rng = np.random.default_rng(seed)
    y[0, rng.integers(0, y.shape[1], n), rng.integers(0, y.shape[2], n)] = value
    return y


def _run_build(make: Callable[[np.ndarray], Any], expect: str, policy: str, **kwargs: Any) -> Build:
    def build(ctx: Ctx) -> Api:
        model, art = ctx.model(), ctx.art
        value = make(art.x)

        def check(y: Any) -> str | None:
            if expect == "equal":
                return equal_forecast(y, art.y)
            if expect == "tiled":
                return equal_forecast(y, np.repeat(art.y, 3, 0))
            return finite_any(y)

        return Api(lambda: model.run(value, nan_policy=policy, **kwargs)[0], check)

    return build


# --- state --------------------------------------------------------------------------------------
def _state_variants() -> list[tuple[str, str, Callable[[dict[str, np.ndarray]], Any], bool]]:
    """(kind, summary, make(valid state), same numbers as the given state)."""

    def each(f: Callable[[np.ndarray], Any]) -> Callable[[dict], dict]:
        return lambda s: {k: f(v) for k, v in s.items()}

    return [
        ("none", "None", lambda s: None, False),
        ("names", "{}", lambda s: {}, False),
        ("names", "h0 only", lambda s: {"h0": s["h0"]}, False),
        ("names", "an extra name", lambda s: {**s, "zz": s["h0"]}, False),
        ("names", "int keys", lambda s: dict(enumerate(s.values())), False),
        ("names", "a None key", lambda s: {None: s["h0"], "c0": s["c0"]}, False),
        ("shape", "hidden 5", each(lambda v: np.zeros((1, 1, 5), np.float32)), False),
        ("shape", "batch 2", each(lambda v: np.zeros((1, 2, 4), np.float32)), False),
        ("shape", "rank 1", each(lambda v: v.reshape(-1)), False),
        ("shape", "scalars", each(lambda v: np.float32(0)), False),
        ("shape", "rank 4", each(lambda v: v[..., None]), False),
        ("shape", "batch 0", each(lambda v: v[:, :0]), False),
        ("dtype", "int", each(lambda v: v.astype(np.int64)), False),
        ("dtype", "bool", each(lambda v: v > 0), False),
        ("dtype", "object", each(lambda v: v.astype(object)), False),
        ("dtype", "str", each(lambda v: v.astype(str)), False),
        ("dtype", "complex", each(lambda v: v.astype(np.complex64)), False),
        ("dtype", "float16", each(lambda v: v.astype(np.float16)), False),
        ("dtype", "float64", each(lambda v: v.astype(np.float64)), True),
        ("non-finite", "NaN in h0", lambda s: {**s, "h0": np.full_like(s["h0"], np.nan)}, False),
        ("non-finite", "Inf in c0", lambda s: {**s, "c0": np.full_like(s["c0"], np.inf)}, False),
        ("list", "nested lists", each(lambda v: v.tolist()), True),
        ("mapping", "a MappingProxyType", lambda s: types.MappingProxyType(dict(s)), True),
        ("mapping", "an OrderedDict", lambda s: collections.OrderedDict(s), True),
        ("not-mapping", "a list of arrays", lambda s: list(s.values()), False),
        ("not-mapping", "a tuple of arrays", lambda s: tuple(s.values()), False),
        ("not-mapping", "the string 'h0'", lambda s: "h0", False),
        ("not-mapping", "the int 5", lambda s: 5, False),
        ("not-mapping", "an array", lambda s: np.zeros(4, np.float32), False),
        ("ragged", "ragged lists", each(lambda v: [[list(v[0, 0]), [1.0]]]), False),
        ("deep-70", "70-deep lists", each(lambda v: deep(70, 0.0)), False),
        (
            "random",
            "a random finite state",
            each(lambda v: np.random.default_rng(1).standard_normal(v.shape).astype(np.float32)),
            False,
        ),
        ("huge", "values of 1e38", each(lambda v: np.full_like(v, 1e38)), False),
    ]


def _run_state_build(make: Callable[[dict], Any], same: bool) -> Build:
    def build(ctx: Ctx) -> Api:
        model, art = ctx.model(), ctx.art
        value = make(model.initial_state(1))
        return Api(
            lambda: model.run(art.x, state=value)[0],
            lambda y: equal_forecast(y, art.y) if same or value is None else finite_any(y),
        )

    return build


# --- streams ------------------------------------------------------------------------------------
def _stream_build(
    op: Callable[[Any, dict[str, np.ndarray], np.ndarray], Any], consumed: int | None
) -> Build:
    """A stream fed CUT steps, then `op(stream, state, x)`. `consumed`: steps an accepted op
    feeds (its output must equal the reference); None: an accepted op changes the stream."""

    def build(ctx: Ctx) -> Api:
        model, art = ctx.model(), ctx.art
        held: dict[str, Any] = {}

        def call() -> Any:
            stream = held["stream"] = model.stream()
            held["y1"] = stream.step(art.x[:, :CUT])
            held["state"], held["steps"] = stream.state, stream.steps
            return op(stream, held["state"], art.x)

        def check(y: Any) -> str | None:
            if consumed:
                return equal_forecast(y, art.y[:, CUT : CUT + consumed])
            return None

        def after(refused: bool) -> str | None:
            stream = held.get("stream")
            if stream is None or "state" not in held or stream.closed:
                return None
            try:
                if refused:
                    now = stream.state
                    if any(not np.array_equal(now[k], v) for k, v in held["state"].items()):
                        return "a refused call changed the stream's state"
                    if stream.steps != held["steps"]:
                        return (
                            f"a refused call moved the step count {held['steps']} -> {stream.steps}"
                        )
                start = CUT + (0 if refused else (consumed or 0))
                if not refused and consumed is None:
                    return None
                rest = stream.step(art.x[:, start:])
                if not close_enough(rest, art.y[:, start:]):
                    return "the stream's later forecasts differ from one full run"
                return None
            finally:
                stream.close()

        return Api(call, check, after)

    return build


def _chunk_variants() -> list[tuple[str, str, Callable[[np.ndarray], Any], int | None]]:
    piece = lambda x: x[:, CUT : CUT + 5]  # noqa: E731
    same = lambda x: x[:, CUT : CUT + CUT]  # noqa: E731 (shaped like the first chunk: fast path)
    return [
        ("list", "the next 5 steps as lists", lambda x: piece(x).tolist(), 5),
        ("float64", "the next 5 steps as float64", lambda x: piece(x).astype(np.float64), 5),
        ("fortran", "the next 10 steps in Fortran order", lambda x: np.asfortranarray(same(x)), 10),
        ("big-endian", "the next 5 steps big-endian", lambda x: piece(x).astype(">f4"), 5),
        ("batch", "batch 2", lambda x: np.repeat(piece(x), 2, 0), None),
        (
            "features",
            "3 features",
            lambda x: np.concatenate([piece(x), piece(x)[..., :1]], -1),
            None,
        ),
        ("rank", "rank 2", lambda x: piece(x)[0], None),
        ("rank", "rank 4", lambda x: piece(x)[None], None),
        ("empty", "0 steps", lambda x: x[:, :0], None),
        (
            "non-finite",
            "NaN in a chunk shaped like the last one",
            lambda x: _poison(same(x), 1, np.nan, 0),
            None,
        ),
        ("non-finite", "Inf in a new shape", lambda x: _poison(piece(x), 2, np.inf, 1), None),
        ("int", "ints", lambda x: piece(x).astype(np.int32), None),
        ("string", "strings", lambda x: piece(x).astype(str), None),
        ("object", "None", lambda x: None, None),
        ("object", "an object array", lambda x: piece(x).astype(object), None),
        ("ragged", "ragged lists", lambda x: [piece(x)[0].tolist(), [[1.0]]], None),
        ("deep-70", "70-deep lists", lambda x: deep(70, 1.0), None),
        ("bool", "bools", lambda x: piece(x) > 0, None),
        ("complex", "complex", lambda x: piece(x).astype(np.complex64), None),
        ("scalar", "a float", lambda x: 1.0, None),
        ("overflow", "float64 1e300", lambda x: np.full(piece(x).shape, 1e300), None),
    ]


def _set_state(value: Any) -> Callable[[Any, dict, np.ndarray], Any]:
    def op(stream: Any, state: dict, x: np.ndarray) -> Any:
        stream.state = value(state)

    return op


def _open_variants() -> list[tuple[str, str, dict[str, Any]]]:
    out = [
        ("batch", f"batch={short(b, 20)}", {"batch": b})
        for b in (True, False, 0, -1, 1.5, "2", None, 10**9, 2**63, [1], np.int64(2), 2)
    ]
    out += [
        ("nan-policy", f"nan_policy={short(p, 20)}", {"nan_policy": p})
        for p in ("", None, 5, "ZERO", "interpolate")
    ]
    out += [("extra", f"extra={short(e, 20)}", {"extra": e}) for e in ({"zz": 1}, 5, [], "x")]
    return out


def _open_build(kwargs: dict[str, Any]) -> Build:
    def build(ctx: Ctx) -> Api:
        model, art = ctx.model(), ctx.art

        def call() -> Any:
            stream = model.stream(**kwargs)
            try:
                batch = stream.batch
                if not isinstance(batch, int) or batch > 64:  # do not touch a huge state
                    return None
                return stream.step(np.repeat(art.x[:, :5], batch, 0))
            finally:
                stream.close()

        return Api(call, lambda y: None if y is None else finite_any(y))

    return build


def _load_variants() -> list[tuple[str, str, dict[str, Any], bool]]:
    out: list[tuple[str, str, dict[str, Any], bool]] = [
        ("runtime", f"runtime={short(r, 20)}", {"runtime": r}, False)
        for r in (
            "",
            "nope",
            "torch",
            "tensorrt",
            "ort-cuda",
            "openvino",
            None,
            5,
            "ORT-CPU",
            "auto ",
        )
    ]
    out += [
        ("settings", f"settings={short(s, 40)}", {"settings": s}, False)
        for s in (
            {"intra_op_num_threads": -1},
            [],
            "x",
            {"graph_optimization_level": 7},
            {"intra_op_num_threads": "two"},
        )
    ]
    out.append(
        (
            "settings",
            "settings={'intra_op_num_threads': 1}",
            {"settings": {"intra_op_num_threads": 1}},
            True,
        )
    )
    out += [
        ("state-names", f"state_names={short(s, 30)}", {"state_names": s}, False)
        for s in ({"h0": "zz"}, "h0:hn", 5, {})
    ]
    out += [
        ("other", f"{k}={short(v, 20)}", {k: v}, False)
        for k, v in (("batch_first", "yes"), ("batch_first", 5), ("tuned", "no"), ("tuned", None))
    ]
    return out


def arrays(art: Artifacts, rng: np.random.Generator) -> list[Case]:
    items: list[tuple[str, str, Build, bool]] = []
    for kind, summary, make, expect, policy in _x_variants(rng):
        items.append(
            (f"run-{kind}", f"Model.run(x = {summary})", _run_build(make, expect, policy), False)
        )
    for policy in ("", None, 5, "ZERO", "interpolate", ["raise"]):
        items.append(
            (
                "run-nan-policy",
                f"Model.run(x, nan_policy={policy!r})",
                _run_build(lambda x: x, "any", policy),
                False,
            )
        )
    for extra in ({"zz": 1}, 5, "x", [("a", 1)]):
        items.append(
            (
                "run-extra",
                f"Model.run(x, extra={extra!r})",
                _run_build(lambda x: x, "any", "raise", extra=extra),
                False,
            )
        )
    for kind, summary, make, same in _state_variants():
        items.append(
            (
                f"run-state-{kind}",
                f"Model.run(x, state = {summary})",
                _run_state_build(make, same),
                False,
            )
        )
    for kind, summary, make, consumed in _chunk_variants():
        items.append(
            (
                f"step-{kind}",
                f"Stream.step({summary}) after {CUT} steps",
                _stream_build(lambda s, st, x, make=make: s.step(make(x)), consumed),
                False,
            )
        )
    for kind, summary, make, same in _state_variants():
        items.append(
            (
                f"state-{kind}",
                f"Stream.state = {summary}",
                _stream_build(_set_state(make), 0 if same else None),
                False,
            )
        )
    for kind, summary, kwargs in _open_variants():
        items.append((f"stream-{kind}", f"Model.stream({summary})", _open_build(kwargs), False))
    closed = [
        ("step", lambda s, st, x: s.step(x[:, CUT : CUT + 1])),
        ("state-get", lambda s, st, x: s.state),
        ("state-set", lambda s, st, x: setattr(s, "state", st)),
        ("reset", lambda s, st, x: s.reset()),
    ]
    for name, op in closed:
        items.append(
            (
                "closed",
                f"closed stream: {name}",
                _stream_build(lambda s, st, x, op=op: (s.close(), op(s, st, x)), None),
                False,
            )
        )
    for kind, summary, kwargs, same in _load_variants():

        def build(ctx: Ctx, kwargs: dict = kwargs, same: bool = same) -> Api:
            path = ctx.copy(ctx.art.onnx)
            from tests.hostile.cases import load_and_run

            return Api(
                lambda: load_and_run(path, ctx.art.x, **kwargs),
                lambda y: equal_forecast(y, ctx.art.y) if same else finite_any(y),
            )

        items.append((f"load-{kind}", f"rnnedge.load(path, {summary})", build, False))
    order = rng.permutation(len(items))  # interleave kinds: state left over shows up anywhere
    return numbered("arrays", [items[int(i)] for i in order])
