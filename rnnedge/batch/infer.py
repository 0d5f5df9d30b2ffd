"""Batch inference over many files with Ray Data: one ONNX Runtime session per actor.

Input is long format (see `rnnedge.batch.io`): parquet or CSV files of `seq_id, step,
features…`. Each input file becomes one parquet file of `seq_id, step, forecast_0…`.

Why it is shaped this way:

* Files are read by Ray tasks, one per file, and a file that cannot be read or is not valid
  becomes an error row instead of an exception, so one bad file among many is reported by
  name while the others are processed.
* Our graphs have no `sequence_lens` input, so sequences are bucketed by exact length inside
  each batch and never padded: results equal running each sequence alone with `Model.run`.
* Dead actors are restarted and their batches retried. The driver keys every result by
  (file, sequence index), so a retry can neither lose nor duplicate rows, and writes a file
  (temporary file + rename) only once all of its sequences are back.
* rnnedge errors cross the Ray boundary as data, never as exceptions: a row carries the
  error's class name and message (`error_kind`, `error`), and an actor whose model failed to
  load answers every batch with rows that say so (`fatal`). The driver rebuilds the typed
  error from those two fields, whatever Ray does to exceptions and their text on the way.
"""

from __future__ import annotations

import inspect
import os
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rnnedge._optional import require
from rnnedge.batch.io import (
    arrow_modules,
    list_inputs,
    predict_buckets,
    read_long_file,
)
from rnnedge.batch.results import (
    BatchResult,
    _as_rnnedge_error,
    _Collector,
)
from rnnedge.errors import InputError, RnnEdgeError

#: a path in this variable makes the first actor that finds the file delete it and exit hard:
#: a drill that shows a cluster retries a killed worker's batch without losing rows
FAULT_MARKER_ENV = "RNNEDGE_FAULT_MARKER"
_BLOCK_BYTES = 256 * 1024
#: the columns of a sequence row; `data` holds its values, then (after an actor) its forecasts
_FIELDS = (
    "file",
    "seq_index",
    "seq_id",
    "id_is_int",
    "n_seqs",
    "steps",
    "data",
    "error",
    "error_kind",
    "fatal",
)


def _table(rows: dict[str, list[Any]]) -> Any:
    """Rows as an Arrow table with a fixed schema, so blocks from any file concatenate."""
    pa, _, _ = arrow_modules()
    s, i, b = pa.string(), pa.int64(), pa.binary()
    types = (s, i, s, pa.bool_(), i, b, b, s, s, pa.bool_())
    schema = pa.schema(list(zip(_FIELDS, types, strict=True)))
    return pa.table({k: rows[k] for k in _FIELDS}, schema=schema)


def read_files(
    batch: dict[str, np.ndarray], n_features: int, dtype: str, features: list[str] | None = None
) -> Any:
    """Ray Data task: file paths in; one row per sequence, or one error row per bad file, out.

    Rows go out shortest sequence first, so the batches that reach the actors hold long runs
    of equal lengths: few, large ORT calls.
    """
    out: list[tuple[Any, ...]] = []
    for path in batch["path"]:
        name = Path(str(path)).name
        try:
            f = read_long_file(str(path), n_features, dtype, features=features)
        except RnnEdgeError as exc:
            out.append((name, -1, "", False, 0, b"", b"", str(exc), type(exc).__name__, False))
            continue
        n = len(f.ids)
        for k in sorted(range(n), key=lambda k: len(f.steps[k])):
            steps, values = f.steps[k].tobytes(), f.values[k].tobytes()
            out.append((name, k, str(f.ids[k]), f.ids_are_int, n, steps, values, "", "", False))
    columns = list(zip(*out, strict=True)) or [()] * len(_FIELDS)
    return _table({k: list(col) for k, col in zip(_FIELDS, columns, strict=True)})


