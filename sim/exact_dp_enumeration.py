"""Exact expectations by enumerating every trajectory (DESIGN.md §3): the reference that the
dynamic programme over attempts (sim.exact_dp) is tested against, and the trajectory table
of the alias sampler (sim.alias). 2^(K+1) trajectories, so K <= MAX_ENUMERATED_ATTEMPTS.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from sim import kernels as kn
from sim.exact_dp import OwnMoments

MAX_ENUMERATED_ATTEMPTS = 16  # 2^17 trajectories: beyond, enumeration costs seconds and GBs


@lru_cache(maxsize=64)
def all_trajectories(max_attempts: int, final_sampled: bool) -> tuple[np.ndarray, ...]:
    """Every trajectory (masks, ns, truncs) for K = max_attempts (DESIGN §3, exact)."""
    if max_attempts > MAX_ENUMERATED_ATTEMPTS:
        raise ValueError(f"enumerating 2^(K+1) trajectories needs K <= "
                         f"{MAX_ENUMERATED_ATTEMPTS}, got {max_attempts} (the exact gradients "
                         f"of sim.exact_dp and Monte Carlo have no such limit)")
    masks, ns, truncs = [], [], []
    for n in range(1, max_attempts + 1):
        for mask in range(1 << n):
            masks.append(mask)
            ns.append(n)
            truncs.append(0)
            if n == max_attempts and final_sampled:
                masks.append(mask)
                ns.append(n)
                truncs.append(1)
    out = tuple(np.array(a, dtype=np.int64) for a in (masks, ns, truncs))
    for a in out:
        a.setflags(write=False)
    return out


def enumerated_moments(logits, ref_logits, max_attempts: int, final_sampled: bool,
                       gamma: float, w_correct: float, w_wrong: float, estimator: int,
                       clamp: float, norm: float) -> OwnMoments:
    """`sim.exact_dp.own_moments` by enumeration: each trajectory's kernels
    (sim.kernels.trajectory_terms) weighted by its probability (DESIGN §2-§3)."""
    masks, ns, truncs = all_trajectories(max_attempts, final_sampled)
    logits, ref_logits = np.asarray(logits, float), np.asarray(ref_logits, float)
    probs = np.exp(kn.batch_log_probs(masks, ns, truncs, max_attempts, final_sampled, logits))
    if norm == kn.NORM_BATCH:  # the large-batch limit of the batch's mean |o|: E|o|
        norm = float(probs @ kn.batch_tokens(masks, ns, truncs, max_attempts, final_sampled,
                                             w_correct, w_wrong))
    terms, rewards, _ = kn.batch_terms(masks, ns, truncs, max_attempts, final_sampled, logits,
                                       ref_logits, w_correct, w_wrong, estimator, clamp, gamma,
                                       norm)
    # the rows of OwnMoments.by_weight: E[k], E[R k], E[1{R > 0} k], E[1{R = 0} k]
    rows = (np.ones_like(rewards), rewards, rewards > 0, rewards == 0)
    by_weight = np.stack([np.einsum("i,icj->cj", probs * f, terms) for f in rows])
    return OwnMoments(by_weight, float(probs @ rewards),
                      bool(np.all((rewards == 0) | (rewards == 1))))
