"""Where numbers become strings: plain-text and markdown tables, and JSON-safe values.

Everything else in rnnedge passes numbers around as numbers; rendering lives here alone so
`--json` output and tables come from the same data.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any


def fmt(value: Any, digits: int = 3) -> str:
    """A cell: floats in compact scientific-or-fixed form, None as a dash."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf"
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits}g}" if abs(value) < 1 else f"{value:,.{max(digits - 1, 1)}f}"
    return str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain-text table with right-aligned numbers, for terminals."""
    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    raw_rows = list(cells)

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if _numeric(v) else v.ljust(w)
                         for v, w in zip(values, widths, strict=True)).rstrip()

    out = [line(list(headers)), line(["-" * w for w in widths])]
    out += [line(r) for r in raw_rows]
    return "\n".join(out)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(out)


def _numeric(text: str) -> bool:
    try:
        float(text.replace(",", "").rstrip("×%"))
    except ValueError:
        return text in ("inf", "nan", "-")
    return True


def jsonable(obj: Any) -> Any:
    """Dataclasses, paths, numpy scalars and non-finite floats made JSON-safe."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


def to_json(obj: Any) -> str:
    return json.dumps(jsonable(obj), indent=2, sort_keys=False)


def parity_rows(report: Any) -> list[list[Any]]:
    """One row per runner and shape: worst diff over outputs, and whether all passed."""
    rows: dict[tuple[str, int, int], list[Any]] = {}
    for c in report.comparisons:
        key = (c.runner, c.batch, c.seq_len)
        row = rows.setdefault(key, [c.runner, c.batch, c.seq_len, 0.0, 0.0, True])
        row[3] = max(row[3], c.max_abs)
        row[4] = max(row[4], c.max_rel)
        row[5] = row[5] and c.ok
    return [[r[0], r[1], r[2], r[3], r[4], "pass" if r[5] else "FAIL"] for r in rows.values()]


PARITY_HEADERS = ("runtime", "batch", "seq_len", "max abs diff", "max rel diff", "result")


def inspect_text(info: Mapping[str, Any]) -> str:
    """`rnnedge inspect` as text: tensors, state pairs, extra inputs, RNN ops."""

    def tensors(items: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
        return [[t["name"], t["dtype"], "(" + ", ".join(str(d) for d in t["shape"]) + ")",
                 ",".join(str(a) for a in t.get("dynamic_axes", [])) or "-"] for t in items]

    head = ("name", "dtype", "shape", "dynamic axes")
    lines = [f"model: {info.get('source', '')}", "", "inputs:",
             table(head, tensors(info.get("inputs", []))), "", "outputs:",
             table(head, tensors(info.get("outputs", []))), ""]
    origin = info.get("spec_origin")
    lines.append(f"spec: {origin or 'none'}" + (f" ({info['spec_error']})"
                                               if info.get("spec_error") else ""))
    spec = info.get("spec") or {}
    if spec:
        lines.append(f"data: {spec.get('data_input')} -> {spec.get('data_output')}, "
                     f"batch axis {spec.get('batch_axis')}, seq axis {spec.get('seq_axis')}, "
                     f"streamable: {fmt(spec.get('streamable'))}")
        if spec.get("cell"):
            lines.append(f"cell: {spec['cell']} {spec.get('num_layers')}x"
                         f"{spec.get('hidden_size')}, bidirectional: "
                         f"{fmt(spec.get('bidirectional'))}")
    pairs = info.get("state_pairs") or []
    lines.append("state pairs: " + (", ".join(f"{p['input']} -> {p['output']}" for p in pairs)
                                    if pairs else "none"))
    extra = info.get("extra_inputs") or []
    lines.append("extra inputs: " + (", ".join(t["name"] for t in extra) if extra else "none"))
    ops = info.get("ops") or []
    lines.append("RNN ops: " + (", ".join(ops) if ops else info.get("ops_note") or "none found"))
    return "\n".join(lines)
