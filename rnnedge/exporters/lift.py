"""Make `y, _ = self.gru(x)` streamable: its RNN's state becomes graph inputs and outputs.

The most common recurrent module never sees its own state: it calls its `nn.GRU`/`nn.LSTM`/
`nn.RNN` once over the whole sequence and drops the final state. Exported as written, the graph
cannot carry state from one chunk to the next. Lifting wraps the module so the wrapper takes
an initial state per RNN and returns the final ones: while the wrapper runs, each RNN's
`forward` is replaced by one that ignores the state the module passes (None or zeros) and uses
the wrapper's, recording what `torch.nn.RNNBase.forward` returns as the final state. Nothing
in the user's module changes and nothing is copied.

A lift is accepted only when it is provably the same model: each RNN runs exactly once per
call, step for step over the data input's time axis, starting from zeros, unidirectional, and
nothing the module decides in Python depends on the RNN's values (checked by tracing those
values as a tensor subclass). Then it is proven twice in eager PyTorch before anything is
exported: with a zero state the wrapper gives exactly the original's outputs, and two halves
with the state carried give what one pass gives. Otherwise the error says what to change.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from rnnedge.errors import UnsupportedModelError
from rnnedge.exporters.probe import BATCH, SEQ, Sampler, flatten, run_eager
from rnnedge.spec import StatePair
from rnnedge.verify.parity import TOLERANCES, compare_arrays


class _Traced(torch.Tensor):
    """A tensor whose every descendant is one too, so Python-level uses of it are seen.

    `uses` is shared by the class: one lift is analysed at a time (export is not re-entrant).
    """

    uses: ClassVar[list[str]] = []
    _ESCAPES: ClassVar[frozenset[str]] = frozenset(
        {
            "__bool__",
            "__int__",
            "__float__",
            "__index__",
            "__complex__",
            "item",
            "tolist",
            "numpy",
            "__array__",
        }
    )

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = getattr(func, "__name__", "")
        if name in cls._ESCAPES:
            cls.uses.append(name)
        return super().__torch_function__(func, types, args, kwargs or {})


@dataclass
class _Use:
    """How the module called one RNN during one run."""

    calls: int = 0
    seq_lens: list[int] = field(default_factory=list)
    batches: list[int | None] = field(default_factory=list)
    initial: list[str] = field(default_factory=list)  # "none", "zeros" or "given"


def _cell(rnn: nn.RNNBase) -> str:
    if isinstance(rnn, nn.LSTM):
        return "lstm"
    if isinstance(rnn, nn.GRU):
        return "gru"
    return "rnn_relu" if getattr(rnn, "nonlinearity", "tanh") == "relu" else "rnn_tanh"


def advice(name: str, rnn: nn.RNNBase | None) -> str:
    """The change that makes any module streamable: accept and return the state."""
    attr = name or "rnn"
    if isinstance(rnn, nn.LSTM):
        return (
            f"accept and return the state: def forward(self, x, h=None, c=None): y, (h, c) "
            f"= self.{attr}(x, None if h is None else (h, c)); return self.head(y), h, c — "
            "and export with state_names=[('h', 'h_out'), ('c', 'c_out')]"
        )
    return (
        f"accept and return the state: def forward(self, x, h=None): y, h = self.{attr}(x, "
        "h); return self.head(y), h — and export with state_names=[('h', 'h_out')]"
    )


def _refuse(why: str, name: str, rnn: nn.RNNBase | None) -> UnsupportedModelError:
    return UnsupportedModelError(f"cannot make the module streamable: {why}; {advice(name, rnn)}")


@contextlib.contextmanager
def _patched(
    rnns: Mapping[str, nn.RNNBase],
    make: Callable[[str, nn.RNNBase, Callable[..., Any]], Callable[..., Any]],
) -> Iterator[None]:
    """Replace each RNN's `forward` for the duration, restoring whatever was there."""
    saved = {name: rnn.__dict__.get("forward") for name, rnn in rnns.items()}
    try:
        for name, rnn in rnns.items():
            own = saved[name] or rnn.__class__.forward.__get__(rnn)
            object.__setattr__(rnn, "forward", make(name, rnn, own))
        yield
    finally:
        for name, rnn in rnns.items():
            if saved[name] is None:
                rnn.__dict__.pop("forward", None)
            else:
                object.__setattr__(rnn, "forward", saved[name])


