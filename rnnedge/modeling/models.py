"""The classic recurrent forecaster, done right: state explicit and sized from the input.

The tutorial version builds `h0` from a global `batch_size`, which breaks on the last short
batch, at inference with any other batch, and in export (the batch gets baked into the graph).
Here `forward(x, state=None)` takes the batch from `x` and returns the final state, so the
same module trains, streams, and exports with state as a named graph input and output.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from rnnedge.errors import InputError
from rnnedge.spec import CELLS

State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a `SequenceModel`; stored as JSON beside the weights."""

    cell: str = "lstm"
    input_size: int = 1
    hidden_size: int = 32
    output_size: int = 1
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0
    batch_first: bool = True

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise InputError(f"cell '{self.cell}' is not supported; expected one of {CELLS}")
        for name in ("input_size", "hidden_size", "output_size", "num_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise InputError(f"unknown model config keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


def _make_rnn(cfg: ModelConfig) -> nn.RNNBase:
    common = dict(
        input_size=cfg.input_size,
        hidden_size=cfg.hidden_size,
        num_layers=cfg.num_layers,
        batch_first=cfg.batch_first,
        bidirectional=cfg.bidirectional,
        dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
    )
    if cfg.cell == "lstm":
        return nn.LSTM(**common)
    if cfg.cell == "gru":
        return nn.GRU(**common)
    return nn.RNN(nonlinearity=cfg.cell.split("_")[1], **common)


class SequenceModel(nn.Module):
    """RNN/LSTM/GRU followed by a linear head applied at every time step.

    A prediction at every step (rather than only the last) is what makes streaming exact:
    feeding a sequence in chunks yields the same per-step outputs as one full pass.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.rnn = _make_rnn(config)
        self.head = nn.Linear(config.hidden_size * config.num_directions, config.output_size)

    @property
    def is_lstm(self) -> bool:
        return self.config.cell == "lstm"

    def state_shape(self, batch: int) -> tuple[int, int, int]:
        """(layers × directions, batch, hidden): PyTorch's layout whatever `batch_first` says."""
        cfg = self.config
        return (cfg.num_layers * cfg.num_directions, batch, cfg.hidden_size)

    def initial_state(self, x: torch.Tensor) -> State:
        """Zeros sized from `x`'s own batch, never from a global."""
        batch = x.shape[0 if self.config.batch_first else 1]
        h0 = x.new_zeros(self.state_shape(batch))
        return (h0, x.new_zeros(h0.shape)) if self.is_lstm else h0

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        if state is None:
            state = self.initial_state(x)
        out, state_n = self.rnn(x, state)
        return self.head(out), state_n


class HiddenStateWrapper(nn.Module):
    """Flat signature `(x, h0) -> (y, hn)` for export, so state gets graph names.

    Fixed positional arguments (not `*state`) because torch.export matches `dynamic_shapes`
    against the signature's structure.
    """

    def __init__(self, model: SequenceModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, hn = self.model(x, h0)
        return y, hn


class LstmStateWrapper(nn.Module):
    """Flat signature `(x, h0, c0) -> (y, hn, cn)` for export of LSTM models."""

    def __init__(self, model: SequenceModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y, (hn, cn) = self.model(x, (h0, c0))
        return y, hn, cn


def stateful_wrapper(model: SequenceModel) -> nn.Module:
    """The module whose graph has the state as named inputs and outputs."""
    return LstmStateWrapper(model) if model.is_lstm else HiddenStateWrapper(model)


def find_unsupported(module: nn.Module) -> str | None:
    """Name what in `module` no exporter turns into a correct ONNX graph, if anything."""
    for name, sub in module.named_modules():
        if isinstance(sub, nn.LSTM) and getattr(sub, "proj_size", 0) > 0:
            return (
                f"{name or 'the model'} is an nn.LSTM with proj_size={sub.proj_size}: the "
                "TorchScript exporter cannot export it and the dynamo exporter silently drops "
                "the projection; use proj_size=0 with a separate nn.Linear"
            )
    return None


def find_cell_loops(module: nn.Module) -> list[str]:
    """Names of RNNCell/LSTMCell/GRUCell submodules: a Python loop over them gets unrolled."""
    cells = (nn.RNNCell, nn.LSTMCell, nn.GRUCell)
    return [name for name, sub in module.named_modules() if isinstance(sub, cells)]


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
