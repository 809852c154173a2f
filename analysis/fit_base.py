"""The base model's sampling offsets b_s(t) (DESIGN §1, §4), the fit's first stage: solved per
task from the Base row (base "exact"), or a base shape over the task difficulty d(t)
(fit_model.task_difficulty) fitted to the untrained rows: Base, and SFT (no reflection) where
the lr_mode leaves it untrained. analysis.fit then trains every other row from these offsets;
analysis.fit_profile.joint_intervals refits the shape together with the training."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.optimize import brentq, least_squares
from scipy.special import logit

from analysis.fit_config import BOUNDS, FitConfig
from analysis.fit_model import Ladder, fixed_lr, observed_rows, task_difficulty
from analysis.observed import BASE, SFT_NO_REFLECTION
from core.twostage import accuracy_forced_stop


def base_sampling_logits(base_acc: np.ndarray, cfg: FitConfig) -> np.ndarray:
    """b_s(t) with Acc_K(sigmoid(b_s), q1_base, q2_base) = clip(observed base accuracy)."""
    out = []
    k = cfg.max_attempts
    lo_acc = float(accuracy_forced_stop(1e-9, cfg.q1_base, cfg.q2_base, k))
    hi_acc = float(accuracy_forced_stop(1 - 1e-9, cfg.q1_base, cfg.q2_base, k))
    for a in np.clip(np.asarray(base_acc, float), cfg.acc_floor, 1 - cfg.acc_floor):
        a = float(np.clip(a, lo_acc + 1e-9, hi_acc - 1e-9))
        f = lambda z, a=a: float(accuracy_forced_stop(1 / (1 + math.exp(-z)), cfg.q1_base,  # noqa: E731
                                                      cfg.q2_base, k)) - a
        out.append(brentq(f, -25.0, 25.0, xtol=1e-10))
    return np.array(out)


# the base shapes fitted to the untrained rows (FitConfig.base), with their parameters' names
FITTED_BASES = {"linear": ("base_d_half", "base_slope"),
                "floored": ("base_d_half", "base_slope", "base_floor")}


def base_shape(base: str, x: np.ndarray, d: np.ndarray) -> np.ndarray:
    """b_s(t) of a fitted base shape (DESIGN §1) at log-parameters x = log(d_half, slope[,
    floor]) over difficulties d: linear, slope * (d_half - d); floored, the smooth maximum
    logaddexp(slope * (d_half - d), logit(floor)), i.e. p falls with d down to a floor."""
    line = np.exp(x[1]) * (np.exp(x[0]) - d)
    if base == "linear":
        return line
    return np.logaddexp(line, logit(np.exp(x[2])))


def base_residuals(base_acc: np.ndarray, cfg: FitConfig) -> Callable[[np.ndarray], np.ndarray]:
    """x (log parameters of the shape `cfg.base`) -> fitted minus observed Acc_K of the
    untrained rows `base_acc` (one row per task, or (rows, tasks); NaN = not observed)."""
    acc = np.atleast_2d(np.asarray(base_acc, float))
    d = task_difficulty(acc.shape[1])
    seen = np.isfinite(acc)

    def residuals(x: np.ndarray) -> np.ndarray:
        p = 1 / (1 + np.exp(-base_shape(cfg.base, x, d)))
        fitted = accuracy_forced_stop(p, cfg.q1_base, cfg.q2_base, cfg.max_attempts)
        return (fitted[None, :] - acc)[seen]

    return residuals


def fitted_base(base_acc: np.ndarray, cfg: FitConfig) -> tuple[np.ndarray, Any, tuple[str, ...]]:
    """b_s(t) of the shape `cfg.base` ("linear" or "floored", base_shape) with d(t) = t (the
    ladder's position), least squares of Acc_K in log space against the untrained rows
    `base_acc` (`base_residuals`): (b_s per task, scipy's solution, the parameters' names)."""
    names = FITTED_BASES[cfg.base]
    d = task_difficulty(np.atleast_2d(base_acc).shape[1])
    residuals = base_residuals(base_acc, cfg)
    lo = np.log([BOUNDS[n][0] for n in names])
    hi = np.log([BOUNDS[n][1] for n in names])
    start = np.log([1.5, 1.5, 0.01][:len(names)])
    sol = least_squares(residuals, start, bounds=(lo, hi), method="trf")
    return base_shape(cfg.base, sol.x, d), sol, names


BASE_NOTES = {
    "floored": "base offsets: b_s(t) = logaddexp(slope * (d_half - t), logit(floor)), fitted "
               "to the untrained rows: p falls with the task's position down to a floor (the "
               "Base and SFT no-reflection rows score 13 of 800 on T4-T7, where a line without "
               "a floor predicts about 3)",
    "linear": "base offsets: b_s(t) = slope * (d_half - t), fitted to the untrained rows (the "
              "Base row's OOD cells of 1-5% are binomial noise at n = 100)",
}


def untrained_regimes(observed: Any, cfg: FitConfig) -> list[str]:
    """The rows the model says are the untrained base model's (DESIGN §1, §4): Base, and SFT
    (no reflection) where the lr_mode leaves it untrained (`fixed_lr`)."""
    present = set(observed["regime"])
    return [BASE] + ([SFT_NO_REFLECTION] if fixed_lr(SFT_NO_REFLECTION, cfg) == 0
                     and SFT_NO_REFLECTION in present else [])


def base_offsets(observed: Any, ladder: Ladder, cfg: FitConfig
                 ) -> tuple[np.ndarray, Any, tuple[str, ...], list[str]]:
    """b_s(t) per task of `ladder` from an observed table (analysis.observed layout) under
    cfg.base: (b_s, the base shape's scipy solution or None, its parameters' names, notes)."""
    obs = observed.set_index(["regime", "task"])
    if cfg.base not in FITTED_BASES:  # exact: one offset per task from the Base row
        base_acc = np.array([obs.loc[(BASE, t), "accuracy"] for t in ladder.names], float)
        return base_sampling_logits(base_acc, cfg), None, (), []
    untrained = untrained_regimes(observed, cfg)
    rows = observed_rows(observed, ladder, untrained)
    b_s, sol, names = fitted_base(np.array([rows[r] for r in untrained]), cfg)
    notes = []
    if len(untrained) > 1:
        notes.append(f"the base shape is fitted to both untrained rows ({', '.join(untrained)})"
                     f": with lr_mode {cfg.lr_mode} the {SFT_NO_REFLECTION} row is the base "
                     "model's")
    return b_s, sol, names, [*notes, BASE_NOTES[cfg.base]]
