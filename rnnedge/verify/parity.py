"""Parity: every runtime against eager PyTorch, over a grid of (batch, seq_len).

Running runners and judging their outputs are separate steps, so a failure anywhere is
collected, not raised: the report lists every runner, shape and output with its max diffs,
and `raise_if_failed` turns it into one typed error at the end.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from rnnedge.errors import InputError, ParityError, RnnEdgeError
from rnnedge.runtime.backends.base import Runner
from rnnedge.runtime.inputs import state_shape
from rnnedge.spec import RnnSpec


@dataclass(frozen=True)
class Tolerance:
    """|actual − expected| ≤ atol + rtol·|expected|, as ONNX Runtime's own tests judge."""

    atol: float
    rtol: float


TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(1e-5, 1e-4),
    "fp16": Tolerance(2.5e-3, 1e-3),
}


@dataclass(frozen=True)
class Comparison:
    """One output of one runner at one shape, judged against the reference."""

    runner: str
    batch: int
    seq_len: int
    output: str
    max_abs: float
    max_rel: float
    ok: bool
    detail: str = ""


@dataclass
class ParityReport:
    """Every comparison made; failures are kept, not raised, until `raise_if_failed`."""

    reference: str
    tolerance: Tolerance
    comparisons: list[Comparison] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.comparisons)

    @property
    def failures(self) -> list[Comparison]:
        return [c for c in self.comparisons if not c.ok]

    def runners(self) -> list[str]:
        return list(dict.fromkeys(c.runner for c in self.comparisons))

    def max_abs(self, runner: str | None = None) -> float:
        vals = [c.max_abs for c in self.comparisons if runner in (None, c.runner)]
        return max(vals, default=0.0)

    def describe_failures(self, limit: int = 4) -> str:
        parts = []
        for c in self.failures[:limit]:
            what = c.detail[:200] or f"max abs diff {c.max_abs:.3g}, max rel {c.max_rel:.3g}"
            parts.append(f"{c.runner} at batch={c.batch} seq_len={c.seq_len} '{c.output}': {what}")
        more = len(self.failures) - limit
        return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")

    def raise_if_failed(self) -> None:
        if not self.ok:
            tol = self.tolerance
            raise ParityError(
                f"{len(self.failures)} of {len(self.comparisons)} comparisons against "
                f"{self.reference} exceed atol={tol.atol:g} rtol={tol.rtol:g}: "
                f"{self.describe_failures()}"
            )


def shape_grid(batches: Iterable[int], seq_lens: Iterable[int]) -> list[tuple[int, int]]:
    """All (batch, seq_len) pairs, deduplicated, in order."""
    return list(dict.fromkeys(itertools.product(batches, seq_lens)))


