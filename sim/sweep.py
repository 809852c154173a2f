"""Grid sweeps over answer length x objective x beta x token model x optimiser (DESIGN.md §1-§4).

Each cell trains a population of DS learners (sim.population) on the in-distribution tasks
of a ladder and evaluates every agent on the whole ladder with the two-stage accuracy model
(core.twostage, DESIGN §4). Outputs under outputs/sweeps/<name>/:

  cells/<cell_id>.parquet  one row per agent; written atomically (tmp file, then os.replace),
                           with the sha256 of its content in the Parquet key-value metadata
  results.parquet          the concatenation of all cells
  manifest.json            grid, ladder, K, L_C/L_W rule, seeds, versions, git commit, wall time

Resuming: a cell whose file exists and matches its checksum is never recomputed, so an
interrupted sweep restarted with the same arguments only runs the missing cells; a cell that
fails its checksum (a corrupt file) or has none (an older version's) is recomputed, with a
warning line. The grid's hash is kept in the manifest; a restart with a different grid under
the same name is refused (choose a new name or overwrite).

Robustness: a cell whose results are not finite (outside the ratio columns, which are inf or
0/0 by definition where gradients vanish, DESIGN §3) stops the sweep with an error and is not
written. Temporary files are named per host, process and write (".<file>.<host>.<pid>.<random>
.tmp"), so concurrent runs of one sweep never touch each other's; a run removes only its own,
and at start the leftovers of dead processes of this host. SIGTERM and SIGINT stop the local
worker processes before the sweep exits, and workers die with their parent even when it is
killed outright.

Reproducibility: every cell uses the sweep seed for its agents' splitmix64 streams (common
random numbers: agent i sees the same uniforms in every cell, which makes differences between
cells less noisy), so a cell's rows do not depend on which process ran it or in what order.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import logit

from core.provenance import check_output_name, git_commit, package_versions, write_json_atomic
from core.regimes import PAPER_RL_KL, regime
from core.twostage import two_stage_accuracy
from sim.attribution import attribution_ratio
from sim.dynamics import expected_gradients
from sim.lengths import MAX_LENGTH, MAX_POINTS, check_length, parse_lengths
from sim.model import AgentSpec, TaskLadder, TransferConfig
from sim.objectives import (
    MAX_EXACT_ATTEMPTS,
    TOKEN_MODELS,
    ObjectiveConfig,
    SFTData,
    combine,
)
from sim.optim import OPTIMISERS, OptimiserConfig
from sim.population import LearnerConfig, PopulationConfig, PopulationModel, homogeneous

REPO_ROOT = Path(__file__).resolve().parent.parent
# sim.rng seeds each agent's splitmix64 stream with np.uint64(seed) (DESIGN §2)
MAX_SEED = 2**64 - 1
# counts read from grid files and options (steps, agents, queries, K, ...): anything larger
# is a typo, never a run that could finish
MAX_COUNT = 2**31 - 1
# agents of one population: each holds ~2 KB of Jacobians and arrays plus a Mesa agent, so a
# million is already a few GB
MAX_AGENTS = 10**6


def _is_int(value: object) -> bool:
    """An integer, and not a bool (True is an int to Python, never a count to a user)."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _is_number(value: object) -> bool:
    return _is_int(value) or isinstance(value, float | np.floating)


def _finite(value: object) -> bool:
    """A finite real number (not a bool); ints too large for a float are not."""
    if not _is_number(value):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def check_seed(seed: object, what: str = "seed") -> int:
    """A run seed: an integer in [0, 2**64 - 1] (sim.rng's uint64 streams, DESIGN §2)."""
    if not _is_int(seed) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"{what} must be an integer in [0, {MAX_SEED}] (64 bits), got "
                         f"{_show(seed)}")
    return int(seed)


