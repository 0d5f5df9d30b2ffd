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
        return "  ".join(
            v.rjust(w) if _numeric(v) else v.ljust(w) for v, w in zip(values, widths, strict=True)
        ).rstrip()

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
        return [
            [
                t["name"],
                t["dtype"],
                "(" + ", ".join(str(d) for d in t["shape"]) + ")",
                ",".join(str(a) for a in t.get("dynamic_axes", [])) or "-",
            ]
            for t in items
        ]

    head = ("name", "dtype", "shape", "dynamic axes")
    lines = [
        f"model: {info.get('source', '')}",
        "",
        "inputs:",
        table(head, tensors(info.get("inputs", []))),
        "",
        "outputs:",
        table(head, tensors(info.get("outputs", []))),
        "",
    ]
    lines += _spec_lines(info)
    ops = info.get("ops") or []
    lines.append("RNN ops: " + (", ".join(ops) if ops else info.get("ops_note") or "none found"))
    return "\n".join(lines)


def _spec_lines(info: Mapping[str, Any]) -> list[str]:
    """The recurrent contract as `inspect` shows it: what was stored or detected, and, for a
    file rnnedge did not write, how far detection got and which options would complete it."""
    origin = info.get("spec_origin")
    found = info.get("detection") or {}
    state = origin or ("incomplete" if found else "none")
    lines = [f"spec: {state}" + (f" ({info['spec_error']})" if info.get("spec_error") else "")]
    spec = info.get("spec") or {}
    if spec:
        out_t = spec.get("output_time_axis")
        lines.append(
            f"data: {spec.get('data_input')} -> {spec.get('data_output')}, layout "
            f"{spec.get('data_layout')} (batch axis {spec.get('batch_axis')}, time axis "
            f"{spec.get('seq_axis')}; output time axis "
            f"{'none: one output per call' if out_t is None else out_t}), "
            f"streamable: {fmt(spec.get('streamable'))}"
        )
        if spec.get("cell"):
            lines.append(
                f"cell: {spec['cell']} {spec.get('num_layers')}x"
                f"{spec.get('hidden_size')}, bidirectional: "
                f"{fmt(spec.get('bidirectional'))}"
            )
        if origin == "stored":
            lines += _contract_lines(spec.get("contract"), spec.get("normalization"))
            lines.append(f"precision: {precision_line(spec.get('precision'))}")
    elif found:
        cands = found.get("data_candidates") or []
        lines.append(
            f"found so far: data input {found.get('data_input') or 'none'} (candidates: "
            f"{', '.join(cands) or 'none'}), data output {found.get('data_output') or 'none'}, "
            f"layout {found.get('layout') or 'not guessed'}"
        )
    if found.get("layout_reason"):
        lines.append(f"layout rule: {found['layout_reason']}")
    pairs = info.get("state_pairs") or []
    lines.append(
        "state pairs: "
        + (
            ", ".join(
                f"{p['input']} -> {p['output']}"
                + (
                    ""
                    if p.get("batch_axis") is None and not spec
                    else f" (batch axis {p.get('batch_axis')})"
                    if p.get("batch_axis") is not None
                    else " (no batch axis)"
                )
                for p in pairs
            )
            if pairs
            else "none"
        )
    )
    extra = info.get("extra_inputs") or []
    lines.append(
        "extra inputs: "
        + (
            ", ".join(
                f"{t['name']} {t['dtype']} ({', '.join(str(d) for d in t['shape'])})" for t in extra
            )
            if extra
            else "none"
        )
    )
    if found.get("same_shape") and not pairs:
        lines.append(
            "same shape, not paired: " + ", ".join(f"{i} / {o}" for i, o in found["same_shape"])
        )
    advice = found.get("advice") or []
    if advice and (not spec or not spec.get("streamable") or info.get("spec_error")):
        lines.append("to complete it: " + "; ".join(advice))
    elif advice:
        lines.append("if a guess is wrong: " + "; ".join(advice))
    return lines


