"""`rnnedge triton` and `rnnedge serve`: argument parsing here, work inside the commands.

Importing this module costs only argparse, so `rnnedge --help` stays fast and works where
onnx, tritonclient or pytriton are missing; each command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any


def _state_names(values: Sequence[str] | None) -> dict[str, str] | None:
    if not values:
        return None
    from rnnedge.runtime.foreign import parse_state_arg

    return parse_state_arg(",".join(values))


def add_serving_parsers(sub: Any) -> None:
    """Add the `triton` and `serve` subcommands to the `rnnedge` subparsers `sub`."""
    p = sub.add_parser(
        "triton", help="write a Triton model repository (sequence batcher, implicit state)",
        description="Write REPO/NAME/1/model.onnx and REPO/NAME/config.pbtxt for Triton's ONNX "
        "Runtime backend. The state stays on the server between a sequence's requests "
        "(implicit state, zero at START); the model is wrapped so state and data are "
        "batch-first, the sequence controls are inputs, and the stored normalization runs in "
        "the graph. The wrapper is checked against the original before anything is written, "
        "and the folder appears at once or not at all.")
    p.add_argument("model", help="the .onnx file (unidirectional, with state inputs/outputs)")
    p.add_argument("-o", "--output", required=True, help="the model repository folder")
    p.add_argument("--name", help="model name in the repository (default: the file's stem)")
    p.add_argument("--max-batch-size", type=int, default=8,
                   help="sequences advanced together in one ORT call (8)")
    p.add_argument("--instances", type=int, default=1, help="model instances per device (1)")
    p.add_argument("--kind", default="cpu", choices=["cpu", "gpu"], help="instance kind (cpu)")
    p.add_argument("--strategy", default="oldest", choices=["oldest", "direct"],
                   help="sequence batcher strategy (oldest: batches across sequences)")
    p.add_argument("--max-queue-delay-us", type=int, default=100,
                   help="how long a request may wait for a fuller batch, µs (100)")
    p.add_argument("--idle-timeout", type=float, default=5.0,
                   help="seconds without a request before a sequence is ended (5)")
    p.add_argument("--max-candidate-sequences", type=int, default=256,
                   help="live sequences the oldest strategy holds state for (256)")
    p.add_argument("--no-normalize", action="store_true",
                   help="leave the stored normalization to the client")
    p.add_argument("--state", action="append", help="state pairs of a foreign model, h0:hn")
    p.add_argument("--force", action="store_true", help="replace an existing REPO/NAME")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")

    p = sub.add_parser(
        "serve", help="serve a model with a local Triton server (pytriton), one stream per id",
        description="Start Triton (from nvidia-pytriton) with a Python model that keeps one "
        "rnnedge stream per sequence. Each request carries the data tensor, seq_id (INT64 [1]) "
        "and optionally start/end (BOOL [1]). Needs the serving interpreter: "
        "bash scripts/setup-serving.sh, then .venv-serving/bin/rnnedge serve MODEL.onnx.")
    p.add_argument("model", help="the .onnx file")
    p.add_argument("--name", help="model name clients use (default: the file's stem)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (127.0.0.1; 0.0.0.0 for every interface)")
    p.add_argument("--http-port", type=int, default=8000, help="HTTP port (8000)")
    p.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (8001)")
    p.add_argument("--instances", type=int, default=2,
                   help="requests run concurrently (2)")
    p.add_argument("--idle-timeout", type=float, default=60.0,
                   help="seconds without a request before a sequence's state is freed (60)")
    p.add_argument("--max-sequences", type=int, default=10_000,
                   help="live sequences at most (10000)")
    p.add_argument("--state", action="append", help="state pairs of a foreign model, h0:hn")
    p.add_argument("--log-file", help="write Triton's log here instead of the terminal")


def cmd_triton(args: argparse.Namespace) -> int:
    from rnnedge.serving.triton_repo import TritonOptions, default_name, write_repository
    from rnnedge.tools import render as report

    opts = TritonOptions(
        name=args.name or default_name(args.model), max_batch_size=args.max_batch_size,
        instances=args.instances, kind=args.kind, strategy=args.strategy,
        max_queue_delay_us=args.max_queue_delay_us,
        max_sequence_idle_us=max(1, round(args.idle_timeout * 1e6)),
        max_candidate_sequences=args.max_candidate_sequences, normalize=not args.no_normalize)
    res = write_repository(args.model, args.output, opts, force=args.force,
                           state_names=_state_names(args.state))
    if args.json:
        print(report.to_json({"model_dir": res.model_dir, "onnx": res.onnx_path,
                              "config": res.config_path, "max_abs_diff": res.max_abs_diff,
                              "shapes": res.shapes, "config_parsed": res.config_parsed}))
        return 0
    parsed = ("parsed as Triton's ModelConfig" if res.config_parsed
              else "not parsed: install tritonclient to check it")
    shapes = ", ".join(f"({b}, {t})" for b, t in res.shapes)
    print(f"wrote {res.model_dir} for Triton (platform onnxruntime_onnx, sequence batcher "
          f"'{opts.strategy}', implicit state, max_batch_size {opts.max_batch_size})")
    print(f"  model : {res.onnx_path} (state and data batch-first; START/READY/END/CORRID "
          "inputs)")
    print(f"  config: {res.config_path} ({parsed})")
    print(f"wrapper equals the original at (batch, seq_len) {shapes}: max abs diff "
          f"{report.fmt(res.max_abs_diff)}")
    print(f"serve it with: tritonserver --model-repository {args.output}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from rnnedge.serving.sequences import END, SEQ_ID, START
    from rnnedge.serving.server import RnnServer
    from rnnedge.tools import render as report

    server = RnnServer(args.model, name=args.name, host=args.host, http_port=args.http_port,
                       grpc_port=args.grpc_port, instances=args.instances,
                       idle_timeout_s=args.idle_timeout, max_sequences=args.max_sequences,
                       state_names=_state_names(args.state), log_file=args.log_file)

    def announce(srv: RnnServer) -> None:
        spec = srv.model.spec
        print(f"serving '{srv.name}' on http {srv.http_url} and grpc {srv.grpc_url} "
              f"(started in {report.fmt(srv.startup_s)} s); Ctrl-C stops", flush=True)
        print(f"inputs: {spec.data_input}, {SEQ_ID} INT64 [1], {START}/{END} BOOL [1] "
              f"(optional); output: {spec.data_output}", flush=True)

    server.serve_forever(on_ready=announce)
    print("stopped", file=sys.stderr)
    return 0
