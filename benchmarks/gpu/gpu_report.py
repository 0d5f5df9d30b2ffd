"""The GPU benchmark's report: every row as measured, the targets, and which part to attack.

Numbers stay numbers in `result.json`; only `result.md` renders them. A target is judged only
from rows of one phase (measured interleaved in one process), and a missed one names the part
of a step (copy-in, GPU work, copy-out) that is furthest above the torch CUDA-graph floor.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from rnnedge.tools.render import markdown_table

TENSORRT_NOTE = (
    "TensorRT could not be installed on the GPU machine: its PyPI packages (`tensorrt`, "
    "`tensorrt-cu12/13`) only download the real wheels from NVIDIA's index, which that machine "
    "cannot reach, and the wheels that exist on PyPI are bindings or runtime-only. So no "
    "TensorRT path (the `tensorrt` runner, ORT's TensorRT provider) was tested: the absence of "
    "TensorRT failures here says nothing about whether TensorRT works."
)
W5_FLOOR, W5_EAGER = 2.0, 3.0
W6_SPEEDUP, STREAMS_SPEEDUP = 1.0, 50.0
ORT_GRAPH, FLOOR = "ort-cuda, CUDA graph", "torch CUDA graph, pinned I/O (floor)"


def latest(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[Any, ...], Mapping[str, Any]]:
    """The last row per (phase, workload, case, math, streams): a rerun replaces a run."""
    out: dict[tuple[Any, ...], Mapping[str, Any]] = {}
    for r in rows:
        if r.get("case") and r.get("kind") is None:
            out[(r.get("phase"), r.get("workload"), r["case"], r.get("math"), r.get("streams"))] = r
    return out


def _find(
    rows: Mapping[tuple[Any, ...], Mapping[str, Any]],
    phase: str,
    workload: str,
    case: str,
    math: str,
    streams: int | None = None,
) -> Mapping[str, Any] | None:
    r = rows.get((phase, workload, case, math, streams))
    return r if r is not None and "p50_us" in r else None


def attack(ort: Mapping[str, Any], floor: Mapping[str, Any] | None) -> str:
    """Which part of ORT's step is furthest above the floor's same part."""
    parts = ort.get("split") or {}
    if not parts:
        return "no split measured"
    base = (floor or {}).get("split") or {}
    excess = {k: v - base.get(k, 0.0) for k, v in parts.items()}
    worst = max(excess, key=lambda k: excess[k])
    device = (ort.get("gpu_time") or {}).get("device_us_per_call")
    busy = f"; GPU busy {device:.1f} µs of a {ort['p50_us']:.1f} µs step" if device else ""
    return f"{worst.removesuffix('_us')} (+{excess[worst]:.1f} µs over the floor){busy}"


def targets(rows: Iterable[Mapping[str, Any]], phase: str = "ort") -> list[dict[str, Any]]:
    """Each goal of issue 14 with its measured ratio, or why it could not be judged."""
    by = latest(rows)
    out: list[dict[str, Any]] = []

    def goal(name: str, want: str, value: float | None, ok: bool | None, note: str) -> None:
        out.append({"target": name, "wanted": want, "measured": value, "met": ok, "note": note})

    ort, floor = _find(by, phase, "W5", ORT_GRAPH, "fp32"), _find(by, phase, "W5", FLOOR, "fp32")
    eager = _find(by, phase, "W5", "torch eager CUDA", "fp32")
    if ort and floor:
        r = ort["p50_us"] / floor["p50_us"]
        goal(
            "W5 ORT CUDA graph vs torch CUDA-graph floor",
            f"≤ {W5_FLOOR}×",
            r,
            r <= W5_FLOOR,
            "" if r <= W5_FLOOR else f"attack: {attack(ort, floor)}",
        )
    else:
        goal(
            "W5 ORT CUDA graph vs torch CUDA-graph floor",
            f"≤ {W5_FLOOR}×",
            None,
            None,
            "not measured",
        )
    if ort and eager:
        r = eager["p50_us"] / ort["p50_us"]
        goal(
            "W5 ORT CUDA graph speedup over eager CUDA",
            f"≥ {W5_EAGER}×",
            r,
            r >= W5_EAGER,
            "" if r >= W5_EAGER else f"attack: {attack(ort, floor)}",
        )
    else:
        goal(
            "W5 ORT CUDA graph speedup over eager CUDA",
            f"≥ {W5_EAGER}×",
            None,
            None,
            "not measured",
        )
    for math in ("fp32", "fp16"):
        o = _find(by, phase, "W6", "ort-cuda, IO binding", math)
        e = _find(by, phase, "W6", "torch eager cuDNN", math)
        r = e["p50_us"] / o["p50_us"] if o and e else None
        note = (
            "not measured"
            if r is None
            else ""
            if r >= W6_SPEEDUP
            else (f"GPU busy per call: ORT {_busy(o)} vs torch {_busy(e)}")
        )
        goal(
            f"W6 ORT CUDA speedup over eager cuDNN, {math}",
            f"≥ {W6_SPEEDUP}×",
            r,
            None if r is None else r >= W6_SPEEDUP,
            note,
        )
    n = 1024
    gpu = _find(by, phase, "W5", ORT_GRAPH, "fp32", n)
    cpu = next(
        (
            r
            for k, r in by.items()
            if k[0] == phase
            and k[1] == "W5"
            and k[4] == n
            and r.get("runtime") == "ort-cpu"
            and "stream_steps_per_s" in r
        ),
        None,
    )
    r = gpu["stream_steps_per_s"] / cpu["stream_steps_per_s"] if gpu and cpu else None
    goal(
        f"{n} streams, ORT CUDA graph vs the CPU runtime (stream-steps/s)",
        f"≥ {STREAMS_SPEEDUP}×",
        r,
        None if r is None else r >= STREAMS_SPEEDUP,
        "not measured"
        if r is None
        else ""
        if r >= STREAMS_SPEEDUP
        else f"attack: {attack(gpu, _find(by, phase, 'W5', FLOOR, 'fp32', n))}",
    )
    return out


def _busy(r: Mapping[str, Any] | None) -> str:
    """`812 of 905 µs`: device time per call from the profiler, of the call's p50."""
    if not r:
        return "-"
    device = (r.get("gpu_time") or {}).get("device_us_per_call")
    return f"{device:.0f} of {r['p50_us']:.0f} µs" if device else f"? of {r['p50_us']:.0f} µs"


