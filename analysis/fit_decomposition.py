"""The fit's observations beyond accuracy (DESIGN §4): per-task (p, q1, q2) of the trained rows.

Accuracy alone does not identify the decomposition: one number per task cannot fix three (fits
of Table 1 of equal quality put RL's q2 anywhere from 0.25 to 0.93, and in the masked global-
decisions fit the amount of RL training trades against the sampling length scale, correlation
-0.98; docs/results/simulator/fit_settings_compared.md). A table that also measures p, q1 and q2
per task (a real run's calibration.csv: p_hat, q1_hat, q2_hat, DESIGN §4; or an accuracy table
with columns p, q1, q2) constrains them directly. With FitConfig.decomposition the fit's
residuals are the accuracy cells followed by every observed (p, q1, q2) cell of the trained
rows, weighted by how many observations each rests on relative to an accuracy cell
(`component_weights`): p̂ as an accuracy (one first attempt per query), q̂1 by sqrt(p̂) (the
decisions after a correct first candidate are about n p̂ of n) and q̂2 by sqrt(1 - p̂);
unweighted, the q̂ cells read from a handful of decisions (q̂1 where p is a few percent)
dominate the SSE (on a table drawn from a known fit, scripts/fit_recovery.py: 0.77 at the
unweighted optimum, 0.085 at the weighted one). The reported RMSE stays the accuracy cells'.
A table may also state a range instead of a value (columns <name>_low, <name>_high: a paper's
"between 40-60%" or "below 20%"); such a cell's residual is the fitted value's distance
outside the range, 0 inside it, and it weighs 1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from analysis.fit_config import FitConfig, FitError
from analysis.fit_model import (
    Ladder,
    fitted_minus_observed,
    observed_rows,
    simulate_regime,
    trained_residuals,
)
from analysis.observed import DECOMPOSITION  # (p, q1, q2): simulate_regime's column order


def observed_components(observed: Any, ladder: Ladder, regimes: list[str]
                        ) -> dict[str, np.ndarray]:
    """Each regime's observed (p, q1, q2) per task of `ladder` as a (tasks, 3, 2) array of
    [low, high]: a measured value v is [v, v]; a stated range its columns <name>_low and
    <name>_high (analysis.observed.DECOMPOSITION_BOUNDS; an empty end is 0 or 1); NaN where the
    table has neither."""
    obs = observed.set_index(["regime", "task"])

    def cell(r: str, t: str, c: str) -> list[float]:
        if (r, t) not in obs.index:
            return [np.nan, np.nan]
        row = obs.loc[(r, t)]
        value = float(row[c]) if c in obs.columns else np.nan
        if np.isfinite(value):
            return [value, value]
        low, high = (float(row[f"{c}_{end}"]) if f"{c}_{end}" in obs.columns else np.nan
                     for end in ("low", "high"))
        if np.isnan(low) and np.isnan(high):
            return [np.nan, np.nan]
        return [0.0 if np.isnan(low) else low, 1.0 if np.isnan(high) else high]

    return {r: np.array([[cell(r, t, c) for c in DECOMPOSITION] for t in ladder.names], float)
            for r in regimes}


def component_weights(bounds: np.ndarray) -> np.ndarray:
    """Weights of observed (p, q1, q2) cells (`bounds`: observed_components' (tasks, 3, 2)),
    module docstring: 1, sqrt(p̂), sqrt(1 - p̂) per task (the share of the n queries each
    estimate rests on); 1 where p̂ is not measured (unobserved, or a stated range)."""
    p = np.where(bounds[:, :1, 0] == bounds[:, :1, 1], bounds[:, :1, 0], np.nan)
    share = np.where(np.isnan(p), 1.0, np.hstack([np.ones_like(p), p, 1 - p]))
    return np.sqrt(np.clip(share, 0.0, 1.0))


def component_residuals(simulated: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Fitted minus observed (p, q1, q2) per task (`simulated`: simulate_regime's (tasks, 4)
    p, q1, q2, Acc_K; `bounds`: observed_components' (tasks, 3, 2)), weighted
    (`component_weights`), raveled task by task: against a measured value, the difference;
    against a stated range, the distance outside it (0 inside: a range says no more than
    that). fit_model.fitted_minus_observed: NaN where unobserved, a fitted NaN counts 1 before
    weighting."""
    fitted, low = simulated[:, :3], bounds[..., 0]
    nearest = np.where(np.isnan(fitted), low, np.clip(fitted, low, bounds[..., 1]))
    return (component_weights(bounds) * fitted_minus_observed(fitted, nearest)).ravel()


def regime_residuals(simulated: np.ndarray, accuracy: np.ndarray,
                     components: np.ndarray | None) -> np.ndarray:
    """One regime's residuals as the least squares counts them (fit_model.fitted_minus_observed:
    NaN where unobserved, a fitted NaN counts 1): accuracy per task (`simulated`:
    simulate_regime's (tasks, 4) p, q1, q2, Acc_K), then, where `components`
    (observed_components' bounds of p, q1, q2 per task) is given, `component_residuals`.
    Their squares' nansum is the row's SSE."""
    acc = fitted_minus_observed(simulated[:, 3], accuracy)
    if components is None:
        return acc
    return np.concatenate([acc, component_residuals(simulated, components)])


def fit_residuals(observed: Any, ladder: Ladder, regimes: list[str], b_s: np.ndarray,
                  cfg: FitConfig, names: list[str]) -> Callable[[np.ndarray], np.ndarray]:
    """The fit's residual function (x: log values of `names`): fitted minus observed accuracy
    over the observed cells of `regimes`, then, with cfg.decomposition, fitted minus observed
    p, q1, q2 over theirs, weighted (`component_weights`); FitError where the table has
    none."""
    accuracy = trained_residuals(regimes, ladder, b_s, cfg, names,
                                 observed_rows(observed, ladder, regimes))
    if not cfg.decomposition:
        return accuracy
    comp = observed_components(observed, ladder, regimes)
    seen = np.isfinite(np.concatenate([comp[r][..., 0].ravel() for r in regimes]))
    if not seen.any():
        raise FitError("--decomposition needs observed p, q1 or q2 of a trained row (columns "
                       "p/q1/q2 or their ranges <name>_low/<name>_high, or a real run's "
                       "calibration.csv); this table has none")

    def residuals(x: np.ndarray) -> np.ndarray:
        vals = {n: float(np.exp(v)) for n, v in zip(names, x, strict=True)}
        out = np.concatenate([component_residuals(simulate_regime(r, ladder, b_s, cfg, vals),
                                                  comp[r]) for r in regimes])
        return np.concatenate([accuracy(x), out[seen]])

    return residuals
