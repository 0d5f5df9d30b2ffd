"""Batch-inference throughput: Ray Data actors vs one process running the same buckets.

One run exports a GRU forecaster, writes N sequences (lengths 5–40, long format) over several
parquet files, then times, end to end (read, infer, write parquet) and in sequences/s:

* one process: `read_long_file` → `predict_buckets` (one `Model.run` per distinct length per
  batch) → `write_forecasts`, i.e. exactly the actors' work, with ONNX Runtime on 1 thread
  and on its default thread count; and one `Model.run` per sequence, unbucketed;
* `rnnedge.batch.infer.batch_infer` on a local Ray cluster with 1 and 2 actors. Each call
  starts its own actor pool, so a call on a tiny input (one file, 10 sequences) is timed too:
  its time is the fixed cost per call, and N / (time − fixed cost) the marginal throughput
  (null when the input is too small for the time to exceed the fixed cost).

Ray's own start-up (`ray.init`) is timed once, apart. Outputs of every path are compared
with the single-process ones (max abs diff).

    .venv/bin/python benchmarks/ray_throughput.py [--sequences 20000] [--files 8]
        [--hidden 64] [--repeat 3] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import common
import numpy as np


def make_data(folder: Path, sequences: int, files: int, seed: int = 0) -> int:
    """Long-format parquet files; returns the number of rows (time steps)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = 0
    for f, chunk in enumerate(np.array_split(np.arange(sequences), files)):
        lengths = rng.integers(5, 41, size=len(chunk))
        ids = np.repeat(chunk, lengths)
        steps = np.concatenate([np.arange(n) for n in lengths])
        values = rng.standard_normal(len(ids)).astype(np.float32)
        pq.write_table(
            pa.table({"seq_id": ids, "step": steps, "value": values}),
            folder / f"part-{f:03d}.parquet",
        )
        rows += len(ids)
    return rows


def run_local(
    model_path: Path,
    inputs: Path,
    out: Path,
    batch_size: int,
    threads: int | None,
    bucketed: bool = True,
) -> None:
    """The actors' work in one process: read, bucket by exact length, run, write."""
    import rnnedge
    from rnnedge.batch.io import (
        list_inputs,
        output_name,
        predict_buckets,
        read_long_file,
        write_forecasts,
    )

    settings = {"intra_op_num_threads": threads} if threads else None
    with rnnedge.load(model_path, "ort-cpu", settings=settings) as model:
        for path in list_inputs(inputs)[0]:
            f = read_long_file(path, 1)
            if bucketed:
                order = sorted(range(len(f.ids)), key=lambda i: len(f.values[i]))
                ys: list[Any] = [None] * len(order)
                for a in range(0, len(order), batch_size):
                    idx = order[a : a + batch_size]
                    for i, y in zip(
                        idx, predict_buckets(model, [f.values[i] for i in idx]), strict=True
                    ):
                        ys[i] = y
            else:
                ys = [model.run(v[None])[0][0] for v in f.values]
            write_forecasts(out / output_name(path), f.ids, f.ids_are_int, f.steps, ys)


def max_diff(a: Path, b: Path) -> float:
    import pyarrow.parquet as pq

    worst = 0.0
    for p in sorted(a.glob("*.parquet")):
        x, y = pq.read_table(p), pq.read_table(b / p.name)
        assert x["seq_id"].equals(y["seq_id"]) and x["step"].equals(y["step"]), p.name
        diff = np.abs(x["forecast_0"].to_numpy() - y["forecast_0"].to_numpy())
        worst = max(worst, float(diff.max()))
    return worst


def timed(fn: Callable[[], Any], repeat: int) -> dict[str, Any]:
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return {"seconds": runs, "best_s": min(runs), "median_s": statistics.median(runs)}


def _rate(per_s: float | None) -> str:
    if per_s is None:
        return "n/a: the input is too small to see past the fixed cost"
    return f"{per_s:,.0f} seq/s"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sequences", type=int, default=20_000)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=64, help="GRU hidden size (64)")
    ap.add_argument("--batch-size", type=int, default=1024, help="sequences per call (1024)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per candidate (3)")
    ap.add_argument("--actors", default="1,2", help="actor pool sizes to time (1,2)")
    ap.add_argument("--json-out", type=Path)
    return ap.parse_args(argv)


