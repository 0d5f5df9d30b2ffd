"""Live sequences for `rnnedge serve`: one `Stream` per sequence id over a shared model.

A request names its sequence (`seq_id`, non-zero) and may open it (`start`) or close it
(`end`); a sequence nobody sends to for `idle_timeout_s` is evicted, which is how the state of
a client that vanished mid-sequence is freed. Every refusal (unknown id, `start` on a live id,
a chunk whose batch differs from the sequence's, a full table) happens before any state moves,
and a failed first chunk opens nothing, so one bad request never disturbs another sequence.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnedge.errors import InputError, StreamError

SEQ_ID, START, END = "seq_id", "start", "end"


#: seconds without a request before a sequence's state is dropped, for `serve` and `triton`
#: alike: long enough for a sensor that reports every 10-30 s, short enough to free memory
IDLE_TIMEOUT_S = 60.0


@dataclass
class _Live:
    stream: Any
    started: float
    last: float
    batch: int


class SequenceTable:
    """Live sequences by id: one `Stream` each over a shared model, evicted when idle.

    The table's lock guards only the dict; steps run outside it, each under its stream's own
    lock, so sequences advance concurrently while one sequence's steps never interleave.

    Args:
        model: a loaded, streamable `rnnedge.Model`.
        idle_timeout_s: a sequence with no request for this long is closed and forgotten.
        max_sequences: live sequences at most; a start beyond it is refused.
        clock: seconds, monotonic; replaceable in tests.
    """

    _HISTORY = 4096

    def __init__(
        self,
        model: Any,
        *,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        max_sequences: int = 10_000,
        clock: Any = time.monotonic,
    ) -> None:
        if not 0 < idle_timeout_s < float("inf") or max_sequences < 1:
            raise InputError(
                f"idle_timeout_s must be > 0 and max_sequences ≥ 1; got "
                f"{idle_timeout_s} and {max_sequences}"
            )
        self.model = model
        self.idle_timeout_s = float(idle_timeout_s)
        self.max_sequences = int(max_sequences)
        self._clock = clock
        self._lock = threading.Lock()
        self._live: dict[int, _Live] = {}
        self._gone: OrderedDict[int, str] = OrderedDict()  # recent ids -> how they ended
        self.counts = {"started": 0, "ended": 0, "evicted": 0, "steps": 0, "errors": 0}

    @property
    def live(self) -> int:
        with self._lock:
            return len(self._live)

    def is_live(self, seq_id: int) -> bool:
        with self._lock:
            return seq_id in self._live

    def _forget(self, seq_id: int, how: str) -> _Live | None:
        entry = self._live.pop(seq_id, None)
        if entry is not None:
            self._gone[seq_id] = how
            self._gone.move_to_end(seq_id)
            while len(self._gone) > self._HISTORY:
                self._gone.popitem(last=False)
        return entry

    def evict_idle(self) -> list[int]:
        """Close sequences idle for longer than the timeout; returns their ids."""
        now = self._clock()
        with self._lock:
            stale = [k for k, e in self._live.items() if now - e.last > self.idle_timeout_s]
            entries = [
                self._forget(k, f"was evicted after {self.idle_timeout_s:g} s idle") for k in stale
            ]
            self.counts["evicted"] += len(stale)
        for e in entries:
            if e is not None:
                e.stream.close()
        return stale

    def _open(self, seq_id: int, batch: int, now: float) -> _Live:
        with self._lock:
            live = self._live.get(seq_id)
            if live is not None:
                raise StreamError(
                    f"sequence id {seq_id} is already live ({live.stream.steps} steps, started "
                    f"{now - live.started:.1f} s ago); send end=true on it first or start a "
                    "new id"
                )
            if len(self._live) >= self.max_sequences:
                raise StreamError(
                    f"{len(self._live)} sequences are live, the limit is "
                    f"{self.max_sequences}; end some or raise --max-sequences"
                )
            entry = _Live(self.model.stream(batch), now, now, batch)
            self._live[seq_id] = entry
            self._gone.pop(seq_id, None)
            self.counts["started"] += 1
            return entry

    def _get(self, seq_id: int, now: float) -> _Live:
        with self._lock:
            entry = self._live.get(seq_id)
            if entry is None:
                how = self._gone.get(seq_id)
                was = f" (it {how})" if how else ""
                raise StreamError(
                    f"unknown sequence id {seq_id}{was}; send start=true with the "
                    "first chunk of a sequence"
                )
            entry.last = now
            return entry

    def step(
        self, seq_id: int, chunk: np.ndarray, *, start: bool = False, end: bool = False
    ) -> np.ndarray:
        """Advance sequence `seq_id` by `chunk`; opens it on `start`, frees it on `end`."""
        if seq_id == 0:
            raise InputError("seq_id 0 is reserved (no sequence); use a non-zero id")
        now = self._clock()
        if start:
            batch = chunk.shape[self.model.spec.batch_axis] if chunk.ndim > 1 else 1
            entry = self._open(seq_id, batch, now)
        else:
            entry = self._get(seq_id, now)
        try:
            y = entry.stream.step(chunk)
        except BaseException:
            with self._lock:
                self.counts["errors"] += 1
                if start and self._live.get(seq_id) is entry:  # a failed first chunk opens nothing
                    self._live.pop(seq_id)
                    self.counts["started"] -= 1
            if start:
                entry.stream.close()
            raise
        with self._lock:
            self.counts["steps"] += 1
            entry.last = self._clock()
            if end and self._live.get(seq_id) is entry:
                self._forget(seq_id, "ended")
                self.counts["ended"] += 1
            else:
                end = False
        if end:
            entry.stream.close()
        return y

    def close(self) -> None:
        with self._lock:
            entries = list(self._live.values())
            self._live.clear()
        for e in entries:
            e.stream.close()


def controls(request: Mapping[str, np.ndarray]) -> tuple[int, bool, bool]:
    """(seq_id, start, end) from one request's tensors; start/end default to false."""
    return _seq_id(request), _flag(request, START), _flag(request, END)


def _flag(request: Mapping[str, np.ndarray], name: str) -> bool:
    value = request.get(name)
    if value is None:
        return False
    arr = np.asarray(value)
    if arr.size != 1:
        raise InputError(f"'{name}' must hold one boolean, got shape {tuple(arr.shape)}")
    return bool(arr.reshape(-1)[0])


def _seq_id(request: Mapping[str, np.ndarray]) -> int:
    if SEQ_ID not in request:
        raise InputError(f"every request needs '{SEQ_ID}' (INT64 [1], non-zero)")
    arr = np.asarray(request[SEQ_ID])
    if arr.size != 1 or arr.dtype.kind not in "iu":
        raise InputError(f"'{SEQ_ID}' must hold one integer, got {arr.dtype} {tuple(arr.shape)}")
    return int(arr.reshape(-1)[0])
