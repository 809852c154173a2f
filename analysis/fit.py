"""Fit the simulator to observed OOD curves (DESIGN §1, §2, §4: simulation mapped onto
observation).

Model (DESIGN.md §1, §2, §4):

1. Base offsets. Each task t of the observed ladder gets b(t) = (b_s(t), b_1, b_2). Accuracy
   alone does not identify (p, q1, q2) — one number per task cannot fix three — so q1 and q2 of
   the base model are *documented parameters* (`FitConfig.q1_base`, `q2_base`, the same on every
   task) and b_s(t) is solved so that the forced-stop accuracy Acc_K(p, q1_base, q2_base) of
   §4 equals the Base row exactly (observed 0% / 100% are clipped to `acc_floor`).
2. Trained regimes. Each trained row is reproduced by training the agent from phi = 0 with the
   matching objective on the ID tasks, deterministically on exact expected gradients
   (`sim.dynamics.train_expected`): SFT (no reflection) = sft on SFTData("no-reflection"),
   SFT (reflection) = sft on SFTData("reflection", ft_share), RL = surrogate + beta * kl.
   Transfer to OOD tasks goes only through the kernel of §1 (shared w_x frozen), with one
   length scale for sampling (ell_s) and one for both decisions (ell_d = ell_1 = ell_2),
   shared by all regimes: the network is the same, the objectives differ.
3. Least squares (scipy.optimize.least_squares, bounded, in log space) of the two-stage
   accuracy Acc_K (§4) against the observed accuracy over all (trained regime, task) cells.
   Free: ell_s, ell_d and a learning rate per trained regime (the "amount of training" at a
   fixed number of steps); optionally beta. Uncertainty: cov = s^2 (J^T J)^+ in log space
   (J at the optimum, s^2 = SSR / (n - k)), reported as a standard error by the delta method
   and a 95% interval exp(log x ± 1.96 se); a parameter at its bound has no standard error.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import brentq, least_squares
from scipy.special import logit

from analysis.fit_config import BOUNDS, FitConfig, FitError
from analysis.observed import BASE, RL, SFT_NO_REFLECTION, SFT_REFLECTION, check_observed
from core.calibration import Z95
from core.regimes import TRAINED
from core.twostage import accuracy_forced_stop
from sim.columns import column, split_column

# the regimes a fit trains (core.regimes), by their paper row, in Table 1 order
TRAINED_REGIMES = tuple(r.paper_row for r in TRAINED)
GRID_ELL_S = (0.7, 2.0, 7.0)
GRID_ELL_D = (1.0, 4.0, 16.0)
GRID_LR = {SFT_NO_REFLECTION: (1e-4, 1e-3, 1e-2, 0.05),
           SFT_REFLECTION: (1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3), RL: (0.3, 1.0, 3.0, 10.0, 30.0)}
START = {"ell_s": 0.5, "ell_d": 3.0, "beta": 0.001, column("ell", SFT_NO_REFLECTION): 2.0,
         column("ell", SFT_REFLECTION): 1.0, column("ell", RL): 3.0,
         column("lr", SFT_NO_REFLECTION): 1e-3, column("lr", SFT_REFLECTION): 1e-3,
         column("lr", RL): 0.3}


@dataclass(frozen=True)
class Ladder:
    """The observed task ladder: names in order, difficulty = position, ID flags."""

    names: tuple[str, ...]
    in_distribution: tuple[bool, ...]


@dataclass
class FitResult:
    """Fitted values, per-task curves and residuals (JSON round trip: analysis.fit_io)."""

    params: pd.DataFrame  # name, value, stderr, ci_low, ci_high, at_bound, free
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

    def summary(self) -> str:
        """Plain-text report: parameters with uncertainty, residuals, RMSE, parameter count."""
        lines = [f"fit of the simulator to {self.observed_source or 'the observed table'} "
                 f"({self.n_obs} cells, {self.wall_s:.1f} s)", "parameters (95% interval):"]
        for r in self.params.itertuples():
            if not r.free:
                lines.append(f"  {r.name:<26} {r.value:.4g} (fixed)")
                continue
            unc = ("at bound, no standard error" if r.at_bound or not np.isfinite(r.stderr)
                   else f"± {r.stderr:.3g} [{r.ci_low:.3g}, {r.ci_high:.3g}]")
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


# ------------------------------------------------------------------------------- model


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


def regime_objective(regime: str, cfg: FitConfig, beta: float) -> Any:
    """The simulator objective reproducing a trained regime, given by its paper row (see the
    module docstring): the regime table's term spec (core.regimes) with the KL weight `beta`
    and its SFT data (reflection data with `cfg.ft_share` F->T chains). KL estimator and
    placement stay the ObjectiveConfig defaults (k1 in the reward, the paper's theory)."""
    from sim.objectives import ObjectiveConfig, SFTData

    found = next((r for r in TRAINED if r.paper_row == regime), None)
    if found is None or found.objective is None:
        raise FitError(f"no simulator objective for regime {regime!r}")
    extra = {}
    if found.sft_data is not None:
        extra["sft_data"] = SFTData(found.sft_data, ft_share=cfg.ft_share)
    return ObjectiveConfig.parse(found.objective, beta=beta, **extra)


@lru_cache(maxsize=4096)
def _simulate_cached(regime: str, ladder: Ladder, b_s: tuple[float, ...], cfg: FitConfig,
                     ell_s: float, ell_d: float, lr: float, beta: float) -> np.ndarray:
    from sim.dynamics import train_expected
    from sim.model import AgentSpec, TaskLadder, TransferConfig

    b1, b2 = logit(cfg.q1_base), logit(cfg.q2_base)
    lad = TaskLadder(ladder.names, tuple(float(i + 1) for i in range(len(ladder.names))),
                     ladder.in_distribution, tuple((b, b1, b2) for b in b_s))
    spec = AgentSpec(ladder=lad, transfer=TransferConfig((ell_s, ell_d, ell_d),
                                                          (False, False, False)),
                     max_attempts=cfg.max_attempts, len_correct=cfg.length,
                     len_wrong=cfg.length, coupling=cfg.coupling)
    phi0 = spec.initial_params()
    steps = cfg.effective_steps
    with np.errstate(over="ignore"):
        phi, _ = train_expected(spec, regime_objective(regime, cfg, beta), phi0, steps,
                                cfg.optimiser_config(lr), record_every=steps)
    probs = 1 / (1 + np.exp(-np.clip(spec.task_logits(phi), -50, 50)))
    acc = accuracy_forced_stop(probs[:, 0], probs[:, 1], probs[:, 2], cfg.max_attempts)
    out = np.column_stack([probs, acc])
    out.setflags(write=False)
    return out


def simulate_regime(regime: str, ladder: Ladder, b_s: np.ndarray, cfg: FitConfig,
                    values: dict[str, float]) -> np.ndarray:
    """(T, 4) array of p, q1, q2, Acc_K per task after training `regime` with `values`."""
    if regime == BASE:
        b1, b2 = logit(cfg.q1_base), logit(cfg.q2_base)
        p = 1 / (1 + np.exp(-np.asarray(b_s)))
        q1, q2 = np.full_like(p, 1 / (1 + math.exp(-b1))), np.full_like(p, 1 / (1 + math.exp(-b2)))
        return np.column_stack([p, q1, q2, accuracy_forced_stop(p, q1, q2, cfg.max_attempts)])
    if cfg.transfer == "per-regime":
        ell_s = ell_d = values[column("ell", regime)]
    else:
        ell_s, ell_d = values["ell_s"], values["ell_d"]
    return _simulate_cached(regime, ladder, tuple(round(float(b), 12) for b in b_s), cfg,
                            _r(ell_s), _r(ell_d),
                            _r(values[column("lr", regime)]), _r(values.get("beta", cfg.beta)))


def _exp(x: float) -> float:
    return math.exp(x) if x < 700 else math.inf


def _r(x: float) -> float:
    return float(f"{x:.12g}")  # stable cache keys


def free_parameter_names(regimes: list[str], cfg: FitConfig) -> list[str]:
    if cfg.transfer == "per-regime":
        names = [n for r in regimes for n in (column("ell", r), column("lr", r))]
    else:
        names = ["ell_s", "ell_d"] + [column("lr", r) for r in regimes]
    if cfg.fit_beta and RL in regimes:
        names.append("beta")
    return names


def _bounds(name: str) -> tuple[float, float]:
    parts = split_column(name)  # lr[RL] -> lr; ell_s -> ell_s
    return BOUNDS[parts[0] if parts else name]


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
             "parameters and b_s(t) is solved from the Base row"]
    base_acc = np.array([obs.loc[(BASE, t), "accuracy"] for t in ladder.names], float)
    b_s = base_sampling_logits(base_acc, cfg)
    regimes = [r for r in TRAINED_REGIMES if r in set(observed["regime"])]
    if SFT_REFLECTION in regimes and cfg.max_attempts < 2:
        raise FitError(f"the {SFT_REFLECTION} row needs max_attempts (--max-attempts) >= 2: "
                       "a reflection chain has two attempts (DESIGN §2)")
    skipped = sorted(set(observed["regime"]) - set(regimes) - {BASE})
    if skipped:
        notes.append(f"no simulator objective for {skipped}: left out of the fit")
    if not regimes:
        raise FitError("the observed table has no trained regime (SFT or RL rows) to fit")
    names = free_parameter_names(regimes, cfg)
    start = {**START, **(start or {})}
    x0 = np.log([np.clip(start[n], *_bounds(n)) for n in names])
    lo = np.log([_bounds(n)[0] for n in names])
    hi = np.log([_bounds(n)[1] for n in names])
    y = {r: np.array([obs.loc[(r, t), "accuracy"] if (r, t) in obs.index else np.nan
                      for t in ladder.names], float) for r in regimes}

    def values_of(x: np.ndarray) -> dict[str, float]:
        return {n: float(np.exp(v)) for n, v in zip(names, x, strict=True)}

    def residuals(x: np.ndarray) -> np.ndarray:
        vals = values_of(x)
        res = [simulate_regime(r, ladder, b_s, cfg, vals)[:, 3] - y[r] for r in regimes]
        out = np.concatenate(res)
        return np.nan_to_num(out[np.isfinite(np.concatenate([y[r] for r in regimes]))], nan=1.0)

    def regime_sse(r: str, vals: dict[str, float]) -> float:
        res = simulate_regime(r, ladder, b_s, cfg, vals)[:, 3] - y[r]
        return float(np.nansum(res**2))

    def grid_start() -> dict[str, float]:
        """Coarse grid; the lr of each regime only moves that regime, so it is chosen per
        regime given the length scales."""
        best: tuple[float, dict[str, float]] = (math.inf, {})
        combos = ([{"ell_s": a, "ell_d": b} for a in GRID_ELL_S for b in GRID_ELL_D]
                  if cfg.transfer == "shared" else [{}])
        for ells in combos:
            total, chosen = 0.0, dict(ells)
            for r in regimes:
                cands = []
                for lr in GRID_LR[r]:
                    for ell in (GRID_ELL_S if cfg.transfer == "per-regime" else (None,)):
                        vals = {**start, **ells, column("lr", r): lr}
                        if ell is not None:
                            vals[column("ell", r)] = ell
                        cands.append((regime_sse(r, vals), {column("lr", r): lr} |
                                      ({} if ell is None else {column("ell", r): ell})))
                sse, pick = min(cands, key=lambda c: c[0])
                total += sse
                chosen |= pick
            if total < best[0]:
                best = (total, chosen)
        return best[1]

    threads = numba.get_num_threads()
    numba.set_num_threads(1)  # the batches are small: threads cost more than they save
    try:
        if cfg.grid_start and not cfg.quick:
            start = {**start, **grid_start()}
            x0 = np.log([np.clip(start[n], *_bounds(n)) for n in names])
        sol = least_squares(residuals, x0, bounds=(lo, hi), method="trf", diff_step=1e-3,
                            max_nfev=cfg.effective_nfev, x_scale=1.0)
    finally:
        numba.set_num_threads(threads)
    n_obs_trained = sol.fun.size
    k = len(names)
    dof = max(n_obs_trained - k, 1)
    s2 = float(sol.fun @ sol.fun) / dof
    cov = s2 * np.linalg.pinv(sol.jac.T @ sol.jac)
    se_log = np.sqrt(np.clip(np.diag(cov), 0, None))
    at_bound = (sol.active_mask != 0) | np.isclose(sol.x, lo, atol=1e-6) | \
        np.isclose(sol.x, hi, atol=1e-6)
    vals = values_of(sol.x)
    rows = []
    for i, n in enumerate(names):
        v = vals[n]
        se = float("nan") if at_bound[i] else v * se_log[i]
        rows.append({"name": n, "value": v, "stderr": se,
                     "ci_low": float("nan") if at_bound[i] else v * _exp(-Z95 * se_log[i]),
                     "ci_high": float("nan") if at_bound[i] else v * _exp(Z95 * se_log[i]),
                     "at_bound": bool(at_bound[i]), "free": True})
    fixed = {"K": cfg.max_attempts, "q1_base": cfg.q1_base, "q2_base": cfg.q2_base,
             "L (tokens)": cfg.length, "steps": cfg.effective_steps}
    if not cfg.fit_beta:
        fixed["beta"] = cfg.beta
    rows.extend({"name": n, "value": float(v), "stderr": float("nan"), "ci_low": float("nan"),
                 "ci_high": float("nan"), "at_bound": False, "free": False}
                for n, v in fixed.items())
    params = pd.DataFrame(rows)
    if at_bound.any():
        notes.append("at a bound (not identified by these data): "
                     + ", ".join(n for n, b in zip(names, at_bound, strict=True) if b))
    curves = []
    for r in [BASE, *regimes]:
        sim = simulate_regime(r, ladder, b_s, cfg, vals)
        for i, t in enumerate(ladder.names):
            o = obs.loc[(r, t)] if (r, t) in obs.index else None
            curves.append({"regime": r, "task": t, "task_index": i + 1,
                           "in_distribution": ladder.in_distribution[i],
                           "p": sim[i, 0], "q1": sim[i, 1], "q2": sim[i, 2],
                           "accuracy": sim[i, 3],
                           "observed": np.nan if o is None else float(o["accuracy"]),
                           "ci_low": np.nan if o is None else float(o["ci_low"]),
                           "ci_high": np.nan if o is None else float(o["ci_high"])})
    curves = pd.DataFrame(curves)
    curves["residual"] = curves["observed"] - curves["accuracy"]
    trained = curves[curves["regime"] != BASE]["residual"].dropna()
    allres = curves["residual"].dropna()
    if not sol.success:
        notes.append(f"optimiser stopped: {sol.message}")
    if cfg.quick:
        notes.append("quick mode: few steps and evaluations; not a converged fit")
    return FitResult(params=params, curves=curves,
                     rmse=float(np.sqrt(np.mean(trained**2))),
                     rmse_all=float(np.sqrt(np.mean(allres**2))), n_free=k,
                     n_params=k + len(ladder.names), n_obs=int(len(allres)),
                     config=asdict(cfg), notes=notes, wall_s=time.time() - t0,
                     observed_source=str(observed["source"].iloc[0])
                     if "source" in observed.columns else "",
                     observed_sha256=observed_digest(observed))
