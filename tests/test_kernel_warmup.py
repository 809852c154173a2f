"""The cold-start helper that compiles a sweep's post-training kernels in a child process
(sim.kernel_warmup, DESIGN §3)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sim import kernel_warmup
from sim.model import AgentSpec
from sim.objectives import ObjectiveConfig, SFTData


def _pairs():
    spec = AgentSpec(max_attempts=3)
    return [(spec, ObjectiveConfig.parse("surrogate+kl", beta=0.01)),
            (spec, ObjectiveConfig.parse("sft", sft_data=SFTData("reflection", ft_share=0.5)))]


def test_the_child_compiles_and_exits_cleanly(monkeypatch):
    monkeypatch.setattr(kernel_warmup, "cache_is_cold", lambda: True)
    monkeypatch.setattr(kernel_warmup.os, "cpu_count", lambda: 2)
    child = kernel_warmup.start(_pairs())
    assert child is not None
    assert child.wait(timeout=300) == 0  # imports, compiles (or loads) and evaluates


def test_nothing_starts_on_a_warm_cache_or_one_core(monkeypatch):
    monkeypatch.setattr(kernel_warmup, "cache_is_cold", lambda: False)
    assert kernel_warmup.start(_pairs()) is None
    monkeypatch.setattr(kernel_warmup, "cache_is_cold", lambda: True)
    monkeypatch.setattr(kernel_warmup.os, "cpu_count", lambda: 1)
    assert kernel_warmup.start(_pairs()) is None
    assert kernel_warmup.start([]) is None


def test_the_kernels_it_compiles_are_the_ones_after_training_in_process():
    kernel_warmup.compile_after_training(_pairs())  # runs (values discarded)
    import sim.exact_dp as dp

    assert dp.own_moments_kernel.signatures  # compiled (or loaded) in this process
    assert isinstance(kernel_warmup.cache_is_cold(), bool)


LATE_CALLEES_CHECK = """
import sim.kernel_warmup as kw
from sim.model import AgentSpec
from sim.objectives import ObjectiveConfig
from sim.population import LearnerConfig, PopulationConfig, PopulationModel
from sim.population_kernels import prob_jump
from sim.population_optim import optimiser_step
spec = AgentSpec(max_attempts=3)
kw.compile_late_callees(spec)
before = {k.py_func.__name__: len(k.signatures) for k in (optimiser_step, prob_jump)}
lc = LearnerConfig(spec=spec, objective=ObjectiveConfig.parse("surrogate+kl", beta=0.01))
PopulationModel([lc, lc], PopulationConfig(seed=1)).step()  # compiles the step, cold
after = {k.py_func.__name__: len(k.signatures) for k in (optimiser_step, prob_jump)}
print(before, after)
assert before == after == {"optimiser_step": 1, "prob_jump": 1}, (before, after)
"""


def test_the_late_callees_have_the_signatures_the_cold_step_uses(tmp_path):
    """With an empty Numba cache, compiling the population step finds the helpers already
    compiled with its own argument types (one signature each, none added)."""
    out = subprocess.run([sys.executable, "-c", LATE_CALLEES_CHECK], cwd=kernel_warmup.REPO_ROOT,
                         env={**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)},
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]


def test_stop_ends_a_running_child():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    kernel_warmup.stop(child)
    assert child.poll() is not None
    kernel_warmup.stop(None)  # nothing to stop


@pytest.mark.parametrize("bad", ["not a path"])
def test_the_child_fails_loudly_on_a_missing_input(bad):
    out = subprocess.run([sys.executable, "-m", "sim.kernel_warmup", bad],
                         cwd=kernel_warmup.REPO_ROOT, capture_output=True, text=True)
    assert out.returncode != 0 and "FileNotFoundError" in out.stderr