class Predictor:
    """Ray Data actor: loads the model once, then forecasts batches of sequence rows.

    The model arrives as bytes from the driver, so no node needs its own copy of the file.
    A model that fails to load does not kill the actor (Ray would restart it, and pass on
    only text): every batch it gets comes back as rows carrying the error, marked fatal.
    """

    def __init__(
        self,
        model_bytes: bytes,
        runtime: str,
        threads: int,
        n_features: int,
        dtype: str,
        out_dtype: str,
        fault_marker: str | None = None,
    ) -> None:
        from rnnedge.runtime.model import load

        self.model: Any = None
        self.startup_error: tuple[str, str] | None = None  # (class name, message)
        with tempfile.TemporaryDirectory(prefix="rnnedge-") as tmp:
            path = Path(tmp) / "model.onnx"
            path.write_bytes(model_bytes)
            settings = {"intra_op_num_threads": threads} if runtime == "ort-cpu" else None
            try:
                self.model = load(path, runtime, settings=settings)
            except RnnEdgeError as exc:
                self.startup_error = (type(exc).__name__, str(exc))
        self.n_features, self.dtype, self.out_dtype = n_features, dtype, out_dtype
        self.fault_marker = fault_marker

    def __call__(self, batch: Any) -> Any:
        if self.fault_marker:
            try:
                os.remove(self.fault_marker)
            except FileNotFoundError:
                pass
            else:
                os._exit(1)
        rows = {k: batch[k].to_pylist() for k in _FIELDS}
        ok = [i for i, e in enumerate(rows["error"]) if not e]
        if self.startup_error is not None:
            kind, message = self.startup_error
            for i in ok:
                rows["error"][i], rows["error_kind"][i], rows["fatal"][i] = message, kind, True
            return _table(rows)
        xs = [np.frombuffer(rows["data"][i], self.dtype).reshape(-1, self.n_features) for i in ok]
        try:
            ys = predict_buckets(self.model, xs)
        except RnnEdgeError as exc:
            for i in ok:
                rows["error"][i], rows["error_kind"][i] = str(exc), type(exc).__name__
            ys = [np.empty(0, self.out_dtype)] * len(ok)
        for i, y in zip(ok, ys, strict=True):
            rows["data"][i] = np.ascontiguousarray(y, dtype=self.out_dtype).tobytes()
        return _table(rows)


def _with_retries(restarts: int) -> dict[str, int]:
    """Bounded actor restarts and batch retries; Ray Data's own default retries forever.

    Passed the way the installed Ray accepts them (named, or as the deprecated remote args),
    or left to Ray's default where neither is accepted.
    """
    from ray.data import Dataset

    params = inspect.signature(Dataset.map_batches).parameters
    if "max_restarts" in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return {"max_restarts": restarts, "max_task_retries": restarts}
    return {}


