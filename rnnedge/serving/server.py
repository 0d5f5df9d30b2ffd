"""`rnnedge serve`: a real Triton server whose Python model streams with the rnnedge runtime.

The server is Triton 2.51 as shipped by `nvidia-pytriton`; requests reach a Python function in
this process, which keeps one `Stream` per sequence id over one shared ONNX Runtime session
(`rnnedge.serving.sequences`).
pytriton has no sequence batcher, so the sequence controls travel as ordinary inputs next to
the data: `seq_id` (INT64 [1], non-zero), `start` and `end` (BOOL [1], optional, default
false). A sequence begins with `start`, frees its state with `end`, and is evicted after
`idle_timeout_s` without a request (a client that vanished mid-sequence). A request that is
wrong (unknown id without `start`, `start` on a live id, a chunk whose batch differs from the
sequence's) fails alone with an `InputError`/`StreamError`, and no other sequence's state moves.

pytriton's Python-backend stub embeds the libpython that the dynamic linker finds, which must
be the build of the interpreter running this module; `check_interpreter` says so before a
start that would fail later with an unrelated-looking error. `scripts/setup-serving.sh` makes
an interpreter that fits (`.venv-serving`, from Debian's /usr/bin/python3.11).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rnnedge.errors import InputError, RnnEdgeError, RuntimeUnavailableError
from rnnedge.serving.sequences import END, SEQ_ID, START, SequenceTable, controls

SETUP_HINT = (
    "create the serving interpreter with `bash scripts/setup-serving.sh` and run "
    "`.venv-serving/bin/rnnedge serve ...`"
)
_REASON = re.compile(r"rnnedge\.errors\.(\w+Error): (.*)")


def error_reason(message: str) -> str | None:
    """`StreamError: ...` from a client-side error text, which carries the server traceback."""
    found = _REASON.findall(message)
    return f"{found[-1][0]}: {found[-1][1]}" if found else None


def _processes_with(token: str) -> list[int]:
    """Ids of processes (not this one) whose command line contains `token` (Linux /proc)."""
    pids = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            found = token.encode() in (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if found and int(entry.name) != os.getpid():
            pids.append(int(entry.name))
    return pids


def _end_leftovers(token: str, grace_s: float = 5.0) -> list[int]:
    """Kill what this server's Triton started and left running after it stopped.

    Now and then a Python-backend stub outlives a stopped Triton (reparented to init); its
    command line holds the server's own workspace path, so only its processes match.
    """
    deadline = time.monotonic() + grace_s
    pids = _processes_with(token)
    while pids and time.monotonic() < deadline:
        time.sleep(0.1)
        pids = _processes_with(token)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return pids


def check_interpreter() -> None:
    """Raise unless pytriton is importable and its Python stub will load this interpreter's stdlib.

    The stub is linked against `libpython3.X.so.1.0` and takes whichever one the dynamic
    linker resolves; a different CPython build of the same minor version (pyenv vs Debian)
    fails when the model loads (e.g. `RLock._recursion_count`), and a missing one fails too.
    """
    try:
        from pytriton.utils.distribution import get_libs_path, get_stub_path
    except ImportError as exc:
        raise RuntimeUnavailableError(
            f"serving needs nvidia-pytriton, which is not importable here ({exc}); " + SETUP_HINT
        ) from exc
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    stub = Path(get_stub_path(version))
    if not stub.exists():
        raise RuntimeUnavailableError(
            f"nvidia-pytriton has no Python stub for Python {version}; " + SETUP_HINT
        )
    soname = sysconfig.get_config_var("INSTSONAME") or f"libpython{version}.so.1.0"
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    ours = Path(libdir, soname)
    if not sysconfig.get_config_var("Py_ENABLE_SHARED") or not ours.exists():
        raise RuntimeUnavailableError(
            f"{sys.executable} (Python {sys.version.split()[0]}) has no shared libpython "
            f"({ours} missing), which pytriton's stub needs; " + SETUP_HINT
        )
    if shutil.which("ldd") is None:
        return
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = ":".join(
        p for p in (env.get("LD_LIBRARY_PATH"), str(get_libs_path())) if p
    )
    out = subprocess.run(
        ["ldd", str(stub)], capture_output=True, text=True, env=env, timeout=30
    ).stdout
    line = next((ln for ln in out.splitlines() if "libpython" in ln), "")
    resolved = line.split("=>")[-1].split("(")[0].strip() if "=>" in line else ""
    if not resolved or resolved == "not found":
        raise RuntimeUnavailableError(
            f"pytriton's Python {version} stub finds no {soname} on this machine; " + SETUP_HINT
        )
    if os.path.realpath(resolved) != os.path.realpath(ours):
        raise RuntimeUnavailableError(
            f"pytriton's stub would load {resolved}, but this interpreter "
            f"({sys.executable}, Python {sys.version.split()[0]}) is built with {ours}: model "
            "loading fails on such a mismatch; " + SETUP_HINT
        )


class RnnServer:
    """A Triton server (via pytriton) serving one streamable ONNX model, on loopback by default.

    Use as a context manager, or `start()`/`stop()`; `serve_forever()` blocks until SIGINT or
    SIGTERM and then stops cleanly.

    Args:
        model_path: the `.onnx` file (made by rnnedge, or foreign with detectable state).
        name: model name clients use (default: the file's stem).
        host: address for HTTP and gRPC; 127.0.0.1 unless clients come from elsewhere.
        http_port, grpc_port: Triton's ports (8000, 8001 as Triton's defaults).
        instances: concurrent model instances (threads running steps here).
        idle_timeout_s, max_sequences: see `SequenceTable`.
        state_names: state pairs of a foreign model, as for `rnnedge.load`.
        load_options: `rnnedge.load`'s other overrides for a foreign model (`data_input`,
            `data_output`, `layout`, `state_batch_axis`).
        log_file: Triton's log goes here instead of this process's output.
        exit_timeout_s: how long stopping waits for in-flight requests.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        name: str | None = None,
        host: str = "127.0.0.1",
        http_port: int = 8000,
        grpc_port: int = 8001,
        instances: int = 2,
        idle_timeout_s: float = 60.0,
        max_sequences: int = 10_000,
        state_names: Mapping[str, str] | None = None,
        load_options: Mapping[str, Any] | None = None,
        log_file: str | os.PathLike[str] | None = None,
        exit_timeout_s: int = 5,
    ) -> None:
        from rnnedge.serving.triton_repo import default_name

        if instances < 1:
            raise InputError(f"instances must be ≥ 1, got {instances}")
        self.model_path = Path(model_path)
        self.name = name or default_name(model_path)
        self.host, self.http_port, self.grpc_port = host, int(http_port), int(grpc_port)
        self.instances = instances
        self.idle_timeout_s, self.max_sequences = idle_timeout_s, max_sequences
        self.state_names = dict(state_names) if state_names else None
        self.load_options = dict(load_options or {})
        self.log_file = log_file
        self.exit_timeout_s = exit_timeout_s
        self.model: Any = None
        self.table: SequenceTable | None = None
        self.startup_s: float | None = None
        self._triton: Any = None
        self._scratch: Path | None = None
        self._shm_prefix = ""
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    def _tensors(self) -> tuple[list[Any], list[Any]]:
        from pytriton.model_config import Tensor

        spec = self.model.spec
        if {spec.data_input, spec.data_output} & {SEQ_ID, START, END}:
            raise InputError(f"the model's tensors may not be named {SEQ_ID}/{START}/{END}")
        x, y = spec.input(spec.data_input), spec.output(spec.data_output)
        dims = lambda t: tuple(d if isinstance(d, int) else -1 for d in t.shape)  # noqa: E731
        inputs = [
            Tensor(name=x.name, dtype=np.dtype(x.dtype), shape=dims(x)),
            Tensor(name=SEQ_ID, dtype=np.int64, shape=(1,)),
            Tensor(name=START, dtype=np.bool_, shape=(1,), optional=True),
            Tensor(name=END, dtype=np.bool_, shape=(1,), optional=True),
        ]
        return inputs, [Tensor(name=y.name, dtype=np.dtype(y.dtype), shape=dims(y))]

    def _infer(self, requests: Sequence[Any]) -> list[dict[str, np.ndarray]]:
        table, spec = self.table, self.model.spec
        assert table is not None
        out = []
        for req in requests:
            data = dict(req.items())
            if spec.data_input not in data:
                raise InputError(f"the request has no '{spec.data_input}' tensor")
            seq_id, start, end = controls(data)
            y = table.step(seq_id, np.asarray(data[spec.data_input]), start=start, end=end)
            out.append({spec.data_output: y})
        return out

    def _reap(self) -> None:
        period = min(1.0, self.idle_timeout_s / 4)
        while not self._stop.wait(period):
            if self.table is not None:
                self.table.evict_idle()

    def start(self) -> RnnServer:
        """Load the model, start Triton and bind the model; returns when requests are served."""
        from rnnedge.runtime.model import load
        from rnnedge.runtime.step import STEP_SETTINGS

        check_interpreter()
        from pytriton.model_config import ModelConfig
        from pytriton.triton import Triton, TritonConfig

        t0 = time.perf_counter()
        self.model = load(
            self.model_path,
            "ort-cpu",
            settings=STEP_SETTINGS,
            state_names=self.state_names,
            **self.load_options,
        )
        try:
            if not self.model.spec.streamable:
                self.model.stream()  # raises the StreamError that says why
            self.table = SequenceTable(
                self.model, idle_timeout_s=self.idle_timeout_s, max_sequences=self.max_sequences
            )
            inputs, outputs = self._tensors()
            config = TritonConfig(
                http_address=self.host,
                grpc_address=self.host,
                http_port=self.http_port,
                grpc_port=self.grpc_port,
                allow_metrics=False,
                exit_timeout_secs=self.exit_timeout_s,
                log_file=Path(self.log_file) if self.log_file else None,
            )
            self._scratch = Path(tempfile.mkdtemp(prefix="rnnedge-triton-"))
            self._triton = Triton(config=config, workspace=self._scratch / "workspace")
            with contextlib.suppress(Exception):  # pytriton's name for the stubs' shared memory
                self._shm_prefix = str(
                    self._triton._python_backend_config["shm-region-prefix-name"]
                )
            self._triton.bind(
                model_name=self.name,
                infer_func=[self._infer] * self.instances,
                inputs=inputs,
                outputs=outputs,
                config=ModelConfig(batching=False),
                strict=False,
            )
            self._triton.run()
        except RnnEdgeError:
            self.stop()
            raise
        except Exception as exc:
            self.stop()
            where = f"; its log is {self.log_file}" if self.log_file else ""
            raise RuntimeUnavailableError(
                f"Triton did not start on {self.host} (http {self.http_port}, grpc "
                f"{self.grpc_port}): {exc.__class__.__name__}: {exc}{where}"
            ) from exc
        except BaseException:
            self.stop()
            raise
        self._stop.clear()
        self._reaper = threading.Thread(target=self._reap, name="rnnedge-evict", daemon=True)
        self._reaper.start()
        self.startup_s = time.perf_counter() - t0
        return self

    def stop(self) -> None:
        """Stop Triton, free every sequence and the session; safe to call twice."""
        self._stop.set()
        if self._reaper is not None:
            self._reaper.join(timeout=5)
            self._reaper = None
        if self._triton is not None:
            try:
                self._triton.stop()
            finally:
                self._triton = None
        if self._scratch is not None:
            if _end_leftovers(str(self._scratch)) and self._shm_prefix:
                for region in Path("/dev/shm").glob(f"{self._shm_prefix}*"):
                    region.unlink(missing_ok=True)  # what the killed stub could not free
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
        if self.table is not None:
            self.table.close()
        if self.model is not None:
            self.model.close()
            self.model = None

    def alive(self) -> bool:
        return self._triton is not None and bool(self._triton.is_alive())

    def serve_forever(self, on_ready: Any = None, poll_s: float = 1.0) -> None:
        """Start (unless started), call `on_ready(self)`, block until SIGINT/SIGTERM, stop.

        Call it from the main thread (Python delivers signals there only). The handlers go
        in before the start, so a signal that arrives while Triton is still starting stops it
        cleanly too; the previous handlers are restored afterwards.
        """
        done = threading.Event()
        handler = lambda signum, frame: done.set()  # noqa: E731
        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            if self._triton is None:
                self.start()
            if on_ready is not None and not done.is_set():
                on_ready(self)
            while not done.wait(poll_s):
                if not self.alive():
                    raise RuntimeUnavailableError(
                        "the Triton server exited on its own; see its log for why"
                    )
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
            self.stop()

    def __enter__(self) -> RnnServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
