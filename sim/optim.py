"""Optimisers on the agent's parameter vector (DESIGN.md §2): plain SGD and Adam.

Gradient *ascent* on the objective: params += step. Adam normalises each parameter's step by
its own gradient scale, which removes most of the length-weighting asymmetry that plain SGD
shows; the report states which optimiser produced each curve.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OPTIMISERS = ("sgd", "adam")


@dataclass(frozen=True)
class OptimiserConfig:
    name: str = "sgd"
    lr: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self) -> None:
        if self.name not in OPTIMISERS:
            raise ValueError(f"optimiser must be one of {OPTIMISERS}, got {self.name!r}")
        if not self.lr > 0:
            raise ValueError(f"learning rate must be > 0, got {self.lr}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1 and self.eps > 0):
            raise ValueError("Adam needs 0 <= beta1, beta2 < 1 and eps > 0")


def ascent_step(cfg: OptimiserConfig, grad: np.ndarray, state: np.ndarray,
                step: int) -> np.ndarray:
    """The parameter change for one step; `state` (2, *grad.shape) holds Adam's moments and is
    updated in place; `step` counts from 1. Works on batches of agents (leading axes)."""
    if cfg.name == "sgd":
        return cfg.lr * grad
    state[0] = cfg.beta1 * state[0] + (1 - cfg.beta1) * grad
    state[1] = cfg.beta2 * state[1] + (1 - cfg.beta2) * grad * grad
    m_hat = state[0] / (1 - cfg.beta1**step)
    v_hat = state[1] / (1 - cfg.beta2**step)
    return cfg.lr * m_hat / (np.sqrt(v_hat) + cfg.eps)
