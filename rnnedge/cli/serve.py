"""`rnnedge serve`: a local Triton server (pytriton) with one rnnedge stream per sequence."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rnnedge.cli import common, paths
from rnnedge.serving.sequences import IDLE_TIMEOUT_S


@dataclass(frozen=True)
class Options:
    """The `RnnServer` arguments, checked."""

    model: Path
    name: str | None
    host: str
    http_port: int
    grpc_port: int
    instances: int
    idle_timeout_s: float
    max_sequences: int
    state_names: dict[str, str] | None
    log_file: Path | None
    load_options: dict[str, Any] = field(default_factory=dict)


def _add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_model(p)
    p.add_argument("--name", help="model name clients use (default: the file's stem)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (127.0.0.1; 0.0.0.0 for every interface)",
    )
    p.add_argument("--http-port", type=common.whole, default=8000, help="HTTP port (8000)")
    p.add_argument("--grpc-port", type=common.whole, default=8001, help="gRPC port (8001)")
    p.add_argument(
        "--instances", type=common.whole, default=2, help="requests run concurrently (2)"
    )
    p.add_argument(
        "--idle-timeout",
        type=common.real,
        default=IDLE_TIMEOUT_S,
        help=f"seconds without a request before a sequence's state is freed ({IDLE_TIMEOUT_S:g})",
    )
    p.add_argument(
        "--max-sequences", type=common.whole, default=10_000, help="live sequences at most (10000)"
    )
    common.add_load_overrides(p)
    p.add_argument("--log-file", help="write Triton's log here instead of the terminal")


def _options(args: argparse.Namespace) -> Options:
    http = common.port(args.http_port, "--http-port")
    grpc = common.port(args.grpc_port, "--grpc-port")
    if http == grpc:
        raise common.UsageError(f"--http-port and --grpc-port are both {http}; give two ports")
    overrides = common.load_overrides(args)
    return Options(
        model=Path(args.model),
        name=args.name,
        host=args.host,
        http_port=http,
        grpc_port=grpc,
        instances=common.at_least(args.instances, "--instances", 1),
        idle_timeout_s=common.positive_float(
            args.idle_timeout, "--idle-timeout", common.MAX_IDLE_S
        ),
        max_sequences=common.at_least(args.max_sequences, "--max-sequences", 1),
        state_names=overrides.pop("state_names", None),
        load_options=overrides,
        # a log, not a result: an existing one is written over like any server's
        log_file=paths.optional_output_file(
            args.log_file, "--log-file", force=True, inputs=(args.model,)
        ),
    )


def _run(opts: Options) -> int:
    from rnnedge.serving.sequences import END, SEQ_ID, START
    from rnnedge.serving.server import RnnServer
    from rnnedge.tools.render import fmt

    server = RnnServer(
        opts.model,
        name=opts.name,
        host=opts.host,
        http_port=opts.http_port,
        grpc_port=opts.grpc_port,
        instances=opts.instances,
        idle_timeout_s=opts.idle_timeout_s,
        max_sequences=opts.max_sequences,
        state_names=opts.state_names,
        load_options=opts.load_options,
        log_file=opts.log_file,
    )

    def announce(srv: RnnServer) -> None:
        spec = srv.model.spec
        print(
            f"serving '{srv.name}' on http {srv.http_url} and grpc {srv.grpc_url} "
            f"(started in {fmt(srv.startup_s)} s); Ctrl-C stops",
            flush=True,
        )
        print(
            f"inputs: {spec.data_input}, {SEQ_ID} INT64 [1], {START}/{END} BOOL [1] "
            f"(optional); output: {spec.data_output}",
            flush=True,
        )

    server.serve_forever(on_ready=announce)
    print("stopped", file=sys.stderr)
    return 0


COMMAND = common.Command(
    name="serve",
    help="serve a model with a local Triton server (pytriton), one stream per id",
    description="Start Triton (from nvidia-pytriton) with a Python model that keeps one "
    "rnnedge stream per sequence. Each request carries the data tensor, seq_id (INT64 [1]) "
    "and optionally start/end (BOOL [1]). Needs the serving interpreter: "
    "bash scripts/setup-serving.sh, then .venv-serving/bin/rnnedge serve MODEL.onnx.",
    add_arguments=_add_arguments,
    options=_options,
    run=_run,
)
