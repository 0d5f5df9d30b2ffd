"""Running one hostile case and judging everything it did, not only what it returned.

Each case runs in its own folder (also the working directory and the temporary directory),
under a per-case timeout, with stdout and stderr captured at the Python and the file-descriptor
level, and (unless it starts Ray) with an address-space limit so a huge allocation fails fast
instead of swapping the machine. Afterwards: every file that was there must be unchanged,
nothing new may remain except an expected output on success, no temporary file may remain, and
the marker a malicious pickle would create must not exist.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import resource
import shutil
import signal
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.hostile.artifacts import Artifacts, tree_hashes
from tests.hostile.cases import Api, Case, Cli, Ctx
from tests.hostile.files import Problem, file_problems, snapshot

REPO = Path(__file__).resolve().parents[2]
DEFAULT_TIMEOUT_S = 20.0
#: address space a case may add to the process (a 2-feature LSTM needs a few MiB)
MEMORY_HEADROOM = 6 << 30
#: outcome labels: the two clean ones, then the kinds of escape
CLEAN = ("refused", "result")
ESCAPES = (
    "crash",
    "exception",
    "exit 1",
    "exit code",
    "hang",
    "not one line",
    "wrong result",
    "state changed",
    "destroyed",
    "left behind",
    "pickle ran",
    "control refused",
    "harness error",
)


#: what third-party code leaves in TMPDIR once per process: ONNX Runtime's session id file
#: and torch's compile cache folder (torchinductor_<user>)
TMP_ALLOWED_PREFIXES = (".ses", "torchinductor_")
#: Ray starts a cluster per run: its cases get this many times the timeout
RAY_TIMEOUT_FACTOR = 3


class CaseTimeout(BaseException):
    """Raised by the alarm; a BaseException so `except Exception` in the code cannot eat it."""


@dataclass
class Outcome:
    case: Case
    status: str  # "refused" or "result" (what the call did); problems decide whether it passed
    problems: list[Problem] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def label(self) -> str:
        return self.problems[0].label if self.problems else self.status

    def describe(self) -> str:
        what = "; ".join(f"[{p.label}] {p.text}" for p in self.problems)
        return f"{self.case.id}: {self.case.summary} -> {what}"


# --- where an exception came from ---------------------------------------------------------------
def _short_path(filename: str) -> str:
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1]
    with contextlib.suppress(ValueError):
        return str(Path(filename).resolve().relative_to(REPO))
    return filename


def _where(frames: list[tuple[str, int, str]]) -> str:
    """`rnnedge/x.py:fn` (the last rnnedge frame) plus the raising frame when it is elsewhere."""
    own = [f for f in frames if _short_path(f[0]).startswith("rnnedge/")]
    last = frames[-1] if frames else ("?", 0, "?")
    site = own[-1] if own else last
    text = f"{_short_path(site[0])}:{site[2]}"
    if site is not last:
        text += f" (raised in {_short_path(last[0])}:{last[2]})"
    return text


def _frames(exc: BaseException) -> list[tuple[str, int, str]]:
    return [(f.filename, f.lineno or 0, f.name) for f in traceback.extract_tb(exc.__traceback__)]


_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)')


def _where_from_text(text: str) -> tuple[str, str]:
    """(exception type, where) from a printed traceback, as `--debug` shows it."""
    frames = [(m[0], int(m[1]), m[2]) for m in _FRAME.findall(text)]
    lines = [ln for ln in text.strip().splitlines() if ln and not ln.startswith(" ")]
    last = next(
        (
            ln
            for ln in reversed(lines)
            if re.match(
                r"^[\w.]+(Error|Exception|Exit|"
                r"Interrupt|Warning)\b",
                ln,
            )
        ),
        "",
    )
    return (last.split(":", 1)[0] or "?"), (_where(frames) if frames else "?")


# --- isolation ----------------------------------------------------------------------------------
def _on_alarm(signum: int, frame: Any) -> None:
    raise CaseTimeout()


@contextlib.contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


@contextlib.contextmanager
def _memory_limit(enabled: bool) -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if enabled:
        limit = _vm_size() + MEMORY_HEADROOM
        resource.setrlimit(resource.RLIMIT_AS, (limit if hard < 0 else min(limit, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@contextlib.contextmanager
def _isolated(work: Path, systmp: Path, ray: bool = False) -> Iterator[None]:
    """cwd and temporary directory inside the case folder; warning filters restored.

    Ray keeps its sockets under the temporary directory, and a Unix socket path longer than
    107 bytes fails: Ray cases keep the system's temporary directory.
    """
    cwd, old_tempdir, old_env = os.getcwd(), tempfile.tempdir, os.environ.get("TMPDIR")
    os.chdir(work)
    if not ray:
        tempfile.tempdir = str(systmp)
        os.environ["TMPDIR"] = str(systmp)
    try:
        with warnings.catch_warnings():
            yield
    finally:
        os.chdir(cwd)
        tempfile.tempdir = old_tempdir
        if old_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = old_env


@contextlib.contextmanager
def _captured() -> Iterator[tuple[io.StringIO, io.StringIO, Any]]:
    """Python-level stdout/stderr into strings, and fd 2 (native code) into a file."""
    out, err = io.StringIO(), io.StringIO()
    native = tempfile.TemporaryFile()  # noqa: SIM115 (read after the block, closed there)
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(native.fileno(), 2)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield out, err, native
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _native_text(native: Any) -> str:
    native.seek(0)
    text = native.read().decode("utf-8", "replace")
    native.close()
    return text


# --- running ------------------------------------------------------------------------------------
def _one_line(exc: BaseException) -> Problem | None:
    text = str(exc)
    if not text.strip() or "\n" in text.strip():
        return Problem(
            "not one line",
            f"{type(exc).__name__} message is "
            f"{'empty' if not text.strip() else 'several lines'}: {text[:120]!r}",
            f"{type(exc).__name__} with a message that is not one line",
        )
    return None


def _run_api(action: Api, timeout: float) -> tuple[str, list[Problem]]:
    from rnnedge.errors import RnnEdgeError

    problems: list[Problem] = []
    status = "refused"
    try:
        with _captured(), _alarm(timeout):  # what the library prints is not judged here
            try:
                value = action.call()
                status = "result"
                bad = action.check(value) if action.check else None
                if bad:
                    problems.append(Problem("wrong result", bad, "wrong result: " + _generic(bad)))
            except RnnEdgeError as exc:
                one = _one_line(exc)
                if action.must_succeed:
                    problems.append(
                        Problem(
                            "control refused",
                            f"{type(exc).__name__}: {short_msg(exc)}",
                            "valid API call refused",
                        )
                    )
                elif one:
                    problems.append(one)
            if action.after is not None:
                bad = action.after(status == "refused")
                if bad:
                    problems.append(
                        Problem(
                            "state changed",
                            bad,
                            f"stream after a "
                            f"{'refused' if status == 'refused' else 'accepted'}"
                            f" call: {_generic(bad)}",
                        )
                    )
    except CaseTimeout as exc:
        where = _where(_frames(exc))
        problems.append(
            Problem("hang", f"no answer within {timeout:g} s (at {where})", f"hang in {where}")
        )
    except (Exception, SystemExit) as exc:
        where = _where(_frames(exc))
        problems.append(
            Problem(
                "exception",
                f"{type(exc).__name__}: {short_msg(exc)} at {where}",
                f"{type(exc).__name__} in {where}",
            )
        )
    return status, problems


def _generic(text: str) -> str:
    """A message with paths and numbers replaced, so cases that differ only in them group."""
    text = re.sub(r"\S*/\S*", "PATH", text)
    return re.sub(r"-?\d+(\.\d+)?([eE][+-]?\d+)?", "N", text)[:90]


def short_msg(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 160 else text[:150] + "…"


def _call_main(
    argv: list[str], timeout: float
) -> tuple[int | None, str, str, BaseException | None]:
    from rnnedge.cli.main import main

    rc: int | None = None
    escaped: BaseException | None = None
    with _captured() as (out, err, native):
        try:
            with _alarm(timeout):
                try:
                    rc = main(list(argv))
                except SystemExit as exc:
                    rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException as exc:  # CaseTimeout included: judged by the caller
            escaped = exc
    return rc, out.getvalue(), err.getvalue() + _native_text(native), escaped


def _run_cli(action: Cli, timeout: float, rerun: Any) -> tuple[str, list[Problem]]:
    rc, stdout, stderr, escaped = _call_main(action.argv, timeout)
    if isinstance(escaped, CaseTimeout):
        where = _where(_frames(escaped))
        return "refused", [
            Problem("hang", f"no exit within {timeout:g} s (at {where})", f"hang in {where}")
        ]
    if escaped is not None:
        where = _where(_frames(escaped))
        return "refused", [
            Problem(
                "exception",
                f"{type(escaped).__name__} escaped main: {short_msg(escaped)} at {where}",
                f"{type(escaped).__name__} in {where}",
            )
        ]
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    if rc == 0 or (rc == 1 and action.exit_1_is_result and not lines):
        if action.must_refuse:
            bad = "accepted an output path that is one of its inputs (expected exit 2)"
        else:
            with _captured():  # the checks load what was written: their warnings are not judged
                bad = action.check(stdout) if action.check else None
        problems = [Problem("wrong result", bad, "wrong result: " + _generic(bad))] if bad else []
        return "result", problems
    if action.must_succeed:
        return "refused", [
            Problem(
                "control refused",
                f"exit {rc}: {' | '.join(lines)[:300]}",
                f"valid invocation refused: {action.argv[0]}",
            )
        ]
    if rc == 1:
        exc_type, where = _where_from_text(rerun())
        last = lines[-1] if lines else ""
        return "refused", [
            Problem("exit 1", f"exit 1: {last[:200]} at {where}", f"exit 1 {exc_type} in {where}")
        ]
    if not isinstance(rc, int) or not 2 <= rc <= 9:
        return "refused", [
            Problem("exit code", f"exit {rc}: {' | '.join(lines)[:200]}", f"exit code {rc}")
        ]
    if len(lines) != 1 or "Traceback" in stderr or not _is_error_line(lines[0]):
        kind = (
            "argparse usage text around the error line"
            if lines and lines[0].startswith("usage:")
            else "Traceback on stderr"
            if "Traceback" in stderr
            else "a stderr line that is not rnnedge's error"
            if len(lines) == 1
            else "extra stderr lines: "
            + _generic(
                next((ln for ln in lines if ": error:" not in ln), lines[0] if lines else "")
            )[:70]
        )
        return "refused", [
            Problem(
                "not one line",
                f"exit {rc} with {len(lines)} stderr lines: "
                f"{' | '.join(ln[:100] for ln in lines[:3])}",
                kind,
            )
        ]
    return "refused", []


def _is_error_line(line: str) -> bool:
    """`rnnedge COMMAND: error: ...`, the one line a refusal prints."""
    return line.startswith("rnnedge ") and ": error" in line


def run_case(
    case: Case,
    art: Artifacts,
    root: Path,
    shared: dict[str, Any],
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Outcome:
    """Run one case in a fresh folder under `root` and judge it."""
    start = time.perf_counter()
    timeout = timeout * (RAY_TIMEOUT_FACTOR if case.ray else 1)
    folder = Path(tempfile.mkdtemp(prefix="c", dir=root))
    work, systmp = folder / "w", folder / "tmp"
    work.mkdir()
    systmp.mkdir()
    marker = folder / "MARKER"
    try:
        try:
            action = case.build(Ctx(work, marker, art, shared))
        except Exception as exc:  # a bug in the case, not in rnnedge: fail loudly all the same
            return Outcome(
                case,
                "refused",
                [
                    Problem(
                        "harness error",
                        f"the case could not be built: {type(exc).__name__}: "
                        f"{short_msg(exc)} at {_where(_frames(exc))}",
                        "case could not be built",
                    )
                ],
            )
        before = snapshot(work)

        def rerun() -> str:  # the same argv with --debug, in a fresh copy, for the traceback
            return run_debug(case, art, root, shared, timeout)

        with _isolated(work, systmp, case.ray), _memory_limit(not case.ray):
            if isinstance(action, Api):
                status, problems = _run_api(action, timeout)
            else:
                status, problems = _run_cli(action, timeout, rerun)
        after = snapshot(work)
        cli = action if isinstance(action, Cli) else Cli([], outputs=action.outputs)
        problems += file_problems(
            before, after, work, status == "result", cli.outputs, cli.replace, cli.inputs
        )
        leftovers = sorted(
            p.name for p in systmp.iterdir() if not p.name.startswith(TMP_ALLOWED_PREFIXES)
        )
        if leftovers:
            problems.append(
                Problem(
                    "left behind",
                    f"temporary files left: {leftovers[:3]}",
                    "temporary files left in TMPDIR",
                )
            )
        if marker.exists():
            problems.append(
                Problem(
                    "pickle ran",
                    "the malicious pickle's code ran (marker file exists)",
                    "pickled code ran",
                )
            )
        if tree_hashes(art.folder) != art.hashes:
            problems.append(
                Problem("destroyed", "a shared artifact was changed", "shared artifact changed")
            )
        return Outcome(case, status, problems, time.perf_counter() - start)
    finally:
        _remove(folder)


def run_debug(
    case: Case, art: Artifacts, root: Path, shared: dict[str, Any], timeout: float
) -> str:
    """stderr of the case's argv run again with `--debug` (for where an exit 1 came from)."""
    folder = Path(tempfile.mkdtemp(prefix="d", dir=root))
    work, systmp = folder / "w", folder / "tmp"
    work.mkdir()
    systmp.mkdir()
    try:
        action = case.build(Ctx(work, folder / "MARKER", art, shared))
        assert isinstance(action, Cli)
        with _isolated(work, systmp, case.ray), _memory_limit(not case.ray):
            _, _, stderr, escaped = _call_main(["--debug", *action.argv], timeout)
        return stderr if escaped is None else "".join(traceback.format_exception(escaped))
    finally:
        _remove(folder)


def _remove(folder: Path) -> None:
    def unlock(func: Any, path: str, exc: Any) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(path), 0o700)
            os.chmod(path, 0o700)
            func(path)

    shutil.rmtree(folder, onexc=unlock) if sys.version_info >= (3, 12) else shutil.rmtree(
        folder, onerror=unlock
    )
