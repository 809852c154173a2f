"""Plain-NumPy reference implementations: baselines for benchmarks and cross-checks.

`numpy_sample_trajectories` is the DS sampler (DESIGN.md §1) written the way one would
without Numba: vectorised over trajectories, a Python loop over attempts.
`numpy_sample_slots` is the Numba kernel's own algorithm (sim.kernels.sample_population_into:
draw every slot's outcomes, then cut the slot sequence into trajectories) in NumPy; it is
slower in NumPy than the attempt loop, so the benchmark holds the Numba kernel to the faster.
"""

from __future__ import annotations

import numpy as np


def numpy_sample_trajectories(p: float, q1: float, q2: float, max_attempts: int, n: int,
                              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n trajectories with forced stop at K; returns (masks, ns) in the kernel encoding."""
    masks = np.zeros(n, dtype=np.int64)
    ns = np.zeros(n, dtype=np.int64)
    active = np.arange(n)
    for k in range(max_attempts):
        correct = rng.random(active.size) < p
        masks[active[correct]] |= np.int64(1) << k
        if k == max_attempts - 1:
            ns[active] = max_attempts
            break
        u = rng.random(active.size)
        stop = np.where(correct, u < q1, u >= q2)
        ns[active[stop]] = k + 1
        active = active[~stop]
        if active.size == 0:
            break
    return masks, ns


def numpy_sample_slots(p: float, q1: float, q2: float, max_attempts: int, n: int,
                       rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Slot and scan: the same trajectories' distribution as `numpy_sample_trajectories`.

    A slot is one attempt (candidate draw, decision draw). Positions inside a run of
    RESAMPLEs are counted modulo K, because a forced stop at attempt K ends a trajectory
    whatever its decision draw said.
    """
    p_stop = p * q1 + (1 - p) * (1 - q2)
    slots_per_trajectory = min(float(max_attempts), 1.0 / max(p_stop, 1e-12))
    m = int(1.1 * n * slots_per_trajectory) + 64
    while True:
        correct = rng.random(m) < p
        u = rng.random(m)
        stop = np.where(correct, u < q1, u >= q2)
        idx = np.arange(m)
        run_start = np.zeros(m, dtype=np.int64)
        run_start[1:] = np.where(stop[:-1], idx[1:], 0)
        np.maximum.accumulate(run_start, out=run_start)
        k = (idx - run_start) % max_attempts
        ends = np.flatnonzero(stop | (k == max_attempts - 1))
        if ends.size >= n:
            break
        m *= 2  # too few slots drawn for n trajectories (rare): draw again, more
    ends = ends[:n]
    starts = np.concatenate(([0], ends[:-1] + 1))
    used = ends[-1] + 1
    masks = np.add.reduceat(correct[:used].astype(np.int64) << k[:used], starts)
    return masks, ends - starts + 1


def numpy_sample_alias(keep: np.ndarray, alias: np.ndarray, table: tuple[np.ndarray, ...],
                       n: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """The alias sampler of sim.alias, vectorised in NumPy (same table, same algorithm)."""
    x = rng.random(n) * keep.shape[0]
    j = x.astype(np.int64)
    pick = np.where(x - j < keep[j], j, alias[j])
    return tuple(col[pick] for col in table)
