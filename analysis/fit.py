"""Fit the simulator to observed OOD curves (DESIGN §1, §2, §4: simulation mapped onto
observation).

Model (DESIGN.md §1, §2, §4):

1. Base offsets. Each task t of the observed ladder gets b(t) = (b_s(t), b_1, b_2). Accuracy
   alone does not identify (p, q1, q2) — one number per task cannot fix three — so q1 and q2 of
   the base model are *documented parameters* (`FitConfig.q1_base`, `q2_base`, the same on every
   task). `base = "floored"` (default): b_s(t) = logaddexp(slope * (d_half - t),
   logit(floor)), three parameters fitted by least squares of Acc_K (§4) to the untrained
   rows (the Base row, and SFT no-reflection where it is not trained, lr_mode below): p
   falls with difficulty down to a floor of a few percent, which is what the untrained rows
   show on the far tasks (Base and SFT no-reflection: 13 correct of 800 on T4-T7; a line
   without a floor predicts ~3, and with it RL's slow OOD decline cannot be reached through
   a kernel that decays with distance). `base = "linear"`: b_s(t) = slope * (d_half - t),
   two parameters; `base = "exact"`: b_s(t) is solved per task so that Acc_K(p, q1_base,
   q2_base) equals the Base row (0% / 100% clipped to `acc_floor`; solving the noisy 1-5%
   cells exactly reorders tasks 4 and 5).
2. Trained regimes. Each trained row is reproduced by training the agent from phi = 0 with the
   matching objective on the ID tasks, deterministically on exact expected gradients
   (`sim.dynamics.train_expected`) with the update budget of DESIGN §2 (default: Adam with a
   shared second moment, global gradient-norm clip 1.0 as in TRL and verl, 2000 steps at a
   learning rate of at most 0.05 (fit_config.ADAM_SMALL_STEP_LR: larger steps make the trained
   endpoint sensitive to its parameters), K = 16: the paper does not fix K,
   FitConfig.max_attempts says how 16 was chosen): SFT (no reflection) = sft on
   SFTData("no-reflection"), SFT (reflection) = sft on SFTData("reflection", ft_share;
   `mask_wrong_attempts`: no loss on the wrong first attempts, which otherwise pin p near 1/(1 +
   ft_share)), RL = the paper's run, surrogate + beta * KL with verl's low_var_kl (k3) in the
   loss, beta = 0.001 (core.regimes.PAPER_RL_KL). Transfer to OOD tasks goes only through the
   kernel of §1 (shared w_x frozen), with one length scale for sampling (ell_s) and one for both
   decisions (ell_d = ell_1 = ell_2), shared by all regimes: the network is the same, the
   objectives differ. `transfer = "global-decisions"`: ell_d = inf, each decision one trained
   logit shared by every task; `"flat-decisions"`: ell_d at the kernel's flat limit (the fit
   reports a lower bound on it: analysis.fit_bounds). A run in which a step moves p or q by
   more than 0.5 is chaos, not a result (DESIGN §2): it is flagged and its lr is not
   identified.
3. Least squares (scipy.optimize.least_squares, bounded, in log space, from the coarse grid's
   three best starts, keeping the best whose training is not chaos) of Acc_K against the
   observed accuracy over all (trained regime, task) cells (with `decomposition`, also the
   observed p, q1, q2 per task where the table measures them: analysis.fit_decomposition). Free:
   ell_s, ell_d and a learning rate per trained regime (the "amount of training" at a fixed
   number of steps; SGD: a fraction of its stability bound), analysis.fit_model names them;
   optionally beta.
   `lr_mode = "no-refl-bound"` (default): the SFT (no reflection) row, equal to the Base row
   within its intervals, identifies no learning rate, only an upper bound; it is not trained and
   the bound is reported (analysis.fit_bounds). `lr_mode = "sft-limits"`: that, and the SFT
   (reflection) row, whose SSE falls only slowly once trained past lr x steps ~ 50 (its free
   lr's interval spans 10^4x and more), is trained at the top of its lr range, the lower bound
   is reported with the row's SSE at half and twice the training (fit_bounds.plateau_check); the
   other parameters' intervals then hold at that amount of training only (ell_d trades against
   it). Uncertainty: cov = s^2 (J^T J)^+ in log space (J by central differences at the optimum,
   at each of JAC_STEPS, the widest interval kept; s^2 = SSR / (n - k)), a standard error by the
   delta method and a 95% interval exp(log x ± 1.96 se); a parameter at its bound has no
   standard error. Identified: inside its bounds with a 95% interval spanning less than 10x
   (MAX_CI_RATIO), on an SSE smooth enough at the 1% scale for an interval to mean anything
   (fit_model.sse_roughness, at most ROUGH_LIMIT of the interval's SSE budget; a shape no local
   interval can read). The base shape's parameters get their intervals from its own fit to the
   untrained rows (the training parameters' intervals are conditional on it;
   analysis.fit_profile.joint_intervals carries its uncertainty too).
   analysis.fit_profile checks the intervals without derivatives (profile likelihood).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from analysis.fit_base import FITTED_BASES, base_offsets, base_sampling_logits
from analysis.fit_bounds import fixed_lr_rows, flat_decisions_row, one_sided_bound
from analysis.fit_config import BOUNDS, MAX_CI_RATIO, FitConfig, FitError
from analysis.fit_decomposition import fit_residuals, observed_components, regime_residuals
from analysis.fit_model import (
    ROUGH_LIMIT,
    TRAINED_REGIMES,
    UNSTABLE_JUMP,
    Ladder,
    bounds_of,
    free_parameter_names,
    grid_starts,
    lr_name,
    max_jump,
    observed_rows,
    regime_objective,
    simulate_regime,
    sse_budget,
    sse_roughness,
)
from analysis.observed import BASE, RL, SFT_REFLECTION, check_observed
from core.calibration import Z95

__all__ = ["BOUNDS", "FitConfig", "FitError", "FitResult", "Ladder", "base_sampling_logits",
           "fit_observed", "free_parameter_names", "ladder_of", "observed_digest",
           "regime_objective", "simulate_regime"]

# The steps (log space: 0.3%, 1%, 3%) of the Jacobians behind the standard errors; each
# parameter keeps the widest of the three intervals. Where a trained endpoint is not smooth at
# small scales (large Adam steps: fit_model.sse_roughness), one difference step can read that
# jitter, not the trend, and call a parameter identified (or not) by chance. Identified must
# hold at every step.
JAC_STEPS = (0.003, 0.01, 0.03)
AT_BOUND = 1e-3  # log space
START = {"ell_s": 0.5, "ell_d": 3.0, "ell": 1.0, "beta": 0.001}
START_LR = {"lr": 0.03, "lr_frac": 0.1}


@dataclass
class FitResult:
    """Fitted values, per-task curves and residuals (JSON round trip: analysis.fit_io)."""

    params: pd.DataFrame  # name, value, se, ci_low, ci_high, identified, at_bound, free
    curves: pd.DataFrame  # regime, task, task_index, in_distribution, p, q1, q2, accuracy,
    #                       observed, ci_low, ci_high, residual
    rmse: float  # over the trained regimes' cells (what the free parameters fit)
    rmse_all: float  # including the Base row (fitted exactly up to the clipping)
    n_free: int
    n_params: int  # free + the per-task base offsets b_s(t)
    n_obs: int
    config: dict
    notes: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    observed_source: str = ""
    observed_sha256: str = ""  # observed_digest of the fitted table (the cache key's data part)
    # the 95% SSE budget (fit_model.sse_budget) over every residual the fit minimised, accuracy
    # and (FitConfig.decomposition) p, q1, q2 cells; NaN in fits saved before it was recorded
    budget: float = math.nan

    def summary(self) -> str:
        """Plain-text report: parameters with uncertainty, residuals, RMSE, parameter count."""
        lines = [f"fit of the simulator to {self.observed_source or 'the observed table'} "
                 f"({self.n_obs} cells, {self.wall_s:.1f} s)", "parameters (95% interval):"]
        for r in self.params.itertuples():
            if not r.free:  # a fixed setting, or a fixed value with its one-sided bound
                bound = one_sided_bound(r)
                what = ("(fixed)" if bound is None
                        else f"(not trained; 95% upper bound {bound[1]:.3g})" if bound[0] == "<="
                        else f"(at the kernel's flat limit; 95% lower bound {bound[1]:.3g})"
                        if r.name == "ell_d"
                        else f"(trained at the top of its range; 95% lower bound {bound[1]:.3g})")
                lines.append(f"  {r.name:<26} {r.value:.4g} {what}")
                continue
            if r.at_bound or not np.isfinite(r.se):
                unc = "at bound, no standard error: NOT identified"
            else:
                span = r.ci_high / r.ci_low if r.ci_low > 0 else math.inf
                rough = getattr(r, "sse_roughness", math.nan)
                unc = (f"± {r.se:.3g} [{r.ci_low:.3g}, {r.ci_high:.3g}] (x{span:.3g}"
                       + (f", SSE roughness {rough:.2f}" if np.isfinite(rough) else "")
                       + f"{'' if r.identified else ': NOT identified'})")
            lines.append(f"  {r.name:<26} {r.value:.4g} {unc}")
        lines.append("per-task residuals, observed - fitted (percentage points):")
        piv = self.curves.pivot_table(index="regime", columns="task", values="residual",
                                      sort=False) * 100
        piv = piv[sorted(piv.columns, key=lambda t: self._task_index(t))]
        lines.extend("  " + ln for ln in piv.round(1).to_string().splitlines())
        lines.append(f"RMSE (trained regimes) = {self.rmse * 100:.2f} pp; RMSE (all rows) = "
                     f"{self.rmse_all * 100:.2f} pp; parameters: {self.n_free} free + "
                     f"{self.n_params - self.n_free} base offsets = {self.n_params} for "
                     f"{self.n_obs} observed cells")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)

    def _task_index(self, task: str) -> int:
        sub = self.curves.loc[self.curves["task"] == task, "task_index"]
        return int(sub.iloc[0]) if len(sub) else 0


def observed_digest(observed: pd.DataFrame) -> str:
    """sha256 of an observed table's content (columns by name, rows sorted): what a cached
    fit must match to be reused, whatever the table's file is called."""
    table = observed.reindex(sorted(observed.columns, key=str), axis=1)
    lines = table.to_csv(index=False).splitlines()
    text = "\n".join([*lines[:1], *sorted(lines[1:])])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def ladder_of(observed: pd.DataFrame) -> Ladder:
    """Tasks by task_index; ID = the table's in_distribution flags (default: the first two)."""
    tasks = (observed.drop_duplicates("task").sort_values("task_index")[["task",
             "in_distribution"]])
    flags = tasks["in_distribution"]
    if flags.isna().any():
        ids = tuple(i < 2 for i in range(len(tasks)))
    else:
        ids = tuple(bool(v) for v in flags)
    if not any(ids):
        raise FitError("the observed table marks no in-distribution task")
    return Ladder(tuple(tasks["task"]), ids)


