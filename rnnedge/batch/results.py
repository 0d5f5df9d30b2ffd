"""What a batch run returns, and the driver side that assembles it: results per file,
written as soon as all of a file's sequences are back, and errors rebuilt from data.

Kept apart from `rnnedge.batch.infer` (the Ray pipeline) so both stay readable, and so the
collector can be tested without Ray.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rnnedge import errors
from rnnedge.batch.io import output_name, write_forecasts
from rnnedge.errors import EXIT_CODES, RnnEdgeError


@dataclass(frozen=True)
class FileFailure:
    """Why one input file produced no output; `error` names the rnnedge error class."""

    error: str
    message: str

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.error, 1)


@dataclass
class BatchResult:
    """What a batch run did, with the counts that show nothing was dropped or duplicated.

    `sequences_in`/`rows_in` count what was read from the files that were written,
    `sequences_out`/`rows_out` what those files hold as written (a file whose counts differ is
    not published); `duplicates_dropped` counts results that came back twice (a retried batch
    whose first attempt had finished), which are written once.
    """

    outputs: dict[str, Path] = field(default_factory=dict)
    failed: dict[str, FileFailure] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    sequences_in: int = 0
    sequences_out: int = 0
    rows_in: int = 0
    rows_out: int = 0
    duplicates_dropped: int = 0
    seconds: float = 0.0
    actors: int = 0
    runtime: str = ""
    use_gpu: bool = False

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def exit_code(self) -> int:
        """0, or the largest exit code among the failures (ModelFileError 4, InputError 3)."""
        return max((f.exit_code for f in self.failed.values()), default=0)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["outputs"] = {k: str(v) for k, v in sorted(self.outputs.items())}
        d["ok"] = self.ok
        return d


def error_from_data(kind: str, message: str) -> RnnEdgeError:
    """The rnnedge error named `kind` (a class in `rnnedge.errors`) with `message`.

    How an error that crossed the Ray boundary as data becomes typed again; an unknown name
    gives the base class, so nothing a worker sends can pick an arbitrary class.
    """
    cls = getattr(errors, kind, None)
    if not (isinstance(cls, type) and issubclass(cls, RnnEdgeError)):
        cls = RnnEdgeError
    return cls(message)


class _Collector:
    """Gathers results per file and writes each file as soon as all its sequences are back."""

    def __init__(
        self,
        output_dir: Path,
        out_dtype: str,
        result: BatchResult,
        targets: list[str] | None = None,
    ) -> None:
        self.dir, self.out_dtype, self.res = output_dir, out_dtype, result
        self.targets = targets
        self.parts: dict[str, dict[int, tuple[str, bytes, bytes]]] = {}
        self.meta: dict[str, tuple[int, bool]] = {}

    def add(self, table: Any) -> None:
        for r in table.to_pylist():
            if r["fatal"]:  # the actors could not load the model: no file can succeed
                raise error_from_data(r["error_kind"], r["error"])
            name = r["file"]
            if name in self.res.failed:
                continue
            if r["error"]:
                self.res.failed[name] = FileFailure(r["error_kind"], r["error"])
                self.parts.pop(name, None)
                continue
            if name in self.res.outputs or r["seq_index"] in self.parts.get(name, {}):
                self.res.duplicates_dropped += 1
                continue
            self.meta[name] = (r["n_seqs"], r["id_is_int"])
            got = self.parts.setdefault(name, {})
            got[r["seq_index"]] = (r["seq_id"], r["steps"], r["data"])
            if len(got) == r["n_seqs"]:
                self._write(name, self.parts.pop(name))

    def finish(self, files: Sequence[Path]) -> None:
        """Report any file that neither failed nor came back whole (it is not written)."""
        for p in files:
            if p.name not in self.res.outputs and p.name not in self.res.failed:
                n = self.meta.get(p.name, (0, False))[0]
                got = len(self.parts.pop(p.name, {}))
                self.res.failed[p.name] = FileFailure(
                    "RnnEdgeError", f"{got} of {n} sequences came back; file not written"
                )

    def _write(self, name: str, got: dict[int, tuple[str, bytes, bytes]]) -> None:
        n_seqs, id_int = self.meta[name]
        order = [got[i] for i in range(n_seqs)]
        ids = [int(s) if id_int else s for s, _, _ in order]
        steps = [np.frombuffer(sb, np.int64) for _, sb, _ in order]
        ys = [np.frombuffer(yb, self.out_dtype) for _, _, yb in order]
        path = self.dir / output_name(Path(name))
        rows, sequences = write_forecasts(path, ids, id_int, steps, ys, names=self.targets)
        res = self.res
        res.outputs[name] = path
        res.sequences_in += n_seqs
        res.sequences_out += sequences
        res.rows_in += sum(len(s) for s in steps)
        res.rows_out += rows


def _as_rnnedge_error(exc: BaseException, res: BatchResult, n_files: int) -> RnnEdgeError:
    """What to raise when Ray itself gave up: the rnnedge error it carries as its cause (an
    object Ray unpickled, never parsed from text), else a summary of what was written."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            break
        if isinstance(seen, RnnEdgeError):
            return seen
        seen = getattr(seen, "cause", None) or seen.__cause__
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    return RnnEdgeError(
        f"Ray could not finish the batch ({type(exc).__name__}: {first}); {len(res.outputs)} "
        f"of {n_files} files were written, each complete, before it stopped"
    )
