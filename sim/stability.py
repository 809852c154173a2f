"""The learning-rate bound of plain SGD (DESIGN.md §2, "Update budget": a learning rate at
which p or q moves by more than 0.5 in one step is chaos, not a result).

Derivation. Gradient ascent phi <- phi + lr grad F on a function whose Hessian has spectral
norm at most C is stable (no step overshoots a maximum by more than it started from) for
lr < 2 / C. For the token-weighted log-likelihood of DESIGN §2 the curvature in one logit is
exact: d^2/dtheta^2 [w log sigmoid(+-theta)] = -w p (1 - p), at most w / 4 per action, so a
term of weight lambda whose trajectories hold n sampling actions (n_d decisions) has logit
curvature at most h_s = lambda w(L) n / 4 on theta_s and h_d = lambda n_d / 4 on theta_1,
theta_2. Through logits(t) = b(t) + J_t phi (DESIGN §1) the Hessian of the ID-mean objective
is mean_t J_t^T H_t J_t <= mean_t J_t^T diag(h) J_t, hence

    lr < lr_max = 2 / lambda_max(mean_{t in ID} J_t^T diag(h) J_t)
               = 8 / (w(L) n ||J||^2)      for one token-weighted term on theta_s.

n is the data's mean count for SFT/DFT (terms on a data set) and K, the most a trajectory can
hold, for terms on the agent's own samples; KL and the surrogate (not token-weighted: w = 1)
get the same allowance, so the bound stays finite and is dominated by the length-weighted
terms. The bound is exact for SFT on F->T chains (p* = 1/2 is a fixed point with curvature
w n / 4, tests/test_update_budget.py) and conservative elsewhere. Adam needs no bound: its
step is at most about lr per parameter whatever the gradient's scale.

Choice (README "Update budget"): SGD keeps the theory's step lr * g and a learning rate above
lr_max at the grid's longest answer is refused in one line, rather than rescaling SGD's step
by 1/L, which would hide the length weighting the study measures.
"""

from __future__ import annotations

import numpy as np

from sim.model import AgentSpec
from sim.objectives import ObjectiveConfig, token_weights
from sim.optim import OptimiserConfig
from sim.terms import BY_KIND, DATA


def logit_curvature_bounds(spec: AgentSpec, obj: ObjectiveConfig) -> np.ndarray:
    """(h_s, h_1, h_2): bounds on the objective's curvature in each logit (module docstring)."""
    w_tokens = max(token_weights(spec, obj))
    h = np.zeros(3)
    for kind, weight in obj.weights:
        term = BY_KIND[kind]
        if term.source == DATA:
            _, ns, _, dw = obj.sft_data.trajectories(spec.max_attempts)
            n = float(np.dot(ns, dw) / dw.sum())  # mean attempts (= decisions) per example
        else:
            n = float(spec.max_attempts)
        w = w_tokens if term.token_weighted else 1.0
        h += weight * np.array([w * n, n, n]) / 4.0
    return h


def sgd_lr_bound(spec: AgentSpec, obj: ObjectiveConfig) -> float:
    """lr_max = 2 / lambda_max(mean_{t in ID} J_t^T diag(h) J_t) (module docstring); inf
    where the objective has no curvature (all weights 0)."""
    h = logit_curvature_bounds(spec, obj)
    jac = spec.jacobians()[spec.ladder.id_indices]  # (n_id, 3, P)
    hess = np.einsum("tip,i,tiq->pq", jac, h, jac) / len(jac)
    top = float(np.linalg.eigvalsh(hess)[-1]) if hess.size else 0.0
    return 2.0 / top if top > 0 else float("inf")


def check_sgd_lr(spec: AgentSpec, obj: ObjectiveConfig, opt: OptimiserConfig,
                 name: str | None = None) -> None:
    """Refuse plain SGD with a learning rate above `sgd_lr_bound` (one line, DESIGN §2);
    `name` names the objective in the message (default: its terms)."""
    if opt.name != "sgd":
        return
    bound = sgd_lr_bound(spec, obj)
    if opt.lr > bound:
        length = max(spec.len_correct, spec.len_wrong)
        raise ValueError(
            f"SGD lr {opt.lr:g} is above the stability bound {bound:.3g} of "
            f"{name or '+'.join(obj.kinds)} at L = {length:g} (lr_max = 8 / (w(L) n ||J||^2), "
            "sim.stability, DESIGN §2): lower the lr or the lengths, or use adam")