def default_grid(example_batch: int, example_seq_len: int) -> list[tuple[int, int]]:
    """Shapes that expose a graph specialized to its example: length 1, shorter, longer.

    Always includes seq_len 1, a length longer than the example (2T+3), one in between when
    there is room, and a batch size other than the example's.
    """
    t = example_seq_len
    seq_lens = sorted({1, max(2, t // 2), t, 2 * t + 3})
    other_batch = example_batch + 2
    return [*shape_grid([1, other_batch], seq_lens), (example_batch, t)]


def make_feeds(
    spec: RnnSpec,
    batch: int,
    seq_len: int,
    rng: np.random.Generator,
    *,
    random_state: bool = True,
) -> dict[str, np.ndarray]:
    """Random inputs for the graph at (batch, seq_len); a non-zero state tests its plumbing."""
    x_spec = spec.input(spec.data_input)
    shape = []
    for axis, d in enumerate(x_spec.shape):
        if axis == spec.batch_axis:
            shape.append(batch)
        elif axis == spec.seq_axis:
            shape.append(seq_len)
        elif isinstance(d, int):
            shape.append(d)
        else:
            raise InputError(f"data input '{x_spec.name}' has an unresolved dim '{d}'")
    feeds = {spec.data_input: rng.standard_normal(shape).astype(x_spec.dtype)}
    for pair in spec.state_pairs:
        st_shape = state_shape(spec, pair.input, batch)
        dtype = spec.input(pair.input).dtype
        value = 0.5 * rng.standard_normal(st_shape) if random_state else np.zeros(st_shape)
        feeds[pair.input] = value.astype(dtype)
    return feeds


def compare_arrays(
    expected: np.ndarray, actual: np.ndarray, tol: Tolerance
) -> tuple[float, float, bool, str]:
    """(max_abs, max_rel, ok, detail) for one output; a shape mismatch fails with a detail."""
    if expected.shape != actual.shape:
        return (
            float("inf"),
            float("inf"),
            False,
            (f"shape {tuple(actual.shape)} where eager gives {tuple(expected.shape)}"),
        )
    e = expected.astype(np.float64)
    a = actual.astype(np.float64)
    if not np.all(np.isfinite(a)) and np.all(np.isfinite(e)):
        return float("inf"), float("inf"), False, "non-finite values where eager is finite"
    diff = np.abs(a - e)
    max_abs = float(diff.max(initial=0.0))
    big = np.abs(e) > tol.atol
    max_rel = float((diff[big] / np.abs(e[big])).max(initial=0.0))
    ok = bool(np.all(diff <= tol.atol + tol.rtol * np.abs(e)))
    return max_abs, max_rel, ok, ""


def compare_outputs(
    runner: str,
    batch: int,
    seq_len: int,
    expected: Mapping[str, np.ndarray],
    actual: Mapping[str, np.ndarray] | Exception,
    tol: Tolerance,
) -> list[Comparison]:
    """Judge one runner's outputs at one shape; an exception becomes a failed comparison."""
    if isinstance(actual, Exception):
        detail = str(actual).splitlines()[0] if str(actual) else type(actual).__name__
        return [
            Comparison(
                runner,
                batch,
                seq_len,
                "*",
                float("inf"),
                float("inf"),
                False,
                f"failed: {detail[:300]}",
            )
        ]
    out = []
    for name, exp in expected.items():
        if name not in actual:
            out.append(
                Comparison(
                    runner,
                    batch,
                    seq_len,
                    name,
                    float("inf"),
                    float("inf"),
                    False,
                    "output missing",
                )
            )
            continue
        max_abs, max_rel, ok, detail = compare_arrays(exp, np.asarray(actual[name]), tol)
        out.append(Comparison(runner, batch, seq_len, name, max_abs, max_rel, ok, detail))
    return out


def run_all(
    runner: Runner, feeds_list: Sequence[Mapping[str, np.ndarray]]
) -> list[dict[str, np.ndarray] | Exception]:
    """Run every feed set, keeping an exception in place of outputs that could not be had."""
    results: list[dict[str, np.ndarray] | Exception] = []
    for feeds in feeds_list:
        try:
            results.append(runner.infer(feeds))
        except (RnnEdgeError, RuntimeError, ValueError) as exc:
            results.append(exc)
    return results


def check_parity(
    reference: Runner,
    runners: Sequence[Runner],
    spec: RnnSpec,
    shapes: Sequence[tuple[int, int]],
    *,
    tolerance: Tolerance = TOLERANCES["fp32"],
    seed: int = 0,
) -> ParityReport:
    """Run the reference and each runner over `shapes` and compare; runners must be active."""
    rng = np.random.default_rng(seed)
    feeds_list = [make_feeds(spec, b, t, rng) for b, t in shapes]
    expected = run_all(reference, feeds_list)
    report = ParityReport(reference.name, tolerance)
    for (b, t), exp in zip(shapes, expected, strict=True):
        if isinstance(exp, Exception):
            raise InputError(
                f"the reference {reference.name} failed at batch={b} seq_len={t}: {exp}"
            )
    for runner in runners:
        actual = run_all(runner, feeds_list)
        for (b, t), exp, act in zip(shapes, expected, actual, strict=True):
            assert not isinstance(exp, Exception)
            report.comparisons.extend(compare_outputs(runner.name, b, t, exp, act, tolerance))
    return report
