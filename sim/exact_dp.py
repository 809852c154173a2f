"""Exact expected gradients by dynamic programming over attempts (DESIGN.md §3).

The DS agent is a Markov chain over attempts (DESIGN §1): every attempt but the last ends in
RESAMPLE, so a trajectory of n = m + 1 attempts is m *prefix* attempts, each of type CR
(correct, RESAMPLE) or WR (wrong, RESAMPLE), and one *last* attempt of type
  CT / WT  correct / wrong, STOP (n < K, or n = K under final_sampled)
  CN / WN  correct / wrong, forced stop at K (no decision token)
  CR / WR  RESAMPLE at K under final_sampled (truncated, R = 0)
A *class* (m, L) of trajectories has probability s^m pi(L), s = pi(CR) + pi(WR), and given
its class the prefix attempts are i.i.d., correct with probability rho = pi(CR) / s; given
also the number c of correct prefix attempts, every arrangement is equally likely.

Every kernel of `sim.terms.KERNELS` is sum_t (c0_t + c1_t Q_t) g_t over the steps of a
trajectory (affine in the KL return Q_t; checked), and its step values depend only on the
action (one of six), so on a class with c correct prefix attempts it is exactly
    K0 + K1 mu1 + K2 mu2,   mu1 = c / m,   mu2 = c (c - 1) / (m (m - 1)),
where the coefficients hold the within-attempt sums and, for the Q_t part, the pairs of
attempts i < j weighted gamma^(j - i) (their sums S1(m), S2(m)). The expected kernel over the
agent's trajectories, divided by the loss normaliser, is then a sum over the 2K + 2 classes
of P(class) (K0 N0 + K1 N1 + K2 N2) with N_j = E[mu_j / norm | class]:
  constant norm (1, dr_grpo, or the batch's E|o|)  N = (1, rho, rho^2) / norm: O(K)
  |o| per trajectory (grpo), L_C = L_W            |o| fixed by the class: O(K)
  |o| per trajectory (grpo), L_C != L_W           |o| depends on c: the Binomial(m, rho)
                                                   distribution of c, row by row: O(K^2)
The KL estimators are per-token (k(x) of each action), so k1, k2, k3 and the k3 clamp are
per-action constants: no joint count distribution is needed. Class probabilities underflow
to 0 gracefully (a class of probability 0 adds exactly 0, and ends the recursion).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit

import sim.kernels
import sim.terms
from sim.kernels import (
    NORM_BATCH,
    NORM_TRAJECTORY,
    PARAM_1,
    PARAM_2,
    PARAM_S,
    kl_estimate,
    log_sigmoid,
    sigmoid,
)
from sim.terms import KERNELS, N_COLUMNS, add_step, drop_stale_caches, fingerprint

# The DP's cost is O(K) (O(K^2) for grpo with L_C != L_W, a second at K = 10,000): beyond,
# a K is a typo, never a trajectory length of the DS agent
MAX_EXACT_ATTEMPTS = 10_000

# the six actions, in the order of sim.kernels.walk_steps' cases
SC, SW, RC, TC, RW, TW = range(6)  # sample correct/wrong; RESAMPLE/STOP after correct/wrong
# the six attempt types: (sampling action, decision action or -1 for a forced stop)
CR, WR, CT, WT, CN, WN = range(6)
ATTEMPT_SAMPLE = (SC, SW, SC, SW, SC, SW)
ATTEMPT_DECISION = (RC, RW, TC, TW, -1, -1)

# rows of OwnMoments.by_weight: E[k], E[R k], E[1{R > 0} k], E[1{R = 0} k]
ALL, REWARD_WEIGHTED, SUCCEEDED_ONLY, FAILED_ONLY = range(4)


class OwnMoments(NamedTuple):
    """Expectations over the agent's own trajectories (DESIGN §2-§3)."""

    by_weight: np.ndarray  # (4, N_COLUMNS, 3): each kernel, divided by its normaliser, by row
    p_reward: float  # E[R]
    binary_rewards: bool  # every trajectory's R is 0 or 1


