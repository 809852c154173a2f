"""The sweep's grid (DESIGN.md §1-§3): axes, training settings, task ladder, seed, cells.

A sweep trains one population per cell of answer length x objective x beta x token model x
optimiser x Adam's second moment x gradient clip x coupling (sim.cell; the last three are the
update budget of DESIGN §2) on the task ladder of DESIGN §1, with the objectives of DESIGN §2.
The default is the paper's RL run as real trainers run it: Adam (lr 0.02) with a shared second
moment, KL = k3 in the loss, beta 0.001, no clipping. Plain SGD above its stability bound
(sim.stability) is refused when the grid is built. This
module holds the frozen configs that describe it -- `GridConfig` with its `TrainingConfig` and
`LadderConfig` -- the named objectives (the paper's regimes from core.regimes plus ablations),
the cells and the grid's digest (what a resumed sweep must match). Every config validates
itself; grid files are read into them by sim.grid_files.

Counts and seeds are bounded here (MAX_COUNT, MAX_AGENTS, MAX_SEED, shared with the `train` and
`sweep` commands), and so are the strict number predicates the grid-file readers share
(`is_integer`, `is_real`, `is_finite_real`: a bool is never a number).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.special import logit

from core.regimes import PAPER_RL_KL, regime
from sim.lengths import MAX_LENGTH, check_length, parse_lengths
from sim.model import AgentSpec, Coupling, TaskLadder, TransferConfig, parse_coupling
from sim.objectives import MAX_SAMPLED_ATTEMPTS, TOKEN_MODELS, ObjectiveConfig, SFTData
from sim.optim import OPTIMISERS, OptimiserConfig, check_max_grad_norm, check_second_moment
from sim.stability import check_sgd_lr

# sim.rng seeds each agent's splitmix64 stream with np.uint64(seed) (DESIGN §2)
MAX_SEED = 2**64 - 1
# counts read from grid files and options (steps, agents, queries, K, ...): anything larger
# is a typo, never a run that could finish
MAX_COUNT = 2**31 - 1
# agents of one population: each holds ~2 KB of Jacobians and arrays plus a Mesa agent, so a
# million is already a few GB
MAX_AGENTS = 10**6


def is_integer(value: object) -> bool:
    """An integer, and not a bool (True is an int to Python, never a count to a user)."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def is_real(value: object) -> bool:
    """An integer or a float (not a bool), finite or not."""
    return is_integer(value) or isinstance(value, float | np.floating)


def is_finite_real(value: object) -> bool:
    """A finite real number (not a bool); ints too large for a float are not."""
    if not is_real(value):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def check_seed(seed: object, what: str = "seed") -> int:
    """A run seed: an integer in [0, 2**64 - 1] (sim.rng's uint64 streams, DESIGN §2)."""
    if not is_integer(seed) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"{what} must be an integer in [0, {MAX_SEED}] (64 bits), got "
                         f"{short_repr(seed)}")
    return int(seed)