def versions() -> dict[str, str]:
    import onnxruntime
    import pyarrow
    import ray
    import torch

    import rnnedge

    return {
        "rnnedge": rnnedge.__version__,
        "ray": ray.__version__,
        "onnxruntime": onnxruntime.__version__,
        "pyarrow": pyarrow.__version__,
        "numpy": np.__version__,
        "torch": torch.__version__,
    }


def prepare(root: Path, args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """Export the GRU and write the input files; returns the model and the workload's record."""
    import torch

    import rnnedge
    from rnnedge.modeling.models import ModelConfig, SequenceModel

    torch.manual_seed(0)
    cfg = ModelConfig(cell="gru", hidden_size=args.hidden)
    model_path = root / "gru.onnx"
    rnnedge.export(SequenceModel(cfg), torch.randn(2, 8, 1), model_path)
    rows = make_data(root / "in", args.sequences, args.files)
    make_data(root / "tiny", 10, 1, seed=1)
    return model_path, {
        "model": cfg.to_dict(),
        "sequences": args.sequences,
        "rows": rows,
        "files": args.files,
        "lengths": [5, 40],
        "features": 1,
        "batch_size": args.batch_size,
        "format": "parquet",
    }


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def time_local(root: Path, model_path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The single-process paths; their outputs stay in root/<name> for the comparisons."""
    results: dict[str, Any] = {}
    for name, threads, bucketed in (
        ("local_bucketed_1thread", 1, True),
        ("local_bucketed_default_threads", None, True),
        ("local_per_sequence_1thread", 1, False),
    ):
        out = root / name
        out.mkdir()
        r = timed(
            lambda out=out, threads=threads, bucketed=bucketed: run_local(
                model_path, root / "in", out, args.batch_size, threads, bucketed
            ),
            args.repeat,
        )
        r["sequences_per_s"] = args.sequences / r["best_s"]
        results[name] = r
        say(f"{name:>28}: best {r['best_s']:.2f} s, {r['sequences_per_s']:,.0f} seq/s")
    results["local_per_sequence_1thread"]["max_abs_diff_vs_bucketed"] = max_diff(
        root / "local_bucketed_1thread", root / "local_per_sequence_1thread"
    )
    return results


def time_ray_pool(
    root: Path, model_path: Path, actors: int, args: argparse.Namespace
) -> dict[str, Any]:
    """One actor-pool size: a tiny input for the fixed cost per call, then the whole input."""
    from rnnedge.batch.infer import batch_infer

    out = root / f"ray_{actors}_actors"

    def call(inp: Path) -> None:
        res = batch_infer(model_path, inp, out, num_actors=actors, batch_size=args.batch_size)
        assert res.ok and res.duplicates_dropped == 0, res.failed

    fixed = timed(lambda: call(root / "tiny"), args.repeat)
    r = timed(lambda: call(root / "in"), args.repeat)
    r["sequences_per_s"] = args.sequences / r["best_s"]
    r["fixed_cost_per_call_s"] = fixed["median_s"]
    beyond_fixed = r["best_s"] - fixed["median_s"]  # ≤ 0 when the input is tiny
    r["marginal_sequences_per_s"] = args.sequences / beyond_fixed if beyond_fixed > 0 else None
    r["max_abs_diff_vs_local"] = max_diff(root / "local_bucketed_1thread", out)
    say(
        f"{out.name:>28}: best {r['best_s']:.2f} s, {r['sequences_per_s']:,.0f} seq/s "
        f"(fixed {fixed['median_s']:.2f} s/call, marginal "
        f"{_rate(r['marginal_sequences_per_s'])})"
    )
    return r


def time_ray(root: Path, model_path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """`ray.init` once, then each actor-pool size on the same local cluster."""
    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="WARNING")
    results: dict[str, Any] = {"ray_init_s": time.perf_counter() - t0}
    try:
        for actors in [int(a) for a in args.actors.split(",")]:
            results[f"ray_{actors}_actors"] = time_ray_pool(root, model_path, actors, args)
    finally:
        ray.shutdown()
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    info: dict[str, Any] = {
        "benchmark": "ray_throughput",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": common.machine(),
        "versions": versions(),
    }
    with tempfile.TemporaryDirectory(prefix="rnnedge-ray-bench-") as tmp:
        root = Path(tmp)
        model_path, info["workload"] = prepare(root, args)
        results = time_local(root, model_path, args)
        results.update(time_ray(root, model_path, args))
    info["results"] = results
    info["machine"]["loadavg_end"] = common.loadavg()
    out_path = common.write_json(args.json_out or common.default_out("ray"), info)
    say(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
