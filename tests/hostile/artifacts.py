"""The valid inputs every hostile case starts from, built once per session and kept tiny.

A 2-feature LSTM with hidden size 4, trained for two epochs on a synthetic series, saved as a
checkpoint with `rnnedge.modeling.train` and exported with `rnnedge.export` (normalization and
data contract included). Cases copy these files into their own folder and damage the copies,
so the originals are hashed once and must never change.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: rows of the CSV series: enough for `train --window 8` (train and validation splits)
SERIES_LEN = 60
FEATURES = ("x0", "x1")
#: fp32 parity tolerance (|a - e| <= ATOL + RTOL * |e|), as the project's parity tests use
ATOL, RTOL = 1e-5, 1e-4


@dataclass(frozen=True)
class Artifacts:
    """Paths and reference results of the valid model, checkpoint and data."""

    folder: Path
    ckpt: Path
    onnx: Path
    csv: Path  # date,x0,x1 with SERIES_LEN rows
    batch_dir: Path  # one long-format CSV (seq_id,step,x0,x1) for batch-infer
    values: np.ndarray  # (SERIES_LEN, 2) float32: the CSV's feature columns
    y: np.ndarray  # Model.run(values[None]) in data units, (1, SERIES_LEN, 1)
    onnx_bytes: bytes
    ckpt_bytes: bytes
    spec: dict  # the exported file's `rnnedge.spec`, parsed
    hashes: dict[str, str]  # every file under `folder`, to prove no case changed one

    @property
    def x(self) -> np.ndarray:
        return self.values[None].copy()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): sha256(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def close_enough(got: np.ndarray, want: np.ndarray) -> bool:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    return got.shape == want.shape and bool(
        np.all(np.abs(got - want) <= ATOL + RTOL * np.abs(want))
    )


def write_csv(path: Path, values: np.ndarray) -> None:
    lines = ["date," + ",".join(FEATURES)]
    lines += [
        f"2000-01-{1 + i // 24:02d}T{i % 24:02d}:00," + ",".join(repr(float(v)) for v in row)
        for i, row in enumerate(values)
    ]
    path.write_text("\n".join(lines) + "\n")


def build(folder: Path) -> Artifacts:
    """Train, save, export and run the reference model into `folder`."""
    import torch

    import rnnedge
    from rnnedge.exporters.onnx import example_for
    from rnnedge.modeling import data
    from rnnedge.modeling.models import ModelConfig
    from rnnedge.modeling.train import TrainConfig, load_checkpoint, save_checkpoint, train
    from rnnedge.spec import SPEC_KEY

    folder.mkdir(parents=True, exist_ok=True)
    series = data.synthetic(240, features=len(FEATURES), seed=3)
    result = train(
        series,
        ModelConfig(cell="lstm", input_size=len(FEATURES), hidden_size=4, output_size=1),
        TrainConfig(epochs=2, window=8, batch_size=32, seed=0),
    )
    ckpt = save_checkpoint(folder / "model.pt", result)
    loaded = load_checkpoint(ckpt)
    onnx_path = folder / "model.onnx"
    with torch.no_grad():
        try:
            rnnedge.export(
                loaded.model,
                example_for(True, len(FEATURES)),
                onnx_path,
                normalization=loaded.normalization,
                contract=loaded.contract,
            )
        except rnnedge.RnnEdgeError:  # the controls family reports it; the rest still runs
            rnnedge.export(
                loaded.model,
                example_for(True, len(FEATURES)),
                onnx_path,
                normalization=loaded.normalization,
            )
    values = (
        np.asarray(
            data.synthetic(SERIES_LEN, features=len(FEATURES), seed=11).values, dtype=np.float32
        )
        * 3.0
        + 1.0
    )
    csv = folder / "series.csv"
    write_csv(csv, values)
    batch_dir = folder / "batch"
    batch_dir.mkdir()
    rows = ["seq_id,step," + ",".join(FEATURES)]
    rows += [
        f"{s},{t}," + ",".join(repr(float(v)) for v in values[s * 10 + t])
        for s in range(2)
        for t in range(10)
    ]
    (batch_dir / "part.csv").write_text("\n".join(rows) + "\n")
    with rnnedge.load(onnx_path) as model:
        y, _ = model.run(values[None])
    import onnx

    proto = onnx.load(str(onnx_path))
    spec = json.loads(next(p.value for p in proto.metadata_props if p.key == SPEC_KEY))
    return Artifacts(
        folder,
        ckpt,
        onnx_path,
        csv,
        batch_dir,
        values,
        np.asarray(y),
        onnx_path.read_bytes(),
        Path(ckpt).read_bytes(),
        spec,
        tree_hashes(folder),
    )