def short_repr(value: object) -> str:
    """`value` as it appears in an error line: its repr, cut after 40 characters."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}... ({len(text)} chars)"


def _named(name: str) -> tuple[str, tuple[str, str, str | None]]:
    """A trained regime of core.regimes as a named objective: (sweep name, entry)."""
    r = regime(name)
    if r.sweep_objective is None or r.objective is None:
        raise ValueError(f"regime {name!r} has no simulator objective")
    return r.sweep_objective, (r.label, r.objective, r.sft_data)


# Named objectives of the default grid: name -> (human label, term spec, SFT data kind). The
# paper's trained regimes come from the regime table (core.regimes); the rest are ablations.
# Any other spec is parsed by ObjectiveConfig.parse (e.g. "surrogate+0.5*nsr").
NAMED_OBJECTIVES: dict[str, tuple[str, str, str | None]] = dict([
    ("surrogate", ("Surrogate only", "surrogate", None)),
    _named("grpo"),  # "surrogate+kl"
    ("kl", ("KL only", "kl", None)),
    _named("sft-no-reflection"),
    _named("sft-reflection"),
    ("dft", ("DFT (reflection data)", "dft", "reflection")),
    ("dft-no-reflection", ("DFT (no reflection)", "dft", "no-reflection")),
    ("nsr", ("NSR", "nsr", None)),
    ("psr", ("PSR", "psr", None)),
])
DEFAULT_OBJECTIVES = (
    "surrogate",
    "surrogate+kl",
    "kl",
    "sft-no-reflection",
    "sft-reflection",
    "dft",
    "nsr",
)


@dataclass(frozen=True)
class LadderConfig:
    """The sweep's task ladder and transfer kernel (DESIGN §1), all overridable from a file.

    Defaults: seven tasks T1..T7 at difficulty 1..7, T1 and T2 in-distribution. Base offsets
    b_s = logit(base_p) follow the paper's Base row (74, 34, 5, 1, 4, 3, 1 %) made monotone in
    difficulty (74, 34, 5, 3, 2, 1.5, 1 %); b_1 = logit(0.85) (a base model mostly stops after
    a correct answer) and b_2 = logit(0.15) (it rarely resamples after a wrong one) on every
    task. Transfer: the shared w_x are frozen and each ID task's u_x[t'] reaches task t through
    exp(-|d(t) - d(t')| / ell_x) with ell_s = 1 (answer skill is local in difficulty) and
    ell_1 = ell_2 = 3 (the decision policy transfers further) -- a decaying kernel, as Table 1
    needs (DESIGN §1).
    """

    names: tuple[str, ...] = ("T1", "T2", "T3", "T4", "T5", "T6", "T7")
    difficulty: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0)
    in_distribution: tuple[bool, ...] = (True, True, False, False, False, False, False)
    base_p: tuple[float, ...] = (0.74, 0.34, 0.05, 0.03, 0.02, 0.015, 0.01)
    base_q1: tuple[float, ...] | float = 0.85
    base_q2: tuple[float, ...] | float = 0.15
    length_scales: tuple[float, float, float] = (1.0, 3.0, 3.0)
    shared_trainable: tuple[bool, bool, bool] = (False, False, False)

    def __post_init__(self) -> None:
        n = len(self.names)
        for name in self.names:  # each names columns such as p[T1] (sim.columns)
            if not isinstance(name, str) or not name or "[" in name or "]" in name:
                raise ValueError(f"task names must be non-empty strings without '[' or ']', "
                                 f"got {name!r}")
        for name in ("difficulty", "in_distribution", "base_p"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"ladder {name} has {len(getattr(self, name))} entries for {n}")
        for name in ("base_q1", "base_q2"):
            value = getattr(self, name)
            if not isinstance(value, int | float) and len(value) != n:
                raise ValueError(f"ladder {name} has {len(value)} entries for {n} tasks")
        for value in (*self.base_p, *self._expand(self.base_q1), *self._expand(self.base_q2)):
            if not 0 < value < 1:
                raise ValueError(f"base probabilities must be in (0, 1), got {value}")
        self.ladder()  # TaskLadder's own checks
        self.transfer()

    def _expand(self, value: tuple[float, ...] | float) -> tuple[float, ...]:
        if isinstance(value, int | float):
            return (float(value),) * len(self.names)
        return tuple(float(v) for v in value)

    def ladder(self) -> TaskLadder:
        offsets = tuple(
            (float(logit(p)), float(logit(q1)), float(logit(q2)))
            for p, q1, q2 in zip(
                self.base_p, self._expand(self.base_q1), self._expand(self.base_q2), strict=True
            )
        )
        return TaskLadder(
            tuple(self.names),
            tuple(float(d) for d in self.difficulty),
            tuple(bool(b) for b in self.in_distribution),
            offsets,
        )

    def transfer(self) -> TransferConfig:
        return TransferConfig(
            tuple(float(x) for x in self.length_scales),
            tuple(bool(b) for b in self.shared_trainable),
        )


@dataclass(frozen=True)
class TrainingConfig:
    """How each cell's population is trained (DESIGN §2). Sized so the default sweep
    (16 lengths x 7 objectives) takes well under a minute on two cores.

    `optimiser`, `second_moment`, `max_grad_norm` and `coupling` are the defaults of the grid's
    axes `optimisers`, `second_moments`, `max_grad_norms` and `couplings` (an axis given
    wins): Adam with a shared second moment, no clipping, no coupling (DESIGN §2, "Update
    budget"). `second_moment` means nothing to SGD (its cells record "none")."""

    steps: int = 150
    n_agents: int = 16
    n_queries: int = 4  # queries per agent and step (round-robin over the ID tasks)
    group_size: int = 8  # G
    max_attempts: int = 8  # K
    lr: float = 0.05  # SGD; refused above its stability bound (sim.stability)
    adam_lr: float = 0.02  # Adam (normalised steps need a smaller rate)
    optimiser: str = "adam"  # "sgd" (the theory) or "adam"
    second_moment: str = "shared"  # Adam's v: "shared" (one scalar per agent) or per-parameter
    max_grad_norm: float = 0.0  # global L2 clip of each agent's gradient; 0 = off (TRL: 1.0)
    coupling: Coupling = None  # M in logits = b(t) + M J_t phi; None (or "none") = identity
    wrong_length_ratio: float = 1.0  # L_C = L, L_W = ratio * L
    # Default: the paper's RL run -- verl's low_var_kl (k3) as a loss term, which is also
    # TRL's GRPOTrainer: each token's k3(x) is differentiated directly, no future terms, so
    # the per-token ratio grows linearly in L, in expectation (exp_ratio[kl]) and sampled
    # (ratio[kl]). (k1 in loss has zero expected gradient: its ratio would be pure noise.)
    # "in-reward" + "k1" is the paper's theory (DESIGN §2): its expected ratio saturates
    # once the decisions' Q pick up the future sampling penalties (at L* = |g0_d| / |g1_d|,
    # see sim.attribution.length_decomposition; already below L = 10 at the sweep's base
    # policy), and its sampled magnitudes stay flat because the same future-penalty term
    # makes the decisions' *noise* grow with L.
    kl_estimator: str = PAPER_RL_KL.estimator  # "k3" (core.regimes)
    kl_placement: str = PAPER_RL_KL.placement  # "in-loss"
    std_scaling: bool = True
    ref_update_every: int | None = None  # None: the reference stays the initial policy
    sft_ft_share: float = 0.5  # reflection data: share of F->T chains
    sft_reflections: int = 1

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not 1 <= self.n_agents <= MAX_AGENTS:
            raise ValueError(f"n_agents must be in [1, {MAX_AGENTS}], got {self.n_agents}")
        if self.n_queries < 1:
            raise ValueError(f"n_queries must be >= 1, got {self.n_queries}")
        if self.max_attempts < 1:
            raise ValueError(f"K (max_attempts) must be >= 1, got {self.max_attempts}")
        if self.max_attempts > MAX_SAMPLED_ATTEMPTS:  # the population samples 64-bit masks
            raise ValueError(f"K (max_attempts) must be <= {MAX_SAMPLED_ATTEMPTS} in a sweep, "
                             f"got {self.max_attempts}")
        for name in ("lr", "adam_lr"):
            value = getattr(self, name)
            if not (is_finite_real(value) and value > 0):
                raise ValueError(f"learning rates must be finite numbers > 0, got {name} = "
                                 f"{value!r}")
        if not (is_finite_real(self.wrong_length_ratio) and self.wrong_length_ratio > 0):
            raise ValueError(f"wrong_length_ratio must be a finite number > 0, got "
                             f"{self.wrong_length_ratio!r}")
        if self.ref_update_every is not None and self.ref_update_every < 1:
            raise ValueError("ref_update_every must be >= 1 (or omitted)")
        if self.optimiser not in OPTIMISERS:
            raise ValueError(f"unknown optimiser {self.optimiser!r}; choose from "
                             f"{', '.join(OPTIMISERS)}")
        check_second_moment(self.second_moment)
        check_max_grad_norm(self.max_grad_norm)
        object.__setattr__(self, "coupling", parse_coupling(self.coupling))
        # the remaining fields are checked by the objects they build
        self.objective("surrogate+kl", 0.0, "per-token")
        self.spec(LadderConfig(), 10)

    def objective(self, name: str, beta: float, token_model: str) -> ObjectiveConfig:
        _, spec, data = NAMED_OBJECTIVES.get(name, (name, name, None))
        sft = SFTData(
            kind=data or "reflection",
            ft_share=self.sft_ft_share,
            n_reflections=self.sft_reflections,
        )
        return ObjectiveConfig.parse(
            spec,
            beta=beta,
            group_size=self.group_size,
            std_scaling=self.std_scaling,
            kl_estimator=self.kl_estimator,
            kl_placement=self.kl_placement,
            token_model=token_model,
            sft_data=sft,
        )

    def spec(self, ladder: LadderConfig, length: int, coupling: Coupling = None) -> AgentSpec:
        return AgentSpec(
            ladder=ladder.ladder(),
            transfer=ladder.transfer(),
            max_attempts=self.max_attempts,
            len_correct=float(length),
            len_wrong=float(length) * self.wrong_length_ratio,
            coupling=coupling,
        )

    def optimiser_config(self, name: str, second_moment: str = "per-parameter",
                         max_grad_norm: float = 0.0) -> OptimiserConfig:
        """The optimiser of a cell (DESIGN §2); SGD ignores `second_moment`."""
        return OptimiserConfig(name=name, lr=self.adam_lr if name == "adam" else self.lr,
                               second_moment=second_moment if name == "adam" else
                               "per-parameter", max_grad_norm=float(max_grad_norm))


@dataclass(frozen=True)
class Cell:
    """One grid point."""

    objective: str
    beta: float
    token_model: str
    optimiser: str
    length: int
    second_moment: str = "per-parameter"  # Adam's; "none" for SGD
    max_grad_norm: float = 0.0
    coupling: Coupling = None

    @property
    def cell_id(self) -> str:
        budget = "".join((  # the update budget (DESIGN §2), named only where not plain
            "__v-shared" if self.second_moment == "shared" else "",
            f"__clip{self.max_grad_norm!r}" if self.max_grad_norm > 0 else "",
            "" if self.coupling is None else
            "__C" + hashlib.sha256(repr(self.coupling).encode()).hexdigest()[:8]))
        raw = (
            # repr, not :g, so that betas differing past 6 digits never share a file
            f"{self.objective}__b{self.beta!r}__{self.token_model}__{self.optimiser}"
            f"{budget}__L{self.length}"
        )
        return re.sub(r"[^A-Za-z0-9._-]", "_", raw.replace("+", "_plus_").replace("*", "x"))


@dataclass(frozen=True)
class GridConfig:
    """The whole sweep: axes, training settings, ladder, seed (DESIGN §2-§3).

    The update-budget axes (optimisers, second_moments, max_grad_norms, couplings; DESIGN §2)
    default to None: one value, the [training] table's (`optimiser`, `second_moment`,
    `max_grad_norm`, `coupling`); an axis given wins over its [training] value."""

    lengths: tuple[int, ...] = tuple(int(x) for x in parse_lengths("10..1000"))
    objectives: tuple[str, ...] = DEFAULT_OBJECTIVES
    betas: tuple[float, ...] = (PAPER_RL_KL.beta,)  # 0.001, the paper's (core.regimes)
    token_models: tuple[str, ...] = ("per-token",)
    optimisers: tuple[str, ...] | None = None  # default: (training.optimiser,) = adam
    seed: int = 0
    training: TrainingConfig = field(default_factory=TrainingConfig)
    ladder: LadderConfig = field(default_factory=LadderConfig)
    second_moments: tuple[str, ...] | None = None  # Adam's cells only (DESIGN §2)
    max_grad_norms: tuple[float, ...] | None = None
    couplings: tuple[Coupling, ...] | None = None

    def __post_init__(self) -> None:
        tr = self.training
        for axis, scalar in BUDGET_AXES.items():  # None: the [training] value alone
            if getattr(self, axis) is None:
                object.__setattr__(self, axis, (getattr(tr, scalar),))
        for axis in AXES:
            if len(getattr(self, axis)) == 0:
                raise ValueError(f"empty grid axis: {axis}")
        for length in self.lengths:
            if not is_integer(length):
                raise ValueError(f"lengths must be integers, got {length!r}")
            check_length(length, "lengths")
        longest_wrong = max(self.lengths) * tr.wrong_length_ratio
        if longest_wrong > MAX_LENGTH:
            raise ValueError(f"L_W = wrong_length_ratio * L reaches {longest_wrong:g}, above the "
                             f"largest answer length {MAX_LENGTH}")
        for beta in self.betas:
            if not (is_finite_real(beta) and beta >= 0):
                raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
        for axis in ("objectives", "token_models", "optimisers", "second_moments"):
            for value in getattr(self, axis):
                if not isinstance(value, str):
                    raise ValueError(f"{axis} must be strings, got {value!r}")
        for tm in self.token_models:
            if tm not in TOKEN_MODELS:
                raise ValueError(
                    f"unknown token model {tm!r}; choose from {', '.join(TOKEN_MODELS)}"
                )
        for opt in self.optimisers:
            if opt not in OPTIMISERS:
                raise ValueError(f"unknown optimiser {opt!r}; choose from {', '.join(OPTIMISERS)}")
        for value in self.second_moments:
            check_second_moment(value, "second_moments")
        object.__setattr__(self, "max_grad_norms", tuple(
            check_max_grad_norm(c, "max_grad_norms") for c in self.max_grad_norms))
        object.__setattr__(self, "couplings", tuple(
            parse_coupling(c, "couplings") for c in self.couplings))
        for name in self.objectives:
            if name not in NAMED_OBJECTIVES:
                try:
                    tr.objective(name, 0.0, "per-token")
                except ValueError as exc:
                    known = ", ".join(NAMED_OBJECTIVES)
                    raise ValueError(
                        f"unknown objective {name!r} ({exc}); named ones: {known}"
                    ) from None
        check_seed(self.seed)
        for dup_axis in AXES:
            values = getattr(self, dup_axis)
            if len(set(values)) != len(values):
                raise ValueError(f"grid axis {dup_axis} has duplicate values")
        if "sgd" in self.optimisers:  # refused before any work (sim.stability, DESIGN §2)
            for o in self.objectives:
                for b in self.betas:
                    for tm in self.token_models:
                        for c in self.couplings:
                            check_sgd_lr(tr.spec(self.ladder, max(self.lengths), c),
                                         tr.objective(o, float(b), tm), tr.optimiser_config(
                                             "sgd"), f"{o} (beta {b:g}, {tm})")

    def cells(self) -> list[Cell]:
        """Every grid point, objectives outermost and lengths innermost (the results' order);
        SGD cells once, with second_moment "none" (it is Adam's)."""
        cells = [
            Cell(o, float(b), tm, opt, int(L), v, float(clip), c)
            for o in self.objectives
            for b in self.betas
            for tm in self.token_models
            for opt in self.optimisers
            for v in (self.second_moments if opt == "adam" else ("none",))
            for clip in self.max_grad_norms
            for c in self.couplings
            for L in self.lengths
        ]
        ids = [c.cell_id for c in cells]
        if len(set(ids)) != len(ids):  # e.g. two objective spellings mapping to one file name
            raise ValueError("two grid cells map to the same cell file; rename an objective")
        return cells

    def to_dict(self) -> dict:
        """The grid as plain data: the sweep record's `config` (core.records)."""
        return asdict(self)

    def digest(self) -> str:
        """Hash of everything that determines the results (resume safety)."""
        text = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


AXES = ("lengths", "objectives", "betas", "token_models", "optimisers", "second_moments",
        "max_grad_norms", "couplings")
# the update-budget axes and their one-value defaults in [training] (DESIGN §2)
BUDGET_AXES = {"optimisers": "optimiser", "second_moments": "second_moment",
               "max_grad_norms": "max_grad_norm", "couplings": "coupling"}


def regime_label(objective: str) -> str:
    """The human label of a named objective (the results' `regime` column), else the spec."""
    return NAMED_OBJECTIVES[objective][0] if objective in NAMED_OBJECTIVES else objective