def _show(value: object) -> str:
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
    (16 lengths x 7 objectives) takes well under a minute on two cores."""

    steps: int = 150
    n_agents: int = 16
    n_queries: int = 4  # queries per agent and step (round-robin over the ID tasks)
    group_size: int = 8  # G
    max_attempts: int = 8  # K
    lr: float = 0.05  # SGD
    adam_lr: float = 0.02  # Adam (normalised steps need a smaller rate)
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
        if self.max_attempts > MAX_EXACT_ATTEMPTS:  # the exp_* columns enumerate trajectories
            raise ValueError(f"K (max_attempts) must be <= {MAX_EXACT_ATTEMPTS} in a sweep, "
                             f"got {self.max_attempts}")
        for name in ("lr", "adam_lr"):
            value = getattr(self, name)
            if not (_finite(value) and value > 0):
                raise ValueError(f"learning rates must be finite numbers > 0, got {name} = "
                                 f"{value!r}")
        if not (_finite(self.wrong_length_ratio) and self.wrong_length_ratio > 0):
            raise ValueError(f"wrong_length_ratio must be a finite number > 0, got "
                             f"{self.wrong_length_ratio!r}")
        if self.ref_update_every is not None and self.ref_update_every < 1:
            raise ValueError("ref_update_every must be >= 1 (or omitted)")
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

    def spec(self, ladder: LadderConfig, length: int) -> AgentSpec:
        return AgentSpec(
            ladder=ladder.ladder(),
            transfer=ladder.transfer(),
            max_attempts=self.max_attempts,
            len_correct=float(length),
            len_wrong=float(length) * self.wrong_length_ratio,
        )

    def optimiser(self, name: str) -> OptimiserConfig:
        return OptimiserConfig(name=name, lr=self.adam_lr if name == "adam" else self.lr)


@dataclass(frozen=True)
class Cell:
    """One grid point."""

    objective: str
    beta: float
    token_model: str
    optimiser: str
    length: int

    @property
    def cell_id(self) -> str:
        raw = (
            # repr, not :g, so that betas differing past 6 digits never share a file
            f"{self.objective}__b{self.beta!r}__{self.token_model}__{self.optimiser}"
            f"__L{self.length}"
        )
        return re.sub(r"[^A-Za-z0-9._-]", "_", raw.replace("+", "_plus_").replace("*", "x"))


@dataclass(frozen=True)
class GridConfig:
    """The whole sweep: axes, training settings, ladder, seed (DESIGN §2-§3)."""

    lengths: tuple[int, ...] = tuple(int(x) for x in parse_lengths("10..1000"))
    objectives: tuple[str, ...] = DEFAULT_OBJECTIVES
    betas: tuple[float, ...] = (PAPER_RL_KL.beta,)  # 0.001, the paper's (core.regimes)
    token_models: tuple[str, ...] = ("per-token",)
    optimisers: tuple[str, ...] = ("sgd",)
    seed: int = 0
    training: TrainingConfig = field(default_factory=TrainingConfig)
    ladder: LadderConfig = field(default_factory=LadderConfig)

    def __post_init__(self) -> None:
        for axis in ("lengths", "objectives", "betas", "token_models", "optimisers"):
            if len(getattr(self, axis)) == 0:
                raise ValueError(f"empty grid axis: {axis}")
        for length in self.lengths:
            if not _is_int(length):
                raise ValueError(f"lengths must be integers, got {length!r}")
            check_length(length, "lengths")
        longest_wrong = max(self.lengths) * self.training.wrong_length_ratio
        if longest_wrong > MAX_LENGTH:
            raise ValueError(f"L_W = wrong_length_ratio * L reaches {longest_wrong:g}, above the "
                             f"largest answer length {MAX_LENGTH}")
        for beta in self.betas:
            if not (_finite(beta) and beta >= 0):
                raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
        for axis in ("objectives", "token_models", "optimisers"):
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
        for name in self.objectives:
            if name not in NAMED_OBJECTIVES:
                try:
                    self.training.objective(name, 0.0, "per-token")
                except ValueError as exc:
                    known = ", ".join(NAMED_OBJECTIVES)
                    raise ValueError(
                        f"unknown objective {name!r} ({exc}); named ones: {known}"
                    ) from None
        check_seed(self.seed)
        for dup_axis in ("lengths", "objectives", "betas", "token_models", "optimisers"):
            values = getattr(self, dup_axis)
            if len(set(values)) != len(values):
                raise ValueError(f"grid axis {dup_axis} has duplicate values")

    def cells(self) -> list[Cell]:
        cells = [
            Cell(o, float(b), tm, opt, int(L))
            for o in self.objectives
            for b in self.betas
            for tm in self.token_models
            for opt in self.optimisers
            for L in self.lengths
        ]
        ids = [c.cell_id for c in cells]
        if len(set(ids)) != len(ids):  # e.g. two objective spellings mapping to one file name
            raise ValueError("two grid cells map to the same cell file; rename an objective")
        return cells

    def to_dict(self) -> dict:
        return asdict(self)

    def digest(self) -> str:
        """Hash of everything that determines the results (resume safety)."""
        text = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def regime_label(objective: str) -> str:
    return NAMED_OBJECTIVES[objective][0] if objective in NAMED_OBJECTIVES else objective


# ------------------------------------------------------------------------------ grid input


def _coerce(cls, data: dict, where: str):
    """Build frozen dataclass `cls` from a dict, lists -> tuples, unknown keys refused."""
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown key(s) in {where}: {', '.join(sorted(unknown))}")
    clean = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return cls(**clean)


# Grid files are typed strictly: a count is an integer (an integral float such as 10.0 is read
# as 10, 10.7 is refused), a real is a finite number, and a bool is never taken for a number.
def _read_int(value: object, key: str, lo: int = 0, hi: int = MAX_COUNT) -> int:
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        value = int(value)  # exactly an integer (floats above 2**53 are not exact)
    if not _is_int(value):
        raise ValueError(f"{key} must be an integer, got {_show(value)}")
    if value > hi:
        raise ValueError(f"{key} must be at most {hi}, got {_show(value)}")
    if value < lo:
        raise ValueError(f"{key} must be at least {lo}, got {_show(value)}")
    return int(value)


def _read_float(value: object, key: str, allow_inf: bool = False) -> float:
    if not _is_number(value):
        raise ValueError(f"{key} must be a number, got {_show(value)}")
    if _is_int(value):
        if not _finite(value):
            raise ValueError(f"{key} is too large, got {_show(value)}")
        return value  # unchanged, so the grid's digest (resume check) is what it always was
    if math.isnan(value) or (math.isinf(value) and not allow_inf):
        raise ValueError(f"{key} must be a finite number, got {value}")
    return float(value)


def _read_bool(value: object, key: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false, got {_show(value)}")
    return value


def _read_str(value: object, key: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string, got {_show(value)}")
    return value


def _read_list(value: object, key: str, item: Callable[[object, str], object],
               scalar_ok: bool = True, size: int | None = None) -> object:
    """A list of items, or (where `scalar_ok`) one item standing for a list of one."""
    if isinstance(value, list | tuple):
        if size is not None and len(value) != size:
            raise ValueError(f"{key} must have {size} entries, got {len(value)}")
        return tuple(item(v, f"{key}[{i}]") for i, v in enumerate(value))
    if scalar_ok:
        return item(value, key)
    raise ValueError(f"{key} must be a list, got {_show(value)}")


# Field annotation (as written in the dataclasses above) -> reader of a grid-file value.
_FIELD_READERS: dict[str, Callable[[object, str], object]] = {
    "int": lambda v, k: _read_int(v, k, lo=-MAX_COUNT),  # ranges: the dataclass's own checks
    "int | None": lambda v, k: None if v is None else _read_int(v, k, lo=-MAX_COUNT),
    "float": _read_float,
    "bool": _read_bool,
    "str": _read_str,
    "tuple[str, ...]": lambda v, k: _read_list(v, k, _read_str, scalar_ok=False),
    "tuple[float, ...]": lambda v, k: _read_list(v, k, _read_float, scalar_ok=False),
    "tuple[bool, ...]": lambda v, k: _read_list(v, k, _read_bool, scalar_ok=False),
    "tuple[float, ...] | float": lambda v, k: _read_list(v, k, _read_float),
    # ell = inf is a real setting (no transfer from the per-task u_x, DESIGN §1)
    "tuple[float, float, float]": lambda v, k: _read_list(
        v, k, lambda x, kk: _read_float(x, kk, allow_inf=True), scalar_ok=False, size=3),
    "tuple[bool, bool, bool]": lambda v, k: _read_list(v, k, _read_bool, scalar_ok=False,
                                                         size=3),
}


def _read_table(cls, value: object, table: str) -> dict:
    """The `[table]` of a grid file, each value read by the type of `cls`'s field."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"[{table}] must be a table of settings, got {_show(value)}")
    types = {f.name: f.type if isinstance(f.type, str) else f.type.__name__ for f in fields(cls)}
    unknown = set(value) - set(types)
    if unknown:
        raise ValueError(f"unknown key(s) in [{table}]: {', '.join(sorted(map(str, unknown)))}")
    # a field of a type not listed above is passed on to the dataclass's own checks
    return {key: _FIELD_READERS.get(types[key], lambda v, k: v)(v, f"[{table}] {key}")
            for key, v in value.items()}


