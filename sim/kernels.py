"""Numba kernels of the DS simulator: trajectory sampling and per-trajectory gradient terms.

A trajectory (DESIGN.md §1) is encoded in three integers:
  mask  bit k-1 set  <=> attempt k's candidate was correct (bits 0..K-1, K <= 60)
  n     number of attempts made (1..K)
  trunc 1 if the agent chose RESAMPLE at attempt K under `final_sampled` (no answer, R = 0)
Decisions are implied: RESAMPLE after attempts 1..n-1, STOP (or forced stop) after attempt n.

Everything here works on the three logits (theta_s, theta_1, theta_2) of one task; the
orchestration (ladders, objectives, populations) lives in plain Python elsewhere.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

import sim.rng
import sim.terms
from sim.rng import GOLDEN, S11, mix64, next_bits53, threshold53
from sim.terms import N_COLUMNS, add_step, drop_stale_caches, fingerprint

MAX_ATTEMPTS = 60

# kl estimators (DESIGN §2)
K1, K2, K3 = 1, 2, 3
ESTIMATORS = {"k1": K1, "k2": K2, "k3": K3}

PARAM_S, PARAM_1, PARAM_2 = 0, 1, 2


# no_cfunc_wrapper: kernels here are called from Python or from other kernels, never as
# C function pointers, so the C wrapper Numba builds by default is not compiled (cold start)
@njit(cache=True, no_cfunc_wrapper=True)
def sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + np.exp(-z))
    e = np.exp(z)
    return e / (1.0 + e)


@njit(cache=True, no_cfunc_wrapper=True)
def log_sigmoid(z: float) -> float:
    # log(1/(1+e^-z)), stable for large |z|
    if z >= 0:
        return -np.log1p(np.exp(-z))
    return z - np.log1p(np.exp(z))


@njit(cache=True, inline="always")
def sample_trajectory(state, t_p, t_q1, t_q2, max_attempts, final_sampled):
    """Sample one trajectory; returns (mask, n, trunc, new_state).

    Stream convention (shared with `sample_population_into`): attempt k of a trajectory is
    one *slot* of two consecutive draws, the candidate's and the decision's; at a forced stop
    the decision draw is made and discarded, so every slot is exactly two draws and slot
    boundaries never depend on the outcomes. t_* are `threshold53` integer thresholds of
    p, q1, q2: `k < t_p` is the event u < p.
    """
    mask = np.int64(0)
    for k in range(max_attempts):
        bits, state = next_bits53(state)
        correct = bits < t_p
        mask |= np.int64(correct) << k
        bits, state = next_bits53(state)
        if k == max_attempts - 1 and not final_sampled:
            return mask, k + 1, 0, state  # forced stop: the decision draw is discarded
        # after correct: STOP iff u < q1; after wrong: STOP iff not (u < q2)
        below = bits < (t_q1 if correct else t_q2)
        if below == correct:
            return mask, k + 1, 0, state
    return mask, max_attempts, 1, state  # RESAMPLE chosen at K: truncated


SLOT_BLOCK = 512  # slots whose outcomes are drawn at once (a vectorised loop), per agent


@njit(cache=True, inline="always")
def slot_outcome(state, j, t_p, t_q1, t_q2):
    """Outcome code of slot j after `state`: bit 0 = candidate correct, bit 1 = the decision
    draw says STOP. Slot j's two draws are mix64(state + (2j+1) golden) and the next."""
    base = state + np.uint64(2 * j + 1) * GOLDEN
    candidate = np.int64(mix64(base) >> S11)
    decision = np.int64(mix64(base + GOLDEN) >> S11)
    correct = np.int64(candidate < t_p)
    below = np.int64(decision < t_q2 + correct * (t_q1 - t_q2))
    return np.uint8(correct | ((1 - (below ^ correct)) << 1))


@njit(cache=True, inline="always")
def slot_outcomes(state, t_p, t_q1, t_q2, codes):
    """Outcome codes (`slot_outcome`) of the next `codes.size` slots after `state`.

    splitmix64 is counter-based (draw j is mix64(state + j golden)) and a slot is always two
    draws, so no slot depends on another: LLVM vectorises this loop (AVX-512 / AVX2).
    """
    for j in range(codes.shape[0]):
        codes[j] = slot_outcome(state, j, t_p, t_q1, t_q2)


