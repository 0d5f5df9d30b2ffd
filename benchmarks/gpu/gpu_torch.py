"""The torch side of the GPU benchmark: eager cuDNN, the CUDA-graph floor, device time.

Every case does the work ONNX Runtime's cases do, no more and no less: a step takes its input
from host memory and returns its output to host memory with the state kept on the device; a
sequence call takes input *and* initial state from the host and returns output *and* final
state to the host. The floor is a step captured once as a CUDA graph with pinned host buffers:
one copy in, one graph launch, one copy out — what no runtime can beat by much on this GPU.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from gpu_common import Case, Stepper, part_stats


def stateful(torch: Any, model: Any, device: str, half: bool = False) -> Any:
    """The exported signature `(x, h0[, c0]) -> (y, hn[, cn])`, fp32 in and out on `device`."""
    from rnnedge.modeling.models import stateful_wrapper

    inner = stateful_wrapper(copy.deepcopy(model)).eval().to(device)

    class HalfIO(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner.half()

        def forward(self, *args: Any) -> tuple[Any, ...]:
            return tuple(o.float() for o in self.inner(*(a.half() for a in args)))

    return HalfIO() if half else inner


def n_states(model: Any) -> int:
    return 2 if model.is_lstm else 1


def eager_stepper(torch: Any, model: Any, batch: int, device: str, half: bool = False) -> Stepper:
    """One step per call; the state stays on `device` between calls."""
    m = stateful(torch, model, device, half)
    state = [torch.zeros(model.state_shape(batch), device=device) for _ in range(n_states(model))]

    def step(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            y, *new = m(torch.from_numpy(x).to(device), *state)
        state[:] = new
        return y.cpu().numpy()

    return step


class GraphStep:
    """A step captured as one CUDA graph, pinned host buffers in and out, state on the GPU."""

    def __init__(self, torch: Any, model: Any, batch: int, features: int) -> None:
        self.torch = torch
        dev = "cuda"
        self.m = stateful(torch, model, dev)
        self.x_pin = torch.zeros((batch, 1, features), pin_memory=True)
        self.x = torch.zeros((batch, 1, features), device=dev)
        self.state = [
            torch.zeros(model.state_shape(batch), device=dev) for _ in range(n_states(model))
        ]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.inference_mode(), torch.cuda.stream(side):
            for _ in range(3):  # warm-up on a side stream, as torch.cuda.graphs asks
                self._body()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(self.graph):
            self.y = self._body()
        self.y_pin = torch.zeros(tuple(self.y.shape), pin_memory=True)
        for s in self.state:  # the warm-up advanced it; capture itself runs nothing
            s.zero_()
        torch.cuda.synchronize()

    def _body(self) -> Any:
        y, *new = self.m(self.x, *self.state)
        for s, n in zip(self.state, new, strict=True):
            s.copy_(n)
        return y

    def __call__(self, x: np.ndarray) -> np.ndarray:
        torch = self.torch
        self.x_pin.numpy()[...] = x
        self.x.copy_(self.x_pin, non_blocking=True)
        self.graph.replay()
        self.y_pin.copy_(self.y, non_blocking=True)
        torch.cuda.current_stream().synchronize()
        return self.y_pin.numpy().copy()

    def split(self, x: np.ndarray, count: int) -> dict[str, float]:
        """Each part of a step timed alone, a sync closing each (so the parts sum above it)."""
        sync = self.torch.cuda.current_stream().synchronize
        parts: dict[str, list[int]] = {"copy_in": [], "gpu": [], "copy_out": []}
        clock = time.perf_counter_ns
        for _ in range(count):
            t0 = clock()
            self.x_pin.numpy()[...] = x
            self.x.copy_(self.x_pin, non_blocking=True)
            sync()
            t1 = clock()
            self.graph.replay()
            sync()
            t2 = clock()
            self.y_pin.copy_(self.y, non_blocking=True)
            sync()
            self.y_pin.numpy().copy()
            t3 = clock()
            parts["copy_in"].append(t1 - t0)
            parts["gpu"].append(t2 - t1)
            parts["copy_out"].append(t3 - t2)
        return part_stats(parts)


def sequence_caller(torch: Any, model: Any, device: str, half: bool = False) -> Stepper:
    """Whole sequences: input and zero initial state from the host, output and final state
    back to the host, as ONNX Runtime's `infer` does."""
    m = stateful(torch, model, device, half)

    def call(x: np.ndarray) -> np.ndarray:
        states = [
            np.zeros(model.state_shape(x.shape[0]), np.float32) for _ in range(n_states(model))
        ]
        with torch.inference_mode():
            y, *final = m(
                torch.from_numpy(x).to(device), *(torch.from_numpy(s).to(device) for s in states)
            )
        for f in final:
            f.cpu()
        return y.cpu().numpy()

    return call