def _read_lengths(value: object, key: str = "lengths") -> object:
    if isinstance(value, str):
        return value  # a spec, parsed with `points` by build_grid
    return _read_list(value, key, lambda v, k: _read_int(v, k, lo=1, hi=MAX_LENGTH))


_TOP_READERS: dict[str, Callable[[object, str], object]] = {
    "name": lambda v, k: check_output_name(_read_str(v, k)),
    "lengths": _read_lengths,
    "points": lambda v, k: _read_int(v, k, lo=1, hi=MAX_POINTS),
    "objectives": lambda v, k: _read_list(v, k, _read_str),
    "betas": lambda v, k: _read_list(v, k, _read_float),
    "token_models": lambda v, k: _read_list(v, k, _read_str),
    "optimisers": lambda v, k: _read_list(v, k, _read_str),
    "seed": lambda v, k: _read_int(v, f"{k} (64 bits)", lo=0, hi=MAX_SEED),
}


def read_grid_data(data: object, source: str = "grid") -> dict:
    """Check the types of a grid file's content and return it normalised (lists as tuples,
    integral floats as ints); every error names the key and `source` (the file)."""
    if not isinstance(data, dict):
        raise ValueError(f"{source} must hold a mapping of grid keys, got {_show(data)}")
    try:
        unknown = set(data) - set(_TOP_READERS) - {"training", "ladder"}
        if unknown:
            raise ValueError(f"unknown grid key(s): {', '.join(sorted(map(str, unknown)))}")
        out = {key: _TOP_READERS[key](value, key) for key, value in data.items()
               if key in _TOP_READERS}
        if "training" in data:
            out["training"] = _read_table(TrainingConfig, data["training"], "training")
        if "ladder" in data:
            out["ladder"] = _read_table(LadderConfig, data["ladder"], "ladder")
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None
    return out


