"""Sample DS trajectories at fixed (p, q1, q2) and calibrate them (DESIGN.md §4).

The round trip "known (p, q1, q2) -> trajectories -> (p̂, q̂1, q̂2)" is how the calibration
estimators are checked, and the simulated side of the calibration charts.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from core.calibration import Estimate, TrajectoryCounts, calibrate
from core.twostage import check_probability
from sim import kernels as kn
from sim.alias import MAX_ALIAS_ATTEMPTS, sample_population_alias
from sim.rng import agent_states

MAX_SEED = 2**64 - 1  # splitmix64 seeds are uint64 (sim.rng)
# Peak bytes per sampled trajectory (the sampler's arrays, the int64 copies, the (n, K)
# temporaries of trajectory_counts, the counts matrix and one bootstrap replicate's weights)
# and per bootstrap replicate (its column sums and statistics); measured with tracemalloc
# (about 264 B at K <= 2 and 25.5 B per further attempt) and rounded up.
BYTES_PER_TRAJECTORY = 280
BYTES_PER_TRAJECTORY_ATTEMPT = 26
BYTES_PER_REPLICATE = 400
MEMORY_SHARE = 0.5  # refuse a run that needs more than this share of the machine's RAM


def physical_memory_bytes() -> int | None:
    """RAM this process may use: the machine's total (os.sysconf, else psutil), capped by a
    cgroup v2 memory limit where one is set (containers); None when nothing says."""
    total = None
    try:
        total = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        try:
            import psutil

            total = int(psutil.virtual_memory().total)
        except ImportError:
            pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        limit = "max"
    if limit.isdigit():
        total = int(limit) if total is None else min(total, int(limit))
    return total


def simulation_bytes(n: int, max_attempts: int, n_boot: int) -> int:
    """Upper estimate of the peak memory of simulate_and_calibrate (an upper bound of the
    numpy allocations measured at K = 1..30, within a factor 2 of them)."""
    return (int(n) * (BYTES_PER_TRAJECTORY + BYTES_PER_TRAJECTORY_ATTEMPT * int(max_attempts))
            + int(n_boot) * BYTES_PER_REPLICATE)


def _size(nbytes: float) -> str:
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    i = 0
    while nbytes >= 1024 and i < len(units) - 1:
        nbytes, i = nbytes / 1024, i + 1
    return f"{nbytes:.3g} {units[i]}"


def check_simulation_size(n: int, max_attempts: int, n_boot: int,
                          memory: int | None = None) -> None:
    """Refuse, before allocating anything, a simulation whose arrays need more than half of
    the machine's RAM (DESIGN §4 calibration of n trajectories with n_boot replicates)."""
    memory = physical_memory_bytes() if memory is None else memory
    if memory is None:
        return
    need = simulation_bytes(n, max_attempts, n_boot)
    limit = int(memory * MEMORY_SHARE)
    if need <= limit:
        return
    per_traj = BYTES_PER_TRAJECTORY + BYTES_PER_TRAJECTORY_ATTEMPT * int(max_attempts)
    culprit = ("--n-boot" if n_boot * BYTES_PER_REPLICATE > n * per_traj else "--n")
    raise ValueError(
        f"{culprit} too large: --n {n} trajectories (about {per_traj} B each at "
        f"--max-attempts {max_attempts}) and --n-boot {n_boot} bootstrap replicates need about "
        f"{_size(need)} of memory, above the limit of {_size(limit)} (half of the "
        f"{_size(memory)} of RAM here); use a smaller {culprit}")


def probability_logits(p: float, q1: float, q2: float) -> np.ndarray:
    """Logits of probabilities in [0, 1] (0 and 1 map to -inf / +inf, which the kernels take)."""
    probs = np.array([float(check_probability(n, v)) for n, v in
                      (("p", p), ("q1", q1), ("q2", q2))])
    with np.errstate(divide="ignore"):
        return np.log(probs) - np.log1p(-probs)


def sample_trajectories(p: float, q1: float, q2: float, max_attempts: int, n: int, seed: int,
                        final_sampled: bool = False) -> tuple[np.ndarray, ...]:
    """n trajectories (masks, ns, truncs) from one agent's reproducible stream (the alias
    sampler where its table is small next to n, else attempt by attempt)."""
    if n < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    if not 1 <= max_attempts <= kn.MAX_ATTEMPTS:
        raise ValueError(f"--max-attempts must be in 1..{kn.MAX_ATTEMPTS}, got {max_attempts}")
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"--seed must be in 0..2**64-1 (a uint64 splitmix64 seed), got {seed}")
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
    """Sample n trajectories and calibrate them; predicted accuracy uses the forced stop at K.

    Refuses (ValueError) a run whose arrays would need more than half of the RAM. Estimates
    that are undefined on these data (e.g. q̂2 with no wrong candidate) are NaN.
    """
    if n_boot < 1:
        raise ValueError(f"--n-boot must be >= 1, got {n_boot}")
    check_simulation_size(n, max_attempts, n_boot)
    masks, ns, truncs = sample_trajectories(p, q1, q2, max_attempts, n, seed)
    counts = trajectory_counts(masks, ns, truncs, max_attempts)
    return calibrate(counts, max_attempts=max_attempts, n_boot=n_boot, seed=seed)
