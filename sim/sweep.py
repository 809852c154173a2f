"""Grid sweeps over answer length x objective x beta x token model x optimiser (DESIGN.md §1-§4).

Each cell trains a population of DS learners (sim.population) on the in-distribution tasks
of a ladder and evaluates every agent on the whole ladder with the two-stage accuracy model
(analysis.twostage, DESIGN §4). Outputs under outputs/sweeps/<name>/:

  cells/<cell_id>.parquet  one row per agent; written atomically (tmp file, then os.replace)
  results.parquet          the concatenation of all cells
  manifest.json            grid, ladder, K, L_C/L_W rule, seeds, versions, git commit, wall time

Resuming: a cell whose file exists is never recomputed, so an interrupted sweep restarted with
the same arguments only runs the missing cells. The grid's hash is kept in the manifest; a
restart with a different grid under the same name is refused (choose a new name or overwrite).

Reproducibility: every cell uses the sweep seed for its agents' splitmix64 streams (common
random numbers: agent i sees the same uniforms in every cell, which makes differences between
cells less noisy), so a cell's rows do not depend on which process ran it or in what order.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import logit

from sim.attribution import attribution_ratio
from sim.dynamics import expected_gradients
from sim.lengths import parse_lengths
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
from sim.provenance import (
    check_output_name,
    git_commit,
    package_versions,
    write_json_atomic,
    write_parquet_atomic,
)

REPO_ROOT = Path(__file__).resolve().parent.parent

# Named objectives of the default grid: name -> (human label, term spec, SFT data kind).
# Any other spec is parsed by ObjectiveConfig.parse (e.g. "surrogate+0.5*nsr").
NAMED_OBJECTIVES: dict[str, tuple[str, str, str | None]] = {
    "surrogate": ("Surrogate only", "surrogate", None),
    "surrogate+kl": ("GRPO", "surrogate+kl", None),
    "kl": ("KL only", "kl", None),
    "sft-no-reflection": ("SFT (no reflection)", "sft", "no-reflection"),
    "sft-reflection": ("SFT (reflection)", "sft", "reflection"),
    "dft": ("DFT (reflection data)", "dft", "reflection"),
    "dft-no-reflection": ("DFT (no reflection)", "dft", "no-reflection"),
    "nsr": ("NSR", "nsr", None),
    "psr": ("PSR", "psr", None),
}
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
    kl_estimator: str = "k3"
    kl_placement: str = "in-loss"
    std_scaling: bool = True
    ref_update_every: int | None = None  # None: the reference stays the initial policy
    sft_ft_share: float = 0.5  # reflection data: share of F->T chains
    sft_reflections: int = 1

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.n_agents < 1:
            raise ValueError(f"n_agents must be >= 1, got {self.n_agents}")
        if self.n_queries < 1:
            raise ValueError(f"n_queries must be >= 1, got {self.n_queries}")
        if self.max_attempts < 1:
            raise ValueError(f"K (max_attempts) must be >= 1, got {self.max_attempts}")
        if self.max_attempts > MAX_EXACT_ATTEMPTS:  # the exp_* columns enumerate trajectories
            raise ValueError(f"K (max_attempts) must be <= {MAX_EXACT_ATTEMPTS} in a sweep, "
                             f"got {self.max_attempts}")
        if not (self.lr > 0 and self.adam_lr > 0):
            raise ValueError("learning rates must be > 0")
        if not self.wrong_length_ratio > 0:
            raise ValueError("wrong_length_ratio must be > 0")
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
    betas: tuple[float, ...] = (0.001,)
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
            if int(length) != length or length < 1:
                raise ValueError(f"lengths must be integers >= 1, got {length}")
        for beta in self.betas:
            if not (math.isfinite(beta) and beta >= 0):
                raise ValueError(f"beta must be a finite number >= 0, got {beta}")
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
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
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


def load_grid_file(path: str | Path) -> dict:
    """Read a TOML (.toml) or YAML (.yaml/.yml) grid file into a plain dict."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"grid file not found: {path}")
    text = path.read_text()
    if path.suffix == ".toml":
        import tomllib

        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"bad TOML in {path}: {exc}") from None
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"bad YAML in {path}: {' '.join(str(exc).split())}") from None
        if not isinstance(data, dict):
            raise ValueError(f"grid file {path} must hold a mapping")
        return data
    raise ValueError(f"grid file must end in .toml, .yaml or .yml: {path}")


