"""Inputs that the module accepts at any batch and length, and what its outputs do with them.

Export runs the module at shapes other than the example twice: once to learn which output axes
follow batch and length, and again to verify the file. Both need inputs the module accepts.
Random floats are fine for features and audio, but token ids fed to an `nn.Embedding` must be
integers in `0..num_embeddings-1`, and an extra input such as a sample rate must keep its
value. So the sampler draws each input the way its example says it may vary: token ids within
the range of the embeddings that read them (or of the example's own ids), states at random,
everything that has no batch or time axis as given.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rnnedge.errors import InputError, RnnEdgeError

BATCH, SEQ = "batch", "seq_len"
#: the data input's layout by rank when none is given: (batch-first, time-major)
DEFAULT_LAYOUTS = {1: ("T", "T"), 2: ("BT", "TB"), 3: ("BTF", "TBF")}


def flatten(out: Any) -> list[Any]:
    """A module's outputs in the order torch.onnx names them: nested tuples/lists flattened."""
    if isinstance(out, (tuple, list)):
        return [t for item in out for t in flatten(item)]
    return [out]


def first_line(exc: BaseException) -> str:
    """`Type: first line` of an exception from torch, whose messages run to pages."""
    text = next((ln for ln in str(exc).splitlines() if ln.strip()), "")
    return f"{type(exc).__name__}: {text.strip()[:300]}" if text else type(exc).__name__


def data_layout(example: torch.Tensor, layout: str | None, batch_first: bool) -> str:
    """The data input's layout letters: given, or from its rank and `batch_first`."""
    rank = example.dim()
    if layout is None:
        if rank not in DEFAULT_LAYOUTS:
            raise InputError(
                f"the example sequence has shape {tuple(example.shape)} (rank {rank}); for rank "
                "0 or above 3 pass layout= with one letter per axis (B batch, T time, any other "
                "letter a fixed axis), e.g. layout='BFT'"
            )
        return DEFAULT_LAYOUTS[rank][0 if batch_first else 1]
    ok = layout.isalpha() and layout.isupper() and layout.count("T") == 1 and layout.count("B") <= 1
    if not ok or len(layout) != rank:
        raise InputError(
            f"layout {layout!r} does not describe the example of shape {tuple(example.shape)}: "
            f"expected {rank} capital letters with exactly one T (time) and at most one B "
            "(batch), e.g. 'BT' for (batch, seq_len) token ids"
        )
    return layout


def layout_axes(layout: str) -> dict[int, str]:
    """The dynamic axes a layout declares: `B` → batch, `T` → seq_len."""
    return {i: BATCH if c == "B" else SEQ for i, c in enumerate(layout) if c in "BT"}


def forward_names(module: nn.Module, count: int) -> list[str] | None:
    """The names of `forward`'s first `count` positional parameters, if it has that many."""
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    names = [p.name for p in params if p.kind in kinds]
    return names[:count] if len(names) >= count else None


@dataclass(frozen=True)
class TokenRange:
    """Integer values the data input may take, and why (an embedding's size or the example)."""

    low: int
    high: int
    source: str


def token_range(
    module: nn.Module, args: Sequence[torch.Tensor], index: int = 0
) -> TokenRange | None:
    """Which integer values the data input may hold; None for continuous (float) data.

    Runs the module once on the example with hooks on every `nn.Embedding`: one that reads
    the data input itself (same values, any integer dtype) bounds it by `num_embeddings`; an
    integer input that reaches no embedding directly keeps to the example's own range. Ids
    out of an embedding's range, or floats fed to one, are refused here with what to change,
    instead of the IndexError or dtype error torch raises deep inside the module.
    """
    x = args[index]
    seen: list[tuple[str, nn.Embedding, torch.Tensor]] = []
    hooks = [
        sub.register_forward_pre_hook(
            lambda mod, inp, name=name: seen.append((name, mod, inp[0])) if inp else None
        )
        for name, sub in module.named_modules()
        if isinstance(sub, nn.Embedding)
    ]
    failure: Exception | None = None
    try:
        with torch.inference_mode():
            module(*args)
    except Exception as exc:  # torch raises anything; the cause is named below
        failure = exc
    finally:
        for h in hooks:
            h.remove()
    for name, emb, ids in seen:
        if not isinstance(ids, torch.Tensor):
            continue
        if ids.is_floating_point():
            raise InputError(
                f"'{name}' (nn.Embedding) was given {str(ids.dtype).replace('torch.', '')} "
                f"values; token ids must be integers: pass the example as torch.long (e.g. "
                f"tokens.long()), shape {tuple(x.shape)}"
            )
        lo, hi = (int(ids.min()), int(ids.max())) if ids.numel() else (0, 0)
        if lo < 0 or hi >= emb.num_embeddings:
            raise InputError(
                f"the example's token ids reaching '{name}' span {lo}..{hi}, but it is "
                f"nn.Embedding({emb.num_embeddings}, {emb.embedding_dim}): ids must be in "
                f"0..{emb.num_embeddings - 1}"
            )
    if failure is not None:
        raise InputError(
            f"the module fails on the example input: {first_line(failure)}"
        ) from failure
    direct = [(name, emb) for name, emb, ids in seen if _same_values(ids, x)]
    if direct:
        name, emb = min(direct, key=lambda d: d[1].num_embeddings)
        return TokenRange(0, emb.num_embeddings - 1, f"nn.Embedding '{name}'")
    if x.is_floating_point() or x.dtype == torch.bool:
        return None
    lo, hi = (int(x.min()), int(x.max())) if x.numel() else (0, 0)
    return TokenRange(lo, hi, "the example's values")


