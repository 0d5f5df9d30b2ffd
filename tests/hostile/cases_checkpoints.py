"""Hostile checkpoints for `rnnedge export` (and `verify`, `bench`, `load_checkpoint`).

Damaged bytes, files of another kind, tampered JSON fields (NaN mean, std <= 0, statistics of
the wrong length, a target index out of range, impossible model configs) and damaged weights
must be refused, or exported into a file that loads and forecasts finite values. Five kinds of
malicious pickle would create a marker file when unpickled: it must never exist.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tests.hostile.artifacts import Artifacts
from tests.hostile.cases import (
    Api,
    Case,
    Cli,
    Ctx,
    json_stdout_problem,
    mutate_bytes,
    numbered,
    onnx_ok,
    short,
)

Build = Callable[[Ctx], Api | Cli]


def _touch_marker(path: str) -> None:
    """What unpickling `Evil` would call: the proof that loading ran code from the file."""
    Path(path).write_text("pickled code ran\n")


class Evil:
    """Pickles as a call to `_touch_marker`; saving runs nothing, loading would."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Callable[[str], None], tuple[str]]:
        return _touch_marker, (self.marker,)


def _payload(art: Artifacts) -> dict[str, Any]:
    import io

    import torch

    return torch.load(io.BytesIO(art.ckpt_bytes), map_location="cpu", weights_only=True)


def _saved(edit: Callable[[dict[str, Any], Path], Any]) -> Callable[[Ctx], Path]:
    def write(ctx: Ctx) -> Path:
        import torch

        payload = _payload(ctx.art)
        result = edit(payload, ctx.marker)
        path = ctx.dir / "model.pt"
        if isinstance(result, bytes):
            path.write_bytes(result)
        else:
            torch.save(payload if result is None else result, path)
        return path

    return write


def _json_edit(key: str, sub: str | None, value: Any) -> Callable[[dict, Path], Any]:
    def edit(p: dict, marker: Path) -> None:
        if sub is None:
            p[key] = value
        else:
            d = json.loads(p[key])
            d[sub] = value
            p[key] = json.dumps(d)

    return edit


def _evil_zip(p: dict, marker: Path) -> bytes:
    import io

    import torch

    buf = io.BytesIO()
    torch.save(p, buf)
    src, out = zipfile.ZipFile(io.BytesIO(buf.getvalue())), io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for info in src.infolist():
            data = src.read(info)
            z.writestr(
                info,
                pickle.dumps(Evil(marker), protocol=2)
                if info.filename.endswith("data.pkl")
                else data,
            )
    return out.getvalue()


