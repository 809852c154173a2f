"""Calibration of (p, q1, q2) from observed trajectories, with CIs (DESIGN.md §4).

Observed trajectories (simulated, or parsed from model text) are reduced to per-trajectory
counts (`TrajectoryCounts`); every estimator is a ratio of column sums, so a bootstrap over
trajectories (= queries) is a reweighting of rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np

from core.twostage import two_stage_accuracy

STOP = "STOP"
RESAMPLE = "RESAMPLE"
Z95 = 1.959963984540054


@dataclass(frozen=True)
class TrajectoryCounts:
    """Per-trajectory counts (one row per query); all arrays have the same length."""

    first_correct: np.ndarray  # first candidate correct (answerless first attempt: 0)
    final_correct: np.ndarray  # final answer correct (truncated / answerless: 0)
    n_candidates: np.ndarray  # attempts with a candidate
    n_correct_candidates: np.ndarray
    n_decisions_after_correct: np.ndarray  # forced final stops and truncations excluded
    n_stop_after_correct: np.ndarray
    n_decisions_after_wrong: np.ndarray
    n_resample_after_wrong: np.ndarray
    n_ft_opportunities: np.ndarray  # wrong candidate -> RESAMPLE -> another candidate
    n_ft: np.ndarray  # ... whose next candidate is correct (F->T)

    def __post_init__(self) -> None:
        lengths = {len(np.asarray(getattr(self, f.name))) for f in fields(self)}
        if len(lengths) != 1:
            raise ValueError(f"TrajectoryCounts columns differ in length: {sorted(lengths)}")

    def __len__(self) -> int:
        return len(self.first_correct)

    def matrix(self) -> np.ndarray:
        return np.column_stack([np.asarray(getattr(self, f.name), float) for f in fields(self)])

    @classmethod
    def from_attempts(
        cls,
        trajectories: Iterable[Sequence[tuple[bool | None, str | None]]],
        final_correct: Iterable[bool],
    ) -> TrajectoryCounts:
        """From attempt lists: each attempt is (candidate correct or None if no candidate,
        decision STOP / RESAMPLE / None for forced or truncated)."""
        rows = []
        for attempts, final in zip(trajectories, final_correct, strict=True):
            attempts = list(attempts)
            row = [0] * 10
            row[0] = int(bool(attempts) and attempts[0][0] is True)
            row[1] = int(bool(final))
            for k, (correct, decision) in enumerate(attempts):
                if correct is None:
                    continue
                row[2] += 1
                row[3] += int(correct)
                if decision not in (STOP, RESAMPLE, None):
                    raise ValueError(f"unknown decision {decision!r}")
                if decision is not None:
                    if correct:
                        row[4] += 1
                        row[5] += int(decision == STOP)
                    else:
                        row[6] += 1
                        row[7] += int(decision == RESAMPLE)
                if not correct and decision == RESAMPLE:
                    nxt = next((a[0] for a in attempts[k + 1 :] if a[0] is not None), None)
                    if nxt is not None:
                        row[8] += 1
                        row[9] += int(nxt)
            rows.append(row)
        arr = np.asarray(rows, dtype=np.int64).reshape(-1, 10)
        return cls(*(arr[:, j] for j in range(10)))


@dataclass(frozen=True)
class Estimate:
    estimate: float
    ci_low: float
    ci_high: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _statistics(sums: np.ndarray, n: np.ndarray, max_attempts: int | None) -> dict[str, np.ndarray]:
    """All estimators from column sums (rows = bootstrap replicates). DESIGN §4."""
    s = {f.name: sums[..., j] for j, f in enumerate(fields(TrajectoryCounts))}
    p_hat = s["first_correct"] / n
    q1 = _ratio(s["n_stop_after_correct"], s["n_decisions_after_correct"])
    q2 = _ratio(s["n_resample_after_wrong"], s["n_decisions_after_wrong"])
    # An undefined q (no decisions of that kind) carries no information: predict as if it
    # were 1 for q1 / 0 for q2 would be arbitrary, so the prediction is NaN then.
    predicted = np.full_like(p_hat, np.nan)
    ok = np.isfinite(q1) & np.isfinite(q2)
    if np.any(ok):
        predicted[ok] = two_stage_accuracy(p_hat[ok], q1[ok], q2[ok], max_attempts)
    return {
        "p_hat": p_hat,
        "p_pooled": _ratio(s["n_correct_candidates"], s["n_candidates"]),
        "q1_hat": q1,
        "q2_hat": q2,
        "predicted_accuracy": predicted,
        "echo_p_ft": _ratio(s["n_ft"], s["n_ft_opportunities"]),
    }


def normal_ci(successes: float, n: int, z: float = Z95) -> Estimate:
    """Observed accuracy with the normal-approximation CI (the paper's choice; may leave [0,1])."""
    acc = successes / n
    half = z * np.sqrt(acc * (1 - acc) / n)
    return Estimate(float(acc), float(acc - half), float(acc + half))


def calibrate(
    counts: TrajectoryCounts,
    max_attempts: int | None = None,
    n_boot: int = 100,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Estimate]:
    """p̂, q̂1, q̂2, predicted and observed accuracy, pooled p and echo rate p(F→T), with CIs.

    Observed accuracy: normal approximation. Everything else: percentile bootstrap over
    trajectories (queries), `n_boot` resamples (paper: 100, 2.5/97.5 percentiles).
    """
    n = len(counts)
    if n == 0:
        raise ValueError("cannot calibrate from zero trajectories")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    mat = counts.matrix()
    point = _statistics(mat.sum(axis=0), np.float64(n), max_attempts)
    rng = np.random.default_rng(seed)
    # one replicate's weights at a time: memory O(n), not O(n_boot n)
    sums = np.empty((n_boot, mat.shape[1]))
    for b in range(n_boot):
        sums[b] = np.bincount(rng.integers(0, n, n), minlength=n) @ mat
    boot = _statistics(sums, np.float64(n), max_attempts)
    alpha = (1 - confidence) / 2
    out = {}
    for key, value in point.items():
        reps = boot[key][np.isfinite(boot[key])]
        lo, hi = (np.quantile(reps, [alpha, 1 - alpha]) if reps.size else (np.nan, np.nan))
        out[key] = Estimate(float(value), float(lo), float(hi))
    # scipy.stats here, not at the top: it is slow to import, and `import cli` must not
    # need it (it also fails where torch is stubbed out as missing, scipy 1.17)
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + confidence / 2))
    out["observed_accuracy"] = normal_ci(float(mat[:, 1].sum()), n, z)
    return out
