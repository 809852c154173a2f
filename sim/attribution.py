"""Gradient attribution (DESIGN.md §3): ratios, the length landscape, and step breakdowns."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from sim import kernels as kn
from sim.model import AgentSpec
from sim.objectives import (
    UNNORMALISED_TOKEN_MODELS,
    ObjectiveConfig,
    exact_logit_gradients,
    token_weights,
)

PARAM_NAMES = ("theta_s", "theta_1", "theta_2")

# The paper's worked example (Appendix C; DESIGN §3)
APPENDIX_C_THETA = (0.4, 2.2, 1.4)
APPENDIX_C_REF = (0.3, 2.0, 1.2)
APPENDIX_C_ADVANTAGE = 0.5
APPENDIX_C_BETA_L = 8.0  # beta * L for sampling actions (beta = 1 for decisions)
APPENDIX_C_TRAJECTORY = (0b10, 2, 0)  # W -> RESAMPLE -> C -> STOP


def attribution_ratio(g: np.ndarray, atol: float = 1e-12) -> float | np.ndarray:
    """R_attr = |g_s| / mean(|g_1|, |g_2|) over the last axis (DESIGN §3).

    Components below `atol` count as zero (they are rounding noise, e.g. the k1 in-loss KL
    gradient, whose expectation is exactly 0): inf when only g_s is non-zero, NaN when the
    whole gradient vanishes (e.g. the KL term right after a reference reset). A float for
    one gradient (shape (3,)), an array for a batch (shape (..., 3)).
    """
    g = np.abs(np.asarray(g, float))
    g = np.where(g < atol, 0.0, g)
    num, den = g[..., 0], 0.5 * (g[..., 1] + g[..., 2])
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(den > 0, num / np.where(den > 0, den, 1.0),
                       np.where(num > 0, np.inf, np.nan))
    return float(out) if out.ndim == 0 else out


def attribution_by_length(lengths: np.ndarray, theta: np.ndarray, theta_ref: np.ndarray,
                          spec: AgentSpec, obj: ObjectiveConfig, kind: str,
                          method: str = "dp") -> pd.DataFrame:
    """Exact expected g_s, g_1, g_2 and the ratio of one objective term per L (L_C = L_W = L);
    `method` of sim.objectives.exact_logit_gradients."""
    rows = []
    for length in lengths:
        s = replace(spec, len_correct=float(length), len_wrong=float(length))
        g = exact_logit_gradients(theta, theta_ref, s, obj, method)[kind]
        rows.append({"L": float(length), "g_s": g[0], "g_1": g[1], "g_2": g[2],
                     "ratio": attribution_ratio(g)})
    return pd.DataFrame(rows)


def length_decomposition(theta, theta_ref, spec: AgentSpec, obj: ObjectiveConfig,
                         kind: str) -> dict[str, object]:
    """Why the per-token KL ratio saturates (DESIGN §2-§3).

    Token weights enter linearly, so with L_C = L_W = L every expected gradient is exactly
    affine in L: g(L) = g0 + L g1. For the KL in reward, g1 of a *decision* parameter is not
    zero: a RESAMPLE decision's return Q carries the penalties of the sampling actions that
    follow it, which scale with L. The ratio therefore grows ~linearly while L |g1_d| << |g0_d|
    and saturates at |g1_s| / mean(|g1_1|, |g1_2|) once L passes L*_d = |g0_d| / |g1_d|.
    Only without a loss normaliser (per-token, sequence): the normalisers of real trainers
    divide by a length-dependent |o| (docs/token_models.md), so g is not affine in L.
    """
    if obj.token_model not in UNNORMALISED_TOKEN_MODELS:
        raise ValueError(f"the affine decomposition g(L) = g0 + L g1 needs a token model "
                         f"without loss normaliser ({', '.join(UNNORMALISED_TOKEN_MODELS)}); "
                         f"{obj.token_model!r} divides by a length-dependent |o|")

    def grad(length: float) -> np.ndarray:
        s = replace(spec, len_correct=length, len_wrong=length)
        return exact_logit_gradients(theta, theta_ref, s, obj)[kind]

    g1 = grad(2.0) - grad(1.0)
    g0 = grad(1.0) - g1
    crossover = [float(abs(g0[i] / g1[i])) if abs(g1[i]) > 1e-15 else float("inf")
                 for i in (1, 2)]
    return {"g0": g0, "g1": g1, "asymptotic_ratio": attribution_ratio(g1),
            "crossover_L_theta_1": crossover[0], "crossover_L_theta_2": crossover[1]}


def action_name(param: int, glogp: float, correct: bool) -> str:
    if param == kn.PARAM_S:
        return "sample_correct" if correct else "sample_wrong"
    # a decision: STOP after correct has d log pi / d theta_1 = 1 - q1 > 0; RESAMPLE after
    # wrong has d log pi / d theta_2 = 1 - q2 > 0; the other two are negative.
    return "STOP" if (param == kn.PARAM_1) == (glogp > 0) else "RESAMPLE"


def kl_step_breakdown(trajectory: tuple[int, int, int], theta, theta_ref, spec: AgentSpec,
                      obj: ObjectiveConfig, beta: float = 1.0) -> pd.DataFrame:
    """Per step of one trajectory: immediate KL penalty r = -beta w k(x), return Q (summed
    backwards) and the in-reward contribution Q * d log pi / d theta (DESIGN §3), latest
    step first as in the paper's table."""
    mask, n, trunc = trajectory
    k = spec.max_attempts
    w_c, w_w = token_weights(spec, obj)
    param = np.empty(2 * k, np.int64)
    attempt = np.empty(2 * k, np.int64)
    glogp, prob, xdev, weight, r, q, dk = (np.empty(2 * k) for _ in range(7))
    nsteps = kn.walk_steps(mask, n, trunc, k, spec.final_sampled, np.asarray(theta, float),
                           np.asarray(theta_ref, float), w_c, w_w, param, glogp, prob, xdev,
                           weight, attempt)
    kn.steps_penalties_and_q(nsteps, xdev, weight * beta, attempt,
                             kn.ESTIMATORS[obj.kl_estimator], obj.kl_clamp, spec.gamma, r, q, dk)
    rows = []
    for t in range(nsteps - 1, -1, -1):
        correct = bool((mask >> attempt[t]) & 1)
        rows.append({
            "step": int(attempt[t]) + 1,
            "action": action_name(int(param[t]), glogp[t], correct),
            "param": PARAM_NAMES[param[t]],
            "immediate_penalty": r[t],
            "q_value": q[t],
            "kl_contribution": q[t] * glogp[t],
            "grad_log_prob": glogp[t],
        })
    return pd.DataFrame(rows)


def net_push_and_drag(steps: pd.DataFrame, advantage: float) -> pd.DataFrame:
    """Per parameter: reward push A * d log pi(tau), KL drag (sum of contributions), net."""
    rows = []
    for name in ("theta_s", "theta_2", "theta_1"):
        sel = steps[steps["param"] == name]
        push = advantage * sel["grad_log_prob"].sum()
        drag = sel["kl_contribution"].sum()
        rows.append({"param": name, "reward_push": push, "kl_drag": drag, "net": push + drag})
    return pd.DataFrame(rows)


def appendix_c() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The paper's worked example recomputed: (step table, net table). beta * L = 8 is set
    as L = 8 with beta = 1, k1, per-token model, K = 8, gamma = 1."""
    spec = AgentSpec(max_attempts=8, len_correct=APPENDIX_C_BETA_L, len_wrong=APPENDIX_C_BETA_L)
    obj = ObjectiveConfig(weights=(("kl", 1.0),), kl_estimator="k1", token_model="per-token")
    steps = kl_step_breakdown(APPENDIX_C_TRAJECTORY, APPENDIX_C_THETA, APPENDIX_C_REF, spec, obj)
    return steps, net_push_and_drag(steps, APPENDIX_C_ADVANTAGE)