@njit(cache=True, parallel=True)
def sample_population_into(states, logits, max_attempts, final_sampled, masks, ns, truncs):
    """Fill masks/ns/truncs (n_agents x n_per_agent) with each agent's trajectories.

    Draws exactly what repeated `sample_trajectory` calls would (bit for bit), in two passes
    per block of slots: `slot_outcomes` draws the block's outcomes (vectorised), then a
    branch-free scan cuts the slot sequence into trajectories. The only data-dependent
    branch is the rare attempt K (forced stop / truncation), so the length of a trajectory
    costs no mispredicted branch. Scan variables are uint64: indices that Numba can prove
    non-negative carry no wraparound check.

    `states` (uint64, one per agent) is advanced in place, so successive calls continue the
    streams. Each agent's draws depend only on its own state: reproducible across threads.
    Writing into caller-owned buffers lets long runs reuse them instead of faulting in fresh
    pages on every call.
    """
    n_agents, n_per_agent = masks.shape
    one = np.uint64(1)
    last_k = np.uint64(max_attempts - 1)
    forced = np.uint64(0 if final_sampled else 1)
    n_out = np.uint64(n_per_agent)
    for a in prange(n_agents):
        t_p = threshold53(sigmoid(logits[a, 0]))
        t_q1 = threshold53(sigmoid(logits[a, 1]))
        t_q2 = threshold53(sigmoid(logits[a, 2]))
        st = states[a]
        codes = np.empty(SLOT_BLOCK, np.uint8)
        mrow, nrow, trow = masks[a], ns[a], truncs[a]
        trow[:] = 0
        i = np.uint64(0)  # trajectories completed
        k = np.uint64(0)  # attempt index within the current trajectory
        mask = np.uint64(0)
        while i < n_out:
            # every trajectory takes >= 1 slot: a block of min(SLOT_BLOCK, left) is all used
            block = codes[:min(SLOT_BLOCK, n_per_agent - int(i))]
            slot_outcomes(st, t_p, t_q1, t_q2, block)
            for j in range(block.shape[0]):
                code = np.uint64(block[j])
                mask |= (code & one) << k
                stop = code >> one
                if k == last_k:  # attempt K: forced stop, or truncation under final_sampled
                    trow[i] = np.int8(one - (stop | forced))
                    stop = one
                # written every slot, final once the trajectory ends (i then moves on)
                mrow[i] = np.int64(mask)
                nrow[i] = np.int8(k + one)
                i += stop
                keep = stop - one  # 0 when the trajectory ended, all ones otherwise
                k = (k + one) & keep
                mask &= keep
            st = st + np.uint64(2 * block.shape[0]) * GOLDEN
        states[a] = st


def sample_population(states, logits, max_attempts, final_sampled, n_per_agent):
    """Sample `n_per_agent` trajectories for each agent (row of `logits`), in parallel.

    Returns (masks int64, ns int8, truncs int8), each (n_agents, n_per_agent).
    """
    shape = (logits.shape[0], n_per_agent)
    masks = np.empty(shape, dtype=np.int64)
    ns = np.empty(shape, dtype=np.int8)
    truncs = np.empty(shape, dtype=np.int8)
    sample_population_into(states, logits, max_attempts, final_sampled, masks, ns, truncs)
    return masks, ns, truncs


@njit(cache=True, no_cfunc_wrapper=True)
def trajectory_log_prob(mask, n, trunc, max_attempts, final_sampled, logits):
    """log pi(tau) under the three logits (answer-level, DESIGN §2)."""
    lp = 0.0
    for k in range(n):
        correct = (mask >> k) & 1
        lp += log_sigmoid(logits[0]) if correct else log_sigmoid(-logits[0])
        last = k == n - 1
        if last and k == max_attempts - 1 and not final_sampled:
            break
        resample = (not last) or trunc == 1
        if correct:
            lp += log_sigmoid(-logits[1]) if resample else log_sigmoid(logits[1])
        else:
            lp += log_sigmoid(logits[2]) if resample else log_sigmoid(-logits[2])
    return lp


