"""Count form of the per-trajectory kernels, for the population step (DESIGN.md §1-§3).

An answer-level trajectory takes actions of six *types* only (DESIGN §1):

    type  action                        log pi(action)
    0     correct candidate             log sigmoid(+theta_s)
    1     wrong candidate               log sigmoid(-theta_s)
    2     RESAMPLE after a correct one  log sigmoid(-theta_1)
    3     STOP after a correct one      log sigmoid(+theta_1)
    4     RESAMPLE after a wrong one    log sigmoid(+theta_2)
    5     STOP after a wrong one        log sigmoid(-theta_2)

and every quantity a kernel coefficient of `sim.terms.KERNELS` reads at a step -- its token
weight w, pi(a), x = log pi(a) - log pi_ref(a) and k'(x) -- depends on the step's type alone.
So for every kernel that does not read the return Q_t (all but "KL in reward"), a trajectory's
kernel column is sum_type n_type(tau) c_col(type) grad log pi(type): linear in its six counts.
A group's filtered, advantage-weighted mean of a column is then the same table applied to a
weighted sum of count vectors -- a few flops per trajectory instead of a walk along it.
Kernels that read Q_t are left to `sim.kernels.trajectory_terms` (the caller's slow path).

Sampling uses the stream convention of `sim.kernels.sample_trajectory` (one slot of two
draws per attempt): `sample_group` draws a block of slots at once with
`sim.kernels.slot_outcomes` -- splitmix64 is counter-based, so slots drawn past the group's
last trajectory are simply not consumed -- and returns the stream advanced by the slots used,
exactly as many calls of `sample_trajectory` would (the same trajectories, bit for bit).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

import sim.kernels
import sim.rng
import sim.terms
from sim import kernels as kn
from sim.rng import GOLDEN
from sim.terms import KERNELS, N_COLUMNS, add_step, drop_stale_caches, fingerprint

N_TYPES = 6
TYPE_PARAM = np.array([0, 0, 1, 1, 2, 2], np.int64)  # the logit each type's action belongs to
GROUP_SLOTS = 64  # slots drawn per block; a group needing more draws another block
# a sampled trajectory's record (rows of `rec`): its mask (sim.kernels) and n + trunc << 8
R_MASK, R_END = 0, 1
N_RECORD = 2
TRUNC_SHIFT = np.uint64(8)


def _reads(argument: int) -> np.ndarray:
    """Per kernel column: whether its coefficient (w, prob, x, q, dk) reads that argument
    (probed at two values; every kernel of sim.terms is a closed-form expression)."""
    base = [2.0, 0.3, 0.7, 1.1, 0.4]
    other = list(base)
    other[argument] = -5.0
    # the Python functions: calling the dispatchers would load or compile every kernel at import
    funcs = [getattr(k.coefficient, "py_func", k.coefficient) for k in KERNELS]
    return np.array([f(*base) != f(*other) for f in funcs])


# kernels that read Q_t are not count-linear (sim.population_kernels walks those trajectories)
READS_RETURN = _reads(3)
# x reaches the count path through k'(x) (or directly): skipped where neither needs it
READS_X = bool(_reads(2).any())
if READS_RETURN.sum() > 1 or N_COLUMNS > 8:
    raise RuntimeError("sim.population_counts expects at most one kernel reading Q_t")


# no_cfunc_wrapper: kernels here are called from Python or from other kernels, never as
# C function pointers, so the C wrapper Numba builds by default is not compiled (cold start)
@njit(cache=True, no_cfunc_wrapper=True)
def sample_group(st, t_p, t_q1, t_q2, g, max_attempts, final_sampled, codes, rec, first):
    """Sample `g` trajectories from stream `st` into rec[:, first:first + g] (`record`
    reads them); returns the stream
    advanced by the slots used (two draws each), as `sim.kernels.sample_trajectory` would."""
    forced = np.uint64(0 if final_sampled else 1)
    one = np.uint64(1)
    last_k = np.uint64(max_attempts)
    n_traj = np.uint64(g)
    first = np.uint64(first)
    i = np.uint64(0)  # trajectories completed
    k = np.uint64(0)  # attempts made in the current trajectory
    mask = np.uint64(0)
    while True:
        # at most what the group can still use; speculative slots cost a hash each
        left = g - int(i)
        n_slots = min(codes.shape[0], left * max_attempts, max(16, 4 * left))
        for j in range(n_slots):  # vectorised (sim.kernels.slot_outcomes, without a view)
            codes[j] = kn.slot_outcome(st, j, t_p, t_q1, t_q2)
        used = n_slots
        for j in range(n_slots):
            # branch-free, like sim.kernels.sample_population_into: whether a slot ends its
            # trajectory is a coin flip that a branch would mispredict half of the time
            code = np.uint64(codes[j])
            stop = code >> one
            mask |= (code & one) << k
            k += one
            at_k = np.uint64(k == last_k)  # forced stop, or truncation under final_sampled
            stop |= at_k
            # written every slot, final once the trajectory ends (i then moves on)
            c = first + i
            rec[R_MASK, c] = np.int64(mask)
            rec[R_END, c] = np.int64(k | ((at_k & (one - ((code >> one) | forced)))
                                          << TRUNC_SHIFT))
            i += stop
            keep = stop - one  # 0 when the trajectory ended, all ones otherwise
            k &= keep
            mask &= keep
            if i == n_traj:
                used = j + 1
                break
        st = st + np.uint64(2 * used) * GOLDEN
        if i == n_traj:
            return st


@njit(cache=True, inline="always")
def popcount(x):
    """Number of set bits of a non-negative int64 (SWAR)."""
    x = x - ((x >> 1) & 0x5555555555555555)
    x = (x & 0x3333333333333333) + ((x >> 2) & 0x3333333333333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0F
    return (x * 0x0101010101010101 & 0xFFFFFFFFFFFFFFFF) >> 56


@njit(cache=True, inline="always")
def record(rec, c):
    """Trajectory `c` of `rec` as (mask, n, trunc), the encoding of sim.kernels."""
    end = rec[R_END, c]
    return rec[R_MASK, c], end & 0xFF, end >> 8


@njit(cache=True, inline="always")
def trajectory_counts(rec, c, max_attempts, final_sampled, gamma, counts):
    """The six type counts of trajectory `c` of `rec` into counts[c, 0:6]; returns its
    reward (gamma^(n-1) for a correct final answer, 0 otherwise; DESIGN §1). Rows are
    indexed here, not passed as views: a view costs two reference-count updates."""
    mask, n, trunc = record(rec, c)
    nc = popcount(mask)
    last = (mask >> (n - 1)) & 1
    forced = 1 if (n == max_attempts and not final_sampled) else 0
    stopped = 1 - trunc - forced  # a STOP decision was emitted
    counts[c, 0] = nc
    counts[c, 1] = n - nc
    counts[c, 2] = nc - last + last * trunc  # every decision but the last is RESAMPLE
    counts[c, 3] = last * stopped
    counts[c, 4] = (n - nc) - (1 - last) + (1 - last) * trunc
    counts[c, 5] = (1 - last) * stopped
    if last == 0 or trunc == 1:
        return 0.0
    return 1.0 if gamma == 1.0 else gamma ** (n - 1)


@njit(cache=True, inline="always")
def trajectory_token_count(counts, c, w_c, w_w):
    """|o| of trajectory c = w(L_C) n_correct + w(L_W) n_wrong + decisions
    (sim.kernels.trajectory_tokens)."""
    return (w_c * counts[c, 0] + w_w * counts[c, 1] + counts[c, 2] + counts[c, 3]
            + counts[c, 4] + counts[c, 5])


@njit(cache=True, no_cfunc_wrapper=True)
def count_table(logits, ref_logits, w_c, w_w, estimator, clamp, need_x, table):
    """table[col, type] = c_col(type) * d log pi(type) / d logit(type) for every kernel
    column (those reading Q_t get a meaningless 0-return entry). x = log pi - log pi_ref
    is computed only where `need_x` (else 0: under k1, k'(x) = 1 whatever x)."""
    p = kn.sigmoid(logits[0])
    q1 = kn.sigmoid(logits[1])
    q2 = kn.sigmoid(logits[2])
    for c in range(table.shape[0]):  # scalar loops: a slice assignment costs compile time
        for ty in range(N_TYPES):
            table[c, ty] = 0.0
    for ty in range(N_TYPES):
        sign = 1.0 if ty == 0 or ty == 3 or ty == 4 else -1.0  # log sigmoid(sign * theta)
        x = 0.0
        if ty < 2:
            prob = p if ty == 0 else 1.0 - p
            glogp = 1.0 - p if ty == 0 else -p
            w = w_c if ty == 0 else w_w
            th, rth = logits[0], ref_logits[0]
        elif ty < 4:
            prob = 1.0 - q1 if ty == 2 else q1
            glogp = -q1 if ty == 2 else 1.0 - q1
            w = 1.0
            th, rth = logits[1], ref_logits[1]
        else:
            prob = q2 if ty == 4 else 1.0 - q2
            glogp = 1.0 - q2 if ty == 4 else -q2
            w = 1.0
            th, rth = logits[2], ref_logits[2]
        if need_x:
            x = kn.log_sigmoid(sign * th) - kn.log_sigmoid(sign * rth)
        _, dk = kn.kl_estimate(x, estimator, clamp)
        add_step(table, 0, ty, glogp, w, prob, x, 0.0, dk)


@njit(cache=True, inline="always")
def apply_table(table, col, sums, scale, gq, k):
    """gq[k, param(type)] += scale * sums[type] * table[col, type]."""
    gq[k, 0] += scale * (sums[0] * table[col, 0] + sums[1] * table[col, 1])
    gq[k, 1] += scale * (sums[2] * table[col, 2] + sums[3] * table[col, 3])
    gq[k, 2] += scale * (sums[4] * table[col, 4] + sums[5] * table[col, 5])


class Scratch(NamedTuple):
    """Work arrays of `sim.population_kernels.step_agents` (`make_scratch`), reused across
    the agents of a block."""

    codes: np.ndarray  # (GROUP_SLOTS,) uint8 slot outcomes
    rec: np.ndarray  # (N_RECORD, Q G) int64 sampled trajectories (sim.population_counts)
    counts: np.ndarray  # (Q G, 6) their type counts
    rewards: np.ndarray  # (Q G,)
    factor: np.ndarray  # (Q G,) 1 / loss normaliser
    logits: np.ndarray  # (1, 3) the current task's logits and reference logits
    ref_logits: np.ndarray
    sums: np.ndarray  # (N_KINDS, 6) per term, a run's weighted count sums
    table: np.ndarray  # (N_COLUMNS, 6) sim.population_counts.count_table
    gq: np.ndarray  # (N_KINDS, 3) one query's per-term logit gradients
    grad_phi: np.ndarray  # (P,)
    old_phi: np.ndarray  # (P,)
    terms: np.ndarray  # (N_COLUMNS, 3) one trajectory's kernels (sim.kernels.trajectory_terms)
    bufs: np.ndarray  # its scratch
    ibufs: np.ndarray
    probs: np.ndarray  # (2, 3) prob_jump's before / after


@njit(cache=True, inline="always")
def make_scratch(max_attempts, n_queries, g, n_kinds, n_params):
    """A fresh `Scratch`, as a plain tuple. Allocated inside the kernel that uses it, not
    passed in: LLVM then knows that these arrays alias no argument (measured: ~10% of the
    population step)."""
    qg = n_queries * g
    return (np.empty(GROUP_SLOTS, np.uint8), np.empty((N_RECORD, qg), np.int64),
            np.empty((qg, N_TYPES)), np.empty(qg), np.empty(qg), np.empty((1, 3)),
            np.empty((1, 3)), np.empty((n_kinds, N_TYPES)),
            np.empty((N_COLUMNS, N_TYPES)), np.empty((n_kinds, 3)),
            np.empty(n_params), np.empty(n_params), np.empty((N_COLUMNS, 3)),
            np.empty((7, 2 * max_attempts)), np.empty((2, 2 * max_attempts), np.int64),
            np.empty((2, 3)))


# Numba's on-disk cache does not see edits of the modules these kernels call: drop this
# module's cached kernels when those sources changed since they were compiled (sim.terms).
_SOURCES = fingerprint(sim.rng, sim.terms, sim.kernels)


@njit(cache=True, no_cfunc_wrapper=True)
def _compiled_against():
    return _SOURCES


drop_stale_caches(globals(), _compiled_against, _SOURCES)
