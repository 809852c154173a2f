"""Batched Numba step over a whole population of DS agents (DESIGN.md §1-§3).

Structure of arrays: agent `a`'s parameters are row `phi[a]`, its settings are entries of
per-agent arrays, and one kernel (`step_agents`, on each thread of sim.kernel_threads) does
sampling, per-term gradients and the optimiser update for chunks of agents. No Python runs
per agent or per step beyond one kernel call per thread, which is what makes a population
of thousands of heterogeneous learners cheap (see benchmarks/bench_population.py). The
arrays travel in four named tuples, each field listed once: `State` (updated in place),
`Learners` (per-agent settings), `Shared` (population-wide settings and the term table) and
`Out` (this step's results, and running sums over training).

Per agent and step: `n_queries` queries, each on an in-distribution task chosen round-robin
(so every ID task carries equal weight, DESIGN §1), each a group of G trajectories sampled
from the agent's own splitmix64 stream (sim.rng) -- results do not depend on the thread count.
Stream convention: the one of `sim.kernels.sample_trajectory` (each attempt one slot of two
draws), queries in order, G trajectories each: the trajectories are those that repeated
`sample_trajectory` calls would draw, bit for bit. Each term is formed from its entry of
`sim.terms.TERMS` (as arrays: `Shared.terms`) as in `sim.objectives.mc_logit_gradients`, but
in count form (sim.population_counts): every kernel that does not read the KL return Q_t is
linear in a trajectory's six action-type counts, so a group's filtered, advantage-weighted
mean is a weighted sum of count vectors through a per-task coefficient table; KL in reward
walks each trajectory with `sim.kernels.trajectory_terms`. The results equal the
per-trajectory kernels' on the same draws up to floating-point summation order
(tests/test_population_counts.py). Terms on the SFT data use the exact expectation over the
(at most two) data trajectories, which is cheaper and noise-free. PPO clipping is not
modelled: one on-policy update per group makes every ratio 1.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np
from numba import njit

import sim.kernel_threads
import sim.kernels
import sim.population_counts
import sim.population_optim
import sim.rng
import sim.terms
from sim import kernels as kn
from sim import population_counts as pc
from sim.kernel_threads import run_threaded, take_next
from sim.population_optim import (  # noqa: F401  (re-exported: the kernel's optimiser codes)
    OPT_ADAM,
    OPT_SGD,
    V_PER_PARAMETER,
    V_SHARED,
    optimiser_step,
)
from sim.rng import threshold53
from sim.terms import ANY, OWN, drop_stale_caches, fingerprint, keeps

AGENT_CHUNK = 16  # agents a thread takes at a time (population_step)


class State(NamedTuple):
    """What a step updates in place (A agents, P parameters)."""

    phi: np.ndarray  # (A, P) parameters
    ref_phi: np.ndarray  # (A, P) reference parameters: pi_ref (DESIGN §2)
    adam_m: np.ndarray  # (A, P) Adam first moments
    adam_v: np.ndarray  # (A, P) Adam second moments (shared: one value, in every column)
    streams: np.ndarray  # (A,) uint64 splitmix64 streams (sim.rng)


class Learners(NamedTuple):
    """Each agent's settings (T tasks, D data trajectories, N_KINDS terms of sim.terms)."""

    jac: np.ndarray  # (A, T, 3, P) and offsets (A, T, 3): logits(t) = b(t) + J_t phi (§1)
    offsets: np.ndarray
    active: np.ndarray  # (A, N_KINDS) bool: the terms of its objective
    term_w: np.ndarray  # (A, N_KINDS) their weights (GRPO: surrogate 1, kl beta)
    w_c: np.ndarray  # (A,) token weights w(L_C), w(L_W) (DESIGN §2)
    w_w: np.ndarray
    gamma: np.ndarray  # (A,) per-attempt discount
    data_masks: np.ndarray  # (A, D) SFT data trajectories (mask, n) and their probabilities
    data_ns: np.ndarray
    data_w: np.ndarray
    opt_kind: np.ndarray  # (A,) OPT_SGD / OPT_ADAM (gradient ascent), with lr, beta1, beta2, eps
    lr: np.ndarray
    beta1: np.ndarray
    beta2: np.ndarray
    eps: np.ndarray
    second_moment: np.ndarray  # (A,) V_PER_PARAMETER / V_SHARED (Adam only)
    max_grad_norm: np.ndarray  # (A,) global L2 clip of grad phi before the step; 0 = off
    # Loss normalisers and data token weights (DESIGN §2 "Loss normalisation in real
    # trainers"; sim.objectives.population_token_arrays builds them). Fields with defaults
    # stay last; the empty default means "no normaliser, no loss mask" for every agent.
    norm_own: np.ndarray = np.empty(0)  # (A,) on own samples: > 0, NORM_TRAJECTORY, NORM_BATCH
    norm_data: np.ndarray = np.empty(0)  # (A,) on the SFT data: > 0 or NORM_TRAJECTORY
    data_w_w: np.ndarray = np.empty(0)  # (A,) w(L_W) on the SFT data (0: wrong attempts masked)