@njit(cache=True, no_cfunc_wrapper=True)
def walk_steps(mask, n, trunc, max_attempts, final_sampled, logits, ref_logits, w_correct,
               w_wrong, param, glogp, prob, xdev, weight, attempt):
    """Fill per-step buffers along a trajectory; returns the number of steps.

    Per step: the parameter its action belongs to, d log pi(action) / d logit, pi(action),
    x = log pi(action) - log pi_ref(action), its token weight w (w(L) for a sampling action,
    1 for a decision) and its attempt index. DESIGN §1 gradients, §2 weights.
    """
    p = sigmoid(logits[0])
    q1 = sigmoid(logits[1])
    q2 = sigmoid(logits[2])
    s = 0
    for k in range(n):
        correct = (mask >> k) & 1
        # sampling action
        param[s] = PARAM_S
        attempt[s] = k
        if correct:
            glogp[s] = 1.0 - p
            prob[s] = p
            xdev[s] = log_sigmoid(logits[0]) - log_sigmoid(ref_logits[0])
            weight[s] = w_correct
        else:
            glogp[s] = -p
            prob[s] = 1.0 - p
            xdev[s] = log_sigmoid(-logits[0]) - log_sigmoid(-ref_logits[0])
            weight[s] = w_wrong
        s += 1
        last = k == n - 1
        if last and k == max_attempts - 1 and not final_sampled:
            break  # forced stop, not counted
        resample = (not last) or trunc == 1
        attempt[s] = k
        weight[s] = 1.0
        if correct:
            param[s] = PARAM_1
            if resample:
                glogp[s] = -q1
                prob[s] = 1.0 - q1
                xdev[s] = log_sigmoid(-logits[1]) - log_sigmoid(-ref_logits[1])
            else:
                glogp[s] = 1.0 - q1
                prob[s] = q1
                xdev[s] = log_sigmoid(logits[1]) - log_sigmoid(ref_logits[1])
        else:
            param[s] = PARAM_2
            if resample:
                glogp[s] = 1.0 - q2
                prob[s] = q2
                xdev[s] = log_sigmoid(logits[2]) - log_sigmoid(ref_logits[2])
            else:
                glogp[s] = -q2
                prob[s] = 1.0 - q2
                xdev[s] = log_sigmoid(-logits[2]) - log_sigmoid(-ref_logits[2])
        s += 1
    return s


@njit(cache=True, no_cfunc_wrapper=True)
def kl_estimate(x, estimator, clamp):
    """Per-token KL estimator k(x) and its derivative k'(x) (DESIGN §2).

    The clamp (0 = off) applies where DESIGN §2 and verl apply it: to k3 (`low_var_kl`,
    clamped to [-clamp, clamp]; a clamped value has derivative 0); k1 and k2 are never
    clamped.
    """
    if estimator == K1:
        return x, 1.0
    if estimator == K2:
        return 0.5 * x * x, x
    e = np.exp(-x)
    k, dk = e - 1.0 + x, 1.0 - e
    if clamp > 0.0 and (k > clamp or k < -clamp):
        return max(-clamp, min(clamp, k)), 0.0
    return k, dk


@njit(cache=True, no_cfunc_wrapper=True)
def steps_penalties_and_q(nsteps, xdev, weight, attempt, estimator, clamp, gamma, r_out, q_out,
                          dk_out):
    """Immediate penalties r_t = -w_t k(x_t) and backward returns Q_t (DESIGN §3).

    The discount gamma applies between attempts: Q_t = r_t + gamma^[next step starts a new
    attempt] Q_{t+1}. Returns the total penalty sum_t w_t k(x_t).
    """
    total = 0.0
    for t in range(nsteps):
        k, dk = kl_estimate(xdev[t], estimator, clamp)
        r_out[t] = -weight[t] * k
        dk_out[t] = dk
        total += weight[t] * k
    q = 0.0
    for t in range(nsteps - 1, -1, -1):
        if t < nsteps - 1 and attempt[t + 1] != attempt[t]:
            q *= gamma
        q = r_out[t] + q
        q_out[t] = q
    return total


