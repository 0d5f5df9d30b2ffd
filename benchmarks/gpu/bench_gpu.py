"""GPU benchmark: one LSTM step and full sequences on ORT CUDA (with and without CUDA graphs),
ORT CPU and eager PyTorch (CUDA and CPU), all in one run so their ratios are comparable.

The model is rnnedge's 2-layer LSTM (hidden 128, 1 input feature), exported and verified by
rnnedge. Every timed call returns host numpy arrays, so device work is finished when the clock
stops. Cases are timed in interleaved rounds, so drift in machine load hits them alike, and
each case's outputs are checked against eager PyTorch on the CPU first (max abs diff stored).
A case that fails records its error instead of numbers. Writes
`<out>/<date>-<gpu>-gpu.json` and `.md`.

    python benchmarks/gpu/bench_gpu.py [--out benchmarks/results] [--seconds 2.5]
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from rnnedge.tools.render import markdown_table, to_json  # noqa: E402

HIDDEN, LAYERS, FEATURES = 128, 2, 1
STEP_CHECK_LEN = 16
SEQUENCES = ((1, 256), (64, 128))  # (batch, seq_len)
CPU_STEP_SETTINGS = {"intra_op_num_threads": 1, "config": {"session.intra_op.allow_spinning": "0"}}
Fn = Callable[[np.ndarray], np.ndarray]


def _err(exc: BaseException) -> str:
    """`Type: message` on one line, for a case that failed."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"


def measure(cases: dict[str, tuple[Fn, np.ndarray]], seconds: float, rounds: int = 8,
            warmup: int = 20) -> dict[str, dict[str, float]]:
    """Latency stats (µs) per case from interleaved rounds sized to about `seconds` each."""
    per: dict[str, int] = {}
    for name, (fn, x) in cases.items():
        for _ in range(warmup):
            fn(x)
        t0 = time.perf_counter()
        for _ in range(warmup):
            fn(x)
        one = max((time.perf_counter() - t0) / warmup, 1e-6)
        per[name] = max(3, min(20000, int(seconds / one / rounds)))
    samples: dict[str, list[int]] = {k: [] for k in cases}
    clock = time.perf_counter_ns
    for _ in range(rounds):
        for name, (fn, x) in cases.items():
            acc = samples[name]
            for _ in range(per[name]):
                t0 = clock()
                fn(x)
                acc.append(clock() - t0)
            time.sleep(0.002)
    out = {}
    for name, s in samples.items():
        us = np.sort(np.asarray(s, dtype=np.float64)) / 1e3
        out[name] = {"p50_us": float(np.percentile(us, 50)), "p90_us": float(np.percentile(us, 90)),
                     "p99_us": float(np.percentile(us, 99)), "mean_us": float(us.mean()),
                     "n": int(us.size)}
    return out


def environment(torch: Any) -> dict[str, Any]:
    """Device, driver, CUDA and package versions, as the record of what gave the numbers."""
    from rnnedge.runtime.backends.ortdist import diagnose

    env: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                           "numpy": np.__version__, "torch": torch.__version__,
                           "torch_cuda": torch.version.cuda,
                           "cudnn": torch.backends.cudnn.version(),
                           "NVIDIA_TF32_OVERRIDE": os.environ.get("NVIDIA_TF32_OVERRIDE")}
    try:
        query = "name,driver_version,memory.total,compute_cap"
        line = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30).stdout.splitlines()[0]
        env.update(zip(["gpu", "driver", "gpu_memory", "compute_capability"],
                       [v.strip() for v in line.split(",")], strict=False))
    except (OSError, IndexError, subprocess.TimeoutExpired) as exc:
        env["nvidia_smi"] = _err(exc)
    if torch.cuda.is_available():
        env.setdefault("gpu", torch.cuda.get_device_name(0))
    try:
        import onnx

        env["onnx"] = onnx.__version__
    except ImportError as exc:
        env["onnx"] = _err(exc)
    dist = diagnose()
    env["onnxruntime"] = dist.module_version
    env["onnxruntime_install"] = dist.describe()
    return env


