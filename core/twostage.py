"""The two-stage accuracy model (DESIGN.md §4). Pure functions, numpy-broadcastable."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def check_probability(name: str, value: ArrayLike) -> np.ndarray:
    """`value` as a float array when every entry is a probability in [0, 1] (finite);
    ValueError naming `name` else (DESIGN §4)."""
    arr = np.asarray(value, dtype=float)
    if np.any(~np.isfinite(arr)) or np.any((arr < 0.0) | (arr > 1.0)):
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return arr


def resample_probability(p: ArrayLike, q1: ArrayLike, q2: ArrayLike) -> np.ndarray:
    """r = p(1-q1) + (1-p) q2: chance that one attempt ends in RESAMPLE (DESIGN §4)."""
    p, q1, q2 = (np.asarray(x, dtype=float) for x in (p, q1, q2))
    return p * (1.0 - q1) + (1.0 - p) * q2


def accuracy_infinite_horizon(p: ArrayLike, q1: ArrayLike, q2: ArrayLike) -> np.ndarray:
    """Acc = p q1 / (p q1 + (1-p)(1-q2)) (DESIGN §4).

    Where the agent never stops (p q1 + (1-p)(1-q2) = 0) the accuracy is undefined: NaN.
    """
    p, q1, q2 = (np.asarray(x, dtype=float) for x in (p, q1, q2))
    num = p * q1
    den = num + (1.0 - p) * (1.0 - q2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def accuracy_forced_stop(
    p: ArrayLike, q1: ArrayLike, q2: ArrayLike, max_attempts: int
) -> np.ndarray:
    """Acc_K = p q1 (1 - r^(K-1)) / (1 - r) + r^(K-1) p, forced stop at attempt K (DESIGN §4).

    At r = 1 the geometric sum (1 - r^(K-1)) / (1 - r) is its limit, K - 1.
    """
    if int(max_attempts) != max_attempts or max_attempts < 1:
        raise ValueError(f"max_attempts must be an integer >= 1, got {max_attempts!r}")
    p, q1, q2 = (np.asarray(x, dtype=float) for x in (p, q1, q2))
    r = resample_probability(p, q1, q2)
    k = int(max_attempts)
    tail = r ** (k - 1)
    # 1 - r and 1 - r^(K-1) without cancellation when r is close to 1
    s = p * q1 + (1.0 - p) * (1.0 - q2)
    with np.errstate(invalid="ignore", divide="ignore"):
        geometric = np.where(s > 0, -np.expm1((k - 1) * np.log1p(-s)) / np.where(s > 0, s, 1.0),
                             k - 1.0)
    return p * q1 * geometric + tail * p


def two_stage_accuracy(
    p: ArrayLike, q1: ArrayLike, q2: ArrayLike, max_attempts: int | None = None
) -> np.ndarray:
    """Validated entry point: forced stop at K when given, else the infinite horizon."""
    p = check_probability("p", p)
    q1 = check_probability("q1", q1)
    q2 = check_probability("q2", q2)
    if max_attempts is None:
        return accuracy_infinite_horizon(p, q1, q2)
    return accuracy_forced_stop(p, q1, q2, max_attempts)
