"""A counter-free splitmix64 generator usable inside Numba kernels.

Why not numpy's generator: inside `prange` Numba keeps one hidden state per thread, so draws
would depend on the thread count. Here every agent carries its own uint64 state, seeded
explicitly, and results are bit-for-bit reproducible for a given seed whatever the threads.
"""

from __future__ import annotations

import numpy as np
from numba import njit

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
S11 = np.uint64(11)
INV53 = 1.0 / 9007199254740992.0  # 2**-53


@njit(cache=True, inline="always")
def mix64(z: np.uint64) -> np.uint64:
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


@njit(cache=True, inline="always")
def next_bits53(state: np.uint64) -> tuple[np.int64, np.uint64]:
    """One uniform integer k in [0, 2^53): the uniform u = k 2^-53 in integer form."""
    state = state + GOLDEN
    return np.int64(mix64(state) >> S11), state


@njit(cache=True, inline="always")
def next_uniform(state: np.uint64) -> tuple[float, np.uint64]:
    """One U[0,1) draw; returns (u, new_state)."""
    k, state = next_bits53(state)
    return float(k) * INV53, state


# no_cfunc_wrapper: kernels here are called from Python or from other kernels, never as
# C function pointers, so the C wrapper Numba builds by default is not compiled (cold start)
@njit(cache=True, no_cfunc_wrapper=True)
def threshold53(prob: float) -> np.int64:
    """Integer threshold t with (k < t) <=> (k 2^-53 < prob) for every 53-bit k.

    Comparing integers skips the int-to-float conversion in hot loops and is exactly the
    same event as `next_uniform(...) < prob` (prob * 2^53 is exact: a power-of-two scale).
    """
    if prob <= 0.0:
        return np.int64(0)
    if prob >= 1.0:
        return np.int64(9007199254740992)
    return np.int64(np.ceil(prob * 9007199254740992.0))


@njit(cache=True, no_cfunc_wrapper=True)
def agent_state(seed: int, agent: int) -> np.uint64:
    """Initial state of agent `agent`'s stream under the run seed `seed`."""
    return mix64(np.uint64(seed) * GOLDEN + mix64(np.uint64(agent) + GOLDEN))


def agent_states(seed: int, n_agents: int) -> np.ndarray:
    """Vector of initial states, one per agent (uint64)."""
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be in [0, 2**64 - 1], got {seed}")
    # uint64 arguments, always: a Numba build for Python ints (int64) would otherwise be
    # reused for a later seed >= 2**63 and overflow
    s = np.uint64(seed)
    return np.array([agent_state(s, np.uint64(i)) for i in range(n_agents)], dtype=np.uint64)
