"""Eager PyTorch as a runner: the reference every other runtime is held to."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from rnnedge._optional import require
from rnnedge.errors import InputError
from rnnedge.runtime.backends.base import Feeds, Runner, describe_feeds
from rnnedge.spec import TensorSpec


class TorchRunner(Runner):
    """Calls a module with feeds in `input_names` order and names its outputs.

    The module is put in eval mode on activation (dropout off), exactly as exported.
    """

    name: ClassVar[str] = "torch"
    requires: ClassVar[tuple[str, ...]] = ("torch",)
    install_hint: ClassVar[str] = "pip install torch==2.13.0"

    def __init__(
        self,
        module: Any,
        input_names: Sequence[str],
        output_names: Sequence[str],
        input_specs: Sequence[TensorSpec] = (),
        device: str = "cpu",
    ) -> None:
        super().__init__()
        self.module = module
        self._input_names = list(input_names)
        self._output_names = list(output_names)
        self._specs = list(input_specs)
        self.device = device
        self._torch: Any = None

    def _activate_impl(self) -> None:
        self._torch = require("torch", "the eager PyTorch runner")
        self.module.eval()
        self.module.to(self.device)

    def _input_specs_impl(self) -> list[TensorSpec]:
        return list(self._specs)

    def _output_names_impl(self) -> list[str]:
        return list(self._output_names)

    def _infer_impl(self, feeds: Feeds) -> dict[str, np.ndarray]:
        torch = self._torch
        missing = [n for n in self._input_names if n not in feeds]
        if missing:
            raise InputError(
                f"missing inputs {missing}; given {describe_feeds(feeds)}, "
                f"expected {self._input_names}"
            )
        args = [
            torch.from_numpy(np.ascontiguousarray(feeds[n])).to(self.device)
            for n in self._input_names
        ]
        with torch.inference_mode():
            out = self.module(*args)
        outs = list(out) if isinstance(out, (tuple, list)) else [out]
        if len(outs) != len(self._output_names):
            raise InputError(
                f"module returned {len(outs)} outputs, expected {len(self._output_names)} "
                f"({self._output_names})"
            )
        return {n: t.detach().cpu().numpy() for n, t in zip(self._output_names, outs, strict=True)}

    def synchronize(self) -> None:
        if self._torch is not None and self.device.startswith("cuda"):
            self._torch.cuda.synchronize()
