"""Optimisers on the agent's parameter vector (DESIGN.md §2): plain SGD and Adam, with the
update-budget switches of DESIGN §2 ("Update budget").

Gradient *ascent* on the objective: params += step. Adam normalises each parameter's step by
its own gradient scale (`second_moment = "per-parameter"`), which removes most of the
length-weighting asymmetry that plain SGD shows; with `second_moment = "shared"` the second
moment is one scalar per agent, v <- b2 v + (1 - b2) mean_j(g_j^2), so that every parameter
feels the largest gradient (a crude stand-in for one network serving sampling and decision).
`max_grad_norm = c > 0` clips the agent's full gradient to global L2 norm c before the
optimiser, g <- g * min(1, c / ||g||_2) (TRL and verl default c = 1.0); 0 = off. The report
states which optimiser produced each curve. sim.population_kernels implements the same step
in Numba (tests/test_update_budget.py checks that the two agree).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

OPTIMISERS = ("sgd", "adam")
SECOND_MOMENTS = ("per-parameter", "shared")


def check_second_moment(value: object, what: str = "second_moment") -> str:
    """A second-moment mode of Adam (DESIGN §2): "per-parameter" or "shared"."""
    if value not in SECOND_MOMENTS:
        raise ValueError(f"{what} must be one of {', '.join(SECOND_MOMENTS)}, got {value!r}")
    return str(value)


def check_max_grad_norm(value: object, what: str = "max_grad_norm") -> float:
    """A global gradient-norm clip c (DESIGN §2): a finite number >= 0, 0 = off."""
    ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_)
    if not ok or not (math.isfinite(float(value)) and float(value) >= 0):
        raise ValueError(f"{what} must be a finite number >= 0 (0: no clipping), got {value!r}")
    return float(value)


@dataclass(frozen=True)
class OptimiserConfig:
    name: str = "sgd"
    lr: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    second_moment: str = "per-parameter"  # Adam only; SGD ignores it (DESIGN §2)
    max_grad_norm: float = 0.0  # global L2 clip of the agent's gradient; 0 = off

    def __post_init__(self) -> None:
        if self.name not in OPTIMISERS:
            raise ValueError(f"optimiser must be one of {OPTIMISERS}, got {self.name!r}")
        if not self.lr > 0:
            raise ValueError(f"learning rate must be > 0, got {self.lr}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1 and self.eps > 0):
            raise ValueError("Adam needs 0 <= beta1, beta2 < 1 and eps > 0")
        check_second_moment(self.second_moment)
        check_max_grad_norm(self.max_grad_norm)

    @property
    def label(self) -> str:
        """E.g. "adam (shared v), clip 1" -- what a caption says about the update budget."""
        text = self.name + (f" ({self.second_moment} v)" if self.name == "adam" else "")
        return text + (f", clip {self.max_grad_norm:g}" if self.max_grad_norm > 0 else "")


def clip_gradient(grad: np.ndarray, max_norm: float) -> np.ndarray:
    """g * min(1, c / ||g||_2) over the last axis (one agent's parameters, DESIGN §2); c = 0:
    unchanged. A gradient of norm at most c is returned as it is."""
    grad = np.asarray(grad, dtype=float)
    if max_norm <= 0:
        return grad
    norm = np.sqrt(np.sum(grad * grad, axis=-1, keepdims=True))
    scale = np.where(norm > max_norm, max_norm / np.where(norm > 0, norm, 1.0), 1.0)
    return grad * scale


def ascent_step(cfg: OptimiserConfig, grad: np.ndarray, state: np.ndarray,
                step: int) -> np.ndarray:
    """The parameter change for one step; `state` (2, *grad.shape) holds Adam's moments and is
    updated in place (a shared second moment is stored in every entry of its agent's row);
    `step` counts from 1. Works on batches of agents (leading axes; the last is the agent's
    parameters)."""
    grad = clip_gradient(grad, cfg.max_grad_norm)
    if cfg.name == "sgd":
        return cfg.lr * grad
    state[0] = cfg.beta1 * state[0] + (1 - cfg.beta1) * grad
    if cfg.second_moment == "shared":
        sq = np.mean(grad * grad, axis=-1, keepdims=True)  # one scalar per agent
    else:
        sq = grad * grad
    state[1] = cfg.beta2 * state[1] + (1 - cfg.beta2) * sq
    m_hat = state[0] / (1 - cfg.beta1**step)
    v_hat = state[1] / (1 - cfg.beta2**step)
    return cfg.lr * m_hat / (np.sqrt(v_hat) + cfg.eps)
