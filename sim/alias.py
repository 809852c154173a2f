"""Walker/Vose alias sampling of whole trajectories: one uniform per trajectory.

With K attempts a DS agent has only 2^(K+1) - 2 possible trajectories (plus the truncated
ones under `final_sampled`), so at fixed logits the trajectory distribution is a finite table
(sim.objectives.all_trajectories, probabilities from sim.kernels.trajectory_log_prob). The
alias method draws from it in O(1) with a single uniform u: x = u N, column j = floor(x),
keep j if frac(x) < prob[j] else take alias[j] (frac keeps 53 - log2 N bits). No branch
depends on the trajectory's length, which is what limits the attempt-by-attempt sampler.
Building the table costs O(N) per agent, so it pays off when many trajectories are drawn at
the same logits (simulate, calibration checks); training steps use the sequential sampler.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from sim import kernels as kn
from sim.rng import INV53, next_bits53

MAX_ALIAS_ATTEMPTS = 16  # 2^17 table entries per agent at most


@njit(cache=True)
def build_alias(probs, keep, alias):
    """Vose's alias table for `probs` (sums to 1) into keep[N] (float) and alias[N] (int)."""
    n = probs.shape[0]
    scaled = probs * n
    small = np.empty(n, np.int64)
    large = np.empty(n, np.int64)
    ns = nl = 0
    for i in range(n):
        if scaled[i] < 1.0:
            small[ns] = i
            ns += 1
        else:
            large[nl] = i
            nl += 1
    while ns > 0 and nl > 0:
        ns -= 1
        s = small[ns]
        nl -= 1
        g = large[nl]
        keep[s] = scaled[s]
        alias[s] = g
        scaled[g] = (scaled[g] + scaled[s]) - 1.0
        if scaled[g] < 1.0:
            small[ns] = g
            ns += 1
        else:
            large[nl] = g
            nl += 1
    # leftovers are 1 up to rounding
    for j in range(nl):
        keep[large[j]] = 1.0
        alias[large[j]] = large[j]
    for j in range(ns):
        keep[small[j]] = 1.0
        alias[small[j]] = small[j]


@njit(cache=True, parallel=True)
def build_alias_tables(logits, masks, ns, truncs, max_attempts, final_sampled, keep, alias):
    """One alias table per agent (row of `logits`) over the trajectory table."""
    for a in prange(logits.shape[0]):
        probs = np.empty(masks.shape[0])
        for i in range(masks.shape[0]):
            probs[i] = np.exp(kn.trajectory_log_prob(masks[i], ns[i], truncs[i], max_attempts,
                                                     final_sampled, logits[a]))
        probs /= probs.sum()
        build_alias(probs, keep[a], alias[a])


@njit(cache=True, parallel=True)
def sample_alias_into(states, keep, alias, table_masks, table_ns, table_truncs, masks, ns,
                      truncs):
    """Fill masks/ns/truncs (agents x trajectories) by alias sampling, one uniform each."""
    n_agents, n_per_agent = masks.shape
    size = keep.shape[1]
    for a in prange(n_agents):
        st = states[a]
        for i in range(n_per_agent):
            k, st = next_bits53(st)
            x = float(k) * INV53 * size
            j = int(x)
            pick = j if x - j < keep[a, j] else alias[a, j]
            masks[a, i] = table_masks[pick]
            ns[a, i] = table_ns[pick]
            truncs[a, i] = table_truncs[pick]
        states[a] = st


def alias_tables(logits: np.ndarray, max_attempts: int, final_sampled: bool):
    """(keep, alias, table) for each agent's logits; table = (masks, ns, truncs)."""
    from sim.objectives import all_trajectories

    if max_attempts > MAX_ALIAS_ATTEMPTS:
        raise ValueError(f"alias sampling enumerates 2^(K+1) trajectories: K <= "
                         f"{MAX_ALIAS_ATTEMPTS}, got {max_attempts}")
    table = all_trajectories(max_attempts, final_sampled)
    n_agents = logits.shape[0]
    keep = np.empty((n_agents, table[0].shape[0]))
    alias = np.empty((n_agents, table[0].shape[0]), np.int64)
    build_alias_tables(np.ascontiguousarray(logits, dtype=float), *table, max_attempts,
                       final_sampled, keep, alias)
    return keep, alias, table


def sample_population_alias(states: np.ndarray, logits: np.ndarray, max_attempts: int,
                            final_sampled: bool, n_per_agent: int):
    """Same contract as sim.kernels.sample_population (another algorithm, same distribution)."""
    keep, alias, table = alias_tables(logits, max_attempts, final_sampled)
    shape = (logits.shape[0], n_per_agent)
    out = (np.empty(shape, np.int64), np.empty(shape, np.int8), np.empty(shape, np.int8))
    sample_alias_into(states, keep, alias, *table, *out)
    return out
