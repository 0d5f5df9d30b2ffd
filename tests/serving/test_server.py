"""`rnnedge serve`: one stream per sequence id, behind a real Triton server on loopback.

The `SequenceTable` tests need only numpy + onnxruntime and run in every environment. The
server tests start Triton 2.51 from nvidia-pytriton and talk to it over HTTP and gRPC on
127.0.0.1; they need the serving interpreter (`bash scripts/setup-serving.sh`, then
`.venv-serving/bin/python -m pytest tests/serving`) and skip themselves, saying why, elsewhere.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rnnedge
from rnnedge.errors import InputError, RuntimeUnavailableError, StreamError
from rnnedge.serving.sequences import SequenceTable
from rnnedge.serving.server import (
    RnnServer,
    _end_leftovers,
    _processes_with,
    check_interpreter,
    error_reason,
)

pytestmark = pytest.mark.serving

ROOT = Path(__file__).resolve().parents[2]
GRU = ROOT / "tests" / "fixtures" / "foreign_gru_state.onnx"  # x (batch, seq, 2) -> y (.., 5)
TOL = {"atol": 1e-5, "rtol": 1e-4}


def _x(seed: int, steps: int, batch: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, steps, 2)).astype(np.float32)


@pytest.fixture(scope="module")
def model() -> Any:
    with rnnedge.load(GRU) as m:
        yield m


def _solo(model: Any, x: np.ndarray) -> np.ndarray:
    return model.run(x)[0]


# -- the sequence table, without a server ---------------------------------------------------
class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_table_interleaved_sequences_equal_solo(model: Any) -> None:
    table = SequenceTable(model)
    xs = {sid: _x(sid, 7, batch=1 + sid % 2) for sid in (1, 2, 3)}
    got: dict[int, list[np.ndarray]] = {sid: [] for sid in xs}
    for t in range(7):
        for sid, x in xs.items():
            got[sid].append(table.step(sid, x[:, t : t + 1], start=t == 0, end=t == 6))
    for sid, x in xs.items():
        np.testing.assert_allclose(np.concatenate(got[sid], 1), _solo(model, x), **TOL)
    assert table.live == 0 and table.counts["ended"] == 3


def test_table_errors_leave_other_sequences_untouched(model: Any) -> None:
    table = SequenceTable(model)
    a, b = _x(10, 4), _x(11, 4, batch=2)
    ya = [table.step(1, a[:, :1], start=True)]
    yb = [table.step(2, b[:, :1], start=True)]
    with pytest.raises(StreamError, match="unknown sequence id 3; send start=true"):
        table.step(3, a[:, :1])
    with pytest.raises(StreamError, match="sequence id 1 is already live"):
        table.step(1, a[:, :1], start=True)
    with pytest.raises(InputError, match="batch 2"):
        table.step(1, b[:, 1:2])
    with pytest.raises(InputError):
        table.step(2, np.zeros((2, 1, 3), np.float32))
    with pytest.raises(InputError, match="seq_id 0 is reserved"):
        table.step(0, a[:, :1], start=True)
    with pytest.raises(InputError):  # a failed first chunk opens nothing
        table.step(4, np.zeros((1, 1, 3), np.float32), start=True)
    assert not table.is_live(4)
    ya.append(table.step(1, a[:, 1:], end=True))
    yb.append(table.step(2, b[:, 1:], end=True))
    np.testing.assert_allclose(np.concatenate(ya, 1), _solo(model, a), **TOL)
    np.testing.assert_allclose(np.concatenate(yb, 1), _solo(model, b), **TOL)
    with pytest.raises(StreamError, match=r"unknown sequence id 1 \(it ended\)"):
        table.step(1, a[:, :1])


def test_table_evicts_idle_sequences(model: Any) -> None:
    clock = _Clock()
    table = SequenceTable(model, idle_timeout_s=10, max_sequences=2, clock=clock)
    table.step(1, _x(1, 1), start=True)
    clock.now = 6
    table.step(2, _x(2, 1), start=True)
    with pytest.raises(StreamError, match="limit is 2"):
        table.step(3, _x(3, 1), start=True)
    clock.now = 12
    assert table.evict_idle() == [1]
    table.step(3, _x(3, 1), start=True)  # room again
    with pytest.raises(StreamError, match="was evicted after 10 s idle"):
        table.step(1, _x(1, 1))
    table.close()
    assert table.live == 0


def test_interpreter_check_names_the_fix() -> None:
    if Path(sys.prefix).name == ".venv-serving":
        check_interpreter()  # the interpreter scripts/setup-serving.sh makes must pass
        return
    try:
        check_interpreter()
    except RuntimeUnavailableError as exc:
        assert "setup-serving.sh" in str(exc)


# -- a real Triton server -------------------------------------------------------------------
def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture(scope="module")
def triton_ok() -> None:
    try:
        check_interpreter()
        import tritonclient.grpc
        import tritonclient.http  # noqa: F401
    except (RuntimeUnavailableError, ImportError) as exc:
        pytest.skip(f"no Triton server here: {exc}")


@pytest.fixture(scope="module")
def server(triton_ok: None, tmp_path_factory: pytest.TempPathFactory) -> Any:
    http, grpc = _free_ports(2)
    log = tmp_path_factory.mktemp("triton") / "triton.log"
    srv = RnnServer(
        GRU, name="gru", http_port=http, grpc_port=grpc, instances=2, idle_timeout_s=3, log_file=log
    )
    with srv:
        print(f"\nTriton started in {srv.startup_s:.2f} s", file=sys.stderr)
        workspace = str(srv._scratch)
        yield srv
        t0 = time.perf_counter()
    print(f"\nTriton stopped in {time.perf_counter() - t0:.2f} s", file=sys.stderr)
    assert not srv.alive() and srv.model is None
    assert _processes_with(workspace) == []  # no Triton or stub process outlives the stop


class _Client:
    """One HTTP or gRPC client sending (x, seq_id, start, end) requests."""

    def __init__(self, server: RnnServer, protocol: str) -> None:
        import tritonclient.grpc as grpc
        import tritonclient.http as http

        self.mod = http if protocol == "http" else grpc
        self.protocol = protocol
        if protocol == "http":
            self.client = http.InferenceServerClient(
                server.http_url, connection_timeout=10, network_timeout=30
            )
        else:
            self.client = grpc.InferenceServerClient(server.grpc_url)
        self.name = server.name

    def __call__(
        self, x: np.ndarray, seq_id: int, start: bool = False, end: bool = False
    ) -> np.ndarray:
        tensors = (
            ("x", x, "FP32"),
            ("seq_id", np.array([seq_id], np.int64), "INT64"),
            ("start", np.array([start]), "BOOL"),
            ("end", np.array([end]), "BOOL"),
        )
        inputs = []
        for name, arr, dtype in tensors:
            inp = self.mod.InferInput(name, list(arr.shape), dtype)
            inp.set_data_from_numpy(arr)
            inputs.append(inp)
        kw = {"client_timeout": 30} if self.protocol == "grpc" else {}
        return self.client.infer(self.name, inputs, **kw).as_numpy("y")

    def close(self) -> None:
        self.client.close()


def _fails(call: Any, *args: Any, **kwargs: Any) -> str:
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException) as info:
        call(*args, **kwargs)
    return error_reason(str(info.value)) or str(info.value)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_sequence_over_the_wire_equals_solo(server: RnnServer, model: Any, protocol: str) -> None:
    client = _Client(server, protocol)
    x = _x(20, 6)
    ys = [client(x[:, :1], 21, start=True), client(x[:, 1:4], 21), client(x[:, 4:], 21, end=True)]
    client.close()
    np.testing.assert_allclose(np.concatenate(ys, 1), _solo(model, x), **TOL)
    assert not server.table.is_live(21)


def test_concurrent_interleaved_sequences(server: RnnServer, model: Any) -> None:
    n_seq, steps = 8, 50
    xs = [_x(100 + i, steps) for i in range(n_seq)]
    results: dict[int, np.ndarray] = {}
    latencies: dict[str, list[float]] = {"http": [], "grpc": []}
    errors: list[BaseException] = []
    go = threading.Barrier(n_seq)

    def run(i: int) -> None:
        client = _Client(server, "http" if i % 2 else "grpc")
        try:
            go.wait(timeout=30)
            ys = []
            for t in range(steps):
                t0 = time.perf_counter()
                ys.append(client(xs[i][:, t : t + 1], 1000 + i, start=t == 0, end=t == steps - 1))
                latencies[client.protocol].append(time.perf_counter() - t0)
            results[i] = np.concatenate(ys, 1)
        except BaseException as exc:
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n_seq)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    wall = time.perf_counter() - t0
    assert not errors, errors
    for i in range(n_seq):
        np.testing.assert_allclose(results[i], _solo(model, xs[i]), **TOL)
    assert server.table.live == 0
    for proto, lat in latencies.items():
        ms = np.array(lat) * 1e3
        print(
            f"{proto}: {len(ms)} requests p50 {np.median(ms):.2f} ms p90 "
            f"{np.percentile(ms, 90):.2f} ms",
            file=sys.stderr,
        )
    print(f"{n_seq * steps} requests from {n_seq} threads in {wall:.2f} s", file=sys.stderr)


def test_bad_requests_fail_alone(server: RnnServer, model: Any) -> None:
    http, grpc = _Client(server, "http"), _Client(server, "grpc")
    a, b = _x(30, 3), _x(31, 3, batch=2)
    ya = [http(a[:, :1], 31, start=True)]
    yb = [grpc(b[:, :1], 32, start=True)]
    assert "unknown sequence id 33" in _fails(http, a[:, :1], 33)
    assert "already live" in _fails(grpc, a[:, :1], 31, start=True)
    assert "batch 2" in _fails(http, b[:, 1:2], 31)  # a batch-1 sequence got batch 2
    assert "unexpected shape" in _fails(grpc, np.zeros((1, 1, 3), np.float32), 32)
    assert "seq_id 0 is reserved" in _fails(http, a[:, :1], 0, start=True)
    ya.append(http(a[:, 1:], 31, end=True))
    yb.append(grpc(b[:, 1:], 32, end=True))
    np.testing.assert_allclose(np.concatenate(ya, 1), _solo(model, a), **TOL)
    np.testing.assert_allclose(np.concatenate(yb, 1), _solo(model, b), **TOL)
    assert "(it ended)" in _fails(http, a[:, :1], 31)
    http.close()
    grpc.close()


def test_abandoned_sequence_is_evicted(server: RnnServer) -> None:
    client = _Client(server, "http")
    client(_x(40, 1), 41, start=True)
    client.close()  # the client goes away mid-sequence
    deadline = time.monotonic() + 10
    while server.table.is_live(41) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not server.table.is_live(41)
    client = _Client(server, "grpc")
    assert "was evicted after 3 s idle" in _fails(client, _x(40, 1), 41)
    client.close()


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if ready else ""


def test_serve_command_stops_on_sigterm(tmp_path: Path, triton_ok: None) -> None:
    http, grpc = _free_ports(2)
    code = "import sys\nfrom rnnedge.cli.main import main\nsys.exit(main(sys.argv[1:]))\n"
    args = [
        sys.executable,
        "-c",
        code,
        "serve",
        str(GRU),
        "--http-port",
        str(http),
        "--grpc-port",
        str(grpc),
        "--log-file",
        str(tmp_path / "triton.log"),
    ]
    proc = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        line = _readline(proc, 60)  # the first line comes once the server is up
        assert line.startswith("serving 'foreign_gru_state'"), line + proc.stderr.read()
        import tritonclient.http as th

        client = th.InferenceServerClient(f"127.0.0.1:{http}")
        assert client.is_model_ready("foreign_gru_state")
        client.close()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "stopped" in err
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", http)) != 0  # nothing listens any more


# -- the `rnnedge triton` repository under Triton's own sequence batcher --------------------
_MODEL_PY = """
import json, os, sys
sys.path[:0] = {paths!r}
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        here = os.path.join(args["model_repository"], args["model_version"])
        self.sess = ort.InferenceSession(os.path.join(here, "model.onnx"),
                                         providers=["CPUExecutionProvider"])
        self.log = os.path.join(args["model_repository"], "feeds.jsonl")

    def execute(self, requests):
        responses = []
        for request in requests:
            feeds = {{i.name: pb_utils.get_input_tensor_by_name(request, i.name).as_numpy()
                      for i in self.sess.get_inputs()}}
            with open(self.log, "a") as f:
                f.write(json.dumps({{k: [list(v.shape), str(v.dtype), v.ravel()[:2].tolist()]
                                     for k, v in feeds.items()}}) + "\\n")
            out = dict(zip([o.name for o in self.sess.get_outputs()], self.sess.run(None, feeds)))
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("y", out["y"])]))
        return responses