def load_grid_file(path: str | Path) -> dict:
    """Read a TOML (.toml) or YAML (.yaml/.yml) grid file into a plain dict, its values
    checked and normalised by `read_grid_data` (errors name the key and the file)."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"grid file not found: {path}")
    if not path.is_file():
        raise ValueError(f"grid file is not a file: {path}")
    if path.suffix not in (".toml", ".yaml", ".yml"):
        raise ValueError(f"grid file must end in .toml, .yaml or .yml: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"grid file {path} is not UTF-8 text ({exc.reason} at byte "
                         f"{exc.start})") from None
    if path.suffix == ".toml":
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"bad TOML in {path}: {exc}") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"bad YAML in {path}: {' '.join(str(exc).split())}") from None
        if not isinstance(data, dict):
            raise ValueError(f"grid file {path} must hold a mapping")
    return read_grid_data(data, f"grid file {path}")


def build_grid(file_data: dict | None = None, source: str | None = None,
               **overrides) -> tuple[str | None, GridConfig]:
    """GridConfig from a grid file's dict and command-line overrides (None = not given).

    Recognised top-level keys: name, lengths (a spec string like "10..1000" or a list),
    points, objectives, betas, token_models, optimisers, seed, [training], [ladder].
    Overrides: the same names plus any TrainingConfig field. `source` (the file) is named in
    errors. Returns (name, grid).
    """
    where = source or "grid"
    data = read_grid_data(dict(file_data or {}), where)
    training = dict(data.pop("training", {}))
    ladder = dict(data.pop("ladder", {}))
    name = data.pop("name", None)
    points = data.pop("points", 16)
    train_fields = {f.name for f in fields(TrainingConfig)}
    given = False
    for key, value in overrides.items():
        if value is None:
            continue
        given = True
        if key == "name":
            name = value
        elif key == "points":
            points = value
        elif key in train_fields:
            training[key] = value
        else:
            data[key] = value
    lengths = data.pop("lengths", "10..1000")
    try:
        if isinstance(lengths, str):
            cli = overrides.get("lengths") is not None
            lengths = parse_lengths(lengths, points, "--lengths" if cli else "lengths")
        elif _is_number(lengths):
            lengths = [lengths]
        data["lengths"] = tuple(int(x) if _is_int(x) else x for x in lengths)
        for axis in ("objectives", "betas", "token_models", "optimisers"):
            if axis in data and not isinstance(data[axis], list | tuple):
                data[axis] = (data[axis],)
        if "betas" in data:  # floats, as cells and the grid's digest have always had them
            data["betas"] = tuple(float(b) if _finite(b) else b for b in data["betas"])
        unknown = set(data) - {f.name for f in fields(GridConfig)}
        if unknown:
            raise ValueError(f"unknown grid key(s): {', '.join(sorted(unknown))}")
        grid_kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        grid = GridConfig(
            training=_coerce(TrainingConfig, training, "[training]"),
            ladder=_coerce(LadderConfig, ladder, "[ladder]"),
            **grid_kwargs,
        )
    except (ValueError, TypeError) as exc:
        if source is None:
            raise
        context = f"{source} and the command line" if given else source
        raise ValueError(f"{exc} (grid from {context})") from None
    return name, grid


# ------------------------------------------------------------------------------ one cell


def run_cell(grid: GridConfig, cell: Cell) -> pd.DataFrame:
    """Train one cell's population and return one row per agent (the results schema)."""
    tr = grid.training
    spec = tr.spec(grid.ladder, cell.length)
    learner = LearnerConfig(
        spec=spec,
        objective=tr.objective(cell.objective, cell.beta, cell.token_model),
        optimiser=tr.optimiser(cell.optimiser),
    )
    model = PopulationModel(
        homogeneous(learner, tr.n_agents),
        PopulationConfig(
            n_queries=tr.n_queries,
            ref_update_every=tr.ref_update_every,
            seed=grid.seed,
            record_every=None,
        ),
        collect_model_vars=False,
    )
    model.run(tr.steps)
    summary = model.summary()
    expected = expected_gradient_columns(spec, learner.objective, model.phi, model.ref_phi)
    n = tr.n_agents
    head = pd.DataFrame(
        {
            "cell_id": [cell.cell_id] * n,
            "objective": [cell.objective] * n,
            "regime": [regime_label(cell.objective)] * n,
            "beta": np.full(n, cell.beta),
            "token_model": [cell.token_model] * n,
            "optimiser": [cell.optimiser] * n,
            "length": np.full(n, cell.length, dtype=np.int64),
            "len_correct": np.full(n, spec.len_correct),
            "len_wrong": np.full(n, spec.len_wrong),
            "agent": summary.pop("agent").to_numpy(),
            # int64 as always; seeds past int64 (up to 2**64 - 1) need uint64
            "seed": np.full(n, grid.seed, dtype=np.int64 if grid.seed < 2**63 else np.uint64),
            "steps": np.full(n, tr.steps, dtype=np.int64),
            "lr": np.full(n, learner.optimiser.lr),
        }
    )
    ladder = spec.ladder
    acc = {}
    for task in ladder.names:
        acc[f"acc[{task}]"] = two_stage_accuracy(
            summary[f"p[{task}]"], summary[f"q1[{task}]"], summary[f"q2[{task}]"], spec.max_attempts
        )
    acc_df = pd.DataFrame(acc)
    ids = [f"acc[{t}]" for t, i in zip(ladder.names, ladder.in_distribution, strict=True) if i]
    oods = [f"acc[{t}]" for t, i in zip(ladder.names, ladder.in_distribution, strict=True) if not i]
    acc_df["id_accuracy"] = acc_df[ids].mean(axis=1)
    acc_df["ood_accuracy"] = acc_df[oods].mean(axis=1) if oods else np.nan
    return pd.concat([head, _order(summary, acc_df), expected], axis=1)