def _split(r: Mapping[str, Any]) -> str | None:
    s = r.get("split") or {}
    keys = ("copy_in_us", "gpu_us", "copy_out_us")
    return " / ".join(f"{s[k]:.1f}" for k in keys if k in s) or None


def _rate(r: Mapping[str, Any]) -> float | None:
    if "stream_steps_per_s" in r:
        return r["stream_steps_per_s"]
    return 1e6 / r["p50_us"] if r.get("p50_us") else None


def render(rows: list[dict[str, Any]], pytest: str | None) -> str:
    env = next((r for r in reversed(rows) if r.get("kind") == "environment"), {})
    lines = [
        f"# rnnedge GPU benchmark — {env.get('gpu', 'no GPU seen')}",
        "",
        f"driver {env.get('driver')}, torch {env.get('torch')} (CUDA "
        f"{env.get('torch_cuda')}, cuDNN {env.get('cudnn')}), numpy {env.get('numpy')}, "
        f"Python {env.get('python')}, {env.get('cpu_cores')} CPU cores.",
        "",
        f"ONNX Runtime: {env.get('onnxruntime')}",
        "",
        f"GPU tests (RNNEDGE_REQUIRE_GPU=1): {pytest or 'not run'}",
        "",
        f"**TensorRT.** {TENSORRT_NOTE}",
        "",
    ]
    trt = [r for r in rows if r.get("kind") == "tensorrt"]
    if trt:
        lines += [
            f"TensorRT as found: module present: {trt[-1].get('tensorrt_module')}; ORT's "
            f"TensorRT provider: {trt[-1].get('error') or trt[-1].get('ort_trt_provider')}",
            "",
        ]
    lines += [
        "Math: `fp32` rows ran with NVIDIA_TF32_OVERRIDE=0 and torch's TF32 flags off; "
        "`tf32` rows with TF32 allowed everywhere; they never share a process.",
        "",
        "## Targets",
        "",
        markdown_table(
            ["target", "wanted", "measured", "met", "note"],
            [[t["target"], t["wanted"], t["measured"], t["met"], t["note"]] for t in targets(rows)],
        ),
        "",
    ]
    placed = [r for r in rows if r.get("kind") == "placement"]
    if placed:
        lines += [
            "## Placement (ORT CUDA sessions)",
            "",
            markdown_table(
                ["workload", "session", "nodes on CUDA", "CPU nodes", "error"],
                [
                    [
                        r.get("workload"),
                        r.get("case"),
                        r.get("on_cuda"),
                        ", ".join(r.get("cpu_nodes") or []) or "none",
                        r.get("error", ""),
                    ]
                    for r in placed
                ],
            ),
            "",
        ]
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for r in latest(rows).values():
        groups.setdefault((r.get("phase"), r.get("workload"), r.get("streams")), []).append(r)
    for (phase, workload, streams), group in groups.items():
        first = group[0]
        head = (
            f"## {workload}: {first.get('model')}, batch {first.get('batch')}, "
            f"seq_len {first.get('seq_len')} (phase {phase})"
        )
        head += f", N = {streams} streams advanced as one batch" if streams else ""
        lines += [
            head,
            "",
            markdown_table(
                [
                    "case",
                    "math",
                    "state",
                    "threads",
                    "p50 µs",
                    "p90 µs",
                    "p99 µs",
                    "stream-steps/s" if streams else "calls/s",
                    "split in/gpu/out µs",
                    "GPU µs/call",
                    "graph launches/call",
                    "max abs diff",
                    "error",
                ],
                [
                    [
                        r["case"],
                        r.get("math"),
                        r.get("state"),
                        r.get("threads"),
                        r.get("p50_us"),
                        r.get("p90_us"),
                        r.get("p99_us"),
                        _rate(r),
                        _split(r),
                        (r.get("gpu_time") or {}).get("device_us_per_call"),
                        (r.get("gpu_time") or {}).get("graph_launches_per_call"),
                        r.get("max_abs_diff"),
                        r.get("error", ""),
                    ]
                    for r in group
                ],
            ),
            "",
        ]
    return "\n".join(lines) + "\n"


def write(out: Path, rows: list[dict[str, Any]], pytest: str | None) -> None:
    """`result.md` and `result.json` (rows and targets) into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(
        json.dumps(
            {"tensorrt": TENSORRT_NOTE, "pytest": pytest, "targets": targets(rows), "rows": rows},
            indent=1,
            default=str,
        )
        + "\n",
        encoding="utf-8",
    )
    (out / "result.md").write_text(render(rows, pytest), encoding="utf-8")