# Loss normalisers of DESIGN §2 "Loss normalisation in real trainers" (docs/token_models.md):
# a trajectory's kernel sums are divided by `norm`, a positive constant (1: none), or by the
# trajectory's own token count |o| (NORM_TRAJECTORY, TRL's loss_type "grpo"). NORM_BATCH (the
# batch's mean |o|: "dapo", "bnpo", SFT's token mean) is a constant that the estimator
# resolves before calling the kernel (sim.objectives.token_normaliser).
NORM_TRAJECTORY = 0.0
NORM_BATCH = -1.0


@njit(cache=True, inline="always")
def trajectory_tokens(mask, n, trunc, max_attempts, final_sampled, w_correct, w_wrong):
    """|o| = sum_t w_t: the answers' weights plus one per decision token emitted (a forced
    stop at K emits none; DESIGN §1-§2). With w = L it is the trajectory's token count."""
    tokens = 0.0
    for k in range(n):
        tokens += w_correct if (mask >> k) & 1 else w_wrong
    decisions = n - 1 if (n == max_attempts and not final_sampled) else n
    return tokens + decisions


@njit(cache=True, no_cfunc_wrapper=True)
def batch_tokens(masks, ns, truncs, max_attempts, final_sampled, w_correct, w_wrong):
    """`trajectory_tokens` of every trajectory of a batch."""
    out = np.empty(masks.shape[0])
    for i in range(masks.shape[0]):
        out[i] = trajectory_tokens(masks[i], ns[i], truncs[i], max_attempts, final_sampled,
                                   w_correct, w_wrong)
    return out


@njit(cache=True, no_cfunc_wrapper=True)
def trajectory_terms(mask, n, trunc, max_attempts, final_sampled, logits, ref_logits, w_correct,
                     w_wrong, estimator, clamp, gamma, norm, out, bufs, ibufs):
    """Every kernel of `sim.terms.KERNELS` on one trajectory into out[N_COLUMNS, 3], divided
    by the loss normaliser `norm` (> 0, or NORM_TRAJECTORY: by |o|; DESIGN §2);
    returns (R, penalty), the penalty sum_t w_t k(x_t) not normalised.

    bufs: float64[7, 2K] scratch, ibufs: int64[2, 2K] scratch (no allocation in hot loops).
    """
    if norm < 0.0:
        raise ValueError("trajectory_terms: resolve NORM_BATCH to the batch's mean |o| first")
    if out.shape[0] != N_COLUMNS:
        raise ValueError("trajectory_terms: out needs one row per kernel of sim.terms.KERNELS")
    param = ibufs[0]
    attempt = ibufs[1]
    glogp, prob, xdev, weight, r, q, dk = bufs[0], bufs[1], bufs[2], bufs[3], bufs[4], bufs[5], \
        bufs[6]
    nsteps = walk_steps(mask, n, trunc, max_attempts, final_sampled, logits, ref_logits,
                        w_correct, w_wrong, param, glogp, prob, xdev, weight, attempt)
    penalty = steps_penalties_and_q(nsteps, xdev, weight, attempt, estimator, clamp, gamma, r, q,
                                    dk)
    for c in range(out.shape[0]):  # scalar loops: a slice assignment costs compile time
        for j in range(3):
            out[c, j] = 0.0
    for t in range(nsteps):
        add_step(out, 0, param[t], glogp[t], weight[t], prob[t], xdev[t], q[t], dk[t])
    if norm != 1.0:
        if norm == NORM_TRAJECTORY:
            norm = trajectory_tokens(mask, n, trunc, max_attempts, final_sampled, w_correct,
                                     w_wrong)
        for c in range(out.shape[0]):
            for j in range(3):
                out[c, j] /= norm
    reward = 0.0
    if trunc == 0 and (mask >> (n - 1)) & 1:
        reward = gamma ** (n - 1)
    return reward, penalty


def scratch(max_attempts: int) -> tuple[np.ndarray, np.ndarray]:
    """Scratch buffers for `trajectory_terms` (2 steps per attempt)."""
    return np.empty((7, 2 * max_attempts)), np.empty((2, 2 * max_attempts), dtype=np.int64)