def fit_observed(observed: pd.DataFrame, cfg: FitConfig | None = None,
                 start: dict[str, float] | None = None) -> FitResult:
    """Fit base offsets and the free regime parameters to an observed accuracy table.

    `observed`: the tidy layout of analysis.observed (regime, task, task_index,
    in_distribution, accuracy, ci_low, ci_high). Needs a Base row; trained rows whose regime
    has no simulator objective are left out (with a note).
    """
    import numba

    cfg = cfg or FitConfig()
    t0 = time.time()
    check_observed(observed)
    ladder = ladder_of(observed)
    obs = observed.set_index(["regime", "task"])
    if BASE not in observed["regime"].unique():
        raise FitError("the observed table has no Base row: the base offsets need one")
    notes = [f"identifiability: accuracy alone does not identify (p, q1, q2) per task; the "
             f"base model's q1 = {cfg.q1_base} and q2 = {cfg.q2_base} are fixed, documented "
             "parameters and b_s(t) comes from the untrained rows"]
    base_acc = np.array([obs.loc[(BASE, t), "accuracy"] for t in ladder.names], float)
    b_s, base_sol, base_names, base_notes = base_offsets(observed, ladder, cfg)
    notes.extend(base_notes)
    regimes = [r for r in TRAINED_REGIMES if r in set(observed["regime"])]
    if SFT_REFLECTION in regimes and cfg.max_attempts < 2:
        raise FitError(f"the {SFT_REFLECTION} row needs max_attempts (--max-attempts) >= 2: "
                       "a reflection chain has two attempts (DESIGN §2)")
    skipped = sorted(set(observed["regime"]) - set(regimes) - {BASE})
    if skipped:
        notes.append(f"no simulator objective for {skipped}: left out of the fit")
    if not regimes:
        raise FitError("the observed table has no trained regime (SFT or RL rows) to fit")
    notes.extend(_setting_notes(regimes, cfg))
    names = free_parameter_names(regimes, cfg)
    start = {**START, **{n: _start_value(n) for n in names if n not in START}, **(start or {})}
    lo = np.log([bounds_of(n, cfg)[0] for n in names])
    hi = np.log([bounds_of(n, cfg)[1] for n in names])
    y = observed_rows(observed, ladder, regimes)
    residuals = fit_residuals(observed, ladder, regimes, b_s, cfg, names)

    def values_of(x: np.ndarray) -> dict[str, float]:
        return {n: float(np.exp(v)) for n, v in zip(names, x, strict=True)}

    comps = observed_components(observed, ladder, regimes) if cfg.decomposition else {}

    def sse(rows: list[str], vals: dict[str, float], run_cfg: FitConfig = cfg) -> float:
        # over the cells the least squares sees (with decomposition, the p, q1, q2 cells
        # too), counted as it counts them (a fitted NaN misses by 1), so that the start grid
        # and the one-sided bounds read the budget's own SSE
        return sum(float(np.nansum(regime_residuals(
            simulate_regime(r, ladder, b_s, run_cfg, vals), y[r], comps.get(r))**2))
            for r in rows)

    def _chaotic(vals: dict[str, float]) -> bool:
        return any(max_jump(r, ladder, b_s, cfg, vals) > UNSTABLE_JUMP for r in regimes)

    threads = numba.get_num_threads()
    numba.set_num_threads(1)  # the batches are small: threads cost more than they save
    try:
        starts = ([{**start, **g} for g in grid_starts(regimes, cfg, start, sse)[:cfg.starts]]
                  if cfg.grid_start and not cfg.quick else [start])
        sols = [least_squares(residuals, np.clip(np.log([s[n] for n in names]), lo, hi),
                              bounds=(lo, hi), method="trf", diff_step=1e-3,
                              max_nfev=cfg.effective_nfev, x_scale=1.0) for s in starts]
        sol = best_solution(sols, lambda x: _chaotic(values_of(x)))
    finally:
        numba.set_num_threads(threads)
    # the covariance's Jacobians: central differences at each of JAC_STEPS, the widest
    # interval kept (a trained endpoint is rough at small scales: see JAC_STEPS)
    jacobians = [central_jacobian(residuals, sol.x, lo, hi, h) for h in JAC_STEPS]
    # ... and the SSE's roughness at the 1% scale, where an interval's end is decided
    budget = sse_budget(float(sol.fun @ sol.fun), sol.fun.size, len(names))
    rough = sse_roughness(residuals, sol.x, lo, hi, budget)
    params = parameter_table(names, sol, lo, hi, cfg, jacobians, rough)
    if cfg.base in FITTED_BASES:
        base_lo = np.log([BOUNDS[n][0] for n in base_names])
        base_hi = np.log([BOUNDS[n][1] for n in base_names])
        base_rows = parameter_table(list(base_names), base_sol, base_lo, base_hi, cfg)
        params = pd.concat([base_rows[base_rows["free"]], params], ignore_index=True)
    vals = values_of(sol.x)
    rows, bound_notes = fixed_lr_rows(regimes, observed, ladder, base_acc, vals, sse, cfg,
                                      budget)
    if cfg.transfer == "flat-decisions":
        row, note = flat_decisions_row(regimes, vals, sse, cfg, budget)
        rows, bound_notes = [*rows, row], [*bound_notes, note]
    params = pd.concat([params, *rows], ignore_index=True)
    notes.extend(bound_notes)
    jumps = {r: max_jump(r, ladder, b_s, cfg, vals) for r in regimes}
    notes.append("largest one-step move of p or q while training: " + ", ".join(
        f"{r} {j:.2f}" for r, j in jumps.items()))
    chaos = [r for r, j in jumps.items() if j > UNSTABLE_JUMP]
    if chaos:  # DESIGN §2: chaos, not a result; its learning rate identifies nothing
        notes.append(f"UNSTABLE (a step moved p or q by more than {UNSTABLE_JUMP}): {chaos}")
        params.loc[params["name"].isin({lr_name(r, cfg) for r in chaos}), "identified"] = False
    free = params[params["free"]]
    rough_names = free.loc[free["sse_roughness"] > ROUGH_LIMIT, "name"]
    if len(rough_names):
        notes.append(f"SSE rough at the 1% scale (RMS off its quadratic > {ROUGH_LIMIT:g} of "
                     "the 95% interval's SSE budget): the intervals of " + ", ".join(
                         f"{n} ({v:.2f})" for n, v in zip(rough_names, free.loc[
                             rough_names.index, "sse_roughness"], strict=True))
                     + " mean nothing (analysis.fit_model.ROUGH_LIMIT)")
    if not free["identified"].all():
        notes.append("not identified (at a bound, no standard error, a 95% interval "
                     f"spanning {MAX_CI_RATIO:g}x or more, or an SSE too rough for one): "
                     + ", ".join(free.loc[~free["identified"], "name"]))
    curves = _curves(observed, ladder, b_s, cfg, vals, [BASE, *regimes])
    trained = curves[curves["regime"] != BASE]["residual"].dropna()
    allres = curves["residual"].dropna()
    if not sol.success:
        notes.append(f"optimiser stopped: {sol.message}")
    if len(sols) > 1:
        notes.append(f"starts: {len(sols)} local fits from the coarse grid's best points; "
                     "kept the lowest SSE not in chaos of " + ", ".join(
                         f"{float(s.fun @ s.fun):.4f}" + (" (chaos)" if _chaotic(values_of(s.x))
                                                          else "") for s in sols))
    if cfg.quick:
        notes.append("quick mode: few steps and evaluations; not a converged fit")
    n_free = int(params["free"].sum())
    n_offsets = len(ladder.names) if cfg.base == "exact" else 0
    return FitResult(params=params, curves=curves,
                     rmse=float(np.sqrt(np.mean(trained**2))),
                     rmse_all=float(np.sqrt(np.mean(allres**2))), n_free=n_free,
                     n_params=n_free + n_offsets, n_obs=int(len(allres)),
                     config=asdict(cfg), notes=notes, wall_s=time.time() - t0,
                     observed_source=str(observed["source"].iloc[0])
                     if "source" in observed.columns else "",
                     observed_sha256=observed_digest(observed), budget=budget)


