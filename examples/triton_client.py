"""Stream several sequences at once to `rnnedge serve` over HTTP or gRPC, and time each request.

Start the server first (see docs/serving.md), then for example:

    .venv-serving/bin/python examples/triton_client.py --model foreign_gru_state \\
        --sequences 8 --steps 50 --protocol both --check tests/fixtures/foreign_gru_state.onnx

Each sequence runs in its own thread with its own client: its first request carries
start=true, its last end=true (which frees its state on the server), one step per request.
With --check, every sequence's outputs are compared with a local `rnnedge.load(...).run` of
the whole sequence, which is what serving must reproduce. Needs tritonclient[all] and numpy.
"""

from __future__ import annotations

import argparse
import re
import sys
import threading
import time
from typing import Any

import numpy as np

CONTROLS = ("seq_id", "start", "end")
NP_TYPES = {"FP32": np.float32, "FP16": np.float16, "FP64": np.float64}


def server_error(exc: Exception) -> str:
    """The rnnedge error line inside a server error (the rest is the server's traceback)."""
    found = re.findall(r"rnnedge\.errors\.(\w+Error): (.*)", str(exc))
    return f"{found[-1][0]}: {found[-1][1]}" if found else str(exc).splitlines()[0]


class SequenceClient:
    """Sends one sequence's chunks with its id and start/end flags."""

    def __init__(self, protocol: str, url: str, model: str) -> None:
        if protocol == "http":
            import tritonclient.http as mod

            self.client = mod.InferenceServerClient(url, network_timeout=30)
        else:
            import tritonclient.grpc as mod

            self.client = mod.InferenceServerClient(url)
        self.mod, self.protocol, self.model = mod, protocol, model
        meta = self.client.get_model_metadata(model)
        meta = (
            meta
            if isinstance(meta, dict)
            else {
                "inputs": [
                    {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
                    for t in meta.inputs
                ],
                "outputs": [{"name": t.name} for t in meta.outputs],
            }
        )
        data = [t for t in meta["inputs"] if t["name"] not in CONTROLS]
        self.x_name, self.x_type = data[0]["name"], data[0]["datatype"]
        #: features per step, read from the served model (its last input dim)
        self.features = int(data[0].get("shape", [-1])[-1])
        self.y_name = meta["outputs"][0]["name"]

    def step(
        self, chunk: np.ndarray, seq_id: int, start: bool = False, end: bool = False
    ) -> np.ndarray:
        tensors = (
            (self.x_name, chunk.astype(NP_TYPES[self.x_type]), self.x_type),
            ("seq_id", np.array([seq_id], np.int64), "INT64"),
            ("start", np.array([start]), "BOOL"),
            ("end", np.array([end]), "BOOL"),
        )
        inputs = []
        for name, arr, dtype in tensors:
            inp = self.mod.InferInput(name, list(arr.shape), dtype)
            inp.set_data_from_numpy(arr)
            inputs.append(inp)
        kw: dict[str, Any] = {"client_timeout": 30} if self.protocol == "grpc" else {}
        return self.client.infer(self.model, inputs, **kw).as_numpy(self.y_name)

    def close(self) -> None:
        self.client.close()


def run(args: argparse.Namespace, protocol: str, first_id: int) -> dict[str, Any]:
    """Stream `args.sequences` sequences concurrently; returns latencies and outputs."""
    url = args.http_url if protocol == "http" else args.grpc_url
    probe = SequenceClient(protocol, url, args.model)
    probe.close()
    features = args.features or probe.features
    if features < 1:
        raise SystemExit(
            f"the served model declares {probe.features} features per step; pass --features"
        )
    rng = np.random.default_rng(0)
    shape = (args.steps, 1, features) if args.time_major else (1, args.steps, features)
    xs = [rng.standard_normal(shape).astype(np.float32) for _ in range(args.sequences)]
    seq_axis = 0 if args.time_major else 1
    lat: list[float] = []
    outs: dict[int, np.ndarray] = {}
    errors: list[str] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        client = SequenceClient(protocol, url, args.model)
        try:
            ys, mine = [], []
            for t in range(args.steps):
                chunk = np.take(xs[i], [t], axis=seq_axis)
                t0 = time.perf_counter()
                ys.append(client.step(chunk, first_id + i, t == 0, t == args.steps - 1))
                mine.append(time.perf_counter() - t0)
            outs[i] = np.concatenate(ys, axis=seq_axis)
            with lock:
                lat.extend(mine)
        except Exception as exc:
            errors.append(f"sequence {first_id + i}: {server_error(exc)}")
        finally:
            client.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(args.sequences)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    wall = time.perf_counter() - t0
    return {
        "protocol": protocol,
        "xs": xs,
        "outs": outs,
        "lat": np.array(lat) * 1e3,
        "wall": wall,
        "errors": errors,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model name on the server")
    p.add_argument("--http-url", default="127.0.0.1:8000")
    p.add_argument("--grpc-url", default="127.0.0.1:8001")
    p.add_argument("--protocol", default="both", choices=["http", "grpc", "both"])
    p.add_argument("--sequences", type=int, default=8, help="concurrent sequences (8)")
    p.add_argument("--steps", type=int, default=50, help="one-step requests per sequence (50)")
    p.add_argument(
        "--features",
        type=int,
        default=0,
        help="input features per step (default: read from the served model)",
    )
    p.add_argument(
        "--time-major",
        action="store_true",
        help="the model reads (seq, batch, F) (default: from --check's spec)",
    )
    p.add_argument(
        "--check",
        metavar="MODEL.onnx",
        help="compare each sequence with a local run of the whole sequence",
    )
    args = p.parse_args(argv)
    local = None
    if args.check:
        import rnnedge

        local = rnnedge.load(args.check)
        args.time_major = args.time_major or not local.spec.batch_first
    protocols = ["http", "grpc"] if args.protocol == "both" else [args.protocol]
    worst, failed, compared = 0.0, False, 0
    for k, protocol in enumerate(protocols):
        res = run(args, protocol, first_id=1 + k * 100_000)
        for err in res["errors"]:
            print(f"{protocol}: {err}", file=sys.stderr)
        failed |= bool(res["errors"])
        lat = res["lat"]
        if lat.size:
            print(
                f"{protocol}: {args.sequences} sequences x {args.steps} steps, "
                f"{lat.size / res['wall']:.0f} requests/s; latency ms p50 "
                f"{np.percentile(lat, 50):.2f} p90 {np.percentile(lat, 90):.2f} p99 "
                f"{np.percentile(lat, 99):.2f}"
            )
        if local is not None:
            for i, y in res["outs"].items():
                worst = max(worst, float(np.abs(y - local.run(res["xs"][i])[0]).max()))
                compared += 1
    if local is not None:
        expected = args.sequences * len(protocols)
        if compared < expected:  # a failed request is not evidence of equality
            print(
                f"served outputs vs local full-sequence run: not compared for "
                f"{expected - compared} of {expected} sequences (their requests failed)",
                file=sys.stderr,
            )
            failed = True
        if compared:
            ok = worst <= 1e-4
            failed |= not ok
            print(
                f"served outputs vs local full-sequence run ({compared} sequences): max abs "
                f"diff {worst:.2e} ({'equal' if ok else 'DIFFERENT'})"
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
