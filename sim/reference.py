"""Plain-NumPy reference implementations: baselines for benchmarks and cross-checks.

`numpy_sample_trajectories` is the DS sampler (DESIGN.md §1) written the way one would
without Numba: vectorised over trajectories, a Python loop over attempts.
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


def numpy_sample_alias(keep: np.ndarray, alias: np.ndarray, table: tuple[np.ndarray, ...],
                       n: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """The alias sampler of sim.alias, vectorised in NumPy (same table, same algorithm)."""
    x = rng.random(n) * keep.shape[0]
    j = x.astype(np.int64)
    pick = np.where(x - j < keep[j], j, alias[j])
    return tuple(col[pick] for col in table)