class Shared(NamedTuple):
    """Settings of the whole population: they shape the kernel's loops."""

    id_tasks: np.ndarray  # (n_id,) in-distribution task indices
    max_attempts: int  # K
    final_sampled: bool  # a decision is sampled at attempt K (DESIGN §1)
    group_size: int  # G
    n_queries: int  # queries per agent and step
    std_scaling: bool  # advantages divided by the group's std (+ adv_eps, ddof std_ddof)
    std_ddof: int
    adv_eps: float
    estimator: int  # KL estimator (sim.kernels.ESTIMATORS) and its clamp (0: off)
    clamp: float
    # the term table as arrays indexed by term, KL placement resolved (sim.terms.term_codes)
    term_column: np.ndarray  # kernel column
    term_source: np.ndarray  # OWN / DATA
    term_filter: np.ndarray  # ANY / FAILED / SUCCEEDED
    term_sign: np.ndarray  # +1 / -1
    term_advantage: np.ndarray  # bool


class Out(NamedTuple):
    """What a step reports per agent."""

    grads: np.ndarray  # (A, N_KINDS, 3) unweighted per-term logit gradients, mean over queries
    rewards: np.ndarray  # (A,) mean reward of the sampled trajectories
    jumps: np.ndarray  # (A,) largest |change| of p, q1, q2 over all tasks in this step
    # Running statistics over training, updated by every step when given (empty: not kept):
    # sums of the signed and absolute per-term gradients and (row N_KINDS) of their weighted
    # total, and the largest jump so far
    grad_sum: np.ndarray = np.empty((0, 0, 0))  # (A, N_KINDS + 1, 3)
    abs_grad_sum: np.ndarray = np.empty((0, 0, 0))  # (A, N_KINDS + 1, 3)
    max_jump: np.ndarray = np.empty(0)  # (A,)


# The kernels below built with no_cfunc_wrapper are called from Python or from other kernels,
# never as C function pointers: the C wrapper Numba builds by default is not compiled (cold
# start).
@njit(cache=True, inline="always")
def _task_logits(jac_t, off_t, phi_a, out):
    """logits(t) = b(t) + J_t phi (sim.model.AgentSpec.task_logits for one task)."""
    for x in range(3):
        acc = off_t[x]
        for j in range(phi_a.shape[0]):
            acc += jac_t[x, j] * phi_a[j]
        out[x] = acc


@njit(cache=True, inline="always")
def _agent_logits(jac, offsets, a, t, params, out):
    """`_task_logits` of agent a on task t, indexing the population's arrays (views would
    cost reference-count updates in the per-agent loop); out[0] = logits."""
    for x in range(3):
        acc = offsets[a, t, x]
        for j in range(params.shape[1]):
            acc += jac[a, t, x, j] * params[a, j]
        out[0, x] = acc


@njit(cache=True, inline="always")
def _add_term(gq, k, descend, values, c, scale):
    """gq[k] += scale * values[c], or -= for a term of sign -1 (`descend`)."""
    if descend:
        for x in range(3):
            gq[k, x] -= scale * values[c, x]
    else:
        for x in range(3):
            gq[k, x] += scale * values[c, x]