def _checkpoint_writers(
    art: Artifacts, rng: np.random.Generator
) -> list[tuple[str, str, Callable[[Ctx], Path], bool]]:
    """(kind, summary, write(ctx) -> checkpoint path, malicious)."""
    out: list[tuple[str, str, Callable[[Ctx], Path], bool]] = []
    for _ in range(24):
        what, data = mutate_bytes(rng, art.ckpt_bytes)
        out.append(
            ("bytes", f"model.pt {what}", lambda ctx, d=data: ctx.write("model.pt", d), False)
        )
    out += [
        ("empty", "an empty model.pt", lambda ctx: ctx.write("model.pt", b""), False),
        (
            "onnx",
            "an ONNX file named model.pt",
            lambda ctx: ctx.write("model.pt", ctx.art.onnx_bytes),
            False,
        ),
        ("text", "a text file", lambda ctx: ctx.write("model.pt", "hello\n"), False),
        (
            "directory",
            "a directory",
            lambda ctx: (ctx.dir / "model.pt").mkdir() or ctx.dir / "model.pt",
            False,
        ),
    ]
    evil: list[tuple[str, Callable[[dict, Path], Any]]] = [
        ("an Evil object beside the weights", lambda p, m: {**p, "evil": Evil(m)}),
        (
            "an Evil object inside state_dict",
            lambda p, m: {**p, "state_dict": {**p["state_dict"], "evil": Evil(m)}},
        ),
        ("a raw pickle (protocol 2) of Evil", lambda p, m: pickle.dumps(Evil(m), protocol=2)),
        ("a raw pickle (protocol 0) of Evil", lambda p, m: pickle.dumps(Evil(m), protocol=0)),
        ("a torch zip whose data.pkl is Evil", _evil_zip),
    ]
    out += [("pickle", f"model.pt: {s}", _saved(e), True) for s, e in evil]
    nan, inf = float("nan"), float("inf")
    edits: list[tuple[str, str, Any]] = [
        ("mean", "normalization", [nan, 0.0]),
        ("mean", "normalization", [inf, 0.0]),
        ("mean", "normalization", [1e308, 1e308]),
        ("std", "normalization", [0.0, 1.0]),
        ("std", "normalization", [-1.0, 1.0]),
        ("std", "normalization", [nan, 1.0]),
        ("mean", "normalization", [0.0]),
        ("mean", "normalization", [0.0, 0.0, 0.0]),
        ("std", "normalization", [1.0, 1.0, 1.0]),
        ("target_index", "normalization", [5]),
        ("target_index", "normalization", [-1]),
        ("target_index", "normalization", [2]),
        ("target_index", "normalization", []),
        ("target_index", "normalization", ["a"]),
        ("target_index", "normalization", [0, 0]),
        ("hidden_size", "model_config", 0),
        ("hidden_size", "model_config", 10**12),
        ("hidden_size", "model_config", "4"),
        ("cell", "model_config", "bogus"),
        ("input_size", "model_config", 3),
        ("bidirectional", "model_config", True),
        ("batch_first", "model_config", False),
        ("dropout", "model_config", 2.0),
        ("zzz", "model_config", 1),
        ("window", "train_config", "x"),
        ("features", "contract", ["x0", "x0"]),
        ("targets", "contract", ["zz"]),
        ("horizon", "contract", 0),
        ("features", "contract", ["x1", "x0"]),
    ]
    for sub, key, value in edits:
        out.append(
            (
                "json",
                f"checkpoint {key}.{sub} = {short(value, 30)}",
                _saved(_json_edit(key, sub, value)),
                False,
            )
        )
    for key, value in (
        ("normalization", "{"),
        ("normalization", "5"),
        ("model_config", "[]"),
        ("format", "rnnedge.checkpoint/9"),
        ("metrics", "not json"),
        ("contract", "{"),
        ("source", 5),
        ("state_dict", [1, 2]),
        ("val_values", "x"),
    ):
        out.append(
            (
                "field",
                f"checkpoint {key} = {short(value, 30)}",
                _saved(_json_edit(key, None, value)),
                False,
            )
        )
    for how, summary in (
        ("nan", "a NaN weight"),
        ("inf", "an Inf weight"),
        ("drop", "a missing weight"),
        ("shape", "a wrong-shape weight"),
        ("int", "int weights"),
    ):
        out.append(("weights", summary, _saved(lambda p, m, how=how: _weights(p, how)), False))
    return out


def _weights(p: dict, how: str) -> None:
    import torch

    sd = dict(p["state_dict"])
    name = sorted(sd)[0]
    if how == "drop":
        del sd[name]
    elif how == "shape":
        sd[name] = torch.zeros(3, 3)
    elif how == "int":
        sd = {k: v.to(torch.int64) for k, v in sd.items()}
    else:
        sd[name] = sd[name].clone()
        sd[name].view(-1)[0] = float(how)
    p["state_dict"] = sd


def checkpoints(art: Artifacts, rng: np.random.Generator) -> list[Case]:
    items: list[tuple[str, str, Build, bool]] = []
    for kind, summary, write, malicious in _checkpoint_writers(art, rng):
        ops = ("export", "verify", "api", "bench") if malicious else ("export",)
        for op in ops:
            items.append((f"{kind}-{op}", f"{op}: {summary}", _checkpoint_build(write, op), False))
    return numbered("checkpoints", items)


def _checkpoint_build(write: Callable[[Ctx], Path], op: str) -> Build:
    def build(ctx: Ctx) -> Api | Cli:
        art = ctx.art
        ckpt = write(ctx)
        if op == "api":
            from rnnedge.modeling.train import load_checkpoint

            return Api(lambda: load_checkpoint(ckpt))
        if op == "verify":
            onnx = ctx.copy(art.onnx, "model.onnx")
            return Cli(
                [
                    "verify",
                    str(onnx),
                    "--checkpoint",
                    str(ckpt),
                    "--batches",
                    "1",
                    "--seq-lens",
                    "3",
                    "--json",
                ],
                check=json_stdout_problem,
                inputs=(onnx, ckpt),
            )
        if op == "bench":
            return Cli(
                [
                    "bench",
                    str(ckpt),
                    "--batches",
                    "1",
                    "--seq-lens",
                    "2",
                    "--budget-s",
                    "0.01",
                    "--no-stream",
                    "--json",
                ],
                check=json_stdout_problem,
                inputs=(ckpt,),
            )
        out = ctx.dir / "exported.onnx"
        return Cli(
            ["export", str(ckpt), "-o", str(out), "--json"],
            (out,),
            check=lambda _: onnx_ok(out, art),
            inputs=(ckpt,),
        )

    return build
