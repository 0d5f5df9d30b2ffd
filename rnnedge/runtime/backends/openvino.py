"""OpenVINO on the CPU, behind the same Runner contract as ONNX Runtime.

Why it is here: with bf16 on a CPU that computes it natively (AVX512-BF16 or AMX), OpenVINO ran
a GRU 2×256 batch 64 at 1.86× and an LSTM 1×512 batch 1 at 1.44× of tuned ONNX Runtime, with
the forecast MSE unchanged (−0.05 %). In f32 it never beat ONNX Runtime.

Why precision is always set here: OpenVINO's CPU plugin silently computes in bf16 when the CPU
supports it (its `INFERENCE_PRECISION_HINT` defaults to bf16 there), so a runner that left the
hint alone would give different numbers on different machines. This runner asks for f32 unless
bf16 was asked for or chosen by the precision gate (recorded in the file's spec), and refuses
bf16 on a CPU without native bf16 rather than letting it be emulated. The LATENCY performance
hint is the default: it beat THROUGHPUT on every workload measured, batch 1 above all.

`openvino` is imported only when the runner is activated; `unavailable_reason` (used by
`rnnedge runtimes`) looks it up without importing it.
"""

from __future__ import annotations

import os
import queue
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from rnnedge._optional import require
from rnnedge.errors import InputError, ModelFileError, RuntimeUnavailableError
from rnnedge.runtime.backends.base import Feeds, Runner, describe_feeds
from rnnedge.runtime.onnxscan import stored_spec
from rnnedge.spec import RnnSpec, TensorSpec

if TYPE_CHECKING:
    from rnnedge.runtime.model import Model

#: where the CPU's feature flags are read from (a test may point this elsewhere)
CPUINFO = "/proc/cpuinfo"
#: CPU flags that mean bf16 arithmetic in hardware (AVX512-BF16 on Zen 4 / Cooper Lake, AMX)
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
#: this runner's names for precisions, and what OpenVINO calls them
PRECISIONS = {"f32": "f32", "fp32": "f32", "bf16": "bf16"}
HINTS = ("LATENCY", "THROUGHPUT")

_OV_TYPES = {
    "f32": "float32",
    "f16": "float16",
    "bf16": "bfloat16",
    "f64": "float64",
    "i64": "int64",
    "i32": "int32",
    "boolean": "bool",
}


def cpu_flags(path: str | os.PathLike[str] | None = None) -> frozenset[str]:
    """The feature flags of the first CPU listed in /proc/cpuinfo (empty where unreadable)."""
    try:
        with open(path or CPUINFO) as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def bf16_support(path: str | os.PathLike[str] | None = None) -> str | None:
    """The CPU flag that provides native bf16 here (e.g. "avx512_bf16"), or None."""
    flags = cpu_flags(path)
    return next((f for f in BF16_FLAGS if f in flags), None)


def require_bf16(purpose: str) -> str:
    """The bf16 flag found, or an error naming the flags looked for and what to do instead."""
    flag = bf16_support()
    if flag is None:
        raise RuntimeUnavailableError(
            f"{purpose} asks for bf16, but this CPU has none of the flags "
            f"{', '.join(BF16_FLAGS)} in {CPUINFO} (bf16 would be emulated, slower than f32); "
            "use precision 'fp32' or 'int8' here"
        )
    return flag


def chosen_precision(spec: RnnSpec | None) -> str:
    """bf16 when the precision gate recorded bf16 execution on OpenVINO for this file, else f32."""
    rec = spec.precision if spec is not None else None
    if rec is not None and rec.execution == "bf16" and rec.runtime in (None, "openvino"):
        return "bf16"
    return "f32"


