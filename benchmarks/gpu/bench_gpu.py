"""GPU benchmark for rnnedge, in phases that fit back-to-back device calls (see run.sh).

    python benchmarks/gpu/bench_gpu.py --phase torch|cpu|tf32|ort|ort-tf32|report \
        --out $OUT --state /tmp/rnnedge-bench [--seconds 0.5] [--streams 1,64,1024]

Phases: `torch` (environment, W5 torch eager and the CUDA-graph floor, W6 eager cuDNN fp32 and
fp16; needs no ONNX Runtime GPU build), `cpu` (N concurrent streams on rnnedge's CPU runtime
and as one torch CUDA graph; W6 on the CPU at every core), `tf32` (torch rows with TF32
allowed, labelled so), `ort` (placement, W5, W6 fp32/fp16 and the streams on ORT CUDA beside
the same torch cases, TensorRT as found), `ort-tf32` (ORT with `use_tf32=1`), `report` (every
row so far, the targets and what to attack, as markdown and JSON).

Each row is appended to `<out>/rows.jsonl` and `<state>/rows.jsonl` as soon as its group is
measured; a phase killed at its time limit loses only the group it was in. fp32 rows need
`NVIDIA_TF32_OVERRIDE=0` and tf32 rows need it unset (`math_mode`), so the two never share a
process. On a machine without a GPU the `cpu` phase still runs its CPU cases.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(HERE), str(ROOT)]

import gpu_common as gc  # noqa: E402
import gpu_ort  # noqa: E402
import gpu_report as report  # noqa: E402
import gpu_torch  # noqa: E402

PHASES = ("torch", "cpu", "tf32", "ort", "ort-tf32", "report")


class Context:
    """One phase's arguments, sink and models (exported once per process, in a temp folder)."""

    def __init__(self, args: argparse.Namespace) -> None:
        import torch

        self.torch = torch
        self.args = args
        self.rows = gc.Rows(args.out / "rows.jsonl", args.state / "rows.jsonl", phase=args.phase)
        self.tmp = Path(tempfile.mkdtemp(prefix="rnnedge-bench-"))
        self.cuda = bool(torch.cuda.is_available())
        self._models: dict[str, tuple[Any, Path, Any]] = {}
        w6 = gc.W6 if not args.quick else gc.Workload("W6-quick", "gru", 2, 32, 4, 4, 16)
        self.w5, self.w6 = gc.W5, w6

    def model(self, w: gc.Workload) -> tuple[Any, Path, Any]:
        if w.name not in self._models:
            self._models[w.name] = gc.build(self.torch, w, self.tmp)
        return self._models[w.name]

    def label(self, w: gc.Workload, **extra: Any) -> dict[str, Any]:
        out = {
            "workload": w.name,
            "model": w.label,
            "batch": w.batch,
            "seq_len": w.seq_len,
            **extra,
        }
        if self.args.quick:
            out["quick"] = True  # a smoke run: never read as the workload's figures
        return out

    def math(self, requested: str) -> str:
        """The row label, with torch's TF32 flags set to agree with it."""
        mode = gc.math_mode(requested)
        allow = mode == "tf32"
        self.torch.backends.cudnn.allow_tf32 = allow
        self.torch.backends.cuda.matmul.allow_tf32 = allow
        return mode

    def profiler(self) -> Any:
        return gpu_torch.profiler(self.torch) if self.cuda else None


def environment(ctx: Context) -> dict[str, Any]:
    """Device, driver, versions and TF32 settings: the record of what gave the numbers."""
    from rnnedge.runtime.backends.ortdist import diagnose
    from rnnedge.runtime.backends.trt_plan import module_present

    torch = ctx.torch
    env: dict[str, Any] = {
        "kind": "environment",
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_cores": os.cpu_count(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if ctx.cuda else None,
        "NVIDIA_TF32_OVERRIDE": os.environ.get(gc.TF32_ENV),
        "onnxruntime": diagnose().describe(),
        "tensorrt_module": module_present("tensorrt"),
    }
    try:
        query = "name,driver_version,memory.total,compute_cap"
        line = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.splitlines()[0]
        env.update(
            zip(
                ["gpu", "driver", "gpu_memory", "compute_capability"],
                [v.strip() for v in line.split(",")],
                strict=False,
            )
        )
    except (OSError, IndexError, subprocess.TimeoutExpired) as exc:
        env["nvidia_smi"] = gc.error(exc)
    if ctx.cuda:
        env.setdefault("gpu", torch.cuda.get_device_name(0))
    return env


