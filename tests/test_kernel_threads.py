"""Python threads sharing a GIL-free kernel's chunks (sim.kernel_threads), and the
population step on them (DESIGN.md §2): every chunk once, results independent of threads."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from sim import population_kernels as pk
from sim.kernel_threads import run_threaded, take_next
from sim.model import AgentSpec
from sim.objectives import ObjectiveConfig
from sim.optim import OptimiserConfig
from sim.population import LearnerConfig, PopulationConfig, PopulationModel, homogeneous


@njit(nogil=True)
def _count_chunks(counter, hits, work):
    """hits[i] += 1 for each chunk i this call takes, and some work on its own row."""
    while True:
        i = take_next(counter)
        if i >= hits.shape[0]:
            return
        hits[i] += 1
        for j in range(work.shape[1]):  # long enough that several threads take chunks
            work[i, j] = np.sqrt(j + i)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_every_chunk_is_taken_exactly_once(threads) -> None:
    hits = np.zeros(500, np.int64)
    work = np.zeros((500, 2000))
    run_threaded(_count_chunks, [(hits, work)] * threads)
    np.testing.assert_array_equal(hits, 1)


@njit(nogil=True)
def _fail_on_chunk(counter, bad):
    while True:
        i = take_next(counter)
        if i > 10:
            return
        if i == bad:
            raise ValueError("bad chunk")


def test_an_error_in_any_thread_is_raised() -> None:
    with pytest.raises(ValueError, match="bad chunk"):
        run_threaded(_fail_on_chunk, [(3,), (3,)])


def test_population_step_is_the_same_on_any_number_of_threads() -> None:
    # 50 agents: 4 chunks of AGENT_CHUNK, shared by up to 3 threads
    lc = LearnerConfig(AgentSpec(), ObjectiveConfig.parse("surrogate+kl", beta=0.01),
                       OptimiserConfig(lr=0.1))
    models = []
    for threads in (1, 2, 3):
        m = PopulationModel(homogeneous(lc, 50), PopulationConfig(n_queries=4, seed=5,
                                                                  record_every=None),
                            collect_model_vars=False)
        state, learners, shared, out = m._kernel_args
        for step in range(1, 6):
            pk.population_step(state, learners, shared, step, out, threads=threads)
        models.append(m)
    assert -(-50 // pk.AGENT_CHUNK) >= 3
    for m in models[1:]:
        np.testing.assert_array_equal(m.phi, models[0].phi)
        np.testing.assert_array_equal(m.grad_sum, models[0].grad_sum)
        np.testing.assert_array_equal(m.state.streams, models[0].state.streams)
