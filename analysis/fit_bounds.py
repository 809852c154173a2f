"""One-sided bounds of the learning rates a fit fixes at one end of their range (DESIGN §4;
analysis.fit_model.fixed_lr): SFT (no reflection) untrained (lr 0), bounded above; with lr_mode
"sft-limits", SFT (reflection) trained at the top of its range, bounded below; and, with
transfer "flat-decisions", ell_d at the kernel's flat limit, bounded below. Each is a
one-parameter profile with the other values held at the fit: the value at which the SSE has
risen by the fit's 95% budget (fit_model.sse_budget)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import brentq

from analysis.fit_config import BOUNDS, FLAT_ELL_D, FitConfig
from analysis.fit_model import Ladder, bounds_of, fixed_lr, lr_name
from analysis.observed import SFT_NO_REFLECTION, SFT_REFLECTION


def fixed_lr_rows(regimes: list[str], observed: pd.DataFrame, ladder: Ladder,
                  base_acc: np.ndarray, vals: dict[str, float], sse: Callable[..., float],
                  cfg: FitConfig, budget: float) -> tuple[list[pd.DataFrame], list[str]]:
    """The parameter table's rows of the fit's fixed learning rates, with their one-sided
    bounds, and the notes that say what they are (`sse(rows, values[, cfg])`: the fit's
    SSE over `rows`)."""
    rows, notes = [], []
    if fixed_lr(SFT_NO_REFLECTION, cfg) == 0 and SFT_NO_REFLECTION in regimes:
        bound = one_sided_lr_bound(SFT_NO_REFLECTION, vals, sse, cfg, budget)
        rows.append(bound_row(SFT_NO_REFLECTION, cfg, 0.0, bound))
        notes.append(_untrained_note(observed, ladder, base_acc, bound))
    if fixed_lr(SFT_REFLECTION, cfg) and SFT_REFLECTION in regimes:
        bound, note = plateau_check(SFT_REFLECTION, vals, sse, cfg, budget)
        rows.append(bound_row(SFT_REFLECTION, cfg, bound, math.inf))
        notes.append(note)
    return rows, notes


def _untrained_note(observed: Any, ladder: Ladder, base_acc: np.ndarray, bound: float) -> str:
    row = observed[observed["regime"] == SFT_NO_REFLECTION].set_index("task")
    outside = [t for t, a in zip(ladder.names, base_acc, strict=True) if t in row.index
               and not row.loc[t, "ci_low"] <= a <= row.loc[t, "ci_high"]]
    return (f"{SFT_NO_REFLECTION} is not trained (lr = 0: the row is the base model's; the "
            "observed Base row lies "
            + (f"outside this row's 95% intervals on {outside}" if outside else
               "inside this row's 95% intervals on every task")
            + f"); the data bound its lr above only: lr <= {bound:.3g} (95%, profile: the "
            "row's SSE may grow by 1.96^2 s^2)")


def one_sided_lr_bound(regime: str, vals: dict[str, float],
                       sse: Callable[[list[str], dict[str, float]], float], cfg: FitConfig,
                       budget: float) -> float:
    """The 95% bound of the learning rate of a row whose lr is fixed at one end of its range
    (fit_model.fixed_lr; DESIGN §4: a one-parameter profile, the other values held at the
    fit): the lr at which the row's SSE has risen by `budget` (fit_model.sse_budget) over its
    SSE at the fixed lr. An untrained row (lr 0): the upper bound, inf where even the search
    range's top stays within the budget. A row trained at the top of its lr range (lr_mode
    sft-limits): the lower bound, 0 where even the range's bottom stays within it."""
    name = lr_name(regime, cfg, bounded=True)
    assert name is not None
    limit = sse([regime], vals) + budget

    def excess(z: float) -> float:
        return sse([regime], {**vals, name: math.exp(z)}) - limit

    lo, hi = np.log(bounds_of(name, cfg))
    return bound_along(excess, *((hi, lo) if fixed_lr(regime, cfg) else (lo, hi)))


def bound_along(excess: Callable[[float], float], near: float, far: float) -> float:
    """A one-sided 95% bound (module docstring): the root in log space of `excess` (the SSE
    with the parameter at exp(z), minus the SSE at its fixed end, minus the budget) between
    `near` (the search range's end beside the fixed one) and `far`; where even `far` stays
    within the budget, the range bounds nothing: 0 (a lower bound) or inf (an upper one)."""
    if excess(far) <= 0:
        return 0.0 if far < near else math.inf
    if excess(near) > 0:
        return float(np.exp(near))
    return float(np.exp(brentq(excess, min(near, far), max(near, far), xtol=1e-3)))


