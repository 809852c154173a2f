"""One agent's optimiser update inside the population kernel (sim.optim.ascent_step,
DESIGN.md §2 "Update budget"): SGD or Adam, gradient ascent, global-norm clipping."""

from __future__ import annotations

import numpy as np
from numba import njit

OPT_SGD, OPT_ADAM = 0, 1
V_PER_PARAMETER, V_SHARED = 0, 1  # Adam's second moment (DESIGN §2, "Update budget")


# no_cfunc_wrapper: kernels here are called from Python or from other kernels, never as
# C function pointers, so the C wrapper Numba builds by default is not compiled (cold start)
@njit(cache=True, no_cfunc_wrapper=True)
def optimiser_step(phi, m, v, grad, opt_kind, lr, beta1, beta2, eps, second_moment,
                   max_grad_norm, step):
    """One agent's update in place (sim.optim.ascent_step, DESIGN §2 "Update budget"):
    clip grad to global L2 norm `max_grad_norm` (0: off), then SGD phi += lr g or Adam with a
    per-parameter or shared (one scalar: mean_j g_j^2, kept in every entry of v) second
    moment. `grad` is rescaled in place by the clip."""
    n_params = phi.shape[0]
    if max_grad_norm > 0.0:
        sq = 0.0
        for j in range(n_params):
            sq += grad[j] * grad[j]
        norm = np.sqrt(sq)
        if norm > max_grad_norm:
            for j in range(n_params):
                grad[j] *= max_grad_norm / norm
    if opt_kind == OPT_SGD:
        for j in range(n_params):
            phi[j] += lr * grad[j]
        return
    c1 = 1.0 - beta1**step
    c2 = 1.0 - beta2**step
    mean_sq = 0.0
    for j in range(n_params):
        mean_sq += grad[j] * grad[j] / n_params
    for j in range(n_params):
        gj = grad[j]
        m[j] = beta1 * m[j] + (1.0 - beta1) * gj
        v[j] = beta2 * v[j] + (1.0 - beta2) * (mean_sq if second_moment == V_SHARED else gj * gj)
        phi[j] += lr * (m[j] / c1) / (np.sqrt(v[j] / c2) + eps)