def _observe(
    module: nn.Module, rnns: Mapping[str, nn.RNNBase], args: Sequence[torch.Tensor], trace: bool
) -> dict[str, _Use]:
    """Run the module once, recording each RNN's calls (and, if `trace`, Python-level uses)."""
    uses = {name: _Use() for name in rnns}

    def make(name: str, rnn: nn.RNNBase, own: Callable[..., Any]) -> Callable[..., Any]:
        def observed(*args: Any, **kwargs: Any) -> Any:
            inp, hx = _call_args(args, kwargs)
            use = uses[name]
            use.calls += 1
            if not isinstance(inp, torch.Tensor):
                raise _refuse(
                    f"'{name}' is given a {type(inp).__name__}, not a padded tensor; "
                    "a stream carries one state per sequence and cannot skip "
                    "padding",
                    name,
                    rnn,
                )
            batched = inp.dim() == 3
            use.seq_lens.append(int(inp.shape[1 if batched and rnn.batch_first else 0]))
            use.batches.append(int(inp.shape[0 if rnn.batch_first else 1]) if batched else None)
            states = flatten(hx) if hx is not None else []
            use.initial.append(
                "none"
                if hx is None
                else "zeros"
                if all(
                    isinstance(s, torch.Tensor) and not bool(s.detach().ne(0).any()) for s in states
                )
                else "given"
            )
            out = own(inp, hx)
            return _traced(out) if trace else out

        return observed

    _Traced.uses = []
    with _patched(rnns, make):
        run_eager(module, args, "on the example")
    return uses