def central_jacobian(fun: Callable[[np.ndarray], np.ndarray], x: np.ndarray, lo: np.ndarray,
                     hi: np.ndarray, step: float) -> np.ndarray:
    """d fun / d x by central differences of `step` (one-sided where x sits within `step` of
    a bound, so every evaluation stays inside the bounds)."""
    cols = []
    for i in range(len(x)):
        up, down = x.copy(), x.copy()
        up[i], down[i] = min(x[i] + step, hi[i]), max(x[i] - step, lo[i])
        cols.append((fun(up) - fun(down)) / (up[i] - down[i]))
    return np.column_stack(cols)


def best_solution(sols: list, chaotic: Callable[[np.ndarray], bool]) -> object:
    """The local fit with the lowest SSE among those whose training is not chaos (DESIGN §2:
    a run in chaos is not a result); the lowest SSE overall if every one is chaos."""
    return min(sols, key=lambda s: (chaotic(s.x), float(s.fun @ s.fun)))


def _start_value(name: str) -> float:
    kind = name.split("[")[0]  # lr[RL] -> lr, ell[RL] -> ell (transfer per-regime)
    return START_LR[kind] if kind in START_LR else START[kind]


def _setting_notes(regimes: list[str], cfg: FitConfig) -> list[str]:
    """What the trained regimes are, as run (DESIGN §2): optimiser, RL's KL, SGD's bound."""
    opt = cfg.optimiser_config(1.0).label
    out = [f"training: {opt}, {cfg.effective_steps} steps from the base model, exact "
           f"gradients at K = {cfg.max_attempts}, L = {cfg.length:g}"]
    if RL in regimes:
        kl = regime_objective(RL, cfg, cfg.beta)
        out.append(f"RL: surrogate + beta * KL with beta = {cfg.beta:g}, estimator "
                   f"{kl.kl_estimator} {kl.kl_placement} (the paper's run)")
    if cfg.optimiser == "sgd":
        out.append("SGD: lr_frac = lr / lr_max, lr_max = the stability bound of "
                   "sim.stability at the fitted length scales, so lr_frac <= 1")
    if cfg.lr_mode == "sft-shared":
        out.append("both SFT rows share one learning rate (one SFT recipe in the paper)")
    return out