@njit(cache=True, nogil=True, no_cfunc_wrapper=True)
def step_agents(counter, state_, learners_, shared_, step, out_):
    """One training step (the body of `population_step`) of the chunks of AGENT_CHUNK agents
    this call takes from `counter` (int64[1], shared by the threads of one step: each chunk
    goes to the first that asks), each agent in place and on its own stream; the packs as
    named tuples or as plain tuples in their field order. The scratch is allocated once per
    call (sim.population_counts.make_scratch) and reused by its agents.

    Per agent, phase 1 samples every query's group from its stream, query by query. Phase 2
    forms each term from per-type count sums (sim.population_counts), walking single
    trajectories only for kernels that read the KL return Q_t (KL in reward). Consecutive
    queries on the same task (one ID task: all of them) share their logits, so their count
    sums are added first and the task's coefficient table, SFT-data expectation and chain
    rule are applied once per run of queries: the same sum, in another order."""
    state, learners = State(*state_), Learners(*learners_)
    shared, out = Shared(*shared_), Out(*out_)
    n_agents = out.grads.shape[0]
    phi, ref_phi, jac, offsets, active = (state.phi, state.ref_phi, learners.jac,
                                          learners.offsets, learners.active)
    n_kinds, n_params = shared.term_column.shape[0], phi.shape[1]
    id_tasks, g, n_queries = shared.id_tasks, shared.group_size, shared.n_queries
    n_id = id_tasks.shape[0]
    max_attempts, final_sampled = shared.max_attempts, shared.final_sampled
    sc = pc.Scratch(*pc.make_scratch(max_attempts, n_queries, g, n_kinds, n_params))
    a = end = 0
    while True:
        if a == end:  # this call's next chunk of agents
            a = take_next(counter) * AGENT_CHUNK
            if a >= n_agents:
                return
            end = min(n_agents, a + AGENT_CHUNK)
        w_c, w_w, gamma = learners.w_c[a], learners.w_w[a], learners.gamma[a]
        norm_own, norm_data, w_w_data = 1.0, 1.0, w_w  # loss normalisers, data weights (§2)
        if learners.norm_own.shape[0] > 0:
            norm_own, norm_data = learners.norm_own[a], learners.norm_data[a]
            w_w_data = learners.data_w_w[a]
        rec, counts, rewards, factor = sc.rec, sc.counts, sc.rewards, sc.factor
        # phase 1: every query's group, round-robin over ID tasks continued across steps
        st = state.streams[a]
        t_p = t_q1 = t_q2 = np.int64(0)
        for q in range(n_queries):
            t = id_tasks[((step - 1) * n_queries + q) % n_id]
            if q == 0 or n_id > 1:  # integer thresholds: the sampler compares raw 53-bit draws
                _agent_logits(jac, offsets, a, t, phi, sc.logits)
                t_p = threshold53(kn.sigmoid(sc.logits[0, 0]))
                t_q1 = threshold53(kn.sigmoid(sc.logits[0, 1]))
                t_q2 = threshold53(kn.sigmoid(sc.logits[0, 2]))
            st = pc.sample_group(st, t_p, t_q1, t_q2, g, max_attempts, final_sampled, sc.codes,
                                 rec, q * g)
        state.streams[a] = st
        n_batch = n_queries * g
        tokens_sum = 0.0
        for c in range(n_batch):
            rewards[c] = pc.trajectory_counts(rec, c, max_attempts, final_sampled, gamma, counts)
            if norm_own <= 0.0:  # |o| needed: NORM_TRAJECTORY or NORM_BATCH
                factor[c] = pc.trajectory_token_count(counts, c, w_c, w_w)
                tokens_sum += factor[c]
        if norm_own == kn.NORM_BATCH:  # the step's batch mean |o| (DESIGN §2)
            norm_own = tokens_sum / n_batch
        per_trajectory = norm_own == kn.NORM_TRAJECTORY
        if per_trajectory:
            for c in range(n_batch):
                factor[c] = 1.0 / factor[c]
        on_data = False  # a term of this agent reads the SFT data
        need_x = pc.READS_X or shared.estimator != kn.K1
        for k in range(n_kinds):
            for x in range(3):
                out.grads[a, k, x] = 0.0
            on_data |= active[a, k] and shared.term_source[k] != OWN
        gq, acc, table, grad_phi = sc.gq, sc.sums, sc.table, sc.grad_phi
        logits, ref_logits = sc.logits[0], sc.ref_logits[0]
        for j in range(n_params):
            grad_phi[j] = 0.0
        reward_sum = 0.0
        run = 0  # queries in the current run on one task
        for q in range(n_queries):
            t = id_tasks[((step - 1) * n_queries + q) % n_id]
            if run == 0:  # a new run: its task's logits and coefficient table
                _agent_logits(jac, offsets, a, t, phi, sc.logits)
                _agent_logits(jac, offsets, a, t, ref_phi, sc.ref_logits)
                pc.count_table(logits, ref_logits, w_c, w_w, shared.estimator, shared.clamp,
                               need_x, table)
                for k in range(n_kinds):
                    for x in range(pc.N_TYPES):
                        acc[k, x] = 0.0
                    for x in range(3):
                        gq[k, x] = 0.0
            run += 1
            lo = q * g
            rmean = 0.0
            for i in range(g):
                rmean += rewards[lo + i]
            rmean /= g
            reward_sum += rmean
            scale = 1.0
            if shared.std_scaling:
                var = 0.0
                for i in range(g):
                    var += (rewards[lo + i] - rmean) ** 2
                scale = 1.0 / (np.sqrt(var / (g - shared.std_ddof)) + shared.adv_eps)
            # terms on the agent's own samples: the group mean of each one's kernel column,
            # reward-filtered, signed and (the surrogate) advantage-weighted, each trajectory
            # also divided by its loss normaliser
            for k in range(n_kinds):
                if not active[a, k] or shared.term_source[k] != OWN:
                    continue
                c, f = shared.term_column[k], shared.term_filter[k]
                weighted, walk = shared.term_advantage[k], pc.READS_RETURN[c]
                sign = shared.term_sign[k] / g
                if not walk and not per_trajectory:
                    sign /= norm_own
                if walk:  # not count-linear: walk each trajectory
                    for i in range(g):
                        r = rewards[lo + i]
                        if f != ANY and not keeps(f, r):
                            continue
                        wi = sign * ((r - rmean) * scale if weighted else 1.0)
                        mask, n, trunc = pc.record(rec, lo + i)
                        kn.trajectory_terms(mask, n, trunc, max_attempts, final_sampled, logits,
                                            ref_logits, w_c, w_w, shared.estimator, shared.clamp,
                                            gamma, norm_own, sc.terms, sc.bufs, sc.ibufs)
                        for x in range(3):
                            gq[k, x] += wi * sc.terms[c, x]
                    continue
                # the count sums in registers (acc, an array, may alias counts)
                s0 = s1 = s2 = s3 = s4 = s5 = 0.0
                for i in range(g):
                    r = rewards[lo + i]
                    if f != ANY and not keeps(f, r):
                        continue
                    wi = (r - rmean) * scale if weighted else 1.0
                    if per_trajectory:
                        wi *= factor[lo + i]
                    s0 += wi * counts[lo + i, 0]
                    s1 += wi * counts[lo + i, 1]
                    s2 += wi * counts[lo + i, 2]
                    s3 += wi * counts[lo + i, 3]
                    s4 += wi * counts[lo + i, 4]
                    s5 += wi * counts[lo + i, 5]
                acc[k, 0] += sign * s0
                acc[k, 1] += sign * s1
                acc[k, 2] += sign * s2
                acc[k, 3] += sign * s3
                acc[k, 4] += sign * s4
                acc[k, 5] += sign * s5
            if q < n_queries - 1 and id_tasks[((step - 1) * n_queries + q + 1) % n_id] == t:
                continue  # the run goes on
            # end of a run: count sums through the task's table, the SFT data's exact
            # expectation (once per query of the run), then the chain rule (J_t^T g)
            for k in range(n_kinds):
                if active[a, k] and shared.term_source[k] == OWN \
                        and not pc.READS_RETURN[shared.term_column[k]]:
                    pc.apply_table(table, shared.term_column[k], acc[k], 1.0, gq, k)
            if on_data:
                for d in range(learners.data_w.shape[1]):
                    wd = learners.data_w[a, d]
                    if wd == 0.0:
                        continue
                    # trunc an int64, not the literal 0: one compiled trajectory_terms
                    rd, _ = kn.trajectory_terms(learners.data_masks[a, d], learners.data_ns[a, d],
                                                np.int64(0), max_attempts, final_sampled,
                                                logits, ref_logits, w_c, w_w_data,
                                                shared.estimator, shared.clamp, gamma,
                                                norm_data, sc.terms, sc.bufs, sc.ibufs)
                    for k in range(n_kinds):
                        if not active[a, k] or shared.term_source[k] == OWN:
                            continue
                        f = shared.term_filter[k]
                        if f != ANY and not keeps(f, rd):
                            continue
                        _add_term(gq, k, shared.term_sign[k] < 0, sc.terms, shared.term_column[k],
                                  wd * run)
            for x in range(3):
                tot = 0.0
                for k in range(n_kinds):
                    if active[a, k]:
                        tot += learners.term_w[a, k] * gq[k, x]
                        out.grads[a, k, x] += gq[k, x] / n_queries
                for j in range(n_params):
                    grad_phi[j] += jac[a, t, x, j] * tot / n_queries
            run = 0
        out.rewards[a] = reward_sum / n_queries
        for j in range(n_params):
            sc.old_phi[j] = phi[a, j]
        optimiser_step(phi[a], state.adam_m[a], state.adam_v[a], grad_phi, learners.opt_kind[a],
                       learners.lr[a], learners.beta1[a], learners.beta2[a], learners.eps[a],
                       learners.second_moment[a], learners.max_grad_norm[a], step)
        out.jumps[a] = prob_jump(jac[a], offsets[a], sc.old_phi, phi[a], sc.probs)
        if out.max_jump.shape[0] > 0:
            _accumulate(a, out, learners.active, learners.term_w)
        a += 1