def expected_gradient_columns(spec: AgentSpec, obj: ObjectiveConfig, phis: np.ndarray,
                              ref_phis: np.ndarray) -> pd.DataFrame:
    """Exact expected ID-mean logit gradients at each agent's final parameters (DESIGN §3):
    exp_g_x[term], exp_ratio[term] per term and the total (exp_ratio). Unlike the sampled
    magnitudes (ratio[term]), these carry no Monte-Carlo noise."""
    rows = []
    for phi, ref in zip(phis, ref_phis, strict=True):
        on_logits, _ = expected_gradients(spec, obj, phi, ref)
        on_logits["total"] = combine(on_logits, obj)
        row = {}
        for term, g in on_logits.items():
            for x, comp in enumerate(("s", "1", "2")):
                row[f"exp_g_{comp}[{term}]"] = float(g[x])
            row[f"exp_ratio[{term}]"] = attribution_ratio(g)
        row["exp_ratio"] = row["exp_ratio[total]"]
        rows.append(row)
    return pd.DataFrame(rows)


def _order(summary: pd.DataFrame, acc: pd.DataFrame) -> pd.DataFrame:
    probs = [c for c in summary.columns if c.split("[")[0] in ("p", "q1", "q2")]
    rest = [c for c in summary.columns if c not in probs]
    return pd.concat([summary[probs], acc, summary[rest]], axis=1)


# ------------------------------------------------------------------------------ files


CHECKSUM_KEY = b"ds_study.content_sha256"
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:20] or "host"  # short names
_TMP_NAME = re.compile(r"^\.(?P<target>.+)\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>[0-9]+)"
                       r"\.(?P<rand>[0-9a-f]{8})\.tmp$")


