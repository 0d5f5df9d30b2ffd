"""`rnnedge triton`: write a Triton model repository (sequence batcher, implicit state)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from rnnedge.cli import common, paths
from rnnedge.errors import InputError
from rnnedge.serving.sequences import IDLE_TIMEOUT_S
from rnnedge.serving.triton_repo import TritonOptions, default_name


@dataclass(frozen=True)
class Options:
    model: Path
    repo: Path
    triton: TritonOptions
    force: bool
    state_names: dict[str, str] | None
    json: bool


def _add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_model(p, "the .onnx file (unidirectional, with state inputs/outputs)")
    p.add_argument("-o", "--output", required=True, help="the model repository folder")
    p.add_argument("--name", help="model name in the repository (default: the file's stem)")
    p.add_argument(
        "--max-batch-size",
        type=common.whole,
        default=8,
        help="sequences advanced together in one ORT call (8)",
    )
    p.add_argument(
        "--instances", type=common.whole, default=1, help="model instances per device (1)"
    )
    p.add_argument("--kind", default="cpu", choices=["cpu", "gpu"], help="instance kind (cpu)")
    p.add_argument(
        "--strategy",
        default="oldest",
        choices=["oldest", "direct"],
        help="sequence batcher strategy (oldest: batches across sequences)",
    )
    p.add_argument(
        "--max-queue-delay-us",
        type=common.whole,
        default=100,
        help="how long a request may wait for a fuller batch, µs (100)",
    )
    p.add_argument(
        "--idle-timeout",
        type=common.real,
        default=IDLE_TIMEOUT_S,
        help="seconds without a request before a sequence is ended and its state "
        f"slot freed ({IDLE_TIMEOUT_S:g})",
    )
    p.add_argument(
        "--max-candidate-sequences",
        type=common.whole,
        default=256,
        help="live sequences the oldest strategy holds state for (256)",
    )
    p.add_argument(
        "--no-normalize", action="store_true", help="leave the stored normalization to the client"
    )
    common.add_state(p)
    common.add_force(p, "an existing REPO/NAME")
    common.add_json(p)


def _options(args: argparse.Namespace) -> Options:
    idle_s = common.positive_float(args.idle_timeout, "--idle-timeout", common.MAX_IDLE_S)
    triton = TritonOptions(
        name=args.name or default_name(args.model),
        max_batch_size=common.at_least(args.max_batch_size, "--max-batch-size", 1),
        instances=common.at_least(args.instances, "--instances", 1),
        kind=args.kind,
        strategy=args.strategy,
        max_queue_delay_us=common.at_least(args.max_queue_delay_us, "--max-queue-delay-us", 0),
        max_sequence_idle_us=max(1, round(idle_s * 1e6)),
        max_candidate_sequences=common.at_least(
            args.max_candidate_sequences, "--max-candidate-sequences", 1
        ),
        normalize=not args.no_normalize,
    )
    try:
        triton.check()  # what is left to check is --name
    except InputError as exc:
        raise common.UsageError(f"--name: {exc}") from None
    repo = paths.output_folder(
        args.output, "--output", force=args.force, writes=(triton.name,), inputs=(args.model,)
    )
    return Options(
        Path(args.model), repo, triton, args.force, common.state_names(args.state), args.json
    )


def _run(opts: Options) -> int:
    from rnnedge.serving.triton_repo import write_repository
    from rnnedge.tools.render import fmt, to_json

    res = write_repository(
        opts.model, opts.repo, opts.triton, force=opts.force, state_names=opts.state_names
    )
    if opts.json:
        print(
            to_json(
                {
                    "model_dir": res.model_dir,
                    "onnx": res.onnx_path,
                    "config": res.config_path,
                    "max_abs_diff": res.max_abs_diff,
                    "shapes": res.shapes,
                    "config_parsed": res.config_parsed,
                }
            )
        )
        return 0
    parsed = (
        "parsed as Triton's ModelConfig"
        if res.config_parsed
        else "not parsed: install tritonclient to check it"
    )
    shapes = ", ".join(f"({b}, {t})" for b, t in res.shapes)
    print(
        f"wrote {res.model_dir} for Triton (platform onnxruntime_onnx, sequence batcher "
        f"'{opts.triton.strategy}', implicit state, max_batch_size "
        f"{opts.triton.max_batch_size})"
    )
    print(f"  model : {res.onnx_path} (state and data batch-first; START/READY/END/CORRID inputs)")
    print(f"  config: {res.config_path} ({parsed})")
    print(
        f"wrapper equals the original at (batch, seq_len) {shapes}: max abs diff "
        f"{fmt(res.max_abs_diff)}"
    )
    print(f"serve it with: tritonserver --model-repository {opts.repo}")
    return 0


COMMAND = common.Command(
    name="triton",
    help="write a Triton model repository (sequence batcher, implicit state)",
    description="Write REPO/NAME/1/model.onnx and REPO/NAME/config.pbtxt for Triton's ONNX "
    "Runtime backend. The state stays on the server between a sequence's requests (implicit "
    "state, zero at START); the model is wrapped so state and data are batch-first, the "
    "sequence controls are inputs, and the stored normalization runs in the graph. The "
    "wrapper is checked against the original before anything is written, and the folder "
    "appears at once or not at all.",
    add_arguments=_add_arguments,
    options=_options,
    run=_run,
)