def reference_steps(torch: Any, model: Any, x: np.ndarray) -> np.ndarray:
    """Eager fp32 on the CPU over the whole sequence: what a stepped run must reproduce."""
    with torch.inference_mode():
        return model(torch.from_numpy(x))[0].numpy()


def profiler(torch: Any, calls: int = 50) -> Callable[[Stepper, np.ndarray], dict[str, Any]]:
    """Device time per call from torch.profiler (CUPTI): kernels, copies and graph launches.

    CUPTI records every kernel in the process, ONNX Runtime's included, so the same function
    measures both runtimes: device busy time per call against the wall time in the row says
    how much of a call is launch overhead and host work.
    """
    from torch.profiler import ProfilerActivity, profile

    def run(fn: Stepper, x: np.ndarray) -> dict[str, Any]:
        for _ in range(5):
            fn(x)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(calls):
                fn(x)
            torch.cuda.synchronize()
        device_us, kernels, launches = 0.0, 0, 0
        for evt in prof.events():
            on_device = str(getattr(evt, "device_type", "")).endswith("CUDA")
            if on_device:
                device_us += float(evt.time_range.elapsed_us())
                kernels += 1
            elif evt.name in ("cudaGraphLaunch", "cudaGraphLaunch_v10000"):
                launches += 1
        if kernels == 0:
            return {"error": "the profiler saw no device activity (CUPTI unavailable?)"}
        return {
            "device_us_per_call": device_us / calls,
            "device_ops_per_call": kernels / calls,
            "graph_launches_per_call": launches / calls,
        }

    return run


def step_cases(
    torch: Any, model: Any, batch: int, features: int, math: str, profile: bool = True
) -> list[Case]:
    """Eager CUDA and the CUDA-graph floor (state on the GPU), eager CPU at one thread."""
    gpu = {"runtime": "torch", "device": "cuda", "math": math, "state": "device"}
    cases = [
        Case(
            "torch eager CUDA",
            gpu,
            lambda: eager_stepper(torch, model, batch, "cuda", math == "fp16"),
            profile=profile,
        )
    ]
    if math != "fp16":
        holder: dict[str, GraphStep] = {}

        def make_graph() -> Stepper:
            holder["g"] = GraphStep(torch, model, batch, features)
            return holder["g"]

        cases.append(
            Case(
                "torch CUDA graph, pinned I/O (floor)",
                gpu,
                make_graph,
                split=lambda x, n: holder["g"].split(x, n),
                profile=profile,
            )
        )
    if batch == 1 and math == "fp32":
        cases.append(
            Case(
                "torch eager CPU, 1 thread",
                {
                    "runtime": "torch",
                    "device": "cpu",
                    "math": "fp32",
                    "state": "host",
                    "threads": 1,
                },
                lambda: _threads(torch, 1, eager_stepper(torch, model, batch, "cpu")),
            )
        )
    return cases


def sequence_cases(
    torch: Any, model: Any, math: str, cpu_threads: int | None = None, profile: bool = True
) -> list[Case]:
    """Eager cuDNN (and, with `cpu_threads`, eager CPU at that many threads)."""
    meta = {"runtime": "torch", "device": "cuda", "math": math, "state": "host"}
    cases = [
        Case(
            "torch eager cuDNN",
            meta,
            lambda: sequence_caller(torch, model, "cuda", math == "fp16"),
            profile=profile,
        )
    ]
    if cpu_threads:
        cases.append(
            Case(
                f"torch eager CPU, {cpu_threads} threads",
                {**meta, "device": "cpu", "math": "fp32", "threads": cpu_threads},
                lambda: _threads(torch, cpu_threads, sequence_caller(torch, model, "cpu")),
            )
        )
    return cases


def _threads(torch: Any, n: int, fn: Stepper) -> Stepper:
    """Torch's CPU threads set to what the ONNX Runtime case beside it gets (a group's CPU
    cases share one count: 1 for a batch-1 step, as rnnedge's step path, else every core)."""
    torch.set_num_threads(n)
    return fn
