"""Feature standardization and finiteness checks: what a loaded model applies to raw data.

The statistics are fitted at training time and travel in the ONNX file's spec, so an app that
only runs models needs this module (numpy alone) and never the training side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rnnedge.errors import InputError
from rnnedge.spec import Normalization

#: largest |mean| or std a float32 model's statistics may have (float32 tops out near 3.4e38)
STAT_LIMIT = 1e30


@dataclass(frozen=True, eq=False)
class Normalizer:
    """Per-feature standardization fitted on training data only, so validation stays unseen.

    Statistics are float64 whatever the data dtype; outputs keep the input's float dtype.
    """

    mean: np.ndarray
    std: np.ndarray
    target_index: tuple[int, ...]

    def __post_init__(self) -> None:
        mean = np.array(self.mean, dtype=np.float64).reshape(-1)
        std = np.array(self.std, dtype=np.float64).reshape(-1)
        ok = mean.shape == std.shape and mean.size > 0 and np.all(np.isfinite(mean))
        ok = ok and bool(np.all(np.isfinite(std)) and np.all(std > 0))
        # float32 models: statistics beyond this turn finite data into inf on the way back
        ok = ok and bool(
            np.all(np.abs(mean) <= STAT_LIMIT)
            and np.all(std <= STAT_LIMIT)
            and np.all(std >= 1 / STAT_LIMIT)
        )
        if not ok:
            raise InputError(
                f"normalizer mean {mean.tolist()[:8]} / std {std.tolist()[:8]} is invalid; "
                f"expected one finite mean (|mean| ≤ {STAT_LIMIT:g}) and one std in "
                f"[{1 / STAT_LIMIT:g}, {STAT_LIMIT:g}] per feature; refit on finite data"
            )
        mean.flags.writeable = std.flags.writeable = False
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "target_index", _targets(self.target_index, mean.size))

    @property
    def n_features(self) -> int:
        return int(self.mean.size)

    @classmethod
    def fit(cls, values: np.ndarray, target_index: Sequence[int] = (0,)) -> Normalizer:
        """Statistics over every axis but the last (features); a 1-D series is one feature.

        A (numerically) constant feature gets std 1.0 so it maps to 0 instead of dividing by 0.
        """
        x = np.asarray(values)
        x = x[:, None] if x.ndim == 1 else x
        if x.ndim == 0 or x.size == 0:
            raise InputError(
                f"cannot fit a normalizer on an array of shape {x.shape}; pass (T, F) data"
            )
        validate_finite(x, "training data")
        flat = x.reshape(-1, x.shape[-1]).astype(np.float64)
        mean, std = flat.mean(axis=0), flat.std(axis=0)
        std[std <= 1e-12 * np.maximum(np.abs(mean), 1.0)] = 1.0
        return cls(mean, std, tuple(target_index))

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Standardize every feature on the last axis; `x` may have any leading axes."""
        a = self._check(x, self.n_features, "features")
        return ((a - self.mean) / self.std).astype(_float_dtype(a), copy=False)

    def inverse_targets(self, y: np.ndarray) -> np.ndarray:
        """Undo `transform` for model outputs, whose last axis holds only the target columns."""
        t = list(self.target_index)
        a = self._check(y, len(t), "target columns")
        return (a * self.std[t] + self.mean[t]).astype(_float_dtype(a), copy=False)

    def to_spec(self) -> Normalization:
        return Normalization(tuple(self.mean.tolist()), tuple(self.std.tolist()), self.target_index)

    @classmethod
    def from_spec(cls, n: Normalization) -> Normalizer:
        return cls(np.array(n.mean), np.array(n.std), tuple(n.target_index))

    @staticmethod
    def _check(x: np.ndarray, n: int, what: str) -> np.ndarray:
        a = np.asarray(x)
        if a.ndim == 0 or a.shape[-1] != n:
            raise InputError(
                f"array of shape {a.shape} has the wrong last axis; expected {n} {what} "
                f"(the normalizer was fitted on that many)"
            )
        return a


def validate_finite(x: np.ndarray, what: str) -> None:
    """Fail on the first NaN/Inf with its index, so the bad row can be found in the source."""
    a = np.asarray(x)
    if a.dtype.kind in "biu":
        return
    if a.dtype.kind not in "fc":
        try:
            a = a.astype(np.float64)
        except (TypeError, ValueError):
            raise InputError(
                f"{what} has dtype {a.dtype}, not numbers; convert it to a float array"
            ) from None
    bad = ~np.isfinite(a)
    if not bad.any():
        return
    index = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), a.shape))
    v = a[index]
    kind = "NaN" if np.isnan(v) else ("-Inf" if np.real(v) < 0 else "Inf")
    count = int(bad.sum())
    more = f" (first of {count} non-finite values)" if count > 1 else ""
    raise InputError(f"{what} has {kind} at index {index}{more}; clean or impute the data")


def _float_dtype(a: np.ndarray) -> np.dtype:
    """Float inputs keep their precision (float32 stays float32); anything else becomes float64."""
    return a.dtype if a.dtype.kind == "f" else np.dtype(np.float64)


def _targets(target_index: Sequence[int], n_features: int) -> tuple[int, ...]:
    """Validate target columns once, resolving negative indices so specs store plain ones."""
    try:
        raw = [int(i) for i in target_index]
    except (TypeError, ValueError):
        raise InputError(
            f"target_index {target_index!r} is not a sequence of integers; pass e.g. (0,)"
        ) from None
    if not raw or any(not -n_features <= i < n_features for i in raw):
        raise InputError(
            f"target_index {tuple(raw)} is invalid for {n_features} feature(s); "
            f"pass non-empty indices in range 0..{n_features - 1}"
        )
    out = tuple(i % n_features for i in raw)
    if len(set(out)) != len(out):
        raise InputError(f"target_index {tuple(raw)} repeats a column; list each target once")
    return out