def _call_args(args: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[Any, Any]:
    """(input, hx) from a call written any way `nn.RNNBase.forward(input, hx=None)` allows."""
    inp = args[0] if args else kwargs.get("input")
    hx = args[1] if len(args) > 1 else kwargs.get("hx")
    return inp, hx


def _traced(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return out.as_subclass(_Traced)
    if isinstance(out, tuple) and not hasattr(out, "_fields"):
        return tuple(_traced(t) for t in out)
    return out


@dataclass
class Lifting:
    """The wrapper, its inputs (the module's own, then one state per RNN) and the new pairs."""

    module: nn.Module
    original: nn.Module
    sampler: Sampler
    input_names: list[str]
    output_names: list[str]
    pairs: list[StatePair]
    spec_fields: dict[str, Any]
    rnns: dict[str, nn.RNNBase] = field(default_factory=dict)


class LiftedModule(nn.Module):
    """`(inputs..., h0[, c0] per RNN) -> (outputs..., hn[, cn] per RNN)` around a module.

    Each call swaps the RNNs' `forward` for its duration, so one wrapped module serves one
    call at a time (as tracing and the eager reference use it).
    """

    def __init__(self, module: nn.Module, rnn_names: Sequence[str], n_inputs: int) -> None:
        super().__init__()
        self.module = module
        self.rnn_names = list(rnn_names)
        self.n_inputs = n_inputs

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        inputs, states = args[: self.n_inputs], list(args[self.n_inputs :])
        rnns = {name: self.module.get_submodule(name) for name in self.rnn_names}
        fed: dict[str, Any] = {}
        for name, rnn in rnns.items():
            fed[name] = (
                (states.pop(0), states.pop(0)) if isinstance(rnn, nn.LSTM) else states.pop(0)
            )
        finals: dict[str, list[torch.Tensor]] = {}

        def make(name: str, rnn: nn.RNNBase, own: Callable[..., Any]) -> Callable[..., Any]:
            def lifted(*args: Any, **kwargs: Any) -> Any:
                inp, _ = _call_args(args, kwargs)
                if name in finals:
                    raise UnsupportedModelError(
                        f"'{name}' ran twice in one call; {advice(name, rnn)}"
                    )
                out, state = own(inp, fed[name])
                finals[name] = flatten(state)
                return out, state

            return lifted

        with _patched(rnns, make):
            out = self.module(*inputs)
        return (*flatten(out), *[t for name in self.rnn_names for t in finals[name]])


def lift(module: nn.Module, sampler: Sampler, input_names: Sequence[str]) -> Lifting:
    """Wrap `module` so each of its RNNs takes and returns its state, or say why it cannot."""
    from rnnedge.modeling.models import find_cell_loops

    rnns = {name: sub for name, sub in module.named_modules() if isinstance(sub, nn.RNNBase)}
    if not rnns:
        loops = find_cell_loops(module)
        if loops:
            raise UnsupportedModelError(
                f"cannot make the module streamable: it steps {', '.join(loops)} in a Python "
                "loop, which the exporter unrolls to the example length; use nn.RNN/nn.LSTM/"
                "nn.GRU over the whole sequence (streamable=True then carries its state)"
            )
        raise UnsupportedModelError(
            "cannot make the module streamable: it has no nn.RNN/nn.LSTM/nn.GRU submodule, so "
            "there is no recurrent state to carry; export it with streamable=False"
        )
    x_axes = sampler.axes[sampler.index]
    if SEQ not in x_axes.values():
        raise _refuse("its data input has no time axis to split", "", None)
    t0 = sampler.example_size(SEQ)
    b0 = sampler.example_size(BATCH) if BATCH in x_axes.values() else None
    longer = sampler.sample(b0 or 1, t0 + 5, torch.Generator().manual_seed(1))
    try:
        first = _observe(module, rnns, sampler.args, trace=True)
        escapes = list(_Traced.uses)
    except UnsupportedModelError:
        raise
    except Exception:  # the tracing subclass itself failed: check without it
        first, escapes = _observe(module, rnns, sampler.args, trace=False), []
    second = _observe(module, rnns, longer, trace=False)
    used = {name: rnn for name, rnn in rnns.items() if first[name].calls or second[name].calls}
    if not used:
        raise _refuse("none of its RNNs ran on the example", "", None)
    for name, rnn in used.items():
        _check_use(name, rnn, first[name], second[name], (b0, t0), (b0, t0 + 5))
    if escapes:
        name, rnn = next(iter(used.items()))
        raise _refuse(
            f"forward() turns a value computed from an RNN's output or state into a Python "
            f"value ({', '.join(sorted(set(escapes)))}: an if/while/int() on it), so the graph "
            "would keep the decision taken on the example; compute both branches and pick with "
            "torch.where",
            name,
            rnn,
        )
    return _build(
        module,
        used,
        sampler,
        input_names,
        {name: first[name].batches[0] for name in used},
        b0 is not None,
    )


def _check_use(
    name: str,
    rnn: nn.RNNBase,
    a: _Use,
    b: _Use,
    shape_a: tuple[int | None, int],
    shape_b: tuple[int | None, int],
) -> None:
    if rnn.bidirectional:
        raise UnsupportedModelError(
            f"cannot make the module streamable: '{name}' is bidirectional: it reads each "
            "sequence backwards from its end, so no chunk can be processed before the whole "
            "sequence is known; use bidirectional=False to stream, or export with "
            "streamable=False for whole sequences"
        )
    for use, (batch, seq_len) in ((a, shape_a), (b, shape_b)):
        if use.calls != 1:
            raise _refuse(
                f"'{name}' ran {use.calls} times in one call at seq_len={seq_len} (a "
                "Python loop over steps or chunks?); lifting needs each RNN to run "
                "once over the whole sequence",
                name,
                rnn,
            )
        if use.seq_lens != [seq_len]:
            raise _refuse(
                f"'{name}' ran over {use.seq_lens[0]} steps for an input of "
                f"seq_len={seq_len}; lifting needs the RNN to run step for step over "
                "the input's time axis",
                name,
                rnn,
            )
        if batch is not None and use.batches != [batch]:
            raise _refuse(
                f"'{name}' ran on batch {use.batches[0]} for an input of batch "
                f"{batch}; lifting needs the RNN's batch to be the input's",
                name,
                rnn,
            )
        if use.initial != ["none"] and use.initial != ["zeros"]:
            raise _refuse(
                f"'{name}' is given an initial state of the module's own that is not "
                "zero; a stream could not start from it",
                name,
                rnn,
            )


def _build(
    module: nn.Module,
    used: Mapping[str, nn.RNNBase],
    sampler: Sampler,
    input_names: Sequence[str],
    rnn_batch: Mapping[str, int | None],
    dynamic: bool,
) -> Lifting:
    """The wrapper and its zero example states: `(layers, batch, hidden)` per RNN as PyTorch
    keeps them (`(layers, hidden)` for an unbatched RNN), batch axis 1 when the data input has
    a batch the state follows."""
    single = len(used) == 1
    args, axes = list(sampler.args), list(sampler.axes)
    in_names: list[str] = []
    out_names: list[str] = []
    pairs: list[StatePair] = []
    for name, rnn in used.items():
        prefix = "" if single else name.replace(".", "_") + "_"
        kinds = ("h", "c") if isinstance(rnn, nn.LSTM) else ("h",)
        layers = rnn.num_layers * (2 if rnn.bidirectional else 1)
        batch = rnn_batch[name]
        shape = (layers, batch, rnn.hidden_size) if batch is not None else (layers, rnn.hidden_size)
        axis = 1 if dynamic and batch is not None else None
        weight = next(rnn.parameters())
        for kind in kinds:
            i_name, o_name = f"{prefix}{kind}0", f"{prefix}{kind}n"
            if i_name in input_names or i_name in in_names:
                safe = name.replace(".", "_")
                i_name, o_name = f"{safe}_{i_name}", f"{safe}_{o_name}"
            in_names.append(i_name)
            out_names.append(o_name)
            args.append(torch.zeros(shape, dtype=weight.dtype, device=weight.device))
            axes.append({} if axis is None else {axis: BATCH})
            pairs.append(StatePair(i_name, o_name, axis))
    wrapper = LiftedModule(module, list(used), len(sampler.args)).eval()
    states = (*sampler.states, *range(len(sampler.args), len(args)))
    lifted_sampler = Sampler(tuple(args), axes, sampler.index, sampler.tokens, states)
    fields: dict[str, Any] = {}
    if single:
        rnn = next(iter(used.values()))
        fields = {"cell": _cell(rnn), "num_layers": rnn.num_layers, "hidden_size": rnn.hidden_size}
    return Lifting(wrapper, module, lifted_sampler, in_names, out_names, pairs, fields, dict(used))


def prove(
    lifting: Lifting, out_names: Sequence[str], out_axes: Mapping[str, Mapping[int, str]]
) -> None:
    """Zero state gives the original's outputs; chunks with state carried give one pass."""
    tol = TOLERANCES["fp32"]
    sampler = lifting.sampler
    n_own = len(sampler.args) - len(lifting.input_names)
    own_args = sampler.args[:n_own]
    expected = run_eager(lifting.original, own_args, "on the example")
    got = run_eager(lifting.module, sampler.args, "lifted, on the example")
    rnn_name, rnn = next(iter(lifting.rnns.items()))
    for name, e, g in zip(out_names, expected, got, strict=False):
        max_abs, _, ok, _ = compare_arrays(e.numpy(), g.numpy(), tol)
        if not ok:
            raise _refuse(
                f"with a zero initial state the lifted module's output '{name}' "
                f"differs from the original's (max abs diff {max_abs:.3g})",
                rnn_name,
                rnn,
            )
    t0 = sampler.example_size(SEQ)
    full_args = (
        sampler.args
        if t0 >= 2
        else sampler.sample(sampler.example_size(BATCH), 6, torch.Generator().manual_seed(2))
    )
    length = int(
        full_args[sampler.index].shape[
            next(a for a, n in sampler.axes[sampler.index].items() if n == SEQ)
        ]
    )
    full = run_eager(lifting.module, full_args, "lifted, over the whole sequence")
    for at in sorted({1, length // 2}):  # a one-step chunk, and two halves
        _check_split(lifting, full_args, full, at, n_own, out_names, out_axes)


def _check_split(
    lifting: Lifting,
    full_args: Sequence[torch.Tensor],
    full: Sequence[torch.Tensor],
    at: int,
    n_own: int,
    out_names: Sequence[str],
    out_axes: Mapping[str, Mapping[int, str]],
) -> None:
    """Steps `[:at]` then `[at:]` with the state carried must give what one pass gives."""
    first, second = lifting.sampler.split(full_args, at)
    part1 = run_eager(lifting.module, first, f"lifted, on steps [:{at}]")
    carried = list(second[:n_own]) + part1[len(part1) - len(lifting.input_names) :]
    part2 = run_eager(lifting.module, carried, f"lifted, on steps [{at}:]")
    for name, f, p1, p2 in zip(out_names, full, part1, part2, strict=True):
        seq = next((a for a, n in out_axes[name].items() if n == SEQ), None)
        joined = p2 if seq is None else torch.cat([p1, p2], dim=seq)
        max_abs, _, ok, detail = compare_arrays(f.numpy(), joined.numpy(), TOLERANCES["fp32"])
        if not ok:
            diff = detail or f"max abs diff {max_abs:.3g}"
            raise UnsupportedModelError(
                f"cannot make the module streamable: its output '{name}' over two chunks "
                f"(split after step {at}) with the state carried differs from one pass "
                f"({diff}): the module mixes time steps outside its RNN (a mean or attention "
                "over time, a convolution across steps); keep every layer after the RNN "
                "per-step, or export with streamable=False for whole sequences"
            )
