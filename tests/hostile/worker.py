"""Cases run in a separate worker process, so a crash or a native hang costs one case, not the run.

Some hostile inputs reach native code that does not come back: ONNX Runtime asked for 10^5
intra-op threads by a tuning file segfaults or spins for minutes, and a SIGALRM cannot
interrupt C++. The worker runs cases one at a time (the case's own alarm reports a Python-level
hang with its location); the parent waits a little longer, and if the worker died or went
silent it records a crash or a native hang for that case, reads the worker's faulthandler dump
for the location, and starts a fresh worker for the next case.
"""

from __future__ import annotations

import contextlib
import faulthandler
import multiprocessing
import os
import re
import resource
import signal
import tempfile
from pathlib import Path
from typing import Any

from tests.hostile.artifacts import Artifacts
from tests.hostile.files import Problem
from tests.hostile.harness import DEFAULT_TIMEOUT_S, RAY_TIMEOUT_FACTOR, Outcome, _where, run_case

#: how long the parent waits beyond the case's own timeout before it kills the worker
GRACE_S = 10.0
_DUMP_FRAME = re.compile(r'File "([^"]+)", line (\d+) in (\S+)')


def _worker_main(
    conn: Any, art: Artifacts, root: str, seed: int, timeout: float, crash_log: str
) -> None:
    from tests.hostile.cases import generate

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash costs a case, not a core file
    log = open(crash_log, "w")  # noqa: SIM115 (open for the life of the process)
    faulthandler.enable(file=log, all_threads=False)
    cases: dict[str, list[Any]] = {}
    shared: dict[str, Any] = {}
    while True:
        message = conn.recv()
        if message is None:
            break
        family, index = message
        if family not in cases:
            _close(shared)
            cases = {family: generate(family, art, seed)}
        try:
            outcome = run_case(cases[family][index], art, Path(root), shared, timeout)
            answer = (
                outcome.status,
                [(p.label, p.text, p.signature) for p in outcome.problems],
                outcome.seconds,
            )
        except Exception as exc:  # a harness bug: reported for the case, the worker goes on
            answer = (
                "refused",
                [("harness error", f"{type(exc).__name__}: {exc}", "harness error")],
                0.0,
            )
        conn.send(answer)
    _close(shared)


def _close(shared: dict[str, Any]) -> None:
    for value in shared.values():
        with contextlib.suppress(Exception):
            value.close()
    shared.clear()


class Worker:
    """One worker process at a time; restarted after a crash or a hang."""

    def __init__(self, art: Artifacts, root: Path, seed: int, timeout: float | None = None) -> None:
        self.art, self.root, self.seed = art, root, seed
        self.timeout = timeout or float(os.environ.get("RNNEDGE_FUZZ_TIMEOUT", DEFAULT_TIMEOUT_S))
        self._ctx = multiprocessing.get_context("spawn")
        self._proc: Any = None
        self._conn: Any = None
        self._log = ""

    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        fd, self._log = tempfile.mkstemp(prefix="crash-", suffix=".log", dir=self.root)
        os.close(fd)
        self._proc = self._ctx.Process(
            target=_worker_main,
            daemon=True,
            args=(child, self.art, str(self.root), self.seed, self.timeout, self._log),
        )
        self._proc.start()
        child.close()
        self._conn = parent

    def run(self, case: Any, index: int) -> Outcome:
        if self._proc is None or not self._proc.is_alive():
            self._start()
        self._conn.send((case.family, index))
        limit = self.timeout * (RAY_TIMEOUT_FACTOR if case.ray else 1) + GRACE_S
        answered = self._conn.poll(limit)
        if answered:
            with contextlib.suppress(EOFError, OSError):
                status, problems, seconds = self._conn.recv()
                return Outcome(case, status, [Problem(*p) for p in problems], seconds)
        alive = self._proc.is_alive()
        if alive:  # faulthandler prints the Python stack on SIGABRT: where it hung
            with contextlib.suppress(OSError):
                os.kill(self._proc.pid, signal.SIGABRT)
            self._proc.join(timeout=10)
        self._stop(kill=True)
        where = self._crash_site()
        if alive:
            text = f"no answer within {limit:g} s; the worker was killed"
            return Outcome(
                case,
                "refused",
                [Problem("hang", f"{text} (native code at {where})", f"native hang in {where}")],
            )
        code = self._proc.exitcode if self._proc else None
        return Outcome(
            case,
            "refused",
            [
                Problem(
                    "crash",
                    f"the process died (exit code {code}) at {where}",
                    f"process crash (exit {code}) in {where}",
                )
            ],
        )

    def _crash_site(self) -> str:
        try:
            text = Path(self._log).read_text()
        except OSError:
            return "?"
        frames = [(m[0], int(m[1]), m[2]) for m in _DUMP_FRAME.findall(text)]
        return _where(list(reversed(frames))) if frames else "?"

    def _stop(self, kill: bool = False) -> None:
        if self._proc is None:
            return
        if kill:
            self._proc.kill()
        else:
            with contextlib.suppress(OSError, BrokenPipeError):
                self._conn.send(None)
        self._proc.join(timeout=30)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()
        self._conn.close()
        if kill:
            return
        self._proc = None

    def close(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            self._stop()
        self._proc = None


def run_family(family: str, art: Artifacts, worker: Worker, progress: Any = None) -> list[Outcome]:
    """Every case of `family`, each in the worker; `progress(outcome)` after each."""
    from tests.hostile.cases import generate

    cases = generate(family, art, worker.seed)
    outcomes = []
    for index, case in enumerate(cases):
        outcomes.append(worker.run(case, index))
        if progress:
            progress(outcomes[-1])
    return outcomes