def w5_check(
    ctx: Context, batch: int = 1, steps: int = 16
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Stepwise inputs, the CPU fp32 reference over them, and the input of a timed step."""
    model, _, _ = ctx.model(ctx.w5)
    x = gc.inputs(ctx.w5, batch, steps)
    ref = gpu_torch.reference_steps(ctx.torch, model, x)
    return [x[:, t : t + 1] for t in range(steps)], ref, x[:, :1].copy()


def w6_check(ctx: Context) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    model, _, _ = ctx.model(ctx.w6)
    x = gc.inputs(ctx.w6)
    return [x], gpu_torch.reference_steps(ctx.torch, model, x), x


def phase_torch(ctx: Context) -> None:
    ctx.rows.add(environment(ctx))
    if not ctx.cuda:
        ctx.rows.add({"kind": "skipped", "error": "torch sees no CUDA device"})
        return
    math = ctx.math("fp32")
    model, _, _ = ctx.model(ctx.w5)
    check, ref, timed = w5_check(ctx)
    gc.run_group(
        ctx.label(ctx.w5),
        gpu_torch.step_cases(ctx.torch, model, 1, 1, math),
        check,
        ref,
        timed,
        ctx.args.seconds,
        ctx.rows,
        ctx.profiler(),
    )
    model6, _, _ = ctx.model(ctx.w6)
    check, ref, timed = w6_check(ctx)
    for requested in ("fp32", "fp16"):
        gc.run_group(
            ctx.label(ctx.w6),
            gpu_torch.sequence_cases(ctx.torch, model6, ctx.math(requested)),
            check,
            ref,
            timed,
            ctx.args.seconds,
            ctx.rows,
            ctx.profiler(),
        )


def streams_group(ctx: Context, n: int, cases: list[gc.Case]) -> None:
    check, ref, timed = w5_check(ctx, batch=n, steps=4)
    gc.run_group(
        ctx.label(ctx.w5, batch=n, streams=n),
        cases,
        check,
        ref,
        timed,
        ctx.args.seconds,
        ctx.rows,
        ctx.profiler(),
    )


def phase_cpu(ctx: Context) -> None:
    ctx.rows.add(environment(ctx))
    model, path, _ = ctx.model(ctx.w5)
    for n in ctx.args.streams:
        cases = [gpu_ort.cpu_case(path, n)]
        if ctx.cuda:
            ctx.math("fp32")
            cases += [
                c for c in gpu_torch.step_cases(ctx.torch, model, n, 1, "fp32") if "graph" in c.name
            ]
        streams_group(ctx, n, cases)
    model6, path6, spec6 = ctx.model(ctx.w6)
    check, ref, timed = w6_check(ctx)
    cases = [
        gpu_ort.cpu_sequence_case(path6, spec6),
        gpu_torch.sequence_cases(ctx.torch, model6, "fp32", gpu_ort.CPU_CORES)[1],
    ]
    gc.run_group(ctx.label(ctx.w6), cases, check, ref, timed, ctx.args.seconds, ctx.rows)


def phase_tf32(ctx: Context) -> None:
    ctx.rows.add(environment(ctx))
    if not ctx.cuda:
        ctx.rows.add({"kind": "skipped", "error": "torch sees no CUDA device"})
        return
    math = ctx.math("tf32")
    model, _, _ = ctx.model(ctx.w5)
    check, ref, timed = w5_check(ctx)
    gc.run_group(
        ctx.label(ctx.w5),
        [
            c
            for c in gpu_torch.step_cases(ctx.torch, model, 1, 1, math)
            if c.meta["device"] == "cuda"
        ],
        check,
        ref,
        timed,
        ctx.args.seconds,
        ctx.rows,
        ctx.profiler(),
    )
    model6, _, _ = ctx.model(ctx.w6)
    check, ref, timed = w6_check(ctx)
    gc.run_group(
        ctx.label(ctx.w6),
        gpu_torch.sequence_cases(ctx.torch, model6, math),
        check,
        ref,
        timed,
        ctx.args.seconds,
        ctx.rows,
        ctx.profiler(),
    )


def _runners(ctx: Context, path: Path, rows_case: str, workload: str, **kwargs: Any) -> Any | None:
    try:
        runner = gpu_ort.cuda_runner(path, **kwargs)
    except Exception as exc:
        ctx.rows.add(
            {"kind": "placement", "workload": workload, "case": rows_case, "error": gc.error(exc)}
        )
        return None
    gpu_ort.placement_row(ctx.rows, workload, rows_case, runner)
    return runner


def phase_ort(ctx: Context, requested: str = "fp32") -> None:
    from rnnedge.runtime.backends.ort_cuda import convert_fp16

    ctx.rows.add(environment(ctx))
    math = ctx.math(requested)
    tf32 = math == "tf32"
    model, path, spec = ctx.model(ctx.w5)
    model6, path6, spec6 = ctx.model(ctx.w6)
    check6, ref6, timed6 = w6_check(ctx)
    seq6 = _runners(ctx, path6, "ort-cuda fp32", ctx.w6.name, use_tf32=tf32)
    if tf32:
        cases = gpu_torch.sequence_cases(ctx.torch, model6, math)
        cases += gpu_ort.sequence_cases(seq6, spec6, math) if seq6 else []
        gc.run_group(
            ctx.label(ctx.w6),
            cases,
            check6,
            ref6,
            timed6,
            ctx.args.seconds,
            ctx.rows,
            ctx.profiler(),
        )
        return
    runners = {
        k: r
        for k, r in (
            ("plain", _runners(ctx, path, "ort-cuda", ctx.w5.name)),
            ("graph", _runners(ctx, path, "ort-cuda, CUDA graph", ctx.w5.name, cuda_graph=True)),
        )
        if r is not None
    }
    check, ref, timed = w5_check(ctx)
    cases = gpu_ort.step_cases(runners, path, spec, 1, math)
    cases += gpu_torch.step_cases(ctx.torch, model, 1, 1, math)
    gc.run_group(
        ctx.label(ctx.w5), cases, check, ref, timed, ctx.args.seconds, ctx.rows, ctx.profiler()
    )
    cases = gpu_torch.sequence_cases(ctx.torch, model6, math)
    cases += gpu_ort.sequence_cases(seq6, spec6, math) if seq6 else []
    gc.run_group(
        ctx.label(ctx.w6), cases, check6, ref6, timed6, ctx.args.seconds, ctx.rows, ctx.profiler()
    )
    # CPU nodes allowed (the probe and `extended` keep fp16 safe): the placement row says
    # whether any were needed, instead of the row being lost to a refusal
    fp16 = _runners(
        ctx, convert_fp16(path6, ctx.tmp / "w6.fp16.onnx"), "ort-cuda fp16", ctx.w6.name
    )
    cases = gpu_torch.sequence_cases(ctx.torch, model6, "fp16")
    cases += gpu_ort.sequence_cases(fp16, spec6, "fp16") if fp16 else []
    gc.run_group(
        ctx.label(ctx.w6), cases, check6, ref6, timed6, ctx.args.seconds, ctx.rows, ctx.profiler()
    )
    for n in ctx.args.streams:
        cases = gpu_ort.step_cases(
            {k: v for k, v in runners.items() if k == "graph"}, path, spec, n, math
        )
        cases += [
            c for c in gpu_torch.step_cases(ctx.torch, model, n, 1, math) if "graph" in c.name
        ]
        streams_group(ctx, n, cases)
    gpu_ort.tensorrt_row(ctx.rows, path, spec)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phase", choices=PHASES, required=True)
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "bench-out"))
    ap.add_argument(
        "--state",
        type=Path,
        default=Path("/tmp/rnnedge-bench"),
        help="rows of every phase on this machine, for the report",
    )
    ap.add_argument("--seconds", type=float, default=0.5, help="timed seconds per case")
    ap.add_argument(
        "--streams", type=lambda s: [int(v) for v in s.split(",")], default=list(gc.STREAMS)
    )
    ap.add_argument("--pytest", default=None, help="the GPU test run's summary line")
    ap.add_argument("--quick", action="store_true", help="tiny W6, for a smoke test")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.phase == "report":
        report.write(args.out, gc.read_rows(args.state / "rows.jsonl"), args.pytest)
        return 0
    ctx = Context(args)
    run = {
        "torch": phase_torch,
        "cpu": phase_cpu,
        "tf32": phase_tf32,
        "ort": phase_ort,
        "ort-tf32": lambda c: phase_ort(c, "tf32"),
    }[args.phase]
    run(ctx)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