def build_model(torch: Any, tmp: Path) -> tuple[Any, Path, Any]:
    from rnnedge.exporters.onnx import example_for, export
    from rnnedge.modeling.models import ModelConfig, SequenceModel

    torch.manual_seed(0)
    model = SequenceModel(ModelConfig(cell="lstm", input_size=FEATURES, hidden_size=HIDDEN,
                                      num_layers=LAYERS)).eval()
    result = export(model, example_for(True, FEATURES), tmp / "lstm.onnx")
    return model, result.path, result.spec


# -- step cases: each returns a fresh stepper (x[1, 1, F] -> y) ---------------------------
def torch_stepper(torch: Any, model: Any, device: str) -> Fn:
    m = _copy_to(model, device)
    h = torch.zeros(LAYERS, 1, HIDDEN, device=device)
    state = [(h, h.clone())]

    def step(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            y, st = m(torch.from_numpy(x).to(device), state[0])
        state[0] = st
        return y.cpu().numpy()

    return step


def ort_run_stepper(session: Any, spec: Any) -> Fn:
    """Plain `session.run` with the state carried through host numpy arrays."""
    from rnnedge.runtime.inputs import zero_state

    state = zero_state(spec, 1)
    outs = [spec.data_output, *(p.output for p in spec.state_pairs)]

    def step(x: np.ndarray) -> np.ndarray:
        values = session.run(outs, {spec.data_input: x, **state})
        for pair, v in zip(spec.state_pairs, values[1:], strict=True):
            state[pair.input] = v
        return values[0]

    return step


def step_cases(torch: Any, model: Any, path: Path, spec: Any, runners: dict[str, Any]
               ) -> dict[str, Callable[[], Fn]]:
    from rnnedge.runtime.backends.ort import open_session
    from rnnedge.runtime.backends.ort_cuda import CudaStepSession

    cpu_session = open_session(path, settings=CPU_STEP_SETTINGS)
    cases: dict[str, Callable[[], Fn]] = {}
    if "graph" in runners:
        cases["ort-cuda, CUDA graph, state on GPU"] = lambda: runners["graph"].step_session(
            spec).step
    if "plain" in runners:
        cases["ort-cuda, state on GPU"] = lambda: runners["plain"].step_session(spec).step
        cases["ort-cuda, session.run, state on host"] = lambda: ort_run_stepper(
            runners["plain"].session, spec)
    cases["ort-cpu, bound state"] = lambda: CudaStepSession(cpu_session, spec,
                                                            device=("cpu", 0)).step
    cases["ort-cpu, session.run"] = lambda: ort_run_stepper(cpu_session, spec)
    if torch.cuda.is_available():
        cases["torch eager CUDA"] = lambda: torch_stepper(torch, model, "cuda")
    cases["torch eager CPU"] = lambda: torch_stepper(torch, model, "cpu")
    return cases


def run_steps(torch: Any, model: Any, path: Path, spec: Any, runners: dict[str, Any],
              seconds: float) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    seq = rng.standard_normal((1, STEP_CHECK_LEN, FEATURES)).astype(np.float32)
    with torch.inference_mode():
        ref = model(torch.from_numpy(seq))[0].numpy()
    rows: dict[str, dict[str, Any]] = {}
    timed: dict[str, tuple[Fn, np.ndarray]] = {}
    for name, make in step_cases(torch, model, path, spec, runners).items():
        try:
            check = make()
            ys = np.concatenate([check(seq[:, t:t + 1]) for t in range(STEP_CHECK_LEN)], axis=1)
            rows[name] = {"case": name, "max_abs_diff": float(np.abs(ys - ref).max())}
            timed[name] = (make(), seq[:, :1].copy())
        except Exception as exc:  # recorded, not hidden: the row says what failed
            rows[name] = {"case": name, "error": _err(exc)}
    for name, stats in measure(timed, seconds).items():
        rows[name].update(stats)
    return list(rows.values())


def ort_caller(runner: Any, spec: Any, state: dict[str, np.ndarray]) -> Fn:
    def call(x: np.ndarray) -> np.ndarray:
        return runner.infer({spec.data_input: x, **state})[spec.data_output]

    return call


def eager_caller(torch: Any, model: Any, device: str) -> Fn:
    m = _copy_to(model, device)

    def call(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return m(torch.from_numpy(x).to(device))[0].cpu().numpy()

    return call


def run_sequences(torch: Any, model: Any, path: Path, spec: Any, runners: dict[str, Any],
                  seconds: float) -> list[dict[str, Any]]:
    from rnnedge.runtime.backends.ort import OrtCpuRunner
    from rnnedge.runtime.inputs import zero_state

    out: list[dict[str, Any]] = []
    cpu = OrtCpuRunner(path).activate()
    for batch, seq_len in SEQUENCES:
        x = np.random.default_rng(1).standard_normal((batch, seq_len, FEATURES)).astype(
            np.float32)
        state = zero_state(spec, batch)
        with torch.inference_mode():
            ref = model(torch.from_numpy(x))[0].numpy()
        makers: dict[str, Callable[[], Fn]] = {}
        if "plain" in runners:
            makers["ort-cuda, IO binding"] = partial(ort_caller, runners["plain"], spec, state)
            makers["ort-cuda, session.run"] = partial(ort_caller, runners["run"], spec, state)
        makers["ort-cpu"] = partial(ort_caller, cpu, spec, state)
        if torch.cuda.is_available():
            makers["torch eager CUDA"] = partial(eager_caller, torch, model, "cuda")
        makers["torch eager CPU"] = partial(eager_caller, torch, model, "cpu")
        rows: dict[str, dict[str, Any]] = {}
        timed: dict[str, tuple[Fn, np.ndarray]] = {}
        for name, make in makers.items():
            label = {"case": name, "batch": batch, "seq_len": seq_len}
            try:
                fn = make()
                rows[name] = {**label, "max_abs_diff": float(np.abs(fn(x) - ref).max())}
                timed[name] = (fn, x)
            except Exception as exc:  # recorded, not hidden: the row says what failed
                rows[name] = {**label, "error": _err(exc)}
        for name, stats in measure(timed, seconds, rounds=4, warmup=3).items():
            rows[name].update(stats)
        out += rows.values()
    return out


def _copy_to(model: Any, device: str) -> Any:
    """Each eager case gets its own copy: moving the shared module would move it for all."""
    return copy.deepcopy(model).to(device)


def add_ratios(rows: list[dict[str, Any]], baselines: tuple[str, ...], group: tuple[str, ...]
               ) -> None:
    """`speedup vs X`: X's p50 over the case's p50, within rows sharing the `group` keys."""
    for row in rows:
        for base in baselines:
            ref = next((r for r in rows if r["case"] == base and "p50_us" in r
                        and all(r.get(k) == row.get(k) for k in group)), None)
            if ref is not None and "p50_us" in row:
                row[f"speedup vs {base}"] = ref["p50_us"] / row["p50_us"]


def render(result: dict[str, Any]) -> str:
    env = result["environment"]
    lines = [f"# rnnedge GPU benchmark — {env.get('gpu', 'unknown GPU')}", "",
             f"{result['date']}; driver {env.get('driver')}, torch {env['torch']} (CUDA "
             f"{env['torch_cuda']}, cuDNN {env['cudnn']}), onnxruntime {env['onnxruntime']}, "
             f"onnx {env['onnx']}, numpy {env['numpy']}, Python {env['python']}.", "",
             f"ONNX Runtime install: {env['onnxruntime_install']}", "",
             f"Model: LSTM {LAYERS}×{HIDDEN}, {FEATURES} input feature. GPU tests (`pytest -m "
             f"gpu`): {result.get('pytest', 'not run')}.", ""]
    if result.get("ort_cuda_error"):
        lines += [f"ORT CUDA was not measured: {result['ort_cuda_error']}", ""]
    if result.get("ort_cuda_graph_error"):
        lines += [f"ORT CUDA graphs were not measured: {result['ort_cuda_graph_error']}", ""]
    step_base = ("ort-cpu, session.run", "torch eager CUDA")
    lines += ["## One step (batch 1, seq_len 1), µs per call", "", markdown_table(
        ["case", "p50", "p90", "p99", "steps/s", *(f"× vs {b}" for b in step_base),
         "max abs diff", "error"],
        [[r["case"], r.get("p50_us"), r.get("p90_us"), r.get("p99_us"),
          1e6 / r["p50_us"] if r.get("p50_us") else None,
          *(r.get(f"speedup vs {b}") for b in step_base), r.get("max_abs_diff"),
          r.get("error", "")] for r in result["step"]]), ""]
    seq_base = ("ort-cpu", "torch eager CUDA")
    lines += ["## Full sequences, ms per call", "", markdown_table(
        ["case", "batch", "seq_len", "p50", "p90", *(f"× vs {b}" for b in seq_base),
         "max abs diff", "error"],
        [[r["case"], r["batch"], r["seq_len"],
          r["p50_us"] / 1e3 if "p50_us" in r else None,
          r["p90_us"] / 1e3 if "p90_us" in r else None,
          *(r.get(f"speedup vs {b}") for b in seq_base), r.get("max_abs_diff"),
          r.get("error", "")] for r in result["sequence"]]), ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--seconds", type=float, default=2.5, help="timed seconds per case")
    ap.add_argument("--pytest", default=None, help="summary line of the GPU test run")
    args = ap.parse_args(argv)
    import torch

    from rnnedge.runtime.backends.ort_cuda import OrtCudaRunner

    result: dict[str, Any] = {"date": dt.datetime.now(dt.timezone.utc).isoformat(
        timespec="seconds"), "environment": environment(torch), "pytest": args.pytest}
    with tempfile.TemporaryDirectory() as tmp:
        model, path, spec = build_model(torch, Path(tmp))
        runners: dict[str, Any] = {}
        why = OrtCudaRunner.unavailable_reason()
        try:
            if why:
                raise RuntimeError(why)
            runners["plain"] = OrtCudaRunner(path).activate()
            runners["run"] = OrtCudaRunner(path, io_binding=False).activate()
            result["ort_cuda_options"] = runners["plain"].cuda_options()
        except Exception as exc:
            result["ort_cuda_error"] = _err(exc)
        if "plain" in runners:
            try:
                runners["graph"] = OrtCudaRunner(path, cuda_graph=True).activate()
            except Exception as exc:
                result["ort_cuda_graph_error"] = _err(exc)
        print("timing one-step cases ...", flush=True)
        result["step"] = run_steps(torch, model, path, spec, runners, args.seconds)
        add_ratios(result["step"], ("ort-cpu, session.run", "torch eager CUDA"), ())
        print("timing full sequences ...", flush=True)
        result["sequence"] = run_sequences(torch, model, path, spec, runners, args.seconds)
        add_ratios(result["sequence"], ("ort-cpu", "torch eager CUDA"), ("batch", "seq_len"))
    gpu = re.sub(r"[^a-z0-9]+", "-", str(result["environment"].get("gpu", "gpu")).lower())
    stem = f"{result['date'][:10]}-{gpu.strip('-')}-gpu"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(to_json(result) + "\n", encoding="utf-8")
    (args.out / f"{stem}.md").write_text(render(result), encoding="utf-8")
    print(render(result))
    print(f"wrote {args.out / stem}.json and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
