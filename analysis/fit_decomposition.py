"""The fit's observations beyond accuracy (DESIGN §4): per-task (p, q1, q2) of the trained rows.

Accuracy alone does not identify the decomposition: one number per task cannot fix three, and
in the Table 1 fits the amount of RL training trades against the sampling length scale
(correlation -0.98; docs/results/simulator/fit_settings_compared.md). A table that also
measures p, q1 and q2 per task (a real run's calibration.csv: p_hat, q1_hat, q2_hat, DESIGN §4;
or an accuracy table with columns p, q1, q2) pins them. With FitConfig.decomposition the fit's
residuals are the accuracy cells followed by every observed (p, q1, q2) cell of the trained
rows, each weighted as an accuracy cell (all are proportions); the reported RMSE stays the
accuracy cells'.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from analysis.fit_config import FitConfig, FitError
from analysis.fit_model import Ladder, observed_rows, simulate_regime, trained_residuals

# the tidy observed table's optional columns, in simulate_regime's order
COMPONENTS = ("p", "q1", "q2")


def observed_components(observed: Any, ladder: Ladder, regimes: list[str]
                        ) -> dict[str, np.ndarray]:
    """Each regime's observed (p, q1, q2) per task of `ladder`: a (tasks, 3) array, NaN where
    the table has no value (or no such column)."""
    obs = observed.set_index(["regime", "task"])
    out = {}
    for r in regimes:
        rows = [[float(obs.loc[(r, t), c]) if (r, t) in obs.index and c in obs.columns
                 else np.nan for c in COMPONENTS] for t in ladder.names]
        out[r] = np.array(rows, float)
    return out


def fit_residuals(observed: Any, ladder: Ladder, regimes: list[str], b_s: np.ndarray,
                  cfg: FitConfig, names: list[str]) -> Callable[[np.ndarray], np.ndarray]:
    """The fit's residual function (x: log values of `names`): fitted minus observed accuracy
    over the observed cells of `regimes`, then, with cfg.decomposition, fitted minus observed
    p, q1, q2 over theirs (module docstring); FitError where the table has none."""
    accuracy = trained_residuals(regimes, ladder, b_s, cfg, names,
                                 observed_rows(observed, ladder, regimes))
    if not cfg.decomposition:
        return accuracy
    comp = observed_components(observed, ladder, regimes)
    seen = np.isfinite(np.concatenate([comp[r].ravel() for r in regimes]))
    if not seen.any():
        raise FitError("--decomposition needs observed p, q1 or q2 of a trained row (columns "
                       "p/q1/q2, or a real run's calibration.csv); this table has none")

    def residuals(x: np.ndarray) -> np.ndarray:
        vals = {n: float(np.exp(v)) for n, v in zip(names, x, strict=True)}
        out = np.concatenate([(simulate_regime(r, ladder, b_s, cfg, vals)[:, :3]
                               - comp[r]).ravel() for r in regimes])
        return np.concatenate([accuracy(x), np.nan_to_num(out[seen], nan=1.0)])

    return residuals
