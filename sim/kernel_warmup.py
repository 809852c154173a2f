"""Compile the kernels a sweep needs after training in a second process (DESIGN §3).

A sweep from a fresh clone spends most of its time compiling Numba kernels, one after the
other (Numba compiles under one lock per process). The exact-gradient columns of a cell
(sim.cell.expected_gradient_columns: the kernels of sim.exact_dp) are needed only after its
batch has trained, so on a cold Numba cache `start` compiles them in a child process, on
another core, while this process compiles the population step. Both write Numba's on-disk
cache (each file by an atomic rename); when this process reaches the exact gradients it loads
what the child has finished and compiles only what it has not. Nothing is computed twice that
matters: the child evaluates one agent per objective and discards the values. With a warm
cache or one core nothing is started.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
from collections.abc import Sequence

import numpy as np

from core.provenance import REPO_ROOT
from sim.model import AgentSpec
from sim.objectives import ObjectiveConfig


def cache_is_cold() -> bool:
    """Whether the exact-gradient kernels have no entry in Numba's on-disk cache yet (their
    index files are missing: a fresh clone or a fresh NUMBA_CACHE_DIR)."""
    import sim.exact_dp as dp

    for kernel in (dp.own_moments_kernel, dp.chain_terms_kernel, dp.attempt_values):
        index = getattr(getattr(getattr(kernel, "_cache", None), "_cache_file", None),
                        "_index_path", None)
        if index is None or not os.path.exists(index):
            return True
    return False


def start(pairs: Sequence[tuple[AgentSpec, ObjectiveConfig]]) -> subprocess.Popen | None:
    """Start the child that compiles the exact-gradient kernels for these (spec, objective)
    pairs, if the cache is cold and there is a second core; None otherwise."""
    if not pairs or (os.cpu_count() or 1) < 2 or not cache_is_cold():
        return None
    fd, path = tempfile.mkstemp(prefix="ds_warmup_", suffix=".pkl")
    with os.fdopen(fd, "wb") as f:
        pickle.dump(list(pairs), f)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    return subprocess.Popen([sys.executable, "-m", "sim.kernel_warmup", path], env=env,
                            cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(child: subprocess.Popen | None) -> None:
    """End the child if it still runs (its work is only a cache; nothing waits for it)."""
    if child is not None and child.poll() is None:
        child.terminate()
        try:
            child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            child.kill()


def compile_late_callees(spec: AgentSpec) -> None:
    """Compile (and cache) the two helpers that this process's compile of the population
    step (sim.population_kernels.step_agents) reaches last, ~3 s into it: the optimiser
    update and the chaos flag, with the argument types the step passes (rows of C-contiguous
    float64 arrays, int64 codes). A child that has cached them by then saves the parent
    ~0.5 s; a signature that differed would only be compiled twice."""
    from sim.population_kernels import OPT_ADAM, V_SHARED, prob_jump
    from sim.population_optim import optimiser_step

    n_tasks, n_params = len(spec.ladder.names), spec.n_params
    phi, moments = np.zeros((1, n_params)), np.zeros((2, 1, n_params))
    optimiser_step(phi[0], moments[0, 0], moments[1, 0], np.zeros(n_params), np.int64(OPT_ADAM),
                   0.01, 0.9, 0.999, 1e-8, np.int64(V_SHARED), 0.0, 1)
    prob_jump(np.zeros((1, n_tasks, 3, n_params))[0], np.zeros((1, n_tasks, 3))[0],
              np.zeros(n_params), phi[0], np.empty((2, 3)))


def compile_after_training(pairs: Sequence[tuple[AgentSpec, ObjectiveConfig]]) -> None:
    """Evaluate, for every pair, the exact-gradient columns of one agent at its initial
    parameters, and the population's task probabilities (sim.population_kernels
    .population_probs, read when a population reports): this compiles (and caches) every
    kernel signature a sweep needs after its first training step."""
    from sim.cell import expected_gradient_columns
    from sim.population_kernels import population_probs

    for spec, obj in pairs:
        phi = np.asarray(spec.initial_params(), dtype=float)[None, :]
        expected_gradient_columns(spec, obj, phi, phi.copy())
    spec = pairs[0][0]
    n_tasks, n_params = len(spec.ladder.names), spec.n_params
    population_probs(np.zeros((1, n_params)), np.zeros((1, n_tasks, 3, n_params)),
                     np.zeros((1, n_tasks, 3)), np.empty((1, n_tasks, 3)))


def _main(path: str) -> None:
    try:
        with open(path, "rb") as f:
            pairs = pickle.load(f)
    finally:
        os.unlink(path)
    compile_late_callees(pairs[0][0])  # first: the parent reaches them soonest
    compile_after_training(pairs)


if __name__ == "__main__":
    _main(sys.argv[1])
