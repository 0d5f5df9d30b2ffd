"""Hostile CSV files, read by `rnnedge run`, `rnnedge train` and `load_csv`.

A file that says the same thing as the valid series in another spelling (a BOM, CRLF, quoted
numbers, columns in another order, an extra column the model does not use) must give the
reference forecast: columns are matched by name. Anything else must be refused with one line
or give a finite forecast for every row.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from tests.hostile.artifacts import FEATURES, SERIES_LEN, Artifacts
from tests.hostile.cases import Api, Case, Cli, Ctx, numbered
from tests.hostile.cases_cli import forecast_csv_problem, json_stdout_problem

NA_TOKENS = ("", "NA", "N/A", "null", "nan", "NaN", "#N/A", "None", "-", "?", ".", "missing")
BAD_NUMBERS = (
    "abc",
    '"1,5"',
    "1.2.3",
    "0x1F",
    "1e",
    "∞",
    "١٢",
    "1_000",
    "inf",
    "-inf",
    "1e400",
    "-1e400",
    "TRUE",
    "０",
    "1.5e+",
    "--1",
    "1e-400",
    "+-1",
)
Table = tuple[list[str], list[list[str]]]


def _table(art: Artifacts) -> Table:
    text = art.csv.read_text().splitlines()
    return text[0].split(","), [line.split(",") for line in text[1:]]


def _text(table: Table, nl: str = "\n", sep: str = ",") -> str:
    header, rows = table
    return nl.join(sep.join(r) for r in [header, *rows]) + nl


def _cells(rng: np.random.Generator, n: int) -> list[tuple[int, int]]:
    return [(int(rng.integers(0, SERIES_LEN)), int(rng.integers(1, 3))) for _ in range(n)]


def _with_cells(table: Table, cells: list[tuple[int, int]], token: str) -> Table:
    header, rows = table
    rows = [list(r) for r in rows]
    for i, j in cells:
        rows[i][j] = token
    return header, rows


def _columns(
    table: Table, order: list[int], extra: tuple[str, Callable[[int], str]] | None = None
) -> Table:
    header, rows = table
    h = [header[j] for j in order]
    body = [[r[j] for j in order] for r in rows]
    if extra:
        h.append(extra[0])
        body = [[*b, extra[1](i)] for i, b in enumerate(body)]
    return h, body


def _variants(
    art: Artifacts, rng: np.random.Generator
) -> list[tuple[str, str, Callable[[], str | bytes], str]]:
    """(kind, summary, content, expect): expect 'equal' (the reference forecast) or 'any'."""
    t = _table(art)
    header, rows = t
    out: list[tuple[str, str, Callable[[], str | bytes], str]] = [
        ("bom", "a UTF-8 BOM", lambda: "\ufeff" + _text(t), "equal"),
        ("crlf", "CRLF line ends", lambda: _text(t, "\r\n"), "equal"),
        ("cr", "CR line ends", lambda: _text(t, "\r"), "equal"),
        ("no-newline", "no final newline", lambda: _text(t)[:-1], "equal"),
        ("blank-lines", "blank lines at the end", lambda: _text(t) + "\n\n\n", "equal"),
        (
            "quoted",
            "every number quoted",
            lambda: _text((header, [[r[0]] + [f'"{c}"' for c in r[1:]] for r in rows])),
            "equal",
        ),
        (
            "plus",
            "numbers with a leading +",
            lambda: _text(
                (
                    header,
                    [
                        [r[0]] + ["+" + c if not c.startswith("-") else c for c in r[1:]]
                        for r in rows
                    ],
                )
            ),
            "equal",
        ),
        ("reordered", "columns x1,x0,date", lambda: _text(_columns(t, [2, 1, 0])), "equal"),
        ("reordered", "columns date,x1,x0", lambda: _text(_columns(t, [0, 2, 1])), "equal"),
        (
            "extra-text",
            "an extra text column",
            lambda: _text(_columns(t, [0, 1, 2], ("note", lambda i: f"n{i}"))),
            "equal",
        ),
        (
            "extra-numeric",
            "an extra numeric column x2 the model does not use",
            lambda: _text(_columns(t, [0, 1, 2], ("x2", lambda i: str(i * 0.5)))),
            "equal",
        ),
        ("no-time", "no date column", lambda: _text(_columns(t, [1, 2])), "equal"),
        (
            "duplicate-header",
            "the header x0,x0",
            lambda: _text((["date", "x0", "x0"], rows)),
            "any",
        ),
        (
            "duplicate-header",
            "the header date,date,x1",
            lambda: _text((["date", "date", "x1"], rows)),
            "any",
        ),
        (
            "duplicate-header",
            "an extra column named x0 again",
            lambda: _text(_columns(t, [0, 1, 2], ("x0", lambda i: "9.0"))),
            "any",
        ),
        ("empty-header", "an empty column name", lambda: _text((["date", "", "x1"], rows)), "any"),
        ("renamed", "the header x0,x9", lambda: _text((["date", "x0", "x9"], rows)), "any"),
        (
            "spaces",
            "header names padded with spaces",
            lambda: _text((["date", " x0", "x1 "], rows)),
            "any",
        ),
        ("header-only", "a header and no rows", lambda: _text((header, [])), "any"),
        ("one-row", "one data row", lambda: _text((header, rows[:1])), "any"),
        ("empty", "an empty file", lambda: "", "any"),
        ("bom-only", "only a BOM", lambda: "\ufeff", "any"),
        ("one-feature", "only x0", lambda: _text(_columns(t, [0, 1])), "any"),
        ("semicolons", "semicolon-separated", lambda: _text(t, sep=";"), "any"),
        ("tabs", "tab-separated", lambda: _text(t, sep="\t"), "any"),
        ("quote", "an unbalanced quote", lambda: _text(_with_cells(t, [(3, 1)], '"1.0')), "any"),
        ("nul", "a NUL byte in a cell", lambda: _text(_with_cells(t, [(4, 2)], "1\x00")), "any"),
        (
            "latin-1",
            "a latin-1 header",
            lambda: _text((["date", "x0", "caf\xe9"], rows)).encode("latin-1"),
            "any",
        ),
        ("utf-16", "UTF-16 with a BOM", lambda: _text(t).encode("utf-16"), "any"),
        (
            "huge-field",
            "a 200 kB numeric cell",
            lambda: _text(_with_cells(t, [(5, 1)], "1" * 200_000)),
            "any",
        ),
        (
            "huge-field",
            "a 200 kB text cell",
            lambda: _text(_with_cells(t, [(5, 1)], "x" * 200_000)),
            "any",
        ),
        (
            "huge-header",
            "a 10 kB header name",
            lambda: _text((["date", "x0", "h" * 10_000], rows)),
            "any",
        ),
        (
            "wide",
            "2000 extra columns",
            lambda: _text(
                ([*header, *[f"c{i}" for i in range(2000)]], [[*r, *["1"] * 2000] for r in rows])
            ),
            "any",
        ),
        (
            "long",
            "100000 rows",
            lambda: _text((header, [rows[i % SERIES_LEN] for i in range(100_000)])),
            "any",
        ),
        (
            "time",
            "repeated timestamps",
            lambda: _text((header, [[rows[0][0], *r[1:]] for r in rows])),
            "any",
        ),
        (
            "time",
            "timestamps out of order",
            lambda: _text((header, [[r[0], *r[1:]] for r in reversed(rows)])),
            "any",
        ),
        ("binary", "random bytes", lambda: bytes(rng.bytes(3000)), "any"),
        ("binary", "the model's bytes", lambda: art.onnx_bytes, "any"),
    ]
    for _ in range(4):
        i = int(rng.integers(0, SERIES_LEN))
        extra = bool(rng.integers(0, 2))
        out.append(
            (
                "ragged",
                f"data row {i + 1} with {'an extra' if extra else 'a missing'} cell",
                lambda i=i, extra=extra: _text(
                    (
                        header,
                        [
                            ([*r, "7"] if extra else r[:-1]) if k == i else r
                            for k, r in enumerate(rows)
                        ],
                    )
                ),
                "any",
            )
        )
    for _ in range(14):
        token = NA_TOKENS[int(rng.integers(0, len(NA_TOKENS)))]
        cells = _cells(rng, int(rng.integers(1, 6)))
        out.append(
            (
                "missing",
                f"{token!r} in cells {cells}",
                lambda c=cells, tok=token: _text(_with_cells(t, c, tok)),
                "any",
            )
        )
    for _ in range(14):
        token = BAD_NUMBERS[int(rng.integers(0, len(BAD_NUMBERS)))]
        cells = _cells(rng, int(rng.integers(1, 4)))
        out.append(
            (
                "not-a-number",
                f"{token!r} in cells {cells}",
                lambda c=cells, tok=token: _text(_with_cells(t, c, tok)),
                "any",
            )
        )
    return out


def _csv_build(content: Callable[[], str | bytes], op: str, expect: str) -> Callable[[Ctx], Any]:
    def build(ctx: Ctx) -> Api | Cli:
        art = ctx.art
        data = content()
        path = ctx.write("input.csv", data)
        want = art.y if expect == "equal" else None
        if op == "load_csv":
            from rnnedge.modeling.data import load_csv

            return Api(lambda: load_csv(path), lambda s: _series_problem(s, art, expect))
        if op == "train":
            out = ctx.dir / "trained.pt"
            return Cli(
                [
                    "train",
                    "--data",
                    str(path),
                    "--target",
                    "x0",
                    "--epochs",
                    "1",
                    "--hidden-size",
                    "4",
                    "--window",
                    "8",
                    "-o",
                    str(out),
                    "--json",
                ],
                (out,),
                check=json_stdout_problem,
                inputs=(path,),
            )
        onnx = ctx.copy(art.onnx, "model.onnx")
        out = ctx.dir / "forecast.csv"
        extra = {
            "run": [],
            "run-ffill": ["--nan-policy", "ffill"],
            "run-stream": ["--stream", "--chunk", "7"],
        }[op]
        rows = SERIES_LEN if expect == "equal" else None
        return Cli(
            ["run", str(onnx), "--input", str(path), "-o", str(out), *extra],
            (out,),
            check=lambda _: forecast_csv_problem(out, want, rows),
            inputs=(onnx, path),
        )

    return build


def _series_problem(series: Any, art: Artifacts, expect: str) -> str | None:
    values = np.asarray(series.values)
    if values.ndim != 2 or values.shape[0] < 1 or not np.all(np.isfinite(values)):
        return f"load_csv returned values of shape {values.shape} that are not all finite"
    if expect == "equal":
        cols = list(series.columns)
        if not set(FEATURES) <= set(cols):
            return f"load_csv returned columns {cols}, expected {list(FEATURES)} among them"
        got = values[:, [cols.index(f) for f in FEATURES]]
        if not np.allclose(got, art.values, rtol=1e-6, atol=0):
            return "load_csv returned other numbers than the file holds"
    return None


def csv_files(art: Artifacts, rng: np.random.Generator) -> list[Case]:
    items = []
    ops = ("run", "run-ffill", "run-stream", "load_csv", "train")
    for kind, summary, content, expect in _variants(art, rng):
        for op in ("run", str(rng.choice(ops, p=(0.2, 0.2, 0.2, 0.3, 0.1)))):
            items.append(
                (
                    f"{kind}-{op}",
                    f"{op}: input.csv with {summary}",
                    _csv_build(content, op, expect),
                    False,
                )
            )
    for kind, summary, make in (
        ("directory", "a directory", lambda ctx: (ctx.dir / "d.csv").mkdir() or "d.csv"),
        ("missing", "a missing file", lambda ctx: "missing.csv"),
        ("loop", "a symlink loop", _loop),
    ):

        def build(ctx: Ctx, make: Callable[[Ctx], str] = make) -> Cli:
            onnx = ctx.copy(ctx.art.onnx, "model.onnx")
            out = ctx.dir / "forecast.csv"
            return Cli(["run", str(onnx), "--input", make(ctx), "-o", str(out)], (out,))

        items.append((kind, f"run: --input is {summary}", build, False))
    return numbered("csv", items)


def _loop(ctx: Ctx) -> str:
    import os

    os.symlink(ctx.dir / "b.csv", ctx.dir / "a.csv")
    os.symlink(ctx.dir / "a.csv", ctx.dir / "b.csv")
    return "a.csv"
