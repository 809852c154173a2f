"""The objective terms of DESIGN.md §2, each defined once, in one table.

Every term's gradient on the three logits of one task is an expectation of a per-trajectory
*kernel* of the form

    sum_t c(step_t) * grad log pi(a_t)          (grad log pi of each action: DESIGN §1)

where the step coefficient c reads the step's token weight w_t (w(L) for a sampling action,
1 for a decision; DESIGN §2), pi(a_t), x_t = log pi(a_t) - log pi_ref(a_t), the KL return
Q_t and k'(x_t) (DESIGN §2-§3). `KERNELS` lists the kernels; `sim.kernels.trajectory_terms`
evaluates all of them along one trajectory into the columns of an (N_COLUMNS, 3) array.

`TERMS` says, per objective kind, which kernel it takes and on which trajectories:
  source         OWN: the agent's own sampled trajectories; DATA: the SFT data set (§2)
  reward_filter  ANY, FAILED (R = 0 only: NSR) or SUCCEEDED (R > 0 only: PSR)
  sign           +1 ascends the kernel, -1 descends it (NSR pushes failed samples down)
  advantage      multiplied by the group advantage A_i (the surrogate, §2)
  token_weighted sampling actions weigh w(L) (the length weighting of §2); a statement
                 about the kernel, checked by tests/test_terms.py

Under every token model the trajectory's kernel sums are then divided by its loss normaliser
(1, |o| or a batch constant: DESIGN §2 "Loss normalisation in real trainers",
docs/token_models.md), the same for every term, in `sim.kernels.trajectory_terms`.

Three estimators read the table and nothing else about a term: the exact expected sum
(`sim.objectives.exact_logit_gradients`), the Monte-Carlo mean
(`sim.objectives.mc_logit_gradients`) and the population kernel
(`sim.population_kernels.step_agents`, through the arrays of `term_codes`). A term's
index (its row in the population's gradient arrays) is its position in `TERMS`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numba import njit
from numba.core.dispatcher import Dispatcher
from numba.extending import register_jitable

# ----------------------------------------------------------------------------- kernels
# Step coefficients c(w, prob, x, q, dk) of the per-trajectory kernels (see the docstring).


@njit(inline="always")
def score(w, prob, x, q, dk):
    """grad log pi(tau): answer-level, no length factor (DESIGN §2, the surrogate's score)."""
    return 1.0


@njit(inline="always")
def likelihood(w, prob, x, q, dk):
    """grad [w(L) log pi_s + log pi_d]: token-weighted log-likelihood (DESIGN §2, SFT)."""
    return w


@njit(inline="always")
def dft(w, prob, x, q, dk):
    """The likelihood with each token's term weighted by its stop-gradient pi (DESIGN §2)."""
    return w * prob


@njit(inline="always")
def kl_in_reward(w, prob, x, q, dk):
    """sum_t Q_t grad log pi(a_t), r_t = -w_t k(x_t): KL "in reward", without beta (§2)."""
    return q


@njit(inline="always")
def kl_in_loss(w, prob, x, q, dk):
    """-sum_t w_t k'(x_t) grad log pi(a_t): KL "in loss" (pathwise), without beta (§2)."""
    return -(w * dk)


@dataclass(frozen=True)
class Kernel:
    name: str
    coefficient: Callable  # njit (w, prob, x, q, dk) -> c

    @property
    def column(self) -> int:
        """Its column in `sim.kernels.trajectory_terms`' output."""
        return KERNELS.index(self)


SCORE = Kernel("score", score)
LIKELIHOOD = Kernel("likelihood", likelihood)
DFT = Kernel("dft", dft)
KL_IN_REWARD = Kernel("kl_in_reward", kl_in_reward)
KL_IN_LOSS = Kernel("kl_in_loss", kl_in_loss)
KERNELS = (SCORE, LIKELIHOOD, DFT, KL_IN_REWARD, KL_IN_LOSS)
N_COLUMNS = len(KERNELS)


def _add_step_source(n_kernels: int) -> str:
    """The source of add_step for `n_kernels` kernels: straight-line code, one statement per
    kernel (coefficient functions k0, k1, ... as globals)."""
    lines = ["def add_step(out, c, j, g, w, prob, x, q, dk):"]
    lines += [f"    out[c + {i}, j] += k{i}(w, prob, x, q, dk) * g" for i in range(n_kernels)]
    return "\n".join([*lines, f"    return c + {n_kernels}", ""])


def _make_add_step(kernels):
    """add_step(out, c, j, g, w, prob, x, q, dk): out[c + i, j] += kernels[i](...) * g for
    every kernel; returns the number of columns written. Generated as one flat function and
    compiled once, called (not inlined at the IR level) by each kernel that uses it: LLVM
    still inlines it, and each caller's compile no longer re-types the whole chain. Not
    cached on disk (generated code has no source file): only compiled kernels call it, and
    their cached code contains it."""
    namespace = {f"k{i}": k.coefficient for i, k in enumerate(kernels)}
    exec(compile(_add_step_source(len(kernels)), f"<sim.terms.add_step: {len(kernels)}>",
                 "exec"), namespace)
    return njit(namespace["add_step"])


add_step = _make_add_step(KERNELS)

# ----------------------------------------------------------------------------- the table

OWN, DATA = 0, 1  # source
ANY, FAILED, SUCCEEDED = 0, 1, 2  # reward_filter


@dataclass(frozen=True)
class Term:
    kind: str
    source: int
    reward_filter: int
    sign: float
    advantage: bool
    token_weighted: bool
    kernel: Kernel
    kernel_in_loss: Kernel | None = None  # the "KL in loss" placement's kernel (DESIGN §2)

    def __post_init__(self) -> None:
        if self.sign not in (1.0, -1.0):
            raise ValueError(f"{self.kind}: sign must be +1 or -1")
        if self.advantage and (self.source != OWN or self.reward_filter != ANY
                               or self.kernel is not SCORE):
            # the exact estimator uses E[A f] = a(1) E[1{R=1} f] + a(0) E[1{R=0} f] for
            # binary R, shortened to (a(1) - a(0)) E[1{R=1} f] where E[f] = 0 over the agent's
            # own trajectories: true of the score (divided by a constant loss normaliser)
            raise ValueError(f"{self.kind}: an advantage-weighted term takes the score of the "
                             "agent's own trajectories, unfiltered")

    @property
    def index(self) -> int:
        """Its row in the population kernel's per-term arrays."""
        return KIND_INDEX[self.kind]

    def column(self, kl_placement: str = "in-reward") -> int:
        """The kernel column it reads under a KL placement (DESIGN §2)."""
        if kl_placement == "in-loss" and self.kernel_in_loss is not None:
            return self.kernel_in_loss.column
        return self.kernel.column


TERMS = (
    Term("surrogate", OWN, ANY, +1.0, advantage=True, token_weighted=False, kernel=SCORE),
    Term("kl", OWN, ANY, +1.0, advantage=False, token_weighted=True, kernel=KL_IN_REWARD,
         kernel_in_loss=KL_IN_LOSS),
    Term("sft", DATA, ANY, +1.0, advantage=False, token_weighted=True, kernel=LIKELIHOOD),
    Term("dft", DATA, ANY, +1.0, advantage=False, token_weighted=True, kernel=DFT),
    # policy gradients on negative-only / positive-only samples: answer-level, like the
    # surrogate's score (DESIGN §2: log pi(tau) has no length factor)
    Term("nsr", OWN, FAILED, -1.0, advantage=False, token_weighted=False, kernel=SCORE),
    Term("psr", OWN, SUCCEEDED, +1.0, advantage=False, token_weighted=False, kernel=SCORE),
)
KINDS = tuple(t.kind for t in TERMS)
KIND_INDEX = {k: i for i, k in enumerate(KINDS)}
BY_KIND = dict(zip(KINDS, TERMS, strict=True))
N_KINDS = len(TERMS)


@register_jitable
def keeps(reward_filter, reward):
    """Whether a trajectory of reward R passes a reward filter (R a scalar or an array)."""
    if reward_filter == FAILED:
        return reward == 0.0
    if reward_filter == SUCCEEDED:
        return reward > 0.0
    return reward >= 0.0  # ANY: rewards are never negative


def term_codes(kl_placement: str) -> dict[str, np.ndarray]:
    """The table as arrays indexed by term, for Numba kernels (`Shared.term_*` of
    sim.population_kernels), the KL placement resolved."""
    return dict(
        term_column=np.array([t.column(kl_placement) for t in TERMS], np.int64),
        term_source=np.array([t.source for t in TERMS], np.int64),
        term_filter=np.array([t.reward_filter for t in TERMS], np.int64),
        term_sign=np.array([t.sign for t in TERMS]),
        term_advantage=np.array([t.advantage for t in TERMS], np.bool_),
    )


# ----------------------------------------------------------------------------- Numba's cache
# Numba keys a function's on-disk cache on its own module's source only: a kernel compiled
# against an older version of this table (or of any module it calls) would load silently.
# Each module with cached kernels compiles a probe that returns the fingerprint of its
# dependencies' sources; where it differs from today's, the module's caches are dropped.


def fingerprint(*modules) -> str:
    h = hashlib.sha256()
    for m in modules:
        h.update(Path(m.__file__).read_bytes())
    return h.hexdigest()


def drop_stale_caches(namespace: dict, probe: Dispatcher, current: str) -> None:
    """Recompile (public Numba API: drops the on-disk entries) every dispatcher of a module
    namespace whose probe was compiled against other sources than `current`."""
    if probe() == current:
        return
    for obj in list(namespace.values()):
        if isinstance(obj, Dispatcher) and obj.py_func.__module__ == namespace["__name__"]:
            obj.recompile()