def plateau_check(regime: str, vals: dict[str, float],
                  sse: Callable[..., float], cfg: FitConfig,
                  budget: float) -> tuple[float, str]:
    """(the 95% lower bound of the lr of a row trained at the top of its lr range, a note):
    the row's SSE (`sse(rows, values, cfg)`) at half, all and twice its amount of training
    lr x steps (twice: twice the steps), and whether it is on a plateau (its lower bound at
    most half its lr: the data cannot tell half the training from all of it; else more steps
    are needed, FitConfig.steps)."""
    lr = fixed_lr(regime, cfg)
    name = lr_name(regime, cfg, bounded=True)
    assert lr and name is not None
    bound = one_sided_lr_bound(regime, vals, sse, cfg, budget)
    # twice the steps actually run (quick mode caps steps, so it is switched off here)
    twice = replace(cfg, steps=2 * cfg.effective_steps, quick=False)
    along = [sse([regime], {**vals, name: lr / 2}), sse([regime], vals),
             sse([regime], vals, twice)]
    tau = lr * cfg.effective_steps
    plateau = bound <= lr / 2
    return bound, (
        f"{regime} is trained at the top of its lr range (lr_mode {cfg.lr_mode}): lr = {lr:g} for "
        f"{cfg.effective_steps} steps (lr x steps = {tau:g}); its row's SSE at lr x steps = "
        f"{tau / 2:g} / {tau:g} / {2 * tau:g}: " + " / ".join(f"{v:.4f}" for v in along)
        + f"; the data bound its lr below only: lr >= {bound:.3g} (95%, profile: the row's "
        "SSE may grow by 1.96^2 s^2)" + ("" if plateau else
        "; NOT on a plateau (the bound is above half its lr): raise --steps"))


def bound_row(regime: str, cfg: FitConfig, low: float, high: float) -> pd.DataFrame:
    """The parameter table's row of a fixed learning rate and its one-sided 95% bound
    (`one_sided_lr_bound`): trained at fit_model.fixed_lr (`fixed_row`)."""
    return fixed_row(lr_name(regime, cfg, bounded=True), fixed_lr(regime, cfg), low, high)


def fixed_row(name: str, value: float, low: float, high: float) -> pd.DataFrame:
    """The parameter table's row of a value the fit fixes at one end of its range, with its
    one-sided 95% interval [low, high] (0 or inf at the open end): not free, not
    identified, no standard error (`one_sided_bound` reads it)."""
    return pd.DataFrame([{"name": name, "value": value, "se": float("nan"),
                          "ci_low": low, "ci_high": high, "identified": False,
                          "at_bound": False, "free": False}])


def one_sided_bound(row: Any) -> tuple[str, float] | None:
    """How a row of the parameter table that is not free reads (module docstring): ("<=",
    its 95% upper bound) for an untrained lr (value 0), (">=", its 95% lower bound) for a
    value fixed at the top of its range (ci_high inf), None for a fixed setting without an
    interval. Every caption and summary of a fit reads its fixed rows through this."""
    if pd.isna(row.ci_high):
        return None
    if row.value == 0:
        return "<=", float(row.ci_high)
    return ">=", float(row.ci_low)


def flat_decisions_row(regimes: list[str], vals: dict[str, float], sse: Callable[..., float],
                       cfg: FitConfig, budget: float) -> tuple[pd.DataFrame, str]:
    """(the parameter table's ell_d row, a note) of a fit with transfer "flat-decisions"
    (ell_d = FLAT_ELL_D, DESIGN §1): its 95% lower bound, the ell_d below which the trained
    rows' SSE (`sse(rows, values, cfg)`, run with ell_d free, transfer "shared") has risen by
    `budget` over the fit's; 0 where even the search range's bottom stays within it."""
    shared = replace(cfg, transfer="shared")
    limit = sse(regimes, {**vals, "ell_d": FLAT_ELL_D}, shared) + budget

    def excess(z: float) -> float:
        return sse(regimes, {**vals, "ell_d": math.exp(z)}, shared) - limit

    bound = bound_along(excess, math.log(FLAT_ELL_D), math.log(BOUNDS["ell_d"][0]))
    note = (f"ell_d at the kernel's flat limit ({FLAT_ELL_D:g}: each decision transfers to "
            f"every task alike); the data bound it below only: ell_d >= {bound:.3g} (95%, "
            "profile: the SSE may grow by 1.96^2 s^2)")
    return fixed_row("ell_d", FLAT_ELL_D, bound, math.inf), note
