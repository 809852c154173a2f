"""The model the fit evaluates (DESIGN §1, §2, §4), from the base offsets (analysis.fit_base):
the simulator objective of each trained regime, and the trained agent's per-task (p, q1, q2,
Acc_K) for given values of the free parameters. analysis.fit does the least squares; the
module docstring there states the model.

Free parameters, by name (`free_parameter_names`):
  ell_s, ell_d   length scales of sampling and decisions (transfer "shared")
  ell            one length scale for both (transfer "single": ell_d = ell_s)
  ell[<row>]     one length scale per regime (transfer "per-regime")
  ell_s          alone with transfer "global-decisions": ell_d = inf, each decision (q1, q2)
                 is one trained logit shared by every task (sim.model's logit agent); with
                 "flat-decisions": ell_d = FLAT_ELL_D, the kernel flat over the ladder (its
                 data bound it below only: analysis.fit_bounds.flat_decisions_row)
  lr[<row>]      Adam's learning rate of a regime; with lr_mode "sft-shared" the two SFT rows
                 share lr[SFT] (the paper trains both with one SFT recipe, DESIGN §5)
  lr_frac[<row>] plain SGD: the learning rate as a fraction of the regime's stability bound
                 (sim.stability, DESIGN §2), so no fitted SGD run is in chaos
  beta           the KL coefficient of RL (fit_beta only)
With lr_mode "no-refl-bound" the SFT (no reflection) row has no free parameter: it is the
untrained base model's (lr = 0), and analysis.fit reports an upper bound on its lr. With
"sft-limits" the SFT (reflection) row has none either: Table 1 bounds its amount of training
below only (its SSE falls only slowly once trained past lr x steps ~ 50), so it is trained at
its lr's upper bound and analysis.fit reports a lower bound (`fixed_lr`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from scipy.special import logit

from analysis.fit_config import (
    BOUNDS,
    ELL_S_ONLY_TRANSFERS,
    FLAT_ELL_D,
    REFLECTION_AT_TOP_LR_MODES,
    UNTRAINED_NO_REFLECTION_MODES,
    FitConfig,
    FitError,
)
from analysis.observed import BASE, RL, SFT_NO_REFLECTION, SFT_REFLECTION
from core.calibration import Z95
from core.regimes import TRAINED
from core.twostage import accuracy_forced_stop
from sim.columns import column, split_column
from sim.population import UNSTABLE_JUMP  # noqa: F401  (re-exported: the fit flags chaos)

# the regimes a fit trains (core.regimes), by their paper row, in Table 1 order
TRAINED_REGIMES = tuple(r.paper_row for r in TRAINED)
SFT_ROWS = (SFT_NO_REFLECTION, SFT_REFLECTION)
SHARED_SFT = "SFT"  # the name of the SFT rows' shared learning rate: lr[SFT]
# the coarse grid of starting points (`grid_starts`)
GRID_ELL = (0.7, 2.0, 7.0)
GRID_ELL_D = (1.0, 4.0, 16.0)
GRID_LR = {"lr": (0.003, 0.01, 0.03, 0.1, 0.3, 0.5), "lr_frac": (0.01, 0.03, 0.1, 0.3, 1.0)}


def task_difficulty(n_tasks: int) -> np.ndarray:
    """d(t) = t, the task's position on the ladder (DESIGN §1): the fit's difficulty axis,
    which the base shape (analysis.fit_base.base_shape) and the transfer kernels read."""
    return np.arange(1, n_tasks + 1, dtype=float)


@dataclass(frozen=True)
class Ladder:
    """The observed task ladder: names in order, difficulty = position (`task_difficulty`),
    ID flags."""

    names: tuple[str, ...]
    in_distribution: tuple[bool, ...]


def observed_rows(observed: Any, ladder: Ladder, regimes: list[str]) -> dict[str, np.ndarray]:
    """Each regime's observed accuracy on every task of `ladder`, in order (NaN: a cell the
    table lacks)."""
    obs = observed.set_index(["regime", "task"])
    return {r: np.array([obs.loc[(r, t), "accuracy"] if (r, t) in obs.index else np.nan
                         for t in ladder.names], float) for r in regimes}


def trained_residuals(regimes: list[str], ladder: Ladder, b_s: np.ndarray, cfg: FitConfig,
                      names: list[str], y: dict[str, np.ndarray]
                      ) -> Callable[[np.ndarray], np.ndarray]:
    """The fit's residual function: x (log values of the free parameters `names`) -> fitted
    minus observed Acc_K over every observed cell of `regimes` (y: observed_rows), in
    regime-then-task order (`fitted_minus_observed`: a fitted NaN counts as a residual of 1)."""
    seen = np.isfinite(np.concatenate([y[r] for r in regimes]))

    def residuals(x: np.ndarray) -> np.ndarray:
        vals = {n: float(np.exp(v)) for n, v in zip(names, x, strict=True)}
        out = np.concatenate([fitted_minus_observed(simulate_regime(r, ladder, b_s, cfg,
                                                                    vals)[:, 3], y[r])
                              for r in regimes])
        return out[seen]

    return residuals


def fitted_minus_observed(fitted: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """The fit's residuals, fitted minus observed: NaN where a cell is not observed, and 1
    where it is but the simulation gave NaN (a training that overflowed counts as a miss of 1,
    the largest a probability can miss by, so that no search reads it as a fit)."""
    diff = np.asarray(fitted, float) - observed
    return np.where(np.isnan(fitted) & ~np.isnan(observed), 1.0, diff)


def sse_budget(sse: float, n_cells: int, n_free: int) -> float:
    """Z95^2 s^2 with s^2 = SSE / (n - k): how far the SSE may rise over its minimum
    inside a 95% interval of one parameter (DESIGN §4; the fit's delta method, its profile,
    its roughness check and an untrained row's bound all read it)."""
    return Z95**2 * sse / max(n_cells - n_free, 1)


# The roughness check of the fit's intervals (DESIGN §2, §4): the SSE along each free training
# parameter on a 1% grid in log space (+-10%), less its least-squares quadratic; the RMS of
# what is left, over the 95% interval's SSE budget (sse_budget), is the parameter's roughness.
# Above ROUGH_LIMIT a 1% move changes the SSE by a tenth of the budget or more, so where the
# interval ends is set by that jitter, not by the trend the delta method (or a profile)
# reads: the interval means nothing and the parameter is not identified. (Measured: with
# Adam's shared second moment and the global clip, once a step moves p or q by about 0.1,
# nearby learning rates part early in training and end on different trajectories; neither a
# mean over the last steps nor a decaying lr removes it; docs/results/simulator/
# fit_settings_compared.md. FitConfig.max_adam_lr keeps the fit below it.)
ROUGH_OFFSETS = tuple(float(v) for v in np.round(np.linspace(-0.1, 0.1, 21), 4))
ROUGH_LIMIT = 0.1


def sse_roughness(residuals: Callable[[np.ndarray], np.ndarray], x: np.ndarray, lo: np.ndarray,
                  hi: np.ndarray, budget: float,
                  offsets: tuple[float, ...] = ROUGH_OFFSETS) -> np.ndarray:
    """Per coordinate of x: RMS deviation of SSE(x + d e_i) from its least-squares quadratic
    in d (over `offsets` inside the bounds), divided by `budget` (module note above)."""
    out = np.full(len(x), np.nan)
    for i in range(len(x)):
        d = np.array([o for o in offsets if lo[i] <= x[i] + o <= hi[i]])
        if len(d) < 5 or not budget > 0:
            continue
        sse = []
        for o in d:
            z = np.array(x, dtype=float)
            z[i] += o
            r = residuals(z)
            sse.append(float(r @ r))
        trend = np.polyval(np.polyfit(d, sse, 2), d)
        out[i] = float(np.sqrt(np.mean((np.array(sse) - trend) ** 2))) / budget
    return out


def regime_objective(regime: str, cfg: FitConfig, beta: float) -> Any:
    """The simulator objective reproducing a trained regime, given by its paper row: the
    regime table's term spec (core.regimes) with the KL weight `beta`, the KL estimator and
    placement of the paper's run where the regime has one (RL: k3 in the loss, verl's
    low_var_kl, DESIGN §2, §5), and its SFT data (reflection data with `cfg.ft_share` F->T
    chains)."""
    from sim.objectives import ObjectiveConfig, SFTData

    found = next((r for r in TRAINED if r.paper_row == regime), None)
    if found is None or found.objective is None:
        raise FitError(f"no simulator objective for regime {regime!r}")
    extra: dict[str, Any] = {}
    if found.sft_data is not None:
        extra["sft_data"] = SFTData(found.sft_data, ft_share=cfg.ft_share,
                                    mask_wrong_attempts=cfg.mask_wrong_attempts)
    if found.kl is not None:
        extra["kl_estimator"] = found.kl.estimator
        extra["kl_placement"] = found.kl.placement
    return ObjectiveConfig.parse(found.objective, beta=beta, **extra)


def agent_spec(ladder: Ladder, b_s: tuple[float, ...], cfg: FitConfig, ell_s: float,
               ell_d: float) -> Any:
    """The fit's agent (DESIGN §1): difficulty = position, shared w_x frozen, per-ID-task
    u_x trained (a component with ell = inf: its shared w_x alone, trained), base offsets
    (b_s(t), logit q1_base, logit q2_base)."""
    from sim.model import AgentSpec, TaskLadder, TransferConfig

    b1, b2 = logit(cfg.q1_base), logit(cfg.q2_base)
    lad = TaskLadder(ladder.names, tuple(task_difficulty(len(ladder.names)).tolist()),
                     ladder.in_distribution, tuple((b, b1, b2) for b in b_s))
    scales = (ell_s, ell_d, ell_d)  # ell = inf: one shared logit, trained (sim.model)
    return AgentSpec(ladder=lad, transfer=TransferConfig(scales,
                                                         tuple(math.isinf(e) for e in scales)),
                     max_attempts=cfg.max_attempts, len_correct=cfg.length,
                     len_wrong=cfg.length, coupling=cfg.coupling)


@lru_cache(maxsize=4096)
def _simulate_cached(regime: str, ladder: Ladder, b_s: tuple[float, ...], cfg: FitConfig,
                     ell_s: float, ell_d: float, lr: float, beta: float
                     ) -> tuple[np.ndarray, float]:
    """((T, 4) p, q1, q2, Acc_K after training, the largest one-step move of any task's p or
    q during training: above UNSTABLE_JUMP the run is chaos, not a result, DESIGN §2)."""
    from sim.dynamics import train_expected
    from sim.stability import sgd_lr_bound

    spec = agent_spec(ladder, b_s, cfg, ell_s, ell_d)
    obj = regime_objective(regime, cfg, beta)
    if cfg.optimiser == "sgd":  # lr is a fraction of the stability bound (DESIGN §2)
        lr = lr * sgd_lr_bound(spec, obj)
    steps = cfg.effective_steps
    with np.errstate(over="ignore"):
        phi, hist = train_expected(spec, obj, spec.initial_params(), steps,
                                   cfg.optimiser_config(lr), record_every=1)
    cols = [column(c, t) for t in ladder.names for c in ("p", "q1", "q2")]
    jump = float(np.nanmax(np.abs(np.diff(hist[cols].to_numpy(), axis=0)), initial=0.0))
    probs = 1 / (1 + np.exp(-np.clip(spec.task_logits(phi), -50, 50)))
    acc = accuracy_forced_stop(probs[:, 0], probs[:, 1], probs[:, 2], cfg.max_attempts)
    out = np.column_stack([probs, acc])
    out.setflags(write=False)
    return out, jump


def fixed_lr(regime: str, cfg: FitConfig) -> float | None:
    """The learning rate of a row whose training Table 1 bounds on one side only (module
    docstring): 0 for an untrained row, its lr's upper bound for a row trained onto its
    range (lr_mode sft-limits); None for a row whose lr is free."""
    if regime == SFT_NO_REFLECTION and cfg.lr_mode in UNTRAINED_NO_REFLECTION_MODES:
        return 0.0
    if regime == SFT_REFLECTION and cfg.lr_mode in REFLECTION_AT_TOP_LR_MODES:
        return bounds_of(column("lr_frac" if cfg.optimiser == "sgd" else "lr", regime), cfg)[1]
    return None


def lr_name(regime: str, cfg: FitConfig, bounded: bool = False) -> str | None:
    """The free parameter that sets `regime`'s learning rate (module docstring); None for
    a row whose lr is fixed (`fixed_lr`), unless `bounded` (the name its one-sided bound is
    reported under)."""
    if fixed_lr(regime, cfg) is not None and not bounded:
        return None
    row = SHARED_SFT if cfg.lr_mode == "sft-shared" and regime in SFT_ROWS else regime
    return column("lr_frac" if cfg.optimiser == "sgd" else "lr", row)


def length_scales(regime: str, cfg: FitConfig, values: dict[str, float]) -> tuple[float, float]:
    """(ell_s, ell_d) of a regime under cfg.transfer."""
    if cfg.transfer == "per-regime":
        return values[column("ell", regime)], values[column("ell", regime)]
    if cfg.transfer == "single":
        return values["ell"], values["ell"]
    if cfg.transfer == "global-decisions":
        return values["ell_s"], math.inf
    if cfg.transfer == "flat-decisions":
        return values["ell_s"], FLAT_ELL_D
    return values["ell_s"], values["ell_d"]


def simulate_regime(regime: str, ladder: Ladder, b_s: np.ndarray, cfg: FitConfig,
                    values: dict[str, float]) -> np.ndarray:
    """(T, 4) array of p, q1, q2, Acc_K per task after training `regime` with `values`."""
    lr = training_lr(regime, cfg, values)
    if not lr:  # the base model, or a row that is not trained
        p = 1 / (1 + np.exp(-np.asarray(b_s)))
        q1, q2 = np.full_like(p, cfg.q1_base), np.full_like(p, cfg.q2_base)
        return np.column_stack([p, q1, q2, accuracy_forced_stop(p, q1, q2, cfg.max_attempts)])
    return _run(regime, ladder, b_s, cfg, values, lr)[0]


def max_jump(regime: str, ladder: Ladder, b_s: np.ndarray, cfg: FitConfig,
             values: dict[str, float]) -> float:
    """The largest one-step move of p or q while training `regime` (0 if untrained)."""
    lr = training_lr(regime, cfg, values)
    return _run(regime, ladder, b_s, cfg, values, lr)[1] if lr else 0.0


def training_lr(regime: str, cfg: FitConfig, values: dict[str, float]) -> float | None:
    """The lr `regime` trains with: its value in `values` (a free parameter, or a fixed row's
    lr given to search its one-sided bound), else its `fixed_lr`; None for the Base row."""
    name = None if regime == BASE else lr_name(regime, cfg, bounded=True)
    if name is None:
        return None
    if name in values:
        return values[name]
    fixed = fixed_lr(regime, cfg)
    if fixed is None:
        raise KeyError(f"no value for {name}, the learning rate of {regime!r}")
    return fixed


def _run(regime: str, ladder: Ladder, b_s: np.ndarray, cfg: FitConfig,
         values: dict[str, float], lr: float) -> tuple[np.ndarray, float]:
    ell_s, ell_d = length_scales(regime, cfg, values)
    return _simulate_cached(regime, ladder, tuple(round(float(b), 12) for b in b_s), cfg,
                            _r(ell_s), _r(ell_d), _r(lr), _r(values.get("beta", cfg.beta)))


def _r(x: float) -> float:
    return float(f"{x:.12g}")  # stable cache keys


def free_parameter_names(regimes: list[str], cfg: FitConfig) -> list[str]:
    """The fit's free parameters for these trained regimes (module docstring), in order."""
    if cfg.transfer == "per-regime":
        names = [column("ell", r) for r in regimes if lr_name(r, cfg) is not None]
    elif cfg.transfer == "single":
        names = ["ell"]
    elif cfg.transfer in ELL_S_ONLY_TRANSFERS:
        names = ["ell_s"]
    else:
        names = ["ell_s", "ell_d"]
    names += [n for n in dict.fromkeys(lr_name(r, cfg) for r in regimes) if n is not None]
    if cfg.fit_beta and RL in regimes:
        names.append("beta")
    return names


def grid_starts(regimes: list[str], cfg: FitConfig, start: dict[str, float],
                sse: Callable[[list[str], dict[str, float]], float]) -> list[dict[str, float]]:
    """Starting points from a coarse grid, best (lowest SSE) first: one per combination of
    length scales, with each learning rate chosen on the grid given them (a learning rate
    moves only its own regimes). `sse(rows, values)` is the fit's SSE over `rows`."""
    by_lr: dict[str, list[str]] = {}
    for r in regimes:
        name = lr_name(r, cfg)
        if name is not None:  # an untrained row has no learning rate to choose
            by_lr.setdefault(name, []).append(r)
    if cfg.transfer == "shared":
        combos = [{"ell_s": a, "ell_d": b} for a in GRID_ELL for b in GRID_ELL_D]
    elif cfg.transfer == "single":
        combos = [{"ell": a} for a in (*GRID_ELL, GRID_ELL_D[-1])]
    elif cfg.transfer in ELL_S_ONLY_TRANSFERS:
        combos = [{"ell_s": a} for a in GRID_ELL]
    else:
        combos = [{}]
    ranked = []
    for ells in combos:
        total, chosen = 0.0, dict(ells)
        for lr, rows in by_lr.items():
            ell_cands = ([{column("ell", r): e for r in rows} for e in GRID_ELL]
                         if cfg.transfer == "per-regime" else [{}])
            cands = [(sse(rows, {**start, **ells, **ell, lr: v}), {lr: v, **ell})
                     for v in grid_lrs(lr, cfg) for ell in ell_cands]
            err, pick = min(cands, key=lambda c: c[0])
            total += err
            chosen |= pick
        ranked.append((total, chosen))
    return [c for _, c in sorted(ranked, key=lambda t: t[0])]


def grid_lrs(name: str, cfg: FitConfig) -> tuple[float, ...]:
    """The coarse grid's learning rates for `name` inside its search bounds (`bounds_of`):
    GRID_LR, with the points above the top replaced by the top itself (Adam's max_adam_lr)."""
    lo, hi = bounds_of(name, cfg)
    return tuple(sorted({min(v, hi) for v in GRID_LR[name.split("[")[0]] if v >= lo}))


def bounds_of(name: str, cfg: FitConfig) -> tuple[float, float]:
    """Search bounds of a free parameter (analysis.fit_config.BOUNDS)."""
    parts = split_column(name)  # lr[RL] -> lr; ell_s -> ell_s
    kind = parts[0] if parts else name
    if kind == "lr" and cfg.optimiser == "adam":  # the small-step regime (FitConfig)
        return BOUNDS["adam_lr"][0], min(BOUNDS["adam_lr"][1], cfg.max_adam_lr)
    return BOUNDS[kind]