class OpenVINORunner(Runner):
    """Runs an ONNX file on OpenVINO's CPU plugin at an explicit precision.

    Args:
        model: path of the .onnx file.
        precision: "f32" or "bf16"; None takes what the file's spec records (bf16 only when the
            precision gate chose it), else f32.
        spec: the file's rnnedge spec when already known; read from the file otherwise.
        performance_hint: "LATENCY" (default) or "THROUGHPUT".
        num_threads: OpenVINO's `INFERENCE_NUM_THREADS`; None leaves its own choice.

    Thread-safe: each concurrent call takes its own infer request from a pool.
    """

    name: ClassVar[str] = "openvino"
    requires: ClassVar[tuple[str, ...]] = ("openvino",)
    install_hint: ClassVar[str] = "pip install 'rnnedge[openvino]'"

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        precision: str | None = None,
        spec: RnnSpec | None = None,
        performance_hint: str = "LATENCY",
        num_threads: int | None = None,
    ) -> None:
        super().__init__()
        if precision is not None and precision not in PRECISIONS:
            raise InputError(
                f"OpenVINO precision '{precision}' is not known; expected one of "
                f"{', '.join(PRECISIONS)}"
            )
        if performance_hint not in HINTS:
            raise InputError(
                f"performance_hint '{performance_hint}' is not known; expected "
                f"one of {', '.join(HINTS)}"
            )
        if num_threads is not None and (isinstance(num_threads, bool) or num_threads < 1):
            raise InputError(f"num_threads must be a whole number ≥ 1, got {num_threads!r}")
        self.model = Path(model)
        self.requested = None if precision is None else PRECISIONS[precision]
        self.spec = spec
        self.performance_hint = performance_hint
        self.num_threads = num_threads
        #: the precision OpenVINO reports it compiled for (set on activation)
        self.precision: str | None = None
        self._compiled: Any | None = None
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._inputs: list[TensorSpec] = []
        self._outputs: list[str] = []
        self._ports: list[Any] = []

    def _activate_impl(self) -> None:
        path = self.model
        if not path.is_file():
            raise ModelFileError(f"model file '{path}' does not exist (expected an .onnx file)")
        if self.spec is None:
            self.spec = stored_spec(path)
        precision = self.requested or chosen_precision(self.spec)
        if precision == "bf16":
            require_bf16(f"the OpenVINO runner for '{path}'")
        ov = require("openvino", "the OpenVINO runner")
        core = ov.Core()
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": precision,
            "PERFORMANCE_HINT": self.performance_hint,
        }
        if self.num_threads is not None:
            config["INFERENCE_NUM_THREADS"] = int(self.num_threads)
        try:
            compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelFileError(
                f"OpenVINO could not compile '{path}' ({first[:300]}); it reads standard ONNX "
                "files (an int8 file from ONNX Runtime's quantizer uses ops only ONNX Runtime "
                "has: run that one on 'ort-cpu')"
            ) from exc
        got = str(compiled.get_property("INFERENCE_PRECISION_HINT")).lower()
        if "bf16" in got or "bfloat16" in got:
            got = "bf16"
        elif "f32" in got or "float32" in got:
            got = "f32"
        if got != precision:
            raise RuntimeUnavailableError(
                f"OpenVINO compiled '{path}' for {got} although {precision} was asked for"
            )
        self.precision = got
        self._compiled = compiled
        self._inputs = [_tensor_spec(p) for p in compiled.inputs]
        self._ports = list(compiled.outputs)
        self._outputs = [p.get_any_name() for p in self._ports]

    def _deactivate_impl(self) -> None:
        self._compiled = None
        self._idle = queue.SimpleQueue()
        self._ports = []

    def _input_specs_impl(self) -> list[TensorSpec]:
        return list(self._inputs)

    def _output_names_impl(self) -> list[str]:
        return list(self._outputs)

    def _infer_impl(self, feeds: Feeds) -> dict[str, np.ndarray]:
        assert self._compiled is not None
        try:
            request = self._idle.get_nowait()
        except queue.Empty:
            request = self._compiled.create_infer_request()
        try:
            result = request.infer(dict(feeds))  # outputs are copies (share_outputs=False)
        except Exception as exc:
            msg = str(exc).strip().replace("\n", " ")
            raise InputError(
                f"OpenVINO refused the inputs {describe_feeds(feeds)}: {msg[:400]}"
            ) from exc
        finally:
            self._idle.put(request)
        return {name: result[port] for name, port in zip(self._outputs, self._ports, strict=True)}


def _tensor_spec(port: Any) -> TensorSpec:
    name = port.get_any_name()
    dims: list[int | str] = []
    for i, d in enumerate(port.get_partial_shape()):
        dims.append(int(d.get_length()) if d.is_static else f"{name}_dim{i}")
    dtype = port.get_element_type().get_type_name()
    return TensorSpec(name, _OV_TYPES.get(dtype, dtype), tuple(dims))


def load_model(
    path: str | os.PathLike[str],
    *,
    precision: str | None = None,
    performance_hint: str = "LATENCY",
    num_threads: int | None = None,
) -> Model:
    """A `Model` (run, stream) on OpenVINO for a file that carries an rnnedge spec."""
    from rnnedge.runtime.model import Model

    spec = stored_spec(path)
    if spec is None:
        raise ModelFileError(
            f"'{path}' carries no rnnedge spec; the OpenVINO runner needs one "
            "(export or re-save the file with rnnedge)"
        )
    runner = OpenVINORunner(
        path,
        precision=precision,
        spec=spec,
        performance_hint=performance_hint,
        num_threads=num_threads,
    )
    return Model(runner.activate(), spec, Path(path))
