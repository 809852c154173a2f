"""The DS agent (DESIGN.md §1): logits per task through a task ladder and a transfer kernel.

For component x in {s, 1, 2} and task t:
    logit_x(t) = b_x(t) + w_x + sum_{t' in ID} k_x(t, t') u_x[t'],  k_x = exp(-|d(t)-d(t')|/ell_x)
and optionally a coupling matrix M (3x3) mixing the *trained* part only (DESIGN §2, "Update
budget"): logits(t) = b(t) + M J_t phi, base offsets untouched, so a coupled agent starts from
the same policy as an uncoupled one. The map from the parameter vector phi to the logits of
task t is affine, logits(t) = b(t) + J'_t phi with J'_t = M J_t, so gradients with respect to
phi are J'_t^T g_logits(t) (chain rule) and every objective can be written on the three logits
of one task.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

COMPONENTS = ("s", "1", "2")
FINAL_DECISIONS = ("forced", "sampled")
NO_COUPLING = ("none", "identity")  # spellings of M = I (stored as None)

Coupling = tuple[tuple[float, float, float], ...] | None


def parse_coupling(value: object, what: str = "coupling") -> Coupling:
    """A coupling matrix M (DESIGN §2) as a 3x3 tuple of floats, or None for M = I.

    Accepts None, "none"/"identity", a 3x3 nested sequence, or a string of three rows
    separated by ';' with entries separated by spaces ("1 0.5 0; 0 1 0; 0 0 1")."""
    if value is None or (isinstance(value, str) and value.strip().lower() in NO_COUPLING):
        return None
    rows = value
    if isinstance(value, str):
        rows = [r.split() for r in value.split(";")]
    try:
        if any(isinstance(x, bool | np.bool_) for row in rows for x in row):  # type: ignore
            raise TypeError("a bool is not a number")
        matrix = tuple(tuple(float(x) for x in row) for row in rows)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be 'none' or a 3x3 matrix ('1 0.5 0; 0 1 0; 0 0 1'), "
                         f"got {value!r}") from None
    if len(matrix) != 3 or any(len(r) != 3 for r in matrix) or isinstance(value, bytes):
        raise ValueError(f"{what} must be a 3x3 matrix (three rows of three numbers), got "
                         f"{value!r}")
    if not all(math.isfinite(x) for r in matrix for x in r):
        raise ValueError(f"{what} entries must be finite numbers, got {value!r}")
    if np.array_equal(np.array(matrix), np.eye(3)):
        return None  # the identity is no coupling: one spelling, one cell
    return matrix  # type: ignore[return-value]


def coupling_label(coupling: Coupling) -> str:
    """"none" or the matrix as "a b c; d e f; g h i" (the results' `coupling` column)."""
    if coupling is None:
        return "none"
    return "; ".join(" ".join(f"{x:g}" for x in row) for row in coupling)


@dataclass(frozen=True)
class TaskLadder:
    """Tasks ordered by difficulty d(t); `in_distribution` marks the training tasks."""

    names: tuple[str, ...]
    difficulty: tuple[float, ...]
    in_distribution: tuple[bool, ...]
    base_offsets: tuple[tuple[float, float, float], ...]  # b_x(t): (b_s, b_1, b_2) per task

    def __post_init__(self) -> None:
        n = len(self.names)
        if n == 0:
            raise ValueError("a task ladder needs at least one task")
        for name, seq in (("difficulty", self.difficulty), ("in_distribution",
                          self.in_distribution), ("base_offsets", self.base_offsets)):
            if len(seq) != n:
                raise ValueError(f"ladder {name} has {len(seq)} entries for {n} tasks")
        if not any(self.in_distribution):
            raise ValueError("a task ladder needs at least one in-distribution task")
        if any(len(b) != 3 for b in self.base_offsets):
            raise ValueError("each base offset is a triple (b_s, b_1, b_2)")

    @property
    def n_tasks(self) -> int:
        return len(self.names)

    @property
    def id_indices(self) -> np.ndarray:
        return np.flatnonzero(self.in_distribution)

    @classmethod
    def single(cls) -> TaskLadder:
        """One in-distribution task with zero offsets: the bare 3-logit agent."""
        return cls(("T1",), (1.0,), (True,), ((0.0, 0.0, 0.0),))

    @classmethod
    def uniform(cls, n_tasks: int, n_id: int = 2,
                base: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> TaskLadder:
        """Tasks T1..Tn at difficulty 1..n, the first `n_id` in-distribution."""
        if n_tasks < 1 or not 1 <= n_id <= n_tasks:
            raise ValueError(f"need 1 <= n_id <= n_tasks, got n_id={n_id}, n_tasks={n_tasks}")
        return cls(tuple(f"T{i + 1}" for i in range(n_tasks)),
                   tuple(float(i + 1) for i in range(n_tasks)),
                   tuple(i < n_id for i in range(n_tasks)), tuple(base for _ in range(n_tasks)))


@dataclass(frozen=True)
class TransferConfig:
    """Per-component transfer (DESIGN §1).

    length_scales: ell_x; math.inf = logit agent (only the shared w_x, it transfers to every
    task; per-task u_x would be redundant and are not created), 0 = tabular (u_x[t'] acts on
    task t' alone), in between = a decaying kernel.
    shared_trainable: whether w_x is trained (it is the only parameter when ell_x = inf).
    """

    length_scales: tuple[float, float, float] = (math.inf, math.inf, math.inf)
    shared_trainable: tuple[bool, bool, bool] = (True, True, True)

    def __post_init__(self) -> None:
        if len(self.length_scales) != 3 or len(self.shared_trainable) != 3:
            raise ValueError("transfer settings are per component: three values each")
        for ell in self.length_scales:
            if not ell >= 0:  # also rejects NaN
                raise ValueError(f"length scales must be >= 0 (inf allowed), got {ell}")
        for ell, trainable in zip(self.length_scales, self.shared_trainable, strict=True):
            if math.isinf(ell) and not trainable:
                raise ValueError("a component with ell = inf has only w_x: it must be trainable")


def transfer_kernel(d_task: float, d_source: float, ell: float) -> float:
    """k(t, t') = exp(-|d(t) - d(t')| / ell); ell = 0 gives the indicator d(t) == d(t')."""
    gap = abs(d_task - d_source)
    if ell == 0:
        return 1.0 if gap == 0 else 0.0
    if math.isinf(ell):
        return 1.0
    return math.exp(-gap / ell)


@dataclass(frozen=True)
class AgentSpec:
    """Everything that defines a DS agent except its parameter values."""

    ladder: TaskLadder = field(default_factory=TaskLadder.single)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    max_attempts: int = 8
    len_correct: float = 100.0  # L_C, tokens of a correct candidate
    len_wrong: float = 100.0  # L_W
    gamma: float = 1.0  # per-attempt discount
    final_decision: str = "forced"  # at attempt K: "forced" stop, no token; or "sampled"
    coupling: Coupling = None  # M (3x3) acting on J_t phi only (DESIGN §2); None = identity

    def __post_init__(self) -> None:
        from sim.exact_dp import MAX_EXACT_ATTEMPTS  # sampling checks its own K (<= 60)

        if int(self.max_attempts) != self.max_attempts or not 1 <= self.max_attempts <= \
                MAX_EXACT_ATTEMPTS:
            raise ValueError(f"max_attempts (K) must be an integer in 1..{MAX_EXACT_ATTEMPTS}, "
                             f"got {self.max_attempts}")
        if not (self.len_correct > 0 and self.len_wrong > 0):
            raise ValueError("answer lengths L_C, L_W must be > 0")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma}")
        if self.final_decision not in FINAL_DECISIONS:
            raise ValueError(f"final_decision must be one of {FINAL_DECISIONS}")
        object.__setattr__(self, "coupling", parse_coupling(self.coupling))

    @property
    def final_sampled(self) -> bool:
        return self.final_decision == "sampled"

    def parameter_names(self) -> list[str]:
        names = []
        id_names = [self.ladder.names[i] for i in self.ladder.id_indices]
        for x, ell in zip(COMPONENTS, self.transfer.length_scales, strict=True):
            names.append(f"w_{x}")
            if not math.isinf(ell):
                names.extend(f"u_{x}[{t}]" for t in id_names)
        return names

    @property
    def n_params(self) -> int:
        return len(self.parameter_names())

    def jacobians(self) -> np.ndarray:
        """J[t] (3 x P): d logits(t) / d phi, coupling included. Shape (T, 3, P)."""
        lad, tr = self.ladder, self.transfer
        ids = lad.id_indices
        jac = np.zeros((lad.n_tasks, 3, self.n_params))
        for t in range(lad.n_tasks):
            col = 0
            for x, ell in enumerate(tr.length_scales):
                jac[t, x, col] = 1.0 if tr.shared_trainable[x] else 0.0
                col += 1
                if not math.isinf(ell):
                    for src in ids:
                        jac[t, x, col] = transfer_kernel(lad.difficulty[t], lad.difficulty[src],
                                                         ell)
                        col += 1
        if self.coupling is not None:
            jac = np.einsum("ij,tjp->tip", np.asarray(self.coupling, float), jac)
        return jac

    def offsets(self) -> np.ndarray:
        """b(t), shape (T, 3): the base model's offsets, which coupling leaves untouched
        (logits(t) = b(t) + M J_t phi, DESIGN §2)."""
        return np.asarray(self.ladder.base_offsets, dtype=float)

    def task_logits(self, phi: np.ndarray) -> np.ndarray:
        """Logits of every task, shape (T, 3) (or (..., T, 3) for a batch of phi)."""
        return self.offsets() + np.einsum("tip,...p->...ti", self.jacobians(), phi)

    def initial_params(self, theta: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> np.ndarray:
        """phi with w_x = theta_x and every u_x = 0."""
        phi = np.zeros(self.n_params)
        col = 0
        for x, ell in enumerate(self.transfer.length_scales):
            phi[col] = theta[x]
            col += 1 + (0 if math.isinf(ell) else len(self.ladder.id_indices))
        return phi