def parameter_table(names: list[str], sol: object, lo: np.ndarray, hi: np.ndarray,
                    cfg: FitConfig, jacobians: list[np.ndarray] | None = None,
                    roughness: np.ndarray | None = None) -> pd.DataFrame:
    """name, value, se, ci_low, ci_high, identified, at_bound, free, sse_roughness: the
    free parameters (cov = s^2 (J^T J)^+ in log space, delta-method se, 95% interval
    exp(log x +- 1.96 se); with several `jacobians` (default: the solution's own), each
    parameter's largest se; identified = inside its bounds with an interval spanning less
    than MAX_CI_RATIO, on an SSE no rougher than ROUGH_LIMIT (fit_model.sse_roughness; NaN:
    not measured, a smooth closed form)), then the fixed settings."""
    x, fun = sol.x, sol.fun  # type: ignore[attr-defined]
    dof = max(fun.size - len(names), 1)
    se_log = np.max([np.sqrt(np.clip(np.diag(float(fun @ fun) / dof
                                             * np.linalg.pinv(jac.T @ jac)), 0, None))
                     for jac in (jacobians or [sol.jac])], axis=0)  # type: ignore[attr-defined]
    # within 0.1% of a bound counts as at it: the bounded solver stops short of a bound it
    # presses against, and an interval read there is half outside the search range
    at_bound = ((sol.active_mask != 0) | np.isclose(x, lo, atol=AT_BOUND)  # type: ignore[attr-defined]
                | np.isclose(x, hi, atol=AT_BOUND))
    rough = np.full(len(names), np.nan) if roughness is None else np.asarray(roughness)
    rows = []
    for i, n in enumerate(names):
        v = float(np.exp(x[i]))
        ok = not at_bound[i] and np.isfinite(se_log[i]) and se_log[i] > 0
        lo_ci = v * exp_capped(-Z95 * se_log[i]) if ok else float("nan")
        hi_ci = v * exp_capped(Z95 * se_log[i]) if ok else float("nan")
        smooth = not rough[i] > ROUGH_LIMIT
        rows.append({"name": n, "value": v, "se": v * se_log[i] if ok else float("nan"),
                     "ci_low": lo_ci, "ci_high": hi_ci,
                     "identified": bool(ok and smooth and lo_ci > 0
                                        and hi_ci / lo_ci < MAX_CI_RATIO),
                     "at_bound": bool(at_bound[i]), "free": True,
                     "sse_roughness": float(rough[i])})
    fixed = {"K": cfg.max_attempts, "q1_base": cfg.q1_base, "q2_base": cfg.q2_base,
             "L (tokens)": cfg.length, "steps": cfg.effective_steps}
    if not cfg.fit_beta:
        fixed["beta"] = cfg.beta
    rows.extend({"name": n, "value": float(v), "se": float("nan"), "ci_low": float("nan"),
                 "ci_high": float("nan"), "identified": False, "at_bound": False,
                 "free": False, "sse_roughness": float("nan")} for n, v in fixed.items())
    return pd.DataFrame(rows)