def content_digest(table) -> str:
    """sha256 of a cell's content: column names, Arrow types and values (exact float reprs),
    independent of how Parquet pages, compresses or chunks them."""
    digest = hashlib.sha256()
    for name, column in zip(table.column_names, table.columns, strict=True):
        digest.update(json.dumps([name, str(column.type)]).encode())
        digest.update(json.dumps(column.to_pylist(), default=repr).encode())
    return digest.hexdigest()


def _tmp_path(path: Path) -> Path:
    """A temporary name beside `path`, unique to this host, process and call."""
    return path.with_name(f".{path.name}.{_HOST}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _remove_dead_tmp(folder: Path) -> None:
    """Remove temporary files left by processes of this host that are no longer running;
    another live run's files (or another host's) are never touched."""
    for tmp in folder.glob(".*.tmp"):
        match = _TMP_NAME.match(tmp.name)
        if match and match["host"] == _HOST and not _pid_alive(int(match["pid"])):
            tmp.unlink(missing_ok=True)


def _write_parquet_atomic(df: pd.DataFrame, path: Path, checksum: bool = False) -> None:
    """Write `df` to a temporary file of this process, fsync, os.replace: readers see the old
    file or the whole new one. With `checksum`, the content's sha256 goes into the file's
    key-value metadata (verified on resume). The temporary file is removed on any failure."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        if checksum:
            table = pa.Table.from_pandas(df, preserve_index=False)
            meta = dict(table.schema.metadata or {})
            meta[CHECKSUM_KEY] = content_digest(table).encode()
            pq.write_table(table.replace_schema_metadata(meta), tmp)
        else:
            df.to_parquet(tmp, index=False)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _cell_state(path: Path) -> str:
    """'missing', 'ok' (readable, checksum matches), 'corrupt' (unreadable or checksum
    mismatch) or 'unverified' (readable, no checksum: written by an older version)."""
    if not path.is_file():
        return "missing"
    try:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    except Exception:  # noqa: BLE001 - any unreadable leftover is recomputed
        return "corrupt"
    stored = (table.schema.metadata or {}).get(CHECKSUM_KEY)
    if stored is None:
        return "unverified"
    return "ok" if stored.decode(errors="replace") == content_digest(table) else "corrupt"


def check_finite(df: pd.DataFrame, what: str) -> None:
    """Refuse results with NaN or infinities outside the ratio columns (ratio*, exp_ratio*:
    inf or 0/0 by definition where gradients vanish, DESIGN §3)."""
    bad = [c for c in df.columns
           if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])
           and not c.startswith(("ratio", "exp_ratio"))
           and not np.isfinite(df[c].to_numpy(dtype=float)).all()]
    if bad:
        shown = ", ".join(bad[:6]) + (f" and {len(bad) - 6} more" if len(bad) > 6 else "")
        raise ValueError(f"{what} gave non-finite values in {shown} (training diverged: "
                         "lower the learning rate or the lengths); it was not written")


def manifest(grid: GridConfig, name: str, **extra) -> dict:
    spec = grid.training.spec(grid.ladder, 1)
    lad = spec.ladder
    return {
        "name": name,
        "grid_digest": grid.digest(),
        "grid": grid.to_dict(),
        "n_cells": len(grid.cells()),
        "ladder": {
            "names": list(lad.names),
            "difficulty": list(lad.difficulty),
            "in_distribution": list(lad.in_distribution),
            "base_offsets": [list(b) for b in lad.base_offsets],
            "base_offsets_components": ["b_s", "b_1", "b_2"],
        },
        "transfer": {
            "length_scales": list(grid.ladder.length_scales),
            "shared_trainable": list(grid.ladder.shared_trainable),
            "parameter_names": spec.parameter_names(),
        },
        "K": grid.training.max_attempts,
        "length_rule": f"L_C = L, L_W = {grid.training.wrong_length_ratio:g} * L",
        "seeds": {
            "seed": grid.seed,
            "agent_streams": "sim.rng.agent_state(seed, agent), the same in every cell",
        },
        "gradient_columns": (
            "g_x[term]: mean over training steps of the ID-mean logit gradient (unweighted "
            "term; total = weighted sum); abs_g_x[term]: mean of its magnitude; ratio[term] = "
            "abs_g_s / mean(abs_g_1, abs_g_2)"
        ),
        "versions": package_versions(),
        "git_commit": git_commit(),
        "argv": sys.argv,
        **extra,
    }


# ------------------------------------------------------------------------------ executors


class SweepInterrupted(KeyboardInterrupt):
    """SIGTERM during a sweep, raised like Ctrl-C's KeyboardInterrupt: the workers are
    stopped and the finished cells kept."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """Turn SIGTERM into SweepInterrupted while a sweep runs (in the main thread, unless the
    program installed its own handler), so the workers are stopped on the way out."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous not in (signal.SIG_DFL, None):
        yield
        return

    def handler(signum, frame):  # noqa: ARG001 - the signal module's signature
        raise SweepInterrupted(signum)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _die_with_parent(parent_pid: int) -> None:
    """Make this worker process end when `parent_pid` does, even if it is killed outright:
    Linux's PR_SET_PDEATHSIG, elsewhere a thread watching the parent's pid."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, signal.SIGKILL, 0, 0, 0) != 0:  # 1 = PR_SET_PDEATHSIG
            raise OSError(ctypes.get_errno(), "prctl")
    except (OSError, AttributeError):
        def watch() -> None:
            while os.getppid() == parent_pid:
                time.sleep(0.5)
            os._exit(1)

        threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent_pid:  # the parent died before the line above
        os._exit(1)


def _init_worker(parent_pid: int | None = None) -> None:
    # one process per core: threads inside a process would only oversubscribe the cores
    import numba

    numba.set_num_threads(1)
    if parent_pid is not None:  # a pool worker: the parent alone handles Ctrl-C, then ends us
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _die_with_parent(parent_pid)


def _run_cell_worker(grid: GridConfig, cell: Cell) -> tuple[str, pd.DataFrame]:
    return cell.cell_id, run_cell(grid, cell)


def _stop_workers(pool) -> None:
    """Cancel what has not started and end the worker processes now (ProcessPoolExecutor
    would otherwise let each finish its cell, and keep the interpreter waiting for them)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        if proc.is_alive():
            proc.terminate()
    deadline = time.monotonic() + 3.0
    for proc in processes:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join(1.0)


def _execute_local(
    grid: GridConfig, todo: list[Cell], workers: int, on_done: Callable[[str, pd.DataFrame], None]
) -> None:
    if workers <= 1 or len(todo) <= 1:
        _init_worker()
        for cell in todo:
            on_done(*_run_cell_worker(grid, cell))
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn, not fork: a forked child inheriting Numba's threading state can deadlock
    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(todo)),
        mp_context=mp.get_context("spawn"),
        initializer=_init_worker,
        initargs=(os.getpid(),),
    )
    try:
        futures = [pool.submit(_run_cell_worker, grid, cell) for cell in todo]
        for fut in as_completed(futures):
            on_done(*fut.result())
    except BaseException:
        _stop_workers(pool)
        raise
    pool.shutdown(wait=True)


