"""The whole pipeline on real data: train on sunspots, export, verify, stream.

What `rnnedge demo` (and `make demo`) runs. It is the shortest proof that the parts fit: the
exported file is checked against eager PyTorch on every runtime available here at batch sizes
and lengths it was not exported with, and streaming it chunk by chunk is checked against one
full pass over the same series.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rnnedge._optional import require
from rnnedge.tools.pipeline import (
    ExportJob,
    export_checkpoint,
    onnx_runtimes,
    parity_on_runtimes,
    stream_vs_full,
)
from rnnedge.tools.training import Progress, SeriesSource, TrainSettings, fit, load_series

if TYPE_CHECKING:
    from rnnedge.exporters.onnx import ExportResult
    from rnnedge.modeling.train import TrainResult
    from rnnedge.verify.parity import ParityReport

#: (batch, seq_len) the demo verifies at: the series is 309 years long
BATCHES = (1, 4)
SEQ_LENS = (1, 7, 32, 100, 309)


@dataclass(frozen=True)
class DemoConfig:
    """Where the demo writes (`model.pt`, `model.onnx`), how it exports, what it trains."""

    out_dir: Path = Path("runs/demo")
    exporter: str = "torchscript"
    settings: TrainSettings = field(default_factory=TrainSettings)


@dataclass
class DemoResult:
    """Everything the demo proved, as data (rendered by the CLI)."""

    source: str
    points: int
    trained: TrainResult
    checkpoint: Path
    export: ExportResult
    parity: ParityReport
    stream_vs_full_max_abs: float | None
    seconds: float

    def summary(self) -> dict[str, Any]:
        """The JSON the command prints with `--json`."""
        return {
            "series": self.source,
            **self.trained.metrics(),
            "checkpoint": self.checkpoint,
            "onnx": self.export.path,
            "exporter": self.export.exporter,
            "parity_ok": self.parity.ok,
            "parity_max_abs": {r: self.parity.max_abs(r) for r in self.parity.runners()},
            "stream_vs_full_max_abs": self.stream_vs_full_max_abs,
            "wall_seconds": self.seconds,
        }


def run_demo(
    config: DemoConfig,
    *,
    progress: Progress | None = None,
    say: Callable[[str], None] | None = None,
) -> DemoResult:
    """Train, export, verify on every runtime here, and compare streaming with a full pass.

    Args:
        config: The demo's settings.
        progress: Called after each training epoch.
        say: Called with a line about the data before training starts.

    Raises:
        RuntimeUnavailableError: torch or onnx is not installed.
        ExportError: The export is wrong at other shapes (no file is kept).
    """
    require("torch", "the demo", extra="export")
    from rnnedge.modeling.models import stateful_wrapper
    from rnnedge.modeling.train import save_checkpoint
    from rnnedge.verify.parity import shape_grid

    start = time.perf_counter()
    series = load_series(SeriesSource("sunspots"))
    if say is not None:
        say(f"{series.source}, {len(series.values)} points")
    trained = fit(series, config.settings, progress=progress)
    checkpoint = Path(save_checkpoint(config.out_dir / "model.pt", trained))
    exported = export_checkpoint(
        ExportJob(checkpoint, config.out_dir / "model.onnx", exporter=config.exporter)
    )
    parity = parity_on_runtimes(
        stateful_wrapper(trained.model),
        exported.path,
        onnx_runtimes(),
        shape_grid(BATCHES, SEQ_LENS),
    )
    stream_diff = stream_vs_full(exported.path, series.values.astype(np.float32)[None])
    return DemoResult(
        series.source,
        len(series.values),
        trained,
        checkpoint,
        exported,
        parity,
        stream_diff,
        time.perf_counter() - start,
    )
