"""Profile-likelihood intervals of a fit's free training parameters (DESIGN §4).

The fit's own intervals (analysis.fit) come from the delta method, i.e. from a Jacobian at the
optimum. A trained endpoint is rough at small scales (Adam at a constant lr, DESIGN §2), so
this module gives the check that needs no derivative (but not one immune to the roughness: a
grid point's SSE is one draw of the jitter that analysis.fit_model.sse_roughness measures,
and where that is above ROUGH_LIMIT the profile set is no better founded than the delta
method's interval): for each free parameter, fixed at
offsets d on a grid in log space, the SSE is minimised again over the others (scipy's
least_squares, started from the neighbouring grid point's solution); the 95% profile set is
{d : SSE(d) <= SSE* + 3.84 s^2} with s^2 = SSE* / (n - k) (Wald's threshold for one
parameter, on the fit's own residual variance). On a grid the set is bounded by the nearest
grid points outside it: its span is at most exp(d_out_high - d_out_low). The base shape's
parameters are fixed at their fit (they are fitted to the untrained rows alone); so are they in
the fit's own intervals. `joint_intervals` lifts that: a delta-method interval over the
untrained and trained rows together (on tables drawn from a known fit the conditional
intervals held the truth in 9 of 18 cases, the joint ones in 15 of 18;
docs/results/simulator/fit_settings_compared.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from analysis.fit import (
    JAC_STEPS,
    FitConfig,
    FitResult,
    Ladder,
    central_jacobian,
    exp_capped,
    ladder_of,
)
from analysis.fit_base import (
    FITTED_BASES,
    base_offsets,
    base_residuals,
    base_shape,
    untrained_regimes,
)
from analysis.fit_config import BOUNDS, MAX_CI_RATIO, FitError
from analysis.fit_decomposition import fit_residuals
from analysis.fit_model import (
    ROUGH_LIMIT,
    TRAINED_REGIMES,
    bounds_of,
    free_parameter_names,
    lr_name,
    observed_rows,
    sse_budget,
    task_difficulty,
)
from analysis.observed import BASE
from core.calibration import Z95

# log offsets from the optimum (both signs): factors 1.1 ... 5
PROFILE_OFFSETS = (0.1, 0.25, 0.5, 0.8, 1.15, 1.6)


@dataclass(frozen=True)
class ProfileConfig:
    offsets: tuple[float, ...] = PROFILE_OFFSETS  # log offsets, > 0, increasing
    max_nfev: int = 15  # least-squares evaluations per grid point
    diff_step: float = 0.03  # relative finite-difference step of the re-fits (rough endpoint)

    def __post_init__(self) -> None:
        steps = np.diff((0.0, *self.offsets))
        if not len(self.offsets) or np.any(steps <= 0):
            raise ValueError(f"offsets must be positive and increasing, got {self.offsets}")
        if self.max_nfev < 1 or not self.diff_step > 0:
            raise ValueError("max_nfev must be >= 1 and diff_step > 0")


@dataclass(frozen=True)
class SavedFitProblem:
    """A saved fit's least-squares problem, rebuilt: its settings (cfg, possibly changed from
    the fit's), the trained regimes and free parameters, the fitted point x0 and the search
    bounds (log space), the base offsets b_s the training starts from, and the fit's own 95%
    SSE budget (FitResult.budget, whatever cfg changes)."""

    cfg: FitConfig
    ladder: Ladder
    b_s: np.ndarray
    regimes: list[str]
    names: list[str]
    x0: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    budget: float

    @classmethod
    def of(cls, observed: pd.DataFrame, result: FitResult,
           cfg: FitConfig | None = None) -> SavedFitProblem:
        cfg = cfg or FitConfig(**result.config)
        ladder = ladder_of(observed)
        regimes = [r for r in TRAINED_REGIMES if r in set(observed["regime"])]
        names = free_parameter_names(regimes, cfg)
        fitted = result.params.set_index("name")["value"]
        n_cells = int(result.curves["residual"].notna()[result.curves["regime"] != BASE].sum())
        budget = (result.budget if math.isfinite(result.budget)  # older fits: accuracy only
                  else sse_budget(result.rmse**2 * n_cells, n_cells, len(names)))
        return cls(cfg, ladder, base_offsets(observed, ladder, cfg)[0], regimes, names,
                   np.log([float(fitted[n]) for n in names]),
                   np.log([bounds_of(n, cfg)[0] for n in names]),
                   np.log([bounds_of(n, cfg)[1] for n in names]),
                   budget)

    def lr_index(self, regime: str) -> int:
        """The position in `names` of `regime`'s free learning rate; FitError (one line)
        for a row without one (Base, or a row whose lr the lr_mode fixes)."""
        name = None if regime == BASE else lr_name(regime, self.cfg)
        if name not in self.names:
            raise FitError(f"{regime!r} is not a trained row with a free learning rate in this "
                           f"fit (lr_mode {self.cfg.lr_mode}; rows with a fitted learning "
                           f"rate: {', '.join(n for n in self.names if n.startswith('lr'))})")
        return self.names.index(name)

    def residuals(self, observed: pd.DataFrame, regimes: list[str] | None = None
                  ) -> Callable[[np.ndarray], np.ndarray]:
        """The fit's residual function over `regimes`' cells (default: every trained one)."""
        regimes = regimes or self.regimes
        return fit_residuals(observed, self.ladder, regimes, self.b_s, self.cfg, self.names)


def profile_fit(observed: pd.DataFrame, result: FitResult,
                cfg: ProfileConfig | None = None) -> tuple[pd.DataFrame, float, float]:
    """(table, SSE*, threshold): the table has name, offset (log), value, sse, inside for
    every free training parameter of `result` (fitted to `observed`) and grid point."""
    cfg = cfg or ProfileConfig()
    problem = SavedFitProblem.of(observed, result)
    names, x0, lo, hi = problem.names, problem.x0, problem.lo, problem.hi
    # every trained regime's cells, as in the fit's SSE (an untrained row adds a constant)
    residuals = problem.residuals(observed)

    def sse(x: np.ndarray) -> float:
        res = residuals(x)
        return float(res @ res)

    res0 = residuals(x0)
    sse0 = float(res0 @ res0)  # the fit's own SSE (analysis.fit: RMSE over the same cells)
    threshold = sse0 + sse_budget(sse0, res0.size, len(names))
    records = []
    for i, name in enumerate(names):
        others = [j for j in range(len(names)) if j != i]
        records.append({"name": name, "offset": 0.0, "value": math.exp(x0[i]), "sse": sse0})
        for sign in (1.0, -1.0):
            x = x0.copy()
            for d in cfg.offsets:
                xi = x0[i] + sign * d
                if not lo[i] <= xi <= hi[i]:
                    break
                x[i] = xi
                best = sse(x)
                if others:
                    def part(z: np.ndarray, x: np.ndarray = x,
                             others: list[int] = others) -> np.ndarray:
                        return residuals(_put(x, others, z))
                    z0 = np.clip(x[others], lo[others] + 1e-9, hi[others] - 1e-9)
                    sol = least_squares(part, z0, bounds=(lo[others], hi[others]),
                                        diff_step=cfg.diff_step, max_nfev=cfg.max_nfev)
                    if float(sol.fun @ sol.fun) < best:
                        best = float(sol.fun @ sol.fun)
                        x = _put(x, others, sol.x)
                records.append({"name": name, "offset": sign * d, "value": math.exp(xi),
                                "sse": best})
                if best > 3 * threshold:  # far outside: the grid beyond says nothing new
                    break
    table = pd.DataFrame(records).sort_values(["name", "offset"], kind="stable")
    table["inside"] = table["sse"] <= threshold
    return table.reset_index(drop=True), sse0, threshold


def profile_spans(table: pd.DataFrame) -> pd.DataFrame:
    """Per parameter: the outermost grid offsets inside the profile set, the nearest grid
    offsets outside beyond them (NaN: the grid or the bounds ended inside), and the span of
    the 95% set at most (exp(out_high - out_low); inf when a side is open)."""
    out = []
    for name, g in table.groupby("name", sort=False):
        inside = g.loc[g["inside"], "offset"]
        in_lo, in_hi = float(inside.min()), float(inside.max())
        beyond_hi = g.loc[(g["offset"] > in_hi) & ~g["inside"], "offset"]
        beyond_lo = g.loc[(g["offset"] < in_lo) & ~g["inside"], "offset"]
        out_hi = float(beyond_hi.min()) if len(beyond_hi) else math.nan
        out_lo = float(beyond_lo.max()) if len(beyond_lo) else math.nan
        span = math.exp(out_hi - out_lo) if len(beyond_hi) and len(beyond_lo) else math.inf
        out.append({"name": name, "value": float(g.loc[g["offset"] == 0, "value"].iloc[0]),
                    "inside_low": in_lo, "inside_high": in_hi, "outside_low": out_lo,
                    "outside_high": out_hi, "span_at_most": span,
                    "identified": span < MAX_CI_RATIO})
    return pd.DataFrame(out)


def joint_intervals(observed: pd.DataFrame, result: FitResult,
                    steps: tuple[float, ...] = JAC_STEPS) -> pd.DataFrame:
    """Delta-method intervals of a saved fit's free training parameters that carry the base
    shape's uncertainty (module docstring: the fit's own, and the profile, hold the base shape
    at its fit). Two blocks of residuals: the untrained rows (depending on the base shape
    only) and the trained rows (on both); J by central differences in log space at each of
    `steps` (the widest interval kept, as in the fit), each block scaled by its own
    s = sqrt(SSE / (n - k)), cov = (J^T J)^+. Returns name,
    value, conditional_span (the fit's), joint_low, joint_high, joint_span, at_bound (the
    fit's: the interval is then half outside the search range) and identified (as the fit
    counts it: under MAX_CI_RATIO, not at a bound, SSE roughness at most ROUGH_LIMIT)."""
    cfg = FitConfig(**result.config)
    if cfg.base not in FITTED_BASES:
        raise FitError(f"joint intervals need a fitted base shape (--base {', '.join(FITTED_BASES)}"
                       f"), not {cfg.base!r}")
    problem = SavedFitProblem.of(observed, result, cfg)
    fitted = result.params.set_index("name")
    base_names = list(FITTED_BASES[cfg.base])
    xb = np.log([float(fitted.loc[n, "value"]) for n in base_names])
    untrained = untrained_regimes(observed, cfg)
    rows = observed_rows(observed, problem.ladder, untrained)
    base_res = base_residuals(np.array([rows[r] for r in untrained]), cfg)
    trained = [r for r in problem.regimes if r not in untrained]
    d = task_difficulty(len(problem.ladder.names))

    def trained_res(x: np.ndarray) -> np.ndarray:  # x = (base, training), log space
        b_s = base_shape(cfg.base, x[:len(xb)], d)
        return fit_residuals(observed, problem.ladder, trained, b_s, cfg,
                             problem.names)(x[len(xb):])

    x = np.concatenate([xb, problem.x0])
    lo = np.concatenate([np.log([BOUNDS[n][0] for n in base_names]), problem.lo])
    hi = np.concatenate([np.log([BOUNDS[n][1] for n in base_names]), problem.hi])
    r_b, r_t = base_res(xb), trained_res(x)
    s_b = math.sqrt(float(r_b @ r_b) / max(r_b.size - len(xb), 1))
    s_t = math.sqrt(float(r_t @ r_t) / max(r_t.size - len(problem.names), 1))
    ses = []
    for step in steps:
        j_b = np.hstack([central_jacobian(base_res, xb, lo[:len(xb)], hi[:len(xb)], step),
                         np.zeros((r_b.size, len(problem.names)))]) / s_b
        jac = np.vstack([j_b, central_jacobian(trained_res, x, lo, hi, step) / s_t])
        ses.append(np.sqrt(np.clip(np.diag(np.linalg.pinv(jac.T @ jac)), 0, None)))
    se = np.max(ses, axis=0)[len(xb):]
    out = []
    for i, name in enumerate(problem.names):
        value = math.exp(problem.x0[i])
        half = Z95 * float(se[i])  # log space; a huge one would overflow
        span = exp_capped(2 * half)
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            conditional = float(np.float64(fitted.loc[name, "ci_high"])
                                / np.float64(fitted.loc[name, "ci_low"]))
        out.append({"name": name, "value": value, "conditional_span": conditional,
                    "joint_low": value * math.exp(-min(half, 700.0)),
                    "joint_high": value * exp_capped(half), "joint_span": span,
                    "at_bound": bool(fitted.loc[name, "at_bound"]),
                    # as the fit: not at a bound, and on an SSE smooth enough to read
                    "identified": bool(span < MAX_CI_RATIO and not fitted.loc[name, "at_bound"]
                                       and not fitted.loc[name, "sse_roughness"] > ROUGH_LIMIT)})
    return pd.DataFrame(out)


def _put(x: np.ndarray, idx: list[int], z: np.ndarray) -> np.ndarray:
    y = np.array(x, dtype=float)
    y[idx] = z
    return y
