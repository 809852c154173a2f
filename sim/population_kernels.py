"""Batched Numba step over a whole population of DS agents (DESIGN.md §1-§3).

Structure of arrays: agent `a`'s parameters are row `phi[a]`, its settings are entries of
per-agent vectors, and one `prange` loop over agents does sampling, per-term gradients and the
optimiser update. No Python runs per agent, which is what makes a population of thousands of
heterogeneous learners cheap (see benchmarks/bench_population.py).

Per agent and step: `n_queries` queries, each on an in-distribution task chosen round-robin
(so every ID task carries equal weight, DESIGN §1), each a group of G trajectories sampled
from the agent's own splitmix64 stream (sim.rng) -- results do not depend on the thread count.
The per-trajectory gradient terms come from `sim.kernels.trajectory_terms`; the objective's
terms are then formed exactly as in `sim.objectives.mc_logit_gradients`, except that SFT/DFT
use the exact expectation over the (at most two) data trajectories, which is cheaper and
noise-free. PPO clipping is not modelled: one on-policy update per group makes every ratio 1.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from sim import kernels as kn
from sim.rng import threshold53

# term indices: the order of sim.objectives.OBJECTIVE_KINDS
K_SURROGATE, K_KL, K_SFT, K_DFT, K_NSR, K_PSR = 0, 1, 2, 3, 4, 5
N_KINDS = 6

OPT_SGD, OPT_ADAM = 0, 1


@njit(cache=True, inline="always")
def _task_logits(jac_t, off_t, phi_a, out):
    """logits(t) = b(t) + J_t phi (sim.model.AgentSpec.task_logits for one task)."""
    for x in range(3):
        acc = off_t[x]
        for j in range(phi_a.shape[0]):
            acc += jac_t[x, j] * phi_a[j]
        out[x] = acc


@njit(cache=True)
def step_agent(
    a,
    phi,
    ref_phi,
    adam_m,
    adam_v,
    step,
    states,
    jac,
    offsets,
    id_tasks,
    active,
    term_w,
    w_c,
    w_w,
    gamma,
    max_attempts,
    final_sampled,
    group_size,
    n_queries,
    std_scaling,
    std_ddof,
    adv_eps,
    estimator,
    kl_in_reward,
    clamp,
    data_masks,
    data_ns,
    data_w,
    opt_kind,
    lr,
    beta1,
    beta2,
    eps,
    grads_out,
    reward_out,
):
    """One training step of agent `a`, in place (the body of `population_step`)."""
    n_params = phi.shape[1]
    n_id = id_tasks.shape[0]
    g = group_size
    bufs = np.empty((7, 2 * max_attempts))
    ibufs = np.empty((2, 2 * max_attempts), dtype=np.int64)
    terms = np.empty((g, kn.N_TERMS, 3))
    dterm = np.empty((kn.N_TERMS, 3))
    rewards = np.empty(g)
    logits = np.empty(3)
    ref_logits = np.empty(3)
    gq = np.zeros((N_KINDS, 3))
    grad_phi = np.zeros(n_params)
    st = states[a]
    reward_sum = 0.0
    for k in range(N_KINDS):
        for x in range(3):
            grads_out[a, k, x] = 0.0
    for q in range(n_queries):
        # round-robin over ID tasks, continued across steps
        t = id_tasks[((step - 1) * n_queries + q) % n_id]
        _task_logits(jac[a, t], offsets[a, t], phi[a], logits)
        _task_logits(jac[a, t], offsets[a, t], ref_phi[a], ref_logits)
        # integer thresholds: sim.kernels.sample_trajectory compares raw 53-bit draws
        p = threshold53(kn.sigmoid(logits[0]))
        q1 = threshold53(kn.sigmoid(logits[1]))
        q2 = threshold53(kn.sigmoid(logits[2]))
        rmean = 0.0
        for i in range(g):
            m, n, tr, st = kn.sample_trajectory(st, p, q1, q2, max_attempts, final_sampled)
            rewards[i], _ = kn.trajectory_terms(
                m,
                n,
                tr,
                max_attempts,
                final_sampled,
                logits,
                ref_logits,
                w_c[a],
                w_w[a],
                estimator,
                clamp,
                gamma[a],
                terms[i],
                bufs,
                ibufs,
            )
            rmean += rewards[i]
        rmean /= g
        reward_sum += rmean
        scale = 1.0
        if std_scaling:
            var = 0.0
            for i in range(g):
                var += (rewards[i] - rmean) ** 2
            scale = 1.0 / (np.sqrt(var / (g - std_ddof)) + adv_eps)
        for k in range(N_KINDS):
            for x in range(3):
                gq[k, x] = 0.0
        kl_col = kn.T_KL_REWARD if kl_in_reward else kn.T_KL_LOSS
        for i in range(g):
            adv = (rewards[i] - rmean) * scale
            for x in range(3):
                gq[K_SURROGATE, x] += adv * terms[i, kn.T_SCORE, x]
                gq[K_KL, x] += terms[i, kl_col, x]
                if rewards[i] == 0.0:
                    gq[K_NSR, x] -= terms[i, kn.T_LIKELIHOOD, x]
                else:
                    gq[K_PSR, x] += terms[i, kn.T_LIKELIHOOD, x]
        for k in (K_SURROGATE, K_KL, K_NSR, K_PSR):
            for x in range(3):
                gq[k, x] /= g
        if active[a, K_SFT] or active[a, K_DFT]:
            for d in range(data_w.shape[1]):
                wd = data_w[a, d]
                if wd == 0.0:
                    continue
                kn.trajectory_terms(
                    data_masks[a, d],
                    data_ns[a, d],
                    0,
                    max_attempts,
                    final_sampled,
                    logits,
                    ref_logits,
                    w_c[a],
                    w_w[a],
                    estimator,
                    clamp,
                    gamma[a],
                    dterm,
                    bufs,
                    ibufs,
                )
                for x in range(3):
                    gq[K_SFT, x] += wd * dterm[kn.T_LIKELIHOOD, x]
                    gq[K_DFT, x] += wd * dterm[kn.T_DFT, x]
        # weighted total on the logits, pulled back to phi by the chain rule (J_t^T g)
        for x in range(3):
            tot = 0.0
            for k in range(N_KINDS):
                if active[a, k]:
                    tot += term_w[a, k] * gq[k, x]
                    grads_out[a, k, x] += gq[k, x] / n_queries
            for j in range(n_params):
                grad_phi[j] += jac[a, t, x, j] * tot / n_queries
    states[a] = st
    reward_out[a] = reward_sum / n_queries
    if opt_kind[a] == OPT_SGD:
        for j in range(n_params):
            phi[a, j] += lr[a] * grad_phi[j]
    else:
        c1 = 1.0 - beta1[a] ** step
        c2 = 1.0 - beta2[a] ** step
        for j in range(n_params):
            gj = grad_phi[j]
            adam_m[a, j] = beta1[a] * adam_m[a, j] + (1.0 - beta1[a]) * gj
            adam_v[a, j] = beta2[a] * adam_v[a, j] + (1.0 - beta2[a]) * gj * gj
            phi[a, j] += lr[a] * (adam_m[a, j] / c1) / (np.sqrt(adam_v[a, j] / c2) + eps[a])


def _population_step_impl(
    phi,
    ref_phi,
    adam_m,
    adam_v,
    step,
    states,
    jac,
    offsets,
    id_tasks,
    active,
    term_w,
    w_c,
    w_w,
    gamma,
    max_attempts,
    final_sampled,
    group_size,
    n_queries,
    std_scaling,
    std_ddof,
    adv_eps,
    estimator,
    kl_in_reward,
    clamp,
    data_masks,
    data_ns,
    data_w,
    opt_kind,
    lr,
    beta1,
    beta2,
    eps,
    grads_out,
    reward_out,
):
    """One training step of every agent, in place.

    phi, ref_phi, adam_m, adam_v: (A, P) parameters, reference parameters, Adam moments.
    step: 1-based step count (Adam's bias correction). states: (A,) uint64 RNG streams.
    jac (A, T, 3, P), offsets (A, T, 3): each agent's affine map phi -> task logits.
    id_tasks (n_id,): in-distribution task indices. active (A, N_KINDS) bool: terms present.
    term_w (A, N_KINDS): the objective's weights (GRPO: surrogate 1, kl beta).
    w_c, w_w, gamma (A,): token weights w(L_C), w(L_W) (DESIGN §2) and per-attempt discount.
    data_masks, data_ns, data_w (A, D): SFT data trajectories and their probabilities.
    opt_kind, lr, beta1, beta2, eps (A,): optimiser per agent (SGD or Adam, gradient ascent).
    Outputs: grads_out (A, N_KINDS, 3) unweighted per-term logit gradients averaged over the
    step's queries (the ID mean); reward_out (A,) mean reward of the sampled trajectories.
    """
    for a in prange(phi.shape[0]):
        step_agent(
            a,
            phi,
            ref_phi,
            adam_m,
            adam_v,
            step,
            states,
            jac,
            offsets,
            id_tasks,
            active,
            term_w,
            w_c,
            w_w,
            gamma,
            max_attempts,
            final_sampled,
            group_size,
            n_queries,
            std_scaling,
            std_ddof,
            adv_eps,
            estimator,
            kl_in_reward,
            clamp,
            data_masks,
            data_ns,
            data_w,
            opt_kind,
            lr,
            beta1,
            beta2,
            eps,
            grads_out,
            reward_out,
        )


# One body, two builds: prange runs as a plain range without parallel=True. The serial build
# is for small populations and for sweep workers (one process per core), where a parallel
# region's start-up and barrier would cost more than the work.
population_step = njit(cache=True, parallel=True)(_population_step_impl)
population_step_serial = njit(cache=True)(_population_step_impl)


@njit(cache=True)
def population_probs(phi, jac, offsets, out):
    """sigmoid(b(t) + J_t phi) for every agent and task: out (A, T, 3) = (p, q1, q2)."""
    n_agents, n_tasks = offsets.shape[0], offsets.shape[1]
    # serial: a few flops per agent, a parallel region would cost more than it saves
    logits = np.empty(3)
    for a in range(n_agents):
        for t in range(n_tasks):
            _task_logits(jac[a, t], offsets[a, t], phi[a], logits)
            for x in range(3):
                out[a, t, x] = kn.sigmoid(logits[x])