@njit(cache=True, inline="always")
def _accumulate(a, out, active, term_w):
    """Add agent a's step to the running statistics of `Out`."""
    n_kinds = out.grads.shape[1]
    out.max_jump[a] = max(out.max_jump[a], out.jumps[a])
    for x in range(3):
        total = 0.0
        for k in range(n_kinds):
            g = out.grads[a, k, x]
            if active[a, k]:
                total += term_w[a, k] * g
            out.grad_sum[a, k, x] += g
            out.abs_grad_sum[a, k, x] += abs(g)
        out.grad_sum[a, n_kinds, x] += total
        out.abs_grad_sum[a, n_kinds, x] += abs(total)


@njit(cache=True, no_cfunc_wrapper=True)
def prob_jump(jac_a, off_a, old_phi, new_phi, probs):
    """max over tasks t and x of |sigmoid(logit_x(t)) after - before| for one agent's update
    (the chaos flag of DESIGN §2: a step that moves p or q by more than 0.5); probs: (2, 3)
    scratch."""
    before, after = probs[0], probs[1]
    most = 0.0
    for t in range(off_a.shape[0]):
        _task_logits(jac_a[t], off_a[t], old_phi, before)
        _task_logits(jac_a[t], off_a[t], new_phi, after)
        for x in range(3):
            most = max(most, abs(kn.sigmoid(after[x]) - kn.sigmoid(before[x])))
    return most