def _check_affine_in_q() -> None:
    """Every kernel of sim.terms.KERNELS must be affine in the return Q (the DP's premise):
    checked once, in Python, at a few probe points rather than inside the compiled code."""
    for kernel in KERNELS:
        f = getattr(kernel.coefficient, "py_func", kernel.coefficient)
        for w, prob, x, dk in ((1.0, 0.3, 0.7, 0.4), (7.0, 0.9, -2.0, -1.5)):
            c0, c1, c2 = (f(w, prob, x, q, dk) for q in (0.0, 1.0, 2.0))
            if abs(c2 - (2.0 * c1 - c0)) > 1e-12 * (1.0 + abs(c2)):
                raise ValueError(f"exact_dp: kernel {kernel.name} is not affine in the return Q")


_check_affine_in_q()


# no_cfunc_wrapper: kernels here are called from Python or from other kernels, never as
# C function pointers, so the C wrapper Numba builds by default is not compiled (cold start)
@njit(cache=True, no_cfunc_wrapper=True)
def attempt_values(logits, ref_logits, w_correct, w_wrong, estimator, clamp):
    """Per attempt type (CR, WR, CT, WT, CN, WN): v (6, N_COLUMNS, 3), its kernels'
    within-attempt sum (Q part: the pairs of its own steps); a (6, N_COLUMNS, 3), the Q
    coefficients summed over its steps; b (6,), its penalties summed; logpi (6,); tok (6,),
    its tokens (w(L) + 1 per decision token).

    First per action (SC, SW, RC, TC, RW, TW): u, the kernels' Q-free step values c0 g; gq,
    their Q coefficients c1 g; r, the KL penalty -w k(x); logp, log pi(action); w, the token
    weight (DESIGN §1-§2): sim.kernels.walk_steps' and sim.terms.add_step's values, action
    by action. Scalar loops only (array expressions cost compile time, not run time)."""
    p = sigmoid(logits[0])
    q1 = sigmoid(logits[1])
    q2 = sigmoid(logits[2])
    u = np.zeros((6, N_COLUMNS, 3))
    gq = np.zeros((6, N_COLUMNS, 3))
    r = np.empty(6)
    logp = np.empty(6)
    w = np.empty(6)
    for act in range(6):
        # its logit, d log pi / d logit, pi, sign (log pi = log sigmoid(sign z)), weight
        if act == SC:
            param, glogp, prob, sign, wa = PARAM_S, 1.0 - p, p, 1.0, w_correct
        elif act == SW:
            param, glogp, prob, sign, wa = PARAM_S, -p, 1.0 - p, -1.0, w_wrong
        elif act == RC:
            param, glogp, prob, sign, wa = PARAM_1, -q1, 1.0 - q1, -1.0, 1.0
        elif act == TC:
            param, glogp, prob, sign, wa = PARAM_1, 1.0 - q1, q1, 1.0, 1.0
        elif act == RW:
            param, glogp, prob, sign, wa = PARAM_2, 1.0 - q2, q2, 1.0, 1.0
        else:
            param, glogp, prob, sign, wa = PARAM_2, -q2, 1.0 - q2, -1.0, 1.0
        w[act] = wa
        logp[act] = log_sigmoid(sign * logits[param])
        x = logp[act] - log_sigmoid(sign * ref_logits[param])
        k, dk = kl_estimate(x, estimator, clamp)
        r[act] = -wa * k
        add_step(u[act], 0, param, glogp, wa, prob, x, 0.0, dk)
        add_step(gq[act], 0, param, glogp, wa, prob, x, 1.0, dk)
        for c in range(N_COLUMNS):
            for j in range(3):
                gq[act, c, j] -= u[act, c, j]
    v = np.empty((6, N_COLUMNS, 3))
    a = np.empty((6, N_COLUMNS, 3))
    b = np.empty(6)
    logpi = np.empty(6)
    tok = np.empty(6)
    for t in range(6):
        s = ATTEMPT_SAMPLE[t]
        d = ATTEMPT_DECISION[t]
        # steps in time order: the sampling step's return includes the decision's penalty
        for c in range(N_COLUMNS):
            for j in range(3):
                v[t, c, j] = u[s, c, j] + gq[s, c, j] * r[s]
                a[t, c, j] = gq[s, c, j]
        b[t] = r[s]
        logpi[t] = logp[s]
        tok[t] = w[s]
        if d >= 0:
            for c in range(N_COLUMNS):
                for j in range(3):
                    v[t, c, j] += u[d, c, j] + gq[s, c, j] * r[d] + gq[d, c, j] * r[d]
                    a[t, c, j] += gq[d, c, j]
            b[t] += r[d]
            logpi[t] += logp[d]
            tok[t] += 1.0
    return v, a, b, logpi, tok