def _same_values(t: Any, x: torch.Tensor) -> bool:
    if not isinstance(t, torch.Tensor) or t.shape != x.shape:
        return False
    return bool(torch.equal(t.to(torch.float64), x.to(torch.float64)))


@dataclass
class Sampler:
    """Draws every input of the module at a new (batch, seq_len), each the way it may vary.

    `axes[i]` maps an axis of input `i` to BATCH or SEQ; other inputs without any keep the
    example's value, `states` (indices) are drawn at random whatever their axes. `index` is
    the data input; `tokens` bounds its values when it holds ids.
    """

    args: tuple[torch.Tensor, ...]
    axes: list[dict[int, str]]
    index: int = 0
    tokens: TokenRange | None = None
    states: tuple[int, ...] = ()

    def sample(self, batch: int, seq_len: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
        out = []
        for i, (arg, axes) in enumerate(zip(self.args, self.axes, strict=True)):
            if not axes and i not in self.states:
                out.append(arg)
                continue
            shape = [
                batch if axes.get(a) == BATCH else seq_len if axes.get(a) == SEQ else d
                for a, d in enumerate(arg.shape)
            ]
            out.append(self._draw(i, arg, shape, gen))
        return tuple(out)

    def _draw(
        self, i: int, arg: torch.Tensor, shape: list[int], gen: torch.Generator
    ) -> torch.Tensor:
        if i == self.index and self.tokens is not None:
            t = self.tokens
            return torch.randint(t.low, t.high + 1, shape, generator=gen).to(arg.dtype)
        if arg.is_floating_point():
            scale = 1.0 if i == self.index else 0.5
            return (scale * torch.randn(shape, generator=gen)).to(arg.dtype)
        lo, hi = (int(arg.min()), int(arg.max())) if arg.numel() else (0, 0)
        return torch.randint(lo, hi + 1, shape, generator=gen).to(arg.dtype)

    def example_size(self, label: str) -> int:
        """The example's batch or seq_len (1 when the data input has no such axis)."""
        x = self.args[self.index]
        return next((int(x.shape[a]) for a, n in self.axes[self.index].items() if n == label), 1)

    def split(
        self, args: Sequence[torch.Tensor], at: int
    ) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """Inputs cut in two along time: the data input split, every other input as given."""
        seq = next(a for a, n in self.axes[self.index].items() if n == SEQ)
        x = args[self.index]
        first, second = list(args), list(args)
        first[self.index] = x.narrow(seq, 0, at)
        second[self.index] = x.narrow(seq, at, x.shape[seq] - at)
        return tuple(first), tuple(second)


def run_eager(
    module: nn.Module, args: Sequence[torch.Tensor], what: str, advice: str = ""
) -> list[torch.Tensor]:
    """The module's flattened outputs, or an InputError saying at which inputs it failed."""
    try:
        with torch.inference_mode():
            return flatten(module(*args))
    except RnnEdgeError:
        raise
    except Exception as exc:  # torch raises anything; the user needs the first line
        shapes = ", ".join(str(tuple(a.shape)) for a in args)
        raise InputError(
            f"the module fails {what} (inputs {shapes}): {first_line(exc)}"
            f"{'; ' + advice if advice else ''}"
        ) from exc


def probe_output_axes(
    module: nn.Module, sampler: Sampler, hint: str = ""
) -> tuple[list[dict[int, str]], list[tuple[int, ...]]]:
    """Which output dims follow the data input's batch and seq axes, found by running twice.

    Returns the axes of each output and its shape on the example.
    """
    b0, t0 = sampler.example_size(BATCH), sampler.example_size(SEQ)
    has_batch = BATCH in sampler.axes[sampler.index].values()
    b1, t1 = (b0 + 3 if has_batch else b0), t0 + 5
    out0 = run_eager(module, sampler.args, "on the example")
    resized = sampler.sample(b1, t1, torch.Generator().manual_seed(0))
    out1 = run_eager(module, resized, f"at batch={b1} seq_len={t1}", hint)
    if len(out0) != len(out1):
        raise InputError(
            f"the module returns {len(out0)} outputs on the example and "
            f"{len(out1)} at batch={b1} seq_len={t1}; export needs a fixed count"
        )
    axes_list = []
    for o0, o1 in zip(out0, out1, strict=True):
        axes: dict[int, str] = {}
        if o0.dim() != o1.dim():
            raise InputError(
                f"an output has rank {o0.dim()} on the example and {o1.dim()} at "
                f"batch={b1} seq_len={t1}; export needs a fixed rank"
            )
        for i, (d0, d1) in enumerate(zip(o0.shape, o1.shape, strict=True)):
            if d0 == d1:
                continue
            if has_batch and (d0, d1) == (b0, b1):
                axes[i] = BATCH
            elif (d0, d1) == (t0, t1):
                axes[i] = SEQ
            else:
                axes[i] = f"dim{i}"
        axes_list.append(axes)
    return axes_list, [tuple(o.shape) for o in out0]