def population_step(state, learners, shared, step, out, threads: int | None = None) -> None:
    """One training step of every agent, in place; `step` is 1-based (Adam's bias
    correction). The fields of State, Learners, Shared and Out say what each array holds.

    Pass them as plain tuples in their field order (`tuple(pack)`): Numba types plain tuples
    of arrays in its C dispatcher (named tuples: about 4 us more per call, a few percent of a
    small population's step).

    `threads` (default: numba.get_num_threads()) calls of `step_agents` share the chunks of
    agents (sim.kernel_threads: Python threads, the kernel releases the GIL). An agent's
    results depend on its own stream only, so neither the chunks nor the threads change them.
    """
    n_chunks = -(-out[0].shape[0] // AGENT_CHUNK)  # out.grads: one row per agent
    threads = min(numba.get_num_threads() if threads is None else threads, n_chunks)
    run_threaded(step_agents, [(state, learners, shared, step, out)] * max(1, threads))


def population_step_serial(state, learners, shared, step, out) -> None:
    """`population_step` on this thread alone: for small populations and for sweep worker
    processes, where a second thread would cost more than it saves."""
    population_step(state, learners, shared, step, out, threads=1)


@njit(cache=True, no_cfunc_wrapper=True)
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


# Numba's on-disk cache does not see edits of the modules these kernels call: drop this
# module's cached kernels when those sources changed since they were compiled (sim.terms).
_SOURCES = fingerprint(sim.rng, sim.terms, sim.kernels, sim.population_counts,
                       sim.population_optim, sim.kernel_threads)


@njit(cache=True, no_cfunc_wrapper=True)
def _compiled_against():
    return _SOURCES


drop_stale_caches(globals(), _compiled_against, _SOURCES)