@njit(cache=True, no_cfunc_wrapper=True)
def discount_sums(max_attempts, gamma):
    """S1(m) = sum_{d=1}^{m} gamma^d and S2(m) = sum_{1<=i<j<=m} gamma^(j-i), m < K."""
    s1 = np.zeros(max_attempts)
    s2 = np.zeros(max_attempts)
    for m in range(1, max_attempts):
        s1[m] = s1[m - 1] + gamma**m
        s2[m] = s2[m - 1] + s1[m - 1]
    return s1, s2


@njit(cache=True, no_cfunc_wrapper=True)
def class_coefficients(m, last, v, a, b, s1m, s2m, k0, k1, k2):
    """K0, K1, K2 of the class (m, last) into k0, k1, k2 (N_COLUMNS, 3): its kernels'
    expectation given c correct prefix attempts is K0 + K1 c/m + K2 c(c-1)/(m(m-1))."""
    for c in range(N_COLUMNS):
        for j in range(3):
            x = a[CR, c, j] * b[CR]
            y = a[CR, c, j] * b[WR] + a[WR, c, j] * b[CR]
            z = a[WR, c, j] * b[WR]
            k0[c, j] = m * v[WR, c, j] + v[last, c, j] + s2m * z + s1m * b[last] * a[WR, c, j]
            k1[c, j] = (m * (v[CR, c, j] - v[WR, c, j]) + s2m * (y - 2.0 * z)
                        + s1m * b[last] * (a[CR, c, j] - a[WR, c, j]))
            k2[c, j] = s2m * (x - y + z)


@njit(cache=True, inline="always")
def last_type(m, max_attempts, final_sampled, i):
    """The i-th last-attempt type of a trajectory of m + 1 attempts: CT, WT (n < K); CT, WT,
    CR, WR (n = K under final_sampled); CN, WN (n = K, forced stop). `n_last_types` of them."""
    if m < max_attempts - 1:
        return CT + i
    if final_sampled:
        return (CT + i) % 4  # CT, WT, CR, WR: the type constants in that cyclic order
    return CN + i


@njit(cache=True, inline="always")
def n_last_types(m, max_attempts, final_sampled):
    return 4 if (m == max_attempts - 1 and final_sampled) else 2


