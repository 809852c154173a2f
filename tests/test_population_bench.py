"""The batched PyTorch baseline of benchmarks/bench_population.py computes the GRPO step's
gradient: closed form = autograd on the same draws, and its mean is the exact expected
gradient (sim.objectives) within Monte-Carlo error."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_population.py"
_SPEC = importlib.util.spec_from_file_location("bench_population", _PATH)
bench = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench)


def _uniforms(n, queries=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand((n, queries, bench.G, bench.K, 2), generator=gen, dtype=torch.float64)


def test_closed_form_gradient_is_autograd_on_the_same_draws() -> None:
    logits = torch.tensor([[0.4, 0.6, -0.3], [-1.0, 2.0, 0.5]], dtype=torch.float64)
    logits = logits.repeat(50, 1).reshape(100, 1, 3).expand(100, 4, 3)
    u = _uniforms(100)
    closed, r1 = bench.batched_logit_grads(logits, u)
    auto, r2 = bench.autograd_logit_grads(logits, u)
    np.testing.assert_allclose(closed.numpy(), auto.numpy(), rtol=1e-10, atol=1e-12)
    assert r1 == r2


def test_batched_gradient_mean_is_the_exact_gradient() -> None:
    theta, n = (0.4, 0.6, -0.3), 40000
    logits = torch.tensor(theta, dtype=torch.float64).expand(n, 4, 3)
    g = bench.batched_logit_grads(logits, _uniforms(n, seed=3))[0].mean(1).numpy()
    phi = np.asarray(theta)  # the benchmark's agent: one task, J = I
    exact = sum(w * bench.expected_gradients(bench.SPEC, bench.OBJECTIVE, phi, phi)[0][k]
                for k, w in bench.OBJECTIVE.weights)
    se = g.std(0) / np.sqrt(n)
    assert np.all(np.abs(g.mean(0) - exact) < 4 * se), (g.mean(0), se, exact)


def test_torch_population_step_moves_phi_along_the_mean_gradient() -> None:
    # the step applies phi += lr * J^T g through the model's Jacobians (J = I here)
    model = bench.numba_model(2000, 4)
    pop = bench.TorchPopulation(model, "analytic", 4, seed=1)
    phi0 = pop.phi.clone()
    pop.step()
    moved = ((pop.phi - phi0) / bench.LR).mean(0).numpy()
    exact = sum(w * bench.expected_gradients(bench.SPEC, bench.OBJECTIVE, phi0[0].numpy(),
                                             phi0[0].numpy())[0][k]
                for k, w in bench.OBJECTIVE.weights)
    se = ((pop.phi - phi0) / bench.LR).std(0).numpy() / np.sqrt(2000)
    assert np.all(np.abs(moved - exact) < 4 * se + 1e-12), (moved, se, exact)
