"""Benchmark: the Numba trajectory samplers vs NumPy, and vs the bare RNG limit (issue 2).

One run, 3-parameter agent, K = 8, prints trajectories/s for two algorithms, each written
both in Numba and vectorised in NumPy:
  sequential  attempt by attempt (sim.kernels.sample_population_into; NumPy:
              sim.reference.numpy_sample_trajectories, a Python loop over attempts),
  alias       one uniform per trajectory from the table of all 2^(K+1) trajectories
              (sim.alias; NumPy: sim.reference.numpy_sample_alias, same table),
and the bare-RNG limit for each: drawing the same number of U[0,1) doubles with the same
generator in the same parallel loop, one at a time as a sampler consumes them. A second
limit draws them in integer form and XOR-folds them, which LLVM vectorises (printed for
transparency: no sampler that branches on its draws can be vectorised like that).

    python benchmarks/bench_sampler.py [--trajectories N] [--agents A] [--repeats R]
"""

from __future__ import annotations

import argparse
import time

import numba
import numpy as np
from numba import njit, prange

from sim import kernels as kn
from sim.alias import alias_tables, sample_alias_into
from sim.reference import numpy_sample_alias, numpy_sample_trajectories
from sim.rng import agent_states, next_bits53, next_uniform

P, Q1, Q2, K = 0.6, 0.9, 0.8, 8


@njit(cache=True, parallel=True)
def bare_uniforms(states, draws_per_agent):
    """Draw `draws_per_agent` U[0,1) doubles per agent and sum them: the plain "draw this
    many uniforms" loop (float adds are not reassociated: one draw at a time)."""
    out = np.empty(states.shape[0])
    for a in prange(states.shape[0]):
        st = states[a]
        acc = 0.0
        for _ in range(draws_per_agent):
            u, st = next_uniform(st)
            acc += u
        out[a] = acc
    return out


@njit(cache=True, parallel=True)
def bare_bits_simd(states, draws_per_agent):
    """The same number of draws as 53-bit integers, XOR-folded (LLVM vectorises this)."""
    out = np.empty(states.shape[0], dtype=np.int64)
    for a in prange(states.shape[0]):
        st = states[a]
        acc = np.int64(0)
        for _ in range(draws_per_agent):
            k, st = next_bits53(st)
            acc ^= k
        out[a] = acc
    return out


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trajectories", type=int, default=4_000_000)
    ap.add_argument("--agents", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    a, per_agent = args.agents, args.trajectories // args.agents
    n = per_agent * a
    logits = np.tile(np.log([P / (1 - P), Q1 / (1 - Q1), Q2 / (1 - Q2)]), (a, 1))
    # caller-owned output buffers, reused as a long simulation does
    bufs = (np.empty((a, per_agent), np.int64), np.empty((a, per_agent), np.int8),
            np.empty((a, per_agent), np.int8))

    # warm up (compile or load from cache) and count the draws the sequential sampler makes
    kn.sample_population_into(agent_states(1, a), logits, K, False, *bufs)
    ns = bufs[1].astype(np.int64)
    seq_draws = 2 * ns.sum() - (ns == K).sum()  # 2 per attempt, 1 at a forced stop
    keep, alias, table = alias_tables(logits, K, False)
    sample_alias_into(agent_states(1, a), keep, alias, *table, *bufs)
    bare_uniforms(agent_states(0, a), 10)
    bare_bits_simd(agent_states(0, a), 10)
    rng = np.random.default_rng(0)

    t = {
        "numba sequential": best_of(lambda: kn.sample_population_into(
            agent_states(2, a), logits, K, False, *bufs), args.repeats),
        "numpy sequential": best_of(lambda: numpy_sample_trajectories(P, Q1, Q2, K, n, rng),
                                    max(1, args.repeats // 2)),
        "numba alias": best_of(lambda: sample_alias_into(
            agent_states(2, a), keep, alias, *table, *bufs), args.repeats),
        "numpy alias": best_of(lambda: numpy_sample_alias(keep[0], alias[0], table, n, rng),
                               max(1, args.repeats // 2)),
        "bare RNG, sequential draws": best_of(lambda: bare_uniforms(
            agent_states(3, a), int(seq_draws) // a), args.repeats),
        "bare RNG, alias draws": best_of(lambda: bare_uniforms(
            agent_states(3, a), per_agent), args.repeats),
        "bare SIMD, sequential draws": best_of(lambda: bare_bits_simd(
            agent_states(3, a), int(seq_draws) // a), args.repeats),
        "bare SIMD, alias draws": best_of(lambda: bare_bits_simd(
            agent_states(3, a), per_agent), args.repeats),
    }
    rate = {k: n / v for k, v in t.items()}
    print(f"K={K}, p={P}, q1={Q1}, q2={Q2}; {n:,} trajectories; sequential draws "
          f"{seq_draws / n:.2f} uniforms each, alias 1; {numba.get_num_threads()} Numba threads")
    for name, r in rate.items():
        print(f"  {name:30s} {r / 1e6:9.2f} M trajectories/s")
    seq, ali = rate["numba sequential"], rate["numba alias"]
    print("ratios (targets: >= 20x NumPy, >= 40% of the bare-RNG limit):")
    print(f"  sequential: {seq / rate['numpy sequential']:6.1f}x NumPy sequential, "
          f"{100 * seq / rate['bare RNG, sequential draws']:4.0f}% of bare RNG, "
          f"{100 * seq / rate['bare SIMD, sequential draws']:4.0f}% of bare SIMD")
    print(f"  alias:      {ali / rate['numpy alias']:6.1f}x NumPy alias, "
          f"{ali / rate['numpy sequential']:6.1f}x NumPy sequential, "
          f"{100 * ali / rate['bare RNG, alias draws']:4.0f}% of bare RNG, "
          f"{100 * ali / rate['bare SIMD, alias draws']:4.0f}% of bare SIMD")


if __name__ == "__main__":
    main()