@njit(cache=True, no_cfunc_wrapper=True)
def own_moments_kernel(logits, ref_logits, max_attempts, final_sampled, gamma, w_correct,
                       w_wrong, estimator, clamp, norm):
    """by_weight (4, N_COLUMNS, 3), E[R] and E|o| over the agent's own trajectories; norm is
    a constant > 0, NORM_TRAJECTORY or NORM_BATCH (resolved here to E|o|)."""
    v, a, b, logpi, tok = attempt_values(logits, ref_logits, w_correct, w_wrong, estimator,
                                         clamp)
    pi = np.empty(6)
    for t in range(6):  # a scalar loop: an array expression costs compile time
        pi[t] = np.exp(logpi[t])
    s = pi[CR] + pi[WR]
    rho = pi[CR] / s if s > 0.0 else 0.0
    sigma = pi[WR] / s if s > 0.0 else 0.0  # 1 - rho, without its rounding
    s1, s2 = discount_sums(max_attempts, gamma)
    per_trajectory = norm == NORM_TRAJECTORY
    by_count = per_trajectory and tok[CR] != tok[WR]  # |o| depends on c: O(K^2)
    inv_norm = 1.0 / norm if norm > 0.0 else 1.0
    row = np.zeros(max_attempts + 1)  # Binomial(m, rho) pmf of c (only where by_count)
    row[0] = 1.0
    out = np.zeros((4, N_COLUMNS, 3))
    k0 = np.empty((N_COLUMNS, 3))
    k1 = np.empty((N_COLUMNS, 3))
    k2 = np.empty((N_COLUMNS, 3))
    p_reward = 0.0
    tokens = 0.0
    for m in range(max_attempts):
        sm = s**m
        if sm == 0.0:
            break  # every longer trajectory has probability 0 in float64
        for i in range(n_last_types(m, max_attempts, final_sampled)):
            last = last_type(m, max_attempts, final_sampled, i)
            prob = sm * pi[last]
            if prob == 0.0:
                continue
            class_coefficients(m, last, v, a, b, s1[m], s2[m], k0, k1, k2)
            if by_count:
                n0 = n1 = n2 = 0.0
                for c in range(m + 1):
                    inv = row[c] / (c * tok[CR] + (m - c) * tok[WR] + tok[last])
                    n0 += inv
                    if m >= 1:
                        n1 += inv * (c / m)
                    if m >= 2:
                        n2 += inv * (c * (c - 1.0) / (m * (m - 1.0)))
            else:
                inv = 1.0 / (m * tok[WR] + tok[last]) if per_trajectory else inv_norm
                n0, n1, n2 = inv, rho * inv, rho * rho * inv
            reward = gamma**m if (last == CT or last == CN) else 0.0
            for c in range(N_COLUMNS):
                for j in range(3):
                    val = prob * (k0[c, j] * n0 + k1[c, j] * n1 + k2[c, j] * n2)
                    out[ALL, c, j] += val
                    out[REWARD_WEIGHTED, c, j] += reward * val
                    if reward > 0.0:
                        out[SUCCEEDED_ONLY, c, j] += val
                    else:
                        out[FAILED_ONLY, c, j] += val
            p_reward += prob * reward
            tokens += prob * (m * (rho * tok[CR] + sigma * tok[WR]) + tok[last])
        if by_count:  # Binomial(m + 1, rho) from Binomial(m, rho)
            for c in range(m + 1, 0, -1):
                row[c] = row[c] * sigma + row[c - 1] * rho
            row[0] *= sigma
    if norm == NORM_BATCH:
        for row_w in range(4):
            for c in range(N_COLUMNS):
                for j in range(3):
                    out[row_w, c, j] /= tokens
    return out, p_reward, tokens


@njit(cache=True, no_cfunc_wrapper=True)
def chain_terms_kernel(n_attempts, weights, max_attempts, final_sampled, logits, ref_logits,
                       w_correct, w_wrong, estimator, clamp, gamma, norm):
    """Kernels (n, N_COLUMNS, 3) and rewards of the chains W^(n-1) C then STOP (a forced
    stop at K unless final_sampled): the SFT data's trajectories (DESIGN §2), divided by
    their normaliser (NORM_BATCH: the weighted mean |o| of the chains)."""
    v, a, b, _, tok = attempt_values(logits, ref_logits, w_correct, w_wrong, estimator, clamp)
    s1, s2 = discount_sums(max_attempts, gamma)
    n = n_attempts.shape[0]
    kern = np.zeros((n, N_COLUMNS, 3))
    rewards = np.empty(n)
    tokens = np.empty(n)
    k1 = np.empty((N_COLUMNS, 3))
    k2 = np.empty((N_COLUMNS, 3))
    for i in range(n):
        m = n_attempts[i] - 1
        last = CN if (m == max_attempts - 1 and not final_sampled) else CT
        class_coefficients(m, last, v, a, b, s1[m], s2[m], kern[i], k1, k2)  # c = 0
        tokens[i] = m * tok[WR] + tok[last]
        rewards[i] = gamma**m
    if norm == NORM_BATCH:  # sequential sums, as np.sum's (scalar loops compile faster)
        weighted = 0.0
        total = 0.0
        for i in range(n):
            weighted += weights[i] * tokens[i]
        for i in range(n):
            total += weights[i]
        norm = weighted / total
    for i in range(n):
        div = tokens[i] if norm == NORM_TRAJECTORY else norm
        if div != 1.0:
            for c in range(N_COLUMNS):
                for j in range(3):
                    kern[i, c, j] /= div
    return kern, rewards


