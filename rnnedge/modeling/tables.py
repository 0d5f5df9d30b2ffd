"""Named tabular data (CSV) in, a `Series` out: gaps, time columns and column choice made explicit.

A forecaster that quietly trains on a `year` column, or on a date written as `19580329`, learns
nothing and still exits 0. So columns that look like time (by name, by date-like text, or as a
strictly increasing integer index) are never taken as features without being named; they are
kept aside as the rows' time labels instead. Missing cells (empty, `NA`, `null`, `nan`, ...) are
read as gaps, and one policy (`raise`, `zero`, `ffill`, `interpolate`) decides what happens to
them, with errors that name the column, the data row and the file line.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence

import numpy as np

from rnnedge.errors import InputError
from rnnedge.runtime.gaps import MISSING_POLICIES, POLICY_HINT, fill_missing  # noqa: F401

#: what counts as a missing cell (compared case-insensitively, after stripping)
NA_TOKENS = frozenset(
    {"", "na", "n/a", "nan", "-nan", "null", "none", "#n/a", "<na>", "nil", "missing", "."}
)
#: column names that label time rather than measure something
TIME_NAMES = frozenset(
    {
        "date",
        "time",
        "datetime",
        "timestamp",
        "ds",
        "year",
        "quarter",
        "month",
        "week",
        "day",
        "hour",
        "minute",
        "second",
        "period",
        "index",
        "idx",
        "unnamed: 0",
    }
)
_DATE_TEXT = re.compile(
    r"^(\d{4}-\d{1,2}(-\d{1,2})?|\d{4}/\d{1,2}/\d{1,2}|\d{1,2}/\d{1,2}/\d{2,4})"
    r"([ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$"
)
#: an unnamed strictly increasing integer column this long with a constant step is an index
_INDEX_MIN_ROWS = 10


class Table:
    """A parsed CSV: header, cells and the file line of every data row, for messages."""

    def __init__(
        self, header: list[str], rows: list[list[str]], lines: list[int], source: str
    ) -> None:
        self.header = header
        self.rows = rows
        self.lines = lines
        self.source = source

    def column(self, name: str) -> list[str]:
        j = self.header.index(name)
        return [r[j] for r in self.rows]

    def where(self, row: int) -> str:
        """`data row 5 (file line 6) of f.csv` for the 0-based row `row`."""
        return f"data row {row + 1} (file line {self.lines[row]}) of {self.source}"


def read_table(lines: Iterable[str], delimiter: str, source: str) -> Table:
    """Parse CSV text with a header row; ragged rows and duplicate header names are refused."""
    reader = csv.reader(lines, delimiter=delimiter)
    header: list[str] | None = None
    rows: list[list[str]] = []
    where: list[int] = []
    try:
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue  # blank line
            cells = [c.strip() for c in cells]
            if header is None:
                header = cells
                continue
            if len(cells) != len(header):
                raise InputError(
                    f"{source} line {reader.line_num} has {len(cells)} fields but the header has "
                    f"{len(header)}; fix the row or check the delimiter ({delimiter!r})"
                )
            rows.append(cells)
            where.append(reader.line_num)
    except csv.Error as e:
        raise InputError(f"{source} line {reader.line_num} is not valid CSV ({e}); fix it") from e
    if header is None:
        raise InputError(f"{source} is empty; expected a header row and data rows")
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise InputError(
            f"{source} has duplicated column names {dupes} in its header; a column "
            "must be named once so it can be selected by name"
        )
    if not rows:
        raise InputError(f"{source} has a header but no data rows; add data below the header")
    return Table(header, rows, where, source)


def is_missing(text: str) -> bool:
    return text.strip().lower() in NA_TOKENS


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def numeric_column(cells: Sequence[str]) -> bool:
    """Most filled cells parse as numbers: a typo still counts, so it is reported, not dropped."""
    filled = [c for c in cells if not is_missing(c)]
    ok = sum(_number(c) is not None for c in filled)
    return bool(filled) and ok * 2 > len(filled)


def time_like(name: str, cells: Sequence[str]) -> bool:
    """A column that labels time: named so, written as dates, or a strictly increasing index."""
    if name.strip().lower() in TIME_NAMES:
        return True
    filled = [c for c in cells if not is_missing(c)]
    if filled and all(_DATE_TEXT.match(c) for c in filled):
        return True
    nums = [_number(c) for c in filled]
    if len(nums) < 2 or any(v is None or v != int(v) for v in nums):
        return False
    arr = np.asarray(nums, dtype=np.float64)
    steps = np.diff(arr)
    if not np.all(steps > 0):
        return False
    yyyymmdd = bool(np.all((arr >= 1000_01_01) & (arr <= 9999_12_31)))
    index = len(arr) >= _INDEX_MIN_ROWS and bool(np.all(steps == steps[0]))
    return yyyymmdd or index


def parse_cell(text: str, name: str, where: str) -> float:
    """One CSV cell as a number: NaN for a gap (see `NA_TOKENS`), else a finite float, or an
    error naming the column and the place (`where`: "data row 5 (file line 6) of f.csv")."""
    if is_missing(text):
        return float("nan")
    v = _number(text)
    if v is None:
        raise InputError(
            f"column {name!r} has non-numeric value {text!r} at {where}; "
            f"expected a number, fix the cell or leave the column out"
        )
    if not np.isfinite(v):
        raise InputError(
            f"column {name!r} has {text!r} at {where}, which is not a finite "
            "number; fix the cell (a gap is an empty cell or NA)"
        )
    return v


def parse_numbers(table: Table, names: Sequence[str]) -> np.ndarray:
    """The named columns as float64 (T, F); missing cells are NaN, anything else not a number
    is an error naming the cell."""
    values = np.empty((len(table.rows), len(names)), dtype=np.float64)
    for j, name in enumerate(names):
        for r, text in enumerate(table.column(name)):
            values[r, j] = parse_cell(text, name, table.where(r))
    return values