"""


def test_repository_config_loads_in_triton(tmp_path: Path, triton_ok: None, model: Any) -> None:
    """Triton 2.51's core takes the written config and feeds the wrapper what it declares.

    pytriton ships Triton without its ONNX Runtime backend, so the wrapper runs here under a
    Python-backend model that calls ONNX Runtime on it. That backend does not write implicit
    state back (the ORT backend does), so only what Triton feeds in is checked: the data and
    the zero initial state batch-first, and START/READY/END/CORRID with their dtypes and values.
    """
    pytest.importorskip("onnx")
    import tritonclient.http as th
    from pytriton.triton import TRITONSERVER_DIST_DIR
    from pytriton.utils.distribution import get_libs_path, get_stub_path

    from rnnedge.serving.triton_repo import TritonOptions, write_repository

    dist = tmp_path / "tritonserver"
    shutil.copytree(
        TRITONSERVER_DIST_DIR, dist, ignore=shutil.ignore_patterns("python_backend_stubs")
    )
    shutil.copy(
        get_stub_path(f"{sys.version_info[0]}.{sys.version_info[1]}"),
        dist / "backends" / "python" / "triton_python_backend_stub",
    )
    res = write_repository(GRU, tmp_path / "repo", TritonOptions(name="gru", max_batch_size=4))
    text = res.config_path.read_text()
    res.config_path.write_text(text.replace('platform: "onnxruntime_onnx"', 'backend: "python"'))
    (res.model_dir / "1" / "model.py").write_text(_MODEL_PY.format(paths=sys.path))
    http, grpc = _free_ports(2)
    log = open(tmp_path / "tritonserver.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            str(dist / "bin" / "tritonserver"),
            f"--model-repository={tmp_path / 'repo'}",
            f"--backend-directory={dist / 'backends'}",
            "--http-address=127.0.0.1",
            f"--http-port={http}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={grpc}",
            "--allow-metrics=false",
            "--exit-timeout-secs=2",
            f"--backend-config=python,shm-region-prefix-name=rnnedge-test-{os.getpid()}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "LD_LIBRARY_PATH": str(get_libs_path())},
    )
    try:
        client = th.InferenceServerClient(f"127.0.0.1:{http}", network_timeout=30)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if client.is_model_ready("gru"):
                    break
            except Exception:
                pass
            time.sleep(0.25)
        assert client.is_model_ready("gru"), (tmp_path / "tritonserver.log").read_text()[-3000:]

        def send(x: np.ndarray, seq_id: int, start: bool, end: bool) -> np.ndarray:
            inp = th.InferInput("x", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            return client.infer(
                "gru", [inp], sequence_id=seq_id, sequence_start=start, sequence_end=end
            ).as_numpy("y")

        x = _x(50, 3)
        np.testing.assert_allclose(send(x, 7, True, True), _solo(model, x), **TOL)
        send(x[:, :1], 8, True, False)
        send(x[:, 1:], 8, False, True)
        client.close()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        _end_leftovers(str(dist))  # a Python-backend stub may outlive its server
    feeds = [json.loads(line) for line in (res.model_dir / "feeds.jsonl").read_text().splitlines()]
    assert [f["CORRID"][2] for f in feeds] == [[7], [8], [8]]
    assert [f["START"] for f in feeds] == [
        [[1, 1], "bool", [True]],
        [[1, 1], "bool", [True]],
        [[1, 1], "bool", [False]],
    ]
    assert [f["END"][2] for f in feeds] == [[True], [False], [True]]
    assert all(f["READY"][2] == [True] and f["CORRID"][1] == "uint64" for f in feeds)
    assert [f["x"][0] for f in feeds] == [[1, 3, 2], [1, 1, 2], [1, 2, 2]]
    assert feeds[0]["state"] == [[1, 1, 5], "float32", [0.0, 0.0]]  # zero_data, batch first
