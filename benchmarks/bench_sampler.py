"""Benchmark: the Numba trajectory sampler vs NumPy, and vs the bare RNG limit (issue 2).

Prints trajectories/s for
  (a) sim.kernels.sample_population (Numba, parallel over agents, per-agent splitmix64),
  (b) sim.reference.numpy_sample_trajectories (vectorised NumPy, loop over attempts),
  (c) the bare throughput of drawing the same number of uniforms with the same generator in
      the same parallel loop (the practical limit of any sampler built on it),
and the ratios (a)/(b) and (a)/(c), all measured in this one run. 3-parameter agent, K = 8.
A second limit, (d), draws the same number in the 53-bit integer form the sampler compares
and XOR-folds them, which LLVM turns into SIMD code: it is printed for transparency.

    python benchmarks/bench_sampler.py [--trajectories N] [--repeats R]
"""

from __future__ import annotations

import argparse
import time

import numba
import numpy as np
from numba import njit, prange

from sim import kernels as kn
from sim.reference import numpy_sample_trajectories
from sim.rng import agent_states, next_bits53, next_uniform

P, Q1, Q2, K = 0.6, 0.9, 0.8, 8


@njit(cache=True, parallel=True)
def bare_uniforms(states, draws_per_agent):
    """Draw `draws_per_agent` U[0,1) doubles per agent and sum them: the plain "draw this
    many uniforms" loop (the sum keeps them live; float adds are not reassociated, so the
    loop runs one draw at a time, as a sampler consumes them)."""
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
    """Draw `draws_per_agent` uniforms per agent, in the 53-bit integer form the sampler
    consumes, XOR-folded into a checksum (1-cycle dependency, so nothing is elided and
    nothing else is timed)."""
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
    per_agent = args.trajectories // args.agents
    n = per_agent * args.agents
    logits = np.tile(np.log([P / (1 - P), Q1 / (1 - Q1), Q2 / (1 - Q2)]), (args.agents, 1))

    # warm up (compile or load from cache) and count the draws the sampler makes
    masks, ns, truncs = kn.sample_population(agent_states(0, args.agents), logits, K, False, 10)
    masks, ns, _ = kn.sample_population(agent_states(1, args.agents), logits, K, False, per_agent)
    forced = (ns == K).sum()
    draws = int(2 * ns.astype(np.int64).sum() - forced)  # 2 per attempt, 1 at a forced stop
    draws_per_agent = draws // args.agents
    bare_uniforms(agent_states(0, args.agents), 10)
    bare_bits_simd(agent_states(0, args.agents), 10)

    # the sampler writes into reused buffers, as a long simulation does (NumPy's version
    # allocates its temporaries on every call: that is how it is written)
    bufs = (np.empty((args.agents, per_agent), np.int64),
            np.empty((args.agents, per_agent), np.int8),
            np.empty((args.agents, per_agent), np.int8))
    t_numba = best_of(lambda: kn.sample_population_into(agent_states(2, args.agents), logits, K,
                                                        False, *bufs), args.repeats)
    t_bare = best_of(lambda: bare_uniforms(agent_states(3, args.agents), draws_per_agent),
                     args.repeats)
    t_simd = best_of(lambda: bare_bits_simd(agent_states(3, args.agents), draws_per_agent),
                     args.repeats)
    rng = np.random.default_rng(0)
    t_numpy = best_of(lambda: numpy_sample_trajectories(P, Q1, Q2, K, n, rng),
                      max(1, args.repeats // 2))

    rate = {name: n / t for name, t in (("numba", t_numba), ("numpy", t_numpy),
                                        ("bare_rng", t_bare), ("bare_simd", t_simd))}
    print(f"K={K}, p={P}, q1={Q1}, q2={Q2}; {n:,} trajectories, {draws / n:.2f} uniforms each; "
          f"{numba.get_num_threads()} Numba threads")
    for name, r in rate.items():
        print(f"  {name:9s} {r / 1e6:8.2f} M trajectories/s")
    print(f"  numba / numpy       = {rate['numba'] / rate['numpy']:.1f}x   (target >= 20x)")
    print(f"  numba / bare-RNG    = {100 * rate['numba'] / rate['bare_rng']:.0f}%   "
          "(target >= 40%; same number of U[0,1) doubles, drawn one at a time)")
    print(f"  numba / bare-SIMD   = {100 * rate['numba'] / rate['bare_simd']:.0f}%   "
          "(53-bit integers XOR-folded: LLVM vectorises the counter-based generator,"
          " which no sampler with data-dependent lengths can)")


if __name__ == "__main__":
    main()