def precision_line(record: Any) -> str:
    """`int8 (dynamic-int8-per-channel): mse 311.2 -> 310.2 (-0.33 %, streamed +0.37 %), margin
    1 %`: what a reduced-precision file gave up, in the task's own metric."""
    if record is None:
        return "fp32"
    get = record.get if isinstance(record, Mapping) else lambda k, d=None: getattr(record, k, d)
    fp32, value = get("fp32_value"), get("value")
    change = (value - fp32) / abs(fp32) if fp32 else 0.0
    streamed = get("stream_value")
    stream = (
        f", streamed {100 * (streamed - fp32) / abs(fp32):+.2f} %"
        if streamed is not None and fp32
        else ""
    )
    where = f" on {get('runtime')}" if get("runtime") else ""
    scheme = f" ({get('scheme')})" if get("scheme") else ""
    return (
        f"{get('precision')}{scheme}{where}: {get('metric')} {fmt(fp32)} -> {fmt(value)} "
        f"({100 * change:+.2f} %{stream}), margin {fmt(100 * get('margin'))} %"
    )


def _contract_lines(
    contract: Mapping[str, Any] | None, norm: Mapping[str, Any] | None
) -> list[str]:
    """The data contract as `inspect` shows it: which columns go in and come out, and how."""
    if not contract:
        return [
            "data contract: none (columns are fed by position; re-export from a checkpoint "
            "made by this rnnedge to match them by name)"
        ]
    lines = [
        f"features (in this order): {', '.join(contract['features'])}",
        f"forecasts: {', '.join(contract['targets'])}, {contract.get('horizon', 1)} step(s) "
        "ahead (output row t is the forecast for t + horizon)",
    ]
    if contract.get("time_column"):
        lines.append(f"time column: {contract['time_column']}")
    if norm:
        stats = ", ".join(
            f"{name} mean {fmt(m)} std {fmt(s)}"
            for name, m, s in zip(contract["features"], norm["mean"], norm["std"], strict=False)
        )
        lines.append(f"normalization: {stats}")
    if contract.get("fingerprint"):
        lines.append(f"training data: {contract['fingerprint']}")
    return lines


# --- latency benchmarks (`rnnedge bench`, benchmarks/run_matrix.py) ---------------------------
BENCH_HEADERS = (
    "runner",
    "kind",
    "batch",
    "seq_len",
    "p50 ms",
    "p90 ms",
    "seq/s",
    "steps/s",
    "vs eager",
    "vs ort-raw",
    "noisy",
)


def ratio(value: float | None) -> str | None:
    """A speedup as `1.23×` (None stays None, shown as a dash)."""
    return None if value is None else f"{value:.2f}×"


def bench_rows(result: Mapping[str, Any]) -> list[list[Any]]:
    """One row per measured point of a `BenchResult.to_dict()`, latencies in milliseconds."""
    rows = []
    for p in result.get("points", []):
        lat = p["latency_s"]
        rows.append(
            [
                p["runner"],
                p["kind"],
                p["batch"],
                p["seq_len"],
                1e3 * lat["p50"],
                1e3 * lat["p90"],
                p["sequences_per_s"],
                p["steps_per_s"],
                ratio(p.get("vs_eager")),
                ratio(p.get("vs_ort_raw")),
                "yes" if p.get("noisy") else "",
            ]
        )
    return rows


def _bench_header_lines(result: Mapping[str, Any]) -> list[str]:
    env = result.get("environment", {})
    versions = ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items() if v)
    lines = [
        f"model: {result.get('model', '')}",
        f"machine: {env.get('cpu_model', '?')}, {env.get('cores', '?')} cores; {versions}",
        f"budget per point: {fmt(float(result.get('budget_s', 0)))} s after "
        f"{result.get('warmup', 0)} warm-up calls; ratios are speedups (baseline p50 / "
        "runner p50, > 1 = faster), measured in this run",
    ]
    for name, info in result.get("runners", {}).items():
        lines.append(
            f"runner {name}: {info.get('description', '')}"
            + (
                f" — settings {json.dumps(info['settings'], sort_keys=True)}"
                if info.get("settings") is not None
                else ""
            )
        )
    lines += [f"skipped {name}: {why}" for name, why in result.get("skipped", {}).items()]
    lines += [f"note: {n}" for n in result.get("notes", [])]
    return lines