def _batch_terms_impl(masks, ns, truncs, max_attempts, final_sampled, logits, ref_logits,
                      w_correct, w_wrong, estimator, clamp, gamma, norm):
    """`trajectory_terms` over a flat batch of trajectories sharing one set of logits.

    Returns terms[N, N_COLUMNS, 3], rewards[N], penalties[N].
    """
    n = masks.shape[0]
    out = np.empty((n, N_COLUMNS, 3))
    rewards = np.empty(n)
    penalties = np.empty(n)
    for i in prange(n):
        bufs = np.empty((7, 2 * max_attempts))
        ibufs = np.empty((2, 2 * max_attempts), dtype=np.int64)
        rewards[i], penalties[i] = trajectory_terms(
            masks[i], ns[i], truncs[i], max_attempts, final_sampled, logits, ref_logits,
            w_correct, w_wrong, estimator, clamp, gamma, norm, out[i], bufs, ibufs)
    return out, rewards, penalties


# prange is a plain range in the serial build. Exact enumeration batches (2^(K+1) rows) are
# far too small to pay for starting a parallel region (measured 16x slower on 2 threads).
_batch_terms_serial = njit(cache=True)(_batch_terms_impl)
_batch_terms_parallel = njit(cache=True, parallel=True)(_batch_terms_impl)
PARALLEL_MIN_BATCH = 20_000


def batch_terms(masks, ns, truncs, max_attempts, final_sampled, logits, ref_logits, w_correct,
                w_wrong, estimator, clamp, gamma, norm=1.0):
    """Dispatch to the serial or parallel kernel by batch size (same results either way);
    `norm` is the loss normaliser of `trajectory_terms` (default 1: none)."""
    fn = _batch_terms_parallel if masks.shape[0] >= PARALLEL_MIN_BATCH else _batch_terms_serial
    return fn(masks, ns, truncs, max_attempts, final_sampled, logits, ref_logits, w_correct,
              w_wrong, estimator, clamp, gamma, float(norm))


@njit(cache=True, no_cfunc_wrapper=True)
def batch_log_probs(masks, ns, truncs, max_attempts, final_sampled, logits):
    out = np.empty(masks.shape[0])
    for i in range(masks.shape[0]):
        out[i] = trajectory_log_prob(masks[i], ns[i], truncs[i], max_attempts, final_sampled,
                                     logits)
    return out


@njit(cache=True, parallel=True)
def batch_clipped_scores(masks, ns, truncs, max_attempts, final_sampled, logits, old_logits,
                         advantages, clip_epsilon):
    """Gradient of the PPO-clipped surrogate per trajectory, ratio per action (DESIGN §2).

    d/dtheta min(rho A, clip(rho, 1-eps, 1+eps) A) = rho A grad log pi where unclipped, else 0.
    """
    n = masks.shape[0]
    out = np.zeros((n, 3))
    for i in prange(n):
        bufs = np.empty((4, 2 * max_attempts))
        ibufs = np.empty((2, 2 * max_attempts), dtype=np.int64)
        nsteps = walk_steps(masks[i], ns[i], truncs[i], max_attempts, final_sampled, logits,
                            old_logits, 1.0, 1.0, ibufs[0], bufs[0], bufs[1], bufs[2], bufs[3],
                            ibufs[1])
        a = advantages[i]
        for t in range(nsteps):
            rho = np.exp(bufs[2, t])
            if (a >= 0 and rho <= 1.0 + clip_epsilon) or (a < 0 and rho >= 1.0 - clip_epsilon):
                out[i, ibufs[0, t]] += rho * a * bufs[0, t]
    return out


# Numba's on-disk cache does not see edits of the modules these kernels call (sim.terms):
# drop this module's cached kernels when those sources changed since they were compiled.
_SOURCES = fingerprint(sim.rng, sim.terms)


@njit(cache=True, no_cfunc_wrapper=True)
def _compiled_against():
    return _SOURCES


drop_stale_caches(globals(), _compiled_against, _SOURCES)