def batch_infer(
    model_path: str | os.PathLike[str],
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str],
    *,
    num_actors: int = 2,
    batch_size: int = 1024,
    use_gpu: bool | str = "auto",
    runtime: str | None = None,
    max_restarts: int = 3,
    address: str | None = None,
    progress: bool = False,
) -> BatchResult:
    """Forecast every sequence of every input file on a pool of Ray actors.

    Args:
        model_path: an `.onnx` file made by `rnnedge export`; read here, shipped to actors.
        inputs: a folder of long-format parquet/CSV files, one such file, or a list of them.
            Ray workers read them, so on a cluster they must be on storage every node sees.
        output_dir: gets `<input stem>.parquet` per input (on the driver's machine); outputs
            already there are replaced.
        num_actors: actors in the pool, each with its own ONNX Runtime session.
        batch_size: sequences per actor call; a call makes one ORT run per distinct length.
        use_gpu: "auto" gives each actor one GPU when the cluster has GPUs.
        runtime: "ort-cpu" or "ort-cuda"; by default ort-cuda on GPU actors, else ort-cpu.
        max_restarts: restarts of a dead actor, and retries of the batch it held.
        address: the Ray cluster to join; by default the one this process is connected to,
            then $RAY_ADDRESS, then a new local one (shut down again at the end).
        progress: show Ray Data's progress bars and execution plan.

    Returns:
        A BatchResult: the files that failed are in `failed` by name, the others written.
    """
    from rnnedge.runtime.model import load

    if num_actors < 1 or batch_size < 1 or max_restarts < 0:
        raise InputError(
            f"num_actors and batch_size must be ≥ 1 and max_restarts ≥ 0, got "
            f"{num_actors}, {batch_size}, {max_restarts}"
        )
    start = time.perf_counter()
    files, skipped = list_inputs(inputs)
    with load(model_path, "ort-cpu") as model:
        spec = model.spec
        n_features = spec.input(spec.data_input).shape[2]
        dtype, out_dtype = spec.input(spec.data_input).dtype, spec.output(spec.data_output).dtype
        # a model that knows its columns is fed by name and names its forecasts
        features = list(spec.contract.features) if spec.contract else None
        targets = list(spec.contract.targets) if spec.contract else None
    if not isinstance(n_features, int):
        raise InputError(f"{model_path}: the feature count of '{spec.data_input}' is not fixed")
    ray = require("ray", "rnnedge batch-infer")
    require("ray.data", "rnnedge batch-infer")
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, logging_level="WARNING")
    try:
        gpu = ray.cluster_resources().get("GPU", 0) >= 1 if use_gpu == "auto" else bool(use_gpu)
        runtime = runtime or ("ort-cuda" if gpu else "ort-cpu")
        res = BatchResult(skipped=skipped, actors=num_actors, runtime=runtime, use_gpu=gpu)
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        collector = _Collector(out, out_dtype, res, targets)
        actor_args = {
            "model_bytes": Path(model_path).read_bytes(),
            "runtime": runtime,
            "threads": 1,
            "n_features": n_features,
            "dtype": dtype,
            "out_dtype": out_dtype,
            "fault_marker": os.environ.get(FAULT_MARKER_ENV) or None,
        }
        read_args = {"n_features": n_features, "dtype": dtype, "features": features}
        try:
            for table in _pipeline(
                ray,
                files,
                actor_args,
                read_args,
                gpu,
                num_actors,
                batch_size,
                max_restarts,
                progress,
            ):
                collector.add(table)
        except ray.exceptions.RayError as exc:
            raise _as_rnnedge_error(exc, res, len(files)) from exc
        collector.finish(files)
    finally:
        if started:
            ray.shutdown()
    res.seconds = time.perf_counter() - start
    return res


def _pipeline(
    ray: Any,
    files: list[Path],
    actor_args: dict[str, Any],
    read_args: dict[str, Any],
    gpu: bool,
    num_actors: int,
    batch_size: int,
    max_restarts: int,
    progress: bool,
) -> Iterator[Any]:
    """Read tasks → actor pool → driver, streamed: results arrive as batches finish."""
    import ray.data

    # A Dataset copies the current DataContext when it is created: set ours, then restore.
    # Small blocks let a big file's sequences spread over every actor (a map task never
    # splits a block); blocks smaller than batch_size are bundled again for the actors.
    ctx = ray.data.DataContext.get_current()
    saved = (ctx.enable_progress_bars, ctx.print_on_execution_start, ctx.target_max_block_size)
    try:
        ctx.enable_progress_bars = ctx.print_on_execution_start = progress
        ctx.target_max_block_size = min(saved[2] or _BLOCK_BYTES, _BLOCK_BYTES)
        paths = [{"path": str(p.resolve())} for p in files]
        ds = ray.data.from_items(paths, override_num_blocks=len(files))
    finally:
        ctx.enable_progress_bars, ctx.print_on_execution_start, ctx.target_max_block_size = saved
    # Read tasks reserve no CPU: the actors may hold every CPU in the cluster, and a task
    # waiting for one would never run. The pool size bounds how many files are in memory.
    ds = ds.map_batches(
        read_files,
        batch_size=1,
        batch_format="numpy",
        num_cpus=0,
        compute=ray.data.TaskPoolStrategy(size=min(len(files), max(2, num_actors))),
        fn_kwargs=read_args,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        ds = ds.map_batches(
            Predictor,
            batch_size=batch_size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=num_actors),
            num_cpus=1,
            num_gpus=1 if gpu else 0,
            fn_constructor_kwargs=actor_args,
            **_with_retries(max_restarts),
        )
    yield from ds.iter_batches(batch_size=None, batch_format="pyarrow")