def _check_k(max_attempts: int) -> None:
    if not 1 <= max_attempts <= MAX_EXACT_ATTEMPTS:
        raise ValueError(f"exact gradients need K in 1..{MAX_EXACT_ATTEMPTS}, got {max_attempts}")


def own_moments(logits, ref_logits, max_attempts: int, final_sampled: bool, gamma: float,
                w_correct: float, w_wrong: float, estimator: int, clamp: float,
                norm: float) -> OwnMoments:
    """`OwnMoments` of the agent's own trajectories under token weights (w(L_C), w(L_W)),
    KL estimator and clamp, and loss normaliser `norm` (a constant > 0, NORM_TRAJECTORY or
    NORM_BATCH; DESIGN §2)."""
    _check_k(max_attempts)
    by_weight, p_reward, _ = own_moments_kernel(
        np.asarray(logits, float), np.asarray(ref_logits, float), int(max_attempts),
        bool(final_sampled), float(gamma), float(w_correct), float(w_wrong), int(estimator),
        float(clamp), float(norm))
    # R = gamma^(n-1) for a success: binary when gamma = 1 or every trajectory has n = 1
    return OwnMoments(by_weight, float(p_reward), gamma == 1.0 or max_attempts == 1)


def chain_terms(n_attempts, weights, max_attempts: int, final_sampled: bool, logits,
                ref_logits, w_correct: float, w_wrong: float, estimator: int, clamp: float,
                gamma: float, norm: float) -> tuple[np.ndarray, np.ndarray]:
    """(kernels (n, N_COLUMNS, 3), rewards (n,)) of the chains of `n_attempts` attempts
    (W ... W C, then STOP), for data sets too long for 64-bit trajectory masks."""
    _check_k(max_attempts)
    n_attempts = np.asarray(n_attempts, np.int64)
    if np.any(n_attempts < 1) or np.any(n_attempts > max_attempts):
        raise ValueError(f"a chain has 1..K = {max_attempts} attempts, got {n_attempts}")
    return chain_terms_kernel(n_attempts, np.asarray(weights, float), int(max_attempts),
                              bool(final_sampled), np.asarray(logits, float),
                              np.asarray(ref_logits, float), float(w_correct), float(w_wrong),
                              int(estimator), float(clamp), float(gamma), float(norm))


# Numba's on-disk cache does not see edits of the modules these kernels call (sim.kernels,
# sim.terms): drop this module's cached kernels when those sources changed (sim.terms).
_SOURCES = fingerprint(sim.kernels, sim.terms)


@njit(cache=True, no_cfunc_wrapper=True)
def _compiled_against():
    return _SOURCES


drop_stale_caches(globals(), _compiled_against, _SOURCES)


def binomial_pmf(n: int, p: float) -> np.ndarray:
    """P(X = m) for m = 0..n, X ~ Binomial(n, p): comb(n, m) p^m (1 - p)^(n - m) with 0^0 = 1
    (scipy.stats would give the same to rounding, at ~0.5 s of import per process)."""
    m = np.arange(n + 1)
    comb = np.array([math.comb(n, k) for k in range(n + 1)], dtype=float)
    return comb * np.power(float(p), m) * np.power(1.0 - float(p), n - m)