def _curves(observed: pd.DataFrame, ladder: Ladder, b_s: np.ndarray, cfg: FitConfig,
            vals: dict[str, float], regimes: list[str]) -> pd.DataFrame:
    """Per (regime, task): fitted p, q1, q2, accuracy, the observation and the residual."""
    obs = observed.set_index(["regime", "task"])
    rows = []
    for r in regimes:
        sim = simulate_regime(r, ladder, b_s, cfg, vals)
        for i, t in enumerate(ladder.names):
            o = obs.loc[(r, t)] if (r, t) in obs.index else None
            rows.append({"regime": r, "task": t, "task_index": i + 1,
                         "in_distribution": ladder.in_distribution[i],
                         "p": sim[i, 0], "q1": sim[i, 1], "q2": sim[i, 2],
                         "accuracy": sim[i, 3],
                         "observed": np.nan if o is None else float(o["accuracy"]),
                         "ci_low": np.nan if o is None else float(o["ci_low"]),
                         "ci_high": np.nan if o is None else float(o["ci_high"])})
    curves = pd.DataFrame(rows)
    curves["residual"] = curves["observed"] - curves["accuracy"]
    return curves


def exp_capped(x: float) -> float:
    """exp(x), inf where it would overflow (a huge interval's end)."""
    return math.exp(x) if x < 700 else math.inf