def bench_text(result: Mapping[str, Any]) -> str:
    """`rnnedge bench` for a terminal: what ran where, then the table."""
    return "\n".join([*_bench_header_lines(result), "", table(BENCH_HEADERS, bench_rows(result))])


def bench_markdown(result: Mapping[str, Any]) -> str:
    head = _bench_header_lines(result)
    return "\n".join(
        [
            "# rnnedge bench",
            "",
            *[f"- {line}" for line in head],
            "",
            markdown_table(BENCH_HEADERS, bench_rows(result)),
            "",
        ]
    )


def _pyplot() -> Any:
    from rnnedge._optional import require

    matplotlib = require("matplotlib", "--plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_bench(result: Mapping[str, Any], path: str | Path) -> Path:
    """Log-log p50 latency vs seq_len: a colour per runner, a line style per batch size."""
    plt = _pyplot()
    points = [p for p in result.get("points", []) if p["kind"] == "sequence"]
    runners = list(dict.fromkeys(p["runner"] for p in points))
    batches = sorted({p["batch"] for p in points})
    styles = ["-", "--", ":", "-."]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for i, runner in enumerate(runners):
        color = f"C{i % 10}"
        for j, batch in enumerate(batches):
            pts = sorted(
                (p["seq_len"], 1e3 * p["latency_s"]["p50"])
                for p in points
                if p["runner"] == runner and p["batch"] == batch
            )
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(
                    xs,
                    ys,
                    styles[j % len(styles)],
                    color=color,
                    marker="o",
                    label=f"{runner} b{batch}",
                )
    for i, runner in enumerate(runners):
        steps = [
            p
            for p in result.get("points", [])
            if p["kind"] == "stream_step" and p["runner"] == runner
        ]
        for p in steps:
            ax.plot(
                [p["seq_len"]],
                [1e3 * p["latency_s"]["p50"]],
                "x",
                color=f"C{i % 10}",
                markersize=9,
                label=f"{runner} stream step",
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("seq_len (steps)")
    ax.set_ylabel("p50 latency (ms)")
    env = result.get("environment", {})
    ax.set_title(
        f"{Path(str(result.get('model', ''))).name} on {env.get('cpu_model', '?')} "
        f"({env.get('cores', '?')} cores)",
        fontsize=9,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return _save_figure(plt, fig, path)


MATRIX_HEADERS = (
    "workload",
    "eager ms",
    "ort-raw ms",
    "rnnedge ms",
    "rnnedge settings",
    "vs eager",
    "vs ort-raw",
    "vs best baseline",
    "target",
    "noisy",
)


def matrix_rows(matrix: Mapping[str, Any]) -> list[list[Any]]:
    """One row per workload of `benchmarks/run_matrix.py`: p50s in ms and speedups."""
    rows = []
    for w in matrix.get("workloads", []):
        p50 = {k: v["latency_s"]["p50"] for k, v in w["runners"].items()}
        target = w.get("target")
        rows.append(
            [
                w["name"],
                1e3 * p50["eager"],
                1e3 * p50["ort-raw"],
                1e3 * p50["rnnedge"],
                w["runners"]["rnnedge"].get("label", ""),
                ratio(w.get("vs_eager")),
                ratio(w.get("vs_ort_raw")),
                ratio(w.get("vs_best_baseline")),
                "-" if target is None else f"≥{target:.1f}× {'met' if w.get('met') else 'NOT met'}",
                "yes" if any(v.get("noisy") for v in w["runners"].values()) else "",
            ]
        )
    return rows


def matrix_markdown(matrix: Mapping[str, Any]) -> str:
    """The workload matrix as a markdown report: machine, table, per-runner settings, notes."""
    env = matrix.get("environment", {})
    versions = ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items() if v)
    lines = [
        "# rnnedge latency matrix",
        "",
        f"- date: {env.get('date', '?')}; machine: {env.get('cpu_model', '?')}, "
        f"{env.get('cores', '?')} cores; {env.get('platform', '')}",
        f"- versions: {versions}",
        "- p50 of pooled samples from interleaved rounds; speedup = baseline p50 / "
        "rnnedge p50; `noisy`: other processes used ≥ 0.1 core while measuring",
        "",
        markdown_table(MATRIX_HEADERS, matrix_rows(matrix)),
        "",
        "## Runner settings",
        "",
    ]
    for w in matrix.get("workloads", []):
        lines.append(f"### {w['name']}: {w.get('description', '')}")
        lines.append("")
        for name, r in w["runners"].items():
            lat = r["latency_s"]
            lines.append(
                f"- {name}: p50 {fmt(1e3 * lat['p50'])} ms, p90 "
                f"{fmt(1e3 * lat['p90'])} ms, n={lat['samples']}; settings "
                f"`{json.dumps(r.get('settings'), sort_keys=True)}`"
            )
        lines.append("")
    for section, items in (("Notes", matrix.get("notes", [])),):
        if items:
            lines += [f"## {section}", "", *[f"- {n}" for n in items], ""]
    return "\n".join(lines)


def plot_matrix(matrix: Mapping[str, Any], path: str | Path) -> Path:
    """Grouped bars of p50 latency (log scale) per workload and runner."""
    plt = _pyplot()
    workloads = matrix.get("workloads", [])
    runners = list(dict.fromkeys(k for w in workloads for k in w["runners"]))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / max(1, len(runners))
    for i, runner in enumerate(runners):
        xs = [j + i * width for j, w in enumerate(workloads) if runner in w["runners"]]
        ys = [
            1e3 * w["runners"][runner]["latency_s"]["p50"]
            for w in workloads
            if runner in w["runners"]
        ]
        ax.bar(xs, ys, width, label=runner, color=f"C{i % 10}")
    ax.set_xticks([j + width * (len(runners) - 1) / 2 for j in range(len(workloads))])
    ax.set_xticklabels([w["name"] for w in workloads], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("p50 latency (ms)")
    env = matrix.get("environment", {})
    ax.set_title(
        f"{env.get('cpu_model', '?')} ({env.get('cores', '?')} cores), {env.get('date', '')}",
        fontsize=9,
    )
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save_figure(plt, fig, path)


def pull_request_markdown(data: Mapping[str, Any], parity: Any) -> str:
    """The `rnnedge report` document: export, lint, parity, streaming, latency."""
    spec = data["spec"]
    lines = [f"# rnnedge report: {data['model']}", ""]
    cell = (
        f"{spec.get('cell')} {spec.get('num_layers')}×{spec.get('hidden_size')}"
        if spec.get("cell")
        else "user module"
    )
    lines += [
        f"- model: {cell}, batch_first={spec.get('batch_first')}, "
        f"bidirectional={spec.get('bidirectional')}",
        f"- ONNX: `{data['onnx']}` ({data['exporter']}, opset {data['opset']})",
        "- inputs: " + ", ".join(f"`{t.name}{tuple(t.shape)}`" for t in data["inputs"]),
        "- outputs: " + ", ".join(f"`{t.name}{tuple(t.shape)}`" for t in data["outputs"]),
        f"- verified at export against eager PyTorch at other shapes: max abs diff "
        f"{fmt(data['export_verification_max_abs'])}",
        "",
        "## Graph lint",
        "",
        markdown_table(
            ("severity", "code", "node", "finding", "fix"),
            [[f.severity, f.code, f.node or "-", f.message, f.fix] for f in data["lint"]],
        ),
        "",
        f"## Parity against eager PyTorch ({'pass' if parity.ok else 'FAIL'})",
        "",
        markdown_table(PARITY_HEADERS, parity_rows(parity)),
        "",
        "## Streaming",
        "",
    ]
    diff = data["stream_vs_full_max_abs"]
    lines.append(
        "not streamable (bidirectional or no state)"
        if diff is None
        else f"chunks of 1, 7 and random sizes vs one full pass: max abs diff {fmt(diff)}"
    )
    lines += [
        "",
        "## Latency",
        "",
        bench_markdown(data["bench"]),
        "",
        "![latency vs seq_len](latency.png)",
        "",
        f"report made in {fmt(data['seconds'])} s",
    ]
    return "\n".join(lines) + "\n"


def _save_figure(plt: Any, fig: Any, path: str | Path) -> Path:
    """Lay out, write atomically as PNG, and free the figure."""
    from rnnedge.fileio import atomic_write

    fig.tight_layout()
    out = atomic_write(Path(path), lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)
    return out
