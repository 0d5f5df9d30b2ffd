"""The evidence that an exported file is right: eager PyTorch and ONNX Runtime on new shapes.

Both run on the same inputs, drawn at each (batch, seq_len) of the grid the way the module
accepts them (token ids within their range, extra inputs as given), so a failure is the graph's
fault, never the probe's. When the file is wrong, `advice` names what to change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rnnedge._optional import require
from rnnedge.errors import InputError, RnnEdgeError
from rnnedge.spec import RnnSpec
from rnnedge.verify.parity import ParityReport, Tolerance, compare_outputs, default_grid

if TYPE_CHECKING:
    from rnnedge.exporters.plan import Plan


def declared_frozen(spec: RnnSpec, path: Path) -> list[str]:
    """Batch and time axes of the data input that the graph declares as fixed numbers."""
    from rnnedge.runtime.backends.ort import open_session, session_tensor_specs

    session = open_session(path)
    declared = {t.name: t for t in session_tensor_specs(session.get_inputs())}
    x = declared.get(spec.data_input)
    found = []
    if x is not None:
        for axis, label in ((spec.seq_axis, "seq_len"), (spec.batch_axis, "batch")):
            if axis is not None and axis < len(x.shape) and isinstance(x.shape[axis], int):
                found.append(f"{label} axis of '{x.name}' frozen at {x.shape[axis]}")
    return found


def advice(exporter: str, cell_loops: list[str], batch_first: bool) -> str:
    """What to change when a file is wrong at other shapes: the loop, or the other exporter."""
    if cell_loops:
        return (
            f"the model loops over {', '.join(cell_loops)} in Python, which the exporter "
            "unrolls to the example length; use nn.RNN/nn.LSTM/nn.GRU over the whole "
            "sequence instead"
        )
    if exporter == "dynamo":
        extra = "" if batch_first else " (time-major graphs get Reshape constants baked in)"
        return f"re-export with exporter='torchscript'{extra}"
    return "re-export with exporter='dynamo' or simplify the model's control flow"


def grid_for(
    plan: Plan, spec: RnnSpec, shapes: Sequence[tuple[int, int]] | None
) -> list[tuple[int, int]]:
    """The (batch, seq_len) pairs to verify at; batch stays 1 for a graph without a batch."""
    x = plan.args[0]
    example_b = 1 if spec.batch_axis is None else int(x.shape[spec.batch_axis])
    grid = list(shapes) if shapes else default_grid(example_b, int(x.shape[spec.seq_axis]))
    if spec.batch_axis is None:  # one sequence per call: only the length can vary
        grid = list(dict.fromkeys((1, t) for _, t in grid))
    return grid


def compare(
    plan: Plan, tmp: Path, grid: Sequence[tuple[int, int]], tolerance: Tolerance
) -> ParityReport:
    """Eager PyTorch and ONNX Runtime on the same inputs, drawn as the module accepts them."""
    torch = require("torch", "rnnedge export")
    from rnnedge.modeling.torch_runner import TorchRunner
    from rnnedge.runtime.backends.ort import OrtCpuRunner

    gen = torch.Generator().manual_seed(0)
    feeds_list = [
        {
            n: a.numpy()
            for n, a in zip(plan.input_names, plan.sampler.sample(b, t, gen), strict=True)
        }
        for b, t in grid
    ]
    with (
        TorchRunner(plan.module, plan.input_names, plan.output_names) as ref,
        OrtCpuRunner(tmp) as ort_runner,
    ):
        report = ParityReport(ref.name, tolerance)
        for (b, t), feeds in zip(grid, feeds_list, strict=True):
            try:
                expected = ref.infer(feeds)
            except RnnEdgeError:
                raise
            except Exception as exc:  # the user's module may raise anything
                from rnnedge.exporters.probe import first_line

                raise InputError(
                    f"the module fails at batch={b} seq_len={t}: {first_line(exc)}"
                ) from exc
            actual: Mapping[str, np.ndarray] | Exception
            try:
                actual = ort_runner.infer(feeds)
            except (RnnEdgeError, RuntimeError, ValueError) as exc:
                actual = exc
            report.comparisons.extend(
                compare_outputs(ort_runner.name, b, t, expected, actual, tolerance)
            )
    return report
