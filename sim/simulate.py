"""Sample DS trajectories at fixed (p, q1, q2) and calibrate them (DESIGN.md §4).

The round trip "known (p, q1, q2) -> trajectories -> (p̂, q̂1, q̂2)" is how the calibration
estimators are checked, and the simulated side of the calibration charts.
"""

from __future__ import annotations

import numpy as np

from analysis.calibration import Estimate, TrajectoryCounts, calibrate
from analysis.twostage import _check_probability
from sim import kernels as kn
from sim.alias import MAX_ALIAS_ATTEMPTS, sample_population_alias
from sim.rng import agent_states


def probability_logits(p: float, q1: float, q2: float) -> np.ndarray:
    """Logits of probabilities in [0, 1] (0 and 1 map to -inf / +inf, which the kernels take)."""
    probs = np.array([float(_check_probability(n, v)) for n, v in
                      (("p", p), ("q1", q1), ("q2", q2))])
    with np.errstate(divide="ignore"):
        return np.log(probs) - np.log1p(-probs)


def sample_trajectories(p: float, q1: float, q2: float, max_attempts: int, n: int, seed: int,
                        final_sampled: bool = False) -> tuple[np.ndarray, ...]:
    """n trajectories (masks, ns, truncs) from one agent's reproducible stream (the alias
    sampler where its table is small next to n, else attempt by attempt)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 1 <= max_attempts <= kn.MAX_ATTEMPTS:
        raise ValueError(f"max_attempts must be in 1..{kn.MAX_ATTEMPTS}, got {max_attempts}")
    logits = probability_logits(p, q1, q2)[None, :]
    sampler = kn.sample_population
    # the alias table has 2^(K+1) rows: worth building when it is small next to n
    if max_attempts <= MAX_ALIAS_ATTEMPTS and 2 ** (max_attempts + 1) <= n:
        sampler = sample_population_alias
    masks, ns, truncs = sampler(agent_states(seed, 1), logits, max_attempts, final_sampled, n)
    return masks[0], ns[0].astype(np.int64), truncs[0].astype(np.int64)


def trajectory_counts(masks: np.ndarray, ns: np.ndarray, truncs: np.ndarray, max_attempts: int,
                      final_sampled: bool = False) -> TrajectoryCounts:
    """Per-trajectory calibration counts from the kernel encoding (sim.kernels docstring).

    The forced stop at K is not a decision and is not counted; under `final_sampled` the
    decision at K is a sampled token and counts (RESAMPLE there truncates the answer).
    """
    k = np.arange(max_attempts)
    bits = (masks[:, None] >> k) & 1
    made = k < ns[:, None]
    last = k == (ns[:, None] - 1)
    forced = last & (ns[:, None] == max_attempts) & (not final_sampled)
    has_decision = made & ~forced
    resample = made & (~last | (truncs[:, None] == 1))
    correct = (bits == 1) & made
    wrong = (bits == 0) & made
    nxt = np.zeros_like(bits)
    nxt[:, :-1] = bits[:, 1:]
    ft_opp = wrong & resample & (k < ns[:, None] - 1)
    final = (truncs == 0) & (((masks >> (ns - 1)) & 1) == 1)
    return TrajectoryCounts(
        first_correct=(masks & 1).astype(np.int64),
        final_correct=final.astype(np.int64),
        n_candidates=ns.astype(np.int64),
        n_correct_candidates=correct.sum(axis=1),
        n_decisions_after_correct=(correct & has_decision).sum(axis=1),
        n_stop_after_correct=(correct & has_decision & ~resample).sum(axis=1),
        n_decisions_after_wrong=(wrong & has_decision).sum(axis=1),
        n_resample_after_wrong=(wrong & has_decision & resample).sum(axis=1),
        n_ft_opportunities=ft_opp.sum(axis=1),
        n_ft=(ft_opp & (nxt == 1)).sum(axis=1),
    )


def simulate_and_calibrate(p: float, q1: float, q2: float, max_attempts: int, n: int,
                           seed: int = 0, n_boot: int = 100) -> dict[str, Estimate]:
    """Sample n trajectories and calibrate them; predicted accuracy uses the forced stop at K."""
    masks, ns, truncs = sample_trajectories(p, q1, q2, max_attempts, n, seed)
    counts = trajectory_counts(masks, ns, truncs, max_attempts)
    return calibrate(counts, max_attempts=max_attempts, n_boot=n_boot, seed=seed)
