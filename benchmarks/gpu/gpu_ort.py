"""The ONNX Runtime side of the GPU benchmark: CUDA steps and streams, sequences, placement.

Cases mirror gpu_torch.py's work exactly: steps keep the state on the device (CUDA graph or
not) and move only the input in and the output out; `session.run` with the state through host
arrays is kept as its own, labelled case; sequence calls take input and initial state from the
host and return output and final state to it. The CPU runtime is rnnedge's own stream (bound
buffers), at one thread for a batch-1 step and at every core for batches.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from gpu_common import Case, Rows, Stepper, error, part_stats

CPU_CORES = os.cpu_count() or 1


def cuda_runner(path: Path, **kwargs: Any) -> Any:
    """An activated OrtCudaRunner (TF32 as the process allows it, see `math_mode`)."""
    from rnnedge.runtime.backends.ort_cuda import OrtCudaRunner

    return OrtCudaRunner(path, **kwargs).activate()


def placement_row(rows: Rows, workload: str, case: str, runner: Any) -> None:
    """Where ONNX Runtime put every node: a CUDA session with heavy CPU nodes is a finding."""
    from rnnedge.runtime.backends.ort_cuda import CUDA_EP, cpu_placed

    rows.add(
        {
            "kind": "placement",
            "workload": workload,
            "case": case,
            "on_cuda": len(runner.placement.get(CUDA_EP, [])),
            "cpu_nodes": runner.cpu_nodes_placed,
            "heavy_cpu_nodes": cpu_placed(runner.placement, heavy_only=True),
            "providers": list(runner.session.get_providers()),
            "cuda_options": runner.cuda_options(),
        }
    )


def host_state_stepper(session: Any, spec: Any, batch: int) -> Stepper:
    """`session.run` with the state carried through host arrays (copied both ways each step)."""
    from rnnedge.runtime.inputs import zero_state

    state = zero_state(spec, batch)
    outs = [spec.data_output, *(p.output for p in spec.state_pairs)]

    def step(x: np.ndarray) -> np.ndarray:
        values = session.run(outs, {spec.data_input: x, **state})
        for pair, v in zip(spec.state_pairs, values[1:], strict=True):
            state[pair.input] = v
        return values[0]

    return step


def stream_split(runner: Any, spec: Any, batch: int) -> Any:
    """Times copy-in / run / copy-out of a fresh stream's steps (CudaStepSession records them)."""

    def split(x: np.ndarray, count: int) -> dict[str, float]:
        stream = runner.step_session(spec, batch=batch)
        stream.record_split = True
        parts: dict[str, list[int]] = {"copy_in": [], "gpu": [], "copy_out": []}
        for _ in range(count):
            stream.step(x)
            assert stream.last_split_ns is not None
            for key, ns in zip(parts, stream.last_split_ns, strict=True):
                parts[key].append(ns)
        return part_stats(parts)

    return split


def cpu_stream(path: Path, batch: int, threads: int) -> Stepper:
    """rnnedge's CPU runtime: `load(...).stream(batch).step`, bound ping-pong buffers."""
    import rnnedge
    from rnnedge.runtime.step import STEP_SETTINGS

    settings = {**STEP_SETTINGS, "intra_op_num_threads": threads}
    stream = rnnedge.load(path, "ort-cpu", settings=settings, tuned=False).stream(batch)
    return stream.step


def cpu_case(path: Path, batch: int) -> Case:
    threads = 1 if batch == 1 else CPU_CORES
    return Case(
        f"rnnedge CPU stream (ort-cpu), {threads} thread{'s' * (threads > 1)}",
        {
            "runtime": "ort-cpu",
            "device": "cpu",
            "math": "fp32",
            "state": "host",
            "threads": threads,
        },
        lambda: cpu_stream(path, batch, threads),
    )


def step_cases(
    runners: dict[str, Any], path: Path, spec: Any, batch: int, math: str, with_cpu: bool = True
) -> list[Case]:
    """ORT CUDA with and without CUDA graphs (state on the GPU), host-state `session.run`."""
    meta = {"runtime": "ort-cuda", "device": "cuda", "math": math, "state": "device"}
    cases = []
    if "graph" in runners:
        g = runners["graph"]
        cases.append(
            Case(
                "ort-cuda, CUDA graph",
                meta,
                lambda: g.step_session(spec, batch=batch).step,
                split=stream_split(g, spec, batch),
                profile=True,
            )
        )
    if "plain" in runners:
        p = runners["plain"]
        cases.append(
            Case(
                "ort-cuda",
                meta,
                lambda: p.step_session(spec, batch=batch).step,
                split=stream_split(p, spec, batch),
                profile=True,
            )
        )
        if batch == 1:
            cases.append(
                Case(
                    "ort-cuda, session.run, state on host",
                    {**meta, "state": "host"},
                    lambda: host_state_stepper(p.session, spec, batch),
                )
            )
    if with_cpu:
        cases.append(cpu_case(path, batch))
    return cases


def sequence_cases(
    runner: Any, spec: Any, math: str, name: str = "ort-cuda, IO binding"
) -> list[Case]:
    """Whole sequences through `infer`: input and zero state in from the host, all out."""
    from rnnedge.runtime.inputs import zero_state

    def make() -> Stepper:
        def call(x: np.ndarray) -> np.ndarray:
            feeds = {spec.data_input: x, **zero_state(spec, x.shape[0])}
            return runner.infer(feeds)[spec.data_output]

        return call

    return [
        Case(
            name,
            {
                "runtime": runner.name,
                "device": "cuda" if runner.name == "ort-cuda" else "cpu",
                "math": math,
                "state": "host",
            },
            make,
            profile=True,
        )
    ]


def cpu_sequence_case(path: Path, spec: Any) -> Case:
    """rnnedge's CPU runtime on whole sequences, every core."""
    from rnnedge.runtime.backends.ort import OrtCpuRunner

    def make() -> Stepper:
        runner = OrtCpuRunner(path, settings={"intra_op_num_threads": CPU_CORES}).activate()
        return sequence_cases(runner, spec, "fp32")[0].make()

    return Case(
        f"ort-cpu, {CPU_CORES} threads",
        {
            "runtime": "ort-cpu",
            "device": "cpu",
            "math": "fp32",
            "state": "host",
            "threads": CPU_CORES,
        },
        make,
    )


def tensorrt_row(rows: Rows, path: Path, spec: Any) -> None:
    """TensorRT on this machine, as found: the module, and ORT's TensorRT provider in use.

    A TensorRT that could not be installed must read as "not tested", never as "no failures".
    """
    from rnnedge.runtime.backends.tensorrt import open_trt_session
    from rnnedge.runtime.backends.trt_plan import module_present, profiles_from_ranges

    row: dict[str, Any] = {
        "kind": "tensorrt",
        "case": "TensorRT",
        "tensorrt_module": module_present("tensorrt"),
    }
    try:
        profiles = profiles_from_ranges(spec, (1, 1, 1), (1, 1, 16))
        session = open_trt_session(path, profiles)
        row["ort_trt_provider"] = list(session.get_providers())
    except Exception as exc:
        row["error"] = error(exc)
    row["verdict"] = (
        "TensorRT could not be installed on this machine (its PyPI packages fetch "
        "from NVIDIA's index, which it cannot reach): no TensorRT path was tested"
        if not row["tensorrt_module"]
        else "tensorrt module present"
    )
    rows.add(row)