def check_ray_address(address: str | None, timeout_s: float = 10.0) -> None:
    """Fail fast on a Ray address nothing answers at (ray.init would retry for minutes)."""
    if not address or address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RuntimeError(f"--address must be HOST:PORT (or auto), got {address!r}")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise RuntimeError(f"cannot reach the Ray cluster at {address} ({exc})") from None


def _execute_ray(
    grid: GridConfig,
    todo: list[Cell],
    address: str | None,
    on_done: Callable[[str, pd.DataFrame], None],
) -> None:
    try:
        import ray
    except ImportError:
        raise RuntimeError("the ray executor needs Ray: pip install 'ds-study[dist]'") from None
    if not ray.is_initialized():
        check_ray_address(address)
        # Workers import this package from the repository (shared file system or the same
        # install on every node); one Numba thread each, Ray schedules one cell per CPU.
        env = {"PYTHONPATH": str(REPO_ROOT), "NUMBA_NUM_THREADS": "1"}
        ray.init(
            address=address,
            runtime_env={"env_vars": env},
            log_to_driver=False,
            include_dashboard=False,
        )
    remote = ray.remote(num_cpus=1)(_run_cell_worker)
    grid_ref = ray.put(grid)
    pending = [remote.remote(grid_ref, cell) for cell in todo]
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            on_done(*ray.get(done[0]))
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise


@dataclass(frozen=True)
class SweepResult:
    out_dir: Path
    n_cells: int
    computed: tuple[str, ...]
    skipped: tuple[str, ...]
    wall_s: float
    results: pd.DataFrame | None


def _cells_from_other_commits(cells_dir: Path, cell_ids: list[str],
                              commit: str | None) -> list[str]:
    """Resumed cells whose recorded git commit differs from the current one."""
    other = []
    for cell_id in cell_ids:
        path = cells_dir / f"{cell_id}.parquet"
        try:
            recorded = pd.read_parquet(path, columns=["git_commit"])["git_commit"].iloc[0]
        except (KeyError, ValueError, IndexError):  # written before commits were recorded
            recorded = None
        if recorded != commit:
            other.append(cell_id)
    return other