def build_grid(file_data: dict | None = None, **overrides) -> tuple[str | None, GridConfig]:
    """GridConfig from a grid file's dict and command-line overrides (None = not given).

    Recognised top-level keys: name, lengths (a spec string like "10..1000" or a list),
    points, objectives, betas, token_models, optimisers, seed, [training], [ladder].
    Overrides: the same names plus any TrainingConfig field. Returns (name, grid).
    """
    data = dict(file_data or {})
    training = dict(data.pop("training", {}) or {})
    ladder = dict(data.pop("ladder", {}) or {})
    name = data.pop("name", None)
    points = data.pop("points", 16)
    train_fields = {f.name for f in fields(TrainingConfig)}
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "name":
            name = value
        elif key == "points":
            points = value
        elif key in train_fields:
            training[key] = value
        else:
            data[key] = value
    lengths = data.pop("lengths", "10..1000")
    if isinstance(lengths, str):
        lengths = parse_lengths(lengths, int(points))
    elif isinstance(lengths, int | float):
        lengths = [lengths]
    data["lengths"] = tuple(int(x) for x in lengths)
    for axis in ("objectives", "betas", "token_models", "optimisers"):
        if axis in data and isinstance(data[axis], str | int | float):
            data[axis] = (data[axis],)
    if "betas" in data:
        data["betas"] = tuple(float(b) for b in data["betas"])
    unknown = set(data) - {f.name for f in fields(GridConfig)}
    if unknown:
        raise ValueError(f"unknown grid key(s): {', '.join(sorted(unknown))}")
    grid_kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    grid = GridConfig(
        training=_coerce(TrainingConfig, training, "[training]"),
        ladder=_coerce(LadderConfig, ladder, "[ladder]"),
        **grid_kwargs,
    )
    return name, grid


# ------------------------------------------------------------------------------ one cell


def run_cell(grid: GridConfig, cell: Cell) -> pd.DataFrame:
    """Train one cell's population and return one row per agent (the results schema)."""
    from analysis.twostage import two_stage_accuracy

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
            "seed": np.full(n, grid.seed, dtype=np.int64),
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


def _cell_done(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        import pyarrow.parquet as pq

        pq.read_metadata(path)
        return True
    except Exception:  # unreadable leftovers are recomputed
        return False


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


def _init_worker() -> None:
    # one process per core: threads inside a process would only oversubscribe the cores
    import numba

    numba.set_num_threads(1)


def _run_cell_worker(grid: GridConfig, cell: Cell) -> tuple[str, pd.DataFrame]:
    return cell.cell_id, run_cell(grid, cell)


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
    )
    try:
        futures = [pool.submit(_run_cell_worker, grid, cell) for cell in todo]
        for fut in as_completed(futures):
            on_done(*fut.result())
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


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
    for stale in cells_dir.glob(".*.tmp"):  # left by an interrupted write: never a result
        stale.unlink()
    cells = grid.cells()
    skipped = [c.cell_id for c in cells if _cell_done(cells_dir / f"{c.cell_id}.parquet")]
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
        write_parquet_atomic(df.assign(git_commit=commit), cells_dir / f"{cell_id}.parquet")
        computed.append(cell_id)
        if bar is not None:
            bar.update(1)

    try:
        if executor == "local":
            _execute_local(grid, todo, workers, on_done)
        else:
            _execute_ray(grid, todo, address, on_done)
    finally:
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - start
    frames = [pd.read_parquet(cells_dir / f"{c.cell_id}.parquet") for c in cells]
    results = pd.concat(frames, ignore_index=True, sort=False)
    write_parquet_atomic(results, out_dir / "results.parquet")
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
    "SweepResult",
    "TrainingConfig",
    "build_grid",
    "default_name",
    "load_grid_file",
    "run_cell",
    "run_sweep",
)