def run_sweep(
    grid: GridConfig,
    name: str,
    out_root: str | Path = "outputs/sweeps",
    executor: str = "local",
    workers: int | None = None,
    address: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> SweepResult:
    """Run (or resume) a sweep; returns what was computed and the concatenated results."""
    if executor not in ("local", "ray"):
        raise ValueError(f"executor must be 'local' or 'ray', got {executor!r}")
    check_output_name(name)
    out_dir = Path(out_root) / name
    cells_dir = out_dir / "cells"
    man_path = out_dir / "manifest.json"
    digest = grid.digest()
    if man_path.is_file() and not overwrite:
        old = json.loads(man_path.read_text())
        if old.get("grid_digest") != digest:
            raise ValueError(
                f"sweep {name!r} already exists with a different grid; "
                "use another --name or --overwrite"
            )
    if overwrite and cells_dir.is_dir():
        for f in cells_dir.glob("*.parquet"):
            f.unlink()
    cells_dir.mkdir(parents=True, exist_ok=True)
    _remove_dead_tmp(cells_dir)  # left by interrupted writes: never a result
    _remove_dead_tmp(out_dir)
    cells = grid.cells()
    states = {c.cell_id: _cell_state(cells_dir / f"{c.cell_id}.parquet") for c in cells}
    skipped = [cell_id for cell_id, state in states.items() if state == "ok"]
    for cell_id, state in states.items():
        if state == "corrupt":
            print(f"warning: cell {cell_id} is unreadable or fails its checksum (a corrupt "
                  "file); recomputing it", file=sys.stderr)
    unverified = [cell_id for cell_id, state in states.items() if state == "unverified"]
    if unverified:
        print(f"warning: {len(unverified)} cells have no checksum (written by an older "
              "version); recomputing them", file=sys.stderr)
    done_ids = set(skipped)
    commit = git_commit()
    stale = _cells_from_other_commits(cells_dir, skipped, commit)
    if stale:
        print(f"warning: {len(stale)} of {len(skipped)} resumed cells were computed at another "
              f"git commit; --overwrite recomputes them", file=sys.stderr)
    todo = [c for c in cells if c.cell_id not in done_ids]
    workers = workers or os.cpu_count() or 1
    start = time.perf_counter()
    write_json_atomic(
        manifest(grid, name, status="running", executor=executor, workers=workers), man_path
    )
    computed: list[str] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(cells), initial=len(skipped), desc=f"sweep {name}", unit="cell")

    def on_done(cell_id: str, df: pd.DataFrame) -> None:
        check_finite(df, f"cell {cell_id}")
        _write_parquet_atomic(df.assign(git_commit=commit), cells_dir / f"{cell_id}.parquet",
                              checksum=True)
        computed.append(cell_id)
        if bar is not None:
            bar.update(1)

    try:
        with _signals_interrupt():
            if executor == "local":
                _execute_local(grid, todo, workers, on_done)
            else:
                _execute_ray(grid, todo, address, on_done)
    except BaseException as exc:  # the manifest never stays at "running"
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        write_json_atomic(manifest(grid, name, status=status, executor=executor,
                                   workers=workers, cells_computed=len(computed),
                                   cells_resumed=len(skipped),
                                   error=f"{type(exc).__name__}: {str(exc)[:200]}"), man_path)
        raise
    finally:
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - start
    frames = [pd.read_parquet(cells_dir / f"{c.cell_id}.parquet") for c in cells]
    results = pd.concat(frames, ignore_index=True, sort=False)
    _write_parquet_atomic(results, out_dir / "results.parquet")
    write_json_atomic(
        manifest(
            grid,
            name,
            status="complete",
            executor=executor,
            workers=workers,
            wall_time_s=round(wall, 3),
            cells_computed=len(computed),
            cells_resumed=len(skipped),
            cells_from_other_commits=len(stale),
        ),
        man_path,
    )
    return SweepResult(out_dir, len(cells), tuple(computed), tuple(skipped), wall, results)


def default_name(grid: GridConfig) -> str:
    """A stable name from the grid's digest, so the same arguments resume the same sweep."""
    return f"sweep-{grid.digest()}"



__all__: Iterable[str] = (
    "Cell",
    "GridConfig",
    "LadderConfig",
    "NAMED_OBJECTIVES",
    "SweepInterrupted",
    "SweepResult",
    "TrainingConfig",
    "build_grid",
    "check_finite",
    "check_ray_address",
    "check_seed",
    "content_digest",
    "default_name",
    "load_grid_file",
    "read_grid_data",
    "run_cell",
    "run_sweep",
)
