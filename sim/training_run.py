"""The `train` job: one configuration, a small population, full per-step history (DESIGN §2-§3).

The default is the paper's Figure 1 setting: the bare 3-logit agent (one task, no offsets,
theta = 0) under GRPO = surrogate + beta * token-level KL (k1, "in reward", per-token model,
L_C = L_W = 100, beta = 0.01 so that beta * L = 1), plain SGD, with the reference reset to
the current policy every 50 steps -- the resets make the cycles of Figure 1. Gradients are
Monte-Carlo estimates from sampled groups (G = 8, 16 queries per step and agent). The update
budget of DESIGN §2 (Adam's shared second moment, global gradient-norm clipping, coupling of
the logits) is set by `second_moment`, `max_grad_norm` and `coupling`; plain SGD above its
stability bound (sim.stability) is refused.

Outputs under outputs/train/<name>/: history.parquet (one row per recorded step and agent:
step, agent, parameters, p/q1/q2 per task, g_s/g_1/g_2/ratio per term and total, ref_reset)
and manifest.json, the run record (core.records, kind "train"): config = the TrainConfig,
results = the objective weights used, parameter, task and term names, headline measurements,
`unstable` and `max_jump` (the history's `jump`: the largest one-step move of p or q; above 0.5
the run is chaos, not a result, DESIGN §2) and the Mesa model variables. A run whose history
is not finite (outside the ratio columns, DESIGN §3, and the gradients of step 0, which has
none) raises before writing its history; a run that ends by an exception records "failed" (or
"interrupted" for Ctrl-C).
"""

from __future__ import annotations

import math
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.cli_options import doc
from core.provenance import write_parquet_atomic
from core.records import finish_record, record_outcome, start_record
from sim.attribution import attribution_ratio
from sim.cell import check_finite, column_stat
from sim.columns import column
from sim.grid import MAX_AGENTS, LadderConfig, check_seed
from sim.lengths import MAX_LENGTH
from sim.model import AgentSpec, Coupling, TaskLadder, parse_coupling
from sim.objectives import ObjectiveConfig
from sim.optim import SECOND_MOMENTS, OptimiserConfig
from sim.population import LearnerConfig, PopulationConfig, PopulationModel, homogeneous

DEFAULT_BETA = 0.01


@dataclass(frozen=True)
class TrainConfig:
    """One training configuration (defaults: the paper's Figure 1 setting)."""

    objective: str = field(default="surrogate+kl", metadata=doc(
        "objective terms, each maximised, e.g. 'surrogate+kl', 'sft', 'surrogate+0.5*nsr' "
        "('kl' is the penalty as a return: its weight is beta)", "§2"))
    beta: float | None = field(default=None, metadata=doc(
        f"KL weight beta (default: the coefficient written in the objective, else "
        f"{DEFAULT_BETA}, so that beta * L = 1 at L = 100)", "§2"))
    length: float = field(default=100.0, metadata=doc(
        f"L_C, tokens of a correct candidate answer, in (0, {MAX_LENGTH}]", "§1"))
    wrong_length: float | None = field(default=None, metadata=doc(
        "L_W, tokens of a wrong candidate answer (default: L_C)", "§1"))
    token_model: str = field(default="per-token", metadata=doc(
        "KL/SFT length weighting w(L): per-token (w = L, the paper's model) or sequence "
        "(w = 1, the control)", "§2", choices=("per-token", "sequence")))
    kl_estimator: str = field(default="k1", metadata=doc(
        "per-token KL estimator of x = log pi - log pi_ref: k1 = x, k2 = x^2/2, "
        "k3 = exp(-x) - 1 + x", "§2", choices=("k1", "k2", "k3")))
    kl_placement: str = field(default="in-reward", metadata=doc(
        "KL in the reward (the paper's theory) or differentiated in the loss (TRL, verl)",
        "§2", choices=("in-reward", "in-loss")))
    max_attempts: int = field(default=8, metadata=doc(
        "K, the forced stop at attempt K", "§1"))
    group_size: int = field(default=8, metadata=doc(
        "G, trajectories per query of the group-relative advantage (paper: 8)", "§2"))
    n_queries: int = field(default=16, metadata=doc("queries per step and agent"))
    optimiser: str = field(default="sgd", metadata=doc(
        "plain SGD (the theory) or Adam", "§2", choices=("sgd", "adam")))
    lr: float = field(default=0.1, metadata=doc(
        "learning rate, > 0 (SGD: at most its stability bound 8 / (w(L) n ||J||^2), "
        "sim.stability)", "§2"))
    second_moment: str = field(default="shared", metadata=doc(
        "Adam's second moment: shared (one scalar per agent, mean of g_j^2) or per-parameter; "
        "meaningful for adam only", "§2", choices=SECOND_MOMENTS))
    max_grad_norm: float = field(default=0.0, metadata=doc(
        "clip each agent's gradient to this global L2 norm before the optimiser (TRL/verl "
        "default 1.0); 0: off", "§2"))
    coupling: Coupling = field(default=None, metadata=doc(
        "coupling M of the trained logits, logits = b(t) + M J_t phi: 'none' or a 3x3 "
        "matrix '1 0.5 0; 0 1 0; 0 0 1'", "§2"))
    steps: int = field(default=300, metadata=doc("training steps"))
    ref_update_every: int | None = field(default=50, metadata=doc(
        "reset the reference pi_ref <- pi every N steps (None, on the command line 0: "
        "never)", "§2"))
    n_agents: int = field(default=4, metadata=doc(
        "agents of the population (the same learner, independent random streams)"))
    seed: int = field(default=0, metadata=doc(
        "seed of the per-agent splitmix64 streams, 0 .. 2**64 - 1"))
    theta0: tuple[float, float, float] = field(default=(0.0, 0.0, 0.0), metadata=doc(
        "initial shared parameters (w_s, w_1, w_2) of every agent; per-task u start at 0",
        "§1"))
    ladder: str = field(default="single", metadata=doc(
        "task ladder: single, the bare 3-logit agent (Figure 1); default, the sweep's 7-task "
        "ladder", "§1", choices=("single", "default")))
    record_every: int = field(default=1, metadata=doc("record the history every N steps"))

    def __post_init__(self) -> None:
        if self.beta is not None and not (math.isfinite(self.beta) and self.beta >= 0):
            raise ValueError(f"beta must be a finite number >= 0, got {self.beta}")
        for name in ("length", "wrong_length"):
            value = getattr(self, name)
            if value is not None and not 0 < value <= MAX_LENGTH:  # NaN fails too
                raise ValueError(f"{name} must be in (0, {MAX_LENGTH}] tokens (sim.lengths), "
                                 f"got {value}")
        if not math.isfinite(self.lr):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        object.__setattr__(self, "coupling", parse_coupling(self.coupling))
        check_seed(self.seed)
        if self.steps < 1 or self.n_agents < 1 or self.record_every < 1:
            raise ValueError("steps, n_agents and record_every must be >= 1")
        if self.n_agents > MAX_AGENTS:
            raise ValueError(f"n_agents must be <= {MAX_AGENTS}, got {self.n_agents}")
        if self.ladder not in ("single", "default"):
            raise ValueError(f"ladder must be 'single' or 'default', got {self.ladder!r}")
        self.learner()  # the objects' own validation
        PopulationConfig(self.n_queries, self.ref_update_every, self.seed, self.record_every)

    def learner(self) -> LearnerConfig:
        """The learner every agent of the run is (DESIGN §1-§2)."""
        if self.ladder == "single":
            ladder, transfer = TaskLadder.single(), None
        else:
            lad = LadderConfig()
            ladder, transfer = lad.ladder(), lad.transfer()
        spec = AgentSpec(
            ladder=ladder,
            **({"transfer": transfer} if transfer is not None else {}),
            max_attempts=self.max_attempts,
            len_correct=float(self.length),
            len_wrong=float(self.wrong_length if self.wrong_length is not None else self.length),
            coupling=self.coupling,
        )
        beta = self.beta
        if beta is None and not re.search(r"\*\s*kl\b", self.objective):
            beta = DEFAULT_BETA  # beta * L = 1 at L = 100, the Figure 1 setting
        obj = ObjectiveConfig.parse(
            self.objective,
            beta=beta,
            group_size=self.group_size,
            kl_estimator=self.kl_estimator,
            kl_placement=self.kl_placement,
            token_model=self.token_model,
        )
        opt = OptimiserConfig(self.optimiser, self.lr, second_moment=self.second_moment,
                              max_grad_norm=self.max_grad_norm)
        return LearnerConfig(spec, obj, opt, self.theta0)


def measurements(history: pd.DataFrame, kinds: tuple[str, ...]) -> dict[str, Any]:
    """Headline numbers of a run: mean |gradient| per term and component over steps > 0, and
    the KL attribution ratio's range over steps whose KL gradient is defined (right after a
    reference reset pi = pi_ref and the KL gradient is exactly 0: ratio 0/0, excluded)."""
    h = history[history["step"] > 0]
    out: dict[str, Any] = {"mean_abs_gradient": {}}
    for k in (*kinds, "total"):
        g = [column(f"g_{c}", k) for c in ("s", "1", "2")]
        ratio = column("ratio", k)
        out["mean_abs_gradient"][k] = {
            c: float(np.abs(h[name]).mean()) for c, name in zip(("s", "1", "2"), g, strict=True)
        }
        r = h[ratio].replace([np.inf, -np.inf], np.nan).dropna()
        # population-mean gradient per step: the curve Figure 1 shows
        per_step = h.groupby("step")[g].mean().to_numpy()
        pr = attribution_ratio(per_step)
        pr = pr[np.isfinite(pr)]
        out[ratio] = {
            "agent_steps_min": float(r.min()) if len(r) else None,
            "agent_steps_median": float(r.median()) if len(r) else None,
            "agent_steps_max": float(r.max()) if len(r) else None,
            "agent_steps_share_above_2": float((r > 2).mean()) if len(r) else None,
            "population_mean_min": float(pr.min()) if len(pr) else None,
            "population_mean_max": float(pr.max()) if len(pr) else None,
            "undefined_steps": int(h[ratio].isna().sum()),
        }
    return out


def run_training(cfg: TrainConfig, progress: bool = False) -> tuple[PopulationModel, pd.DataFrame]:
    """Train the population of `cfg`; returns the model and its per-step history."""
    model = PopulationModel(
        homogeneous(cfg.learner(), cfg.n_agents),
        PopulationConfig(cfg.n_queries, cfg.ref_update_every, cfg.seed, cfg.record_every),
    )
    model.run(cfg.steps, progress=progress)
    return model, model.history()


def train_and_write(
    cfg: TrainConfig, name: str, out_root: str | Path = "outputs/train", progress: bool = True
) -> tuple[Path, dict[str, Any]]:
    """Run `cfg` and write history.parquet and the run record; returns (folder, measurements)."""
    out_dir = Path(out_root) / name
    start_record(out_dir, "train", asdict(cfg), name=name)
    start = time.perf_counter()
    try:
        model, history = run_training(cfg, progress=progress)
        wall = time.perf_counter() - start
        # step 0 records the initial policy: its gradient columns are NaN by construction
        check_finite(history[history["step"] > 0], "training")
        check_finite(history[[c for c in history.columns
                              if column_stat(c) not in ("g_s", "g_1", "g_2", "mean_reward")]],
                     "training")
        write_parquet_atomic(history, out_dir / "history.parquet")
        meas = measurements(history, model.kinds)
        budget = {"unstable": model.unstable, "max_jump": float(model.max_jump.max())}
        model_vars = (model.datacollector.get_model_vars_dataframe().to_dict("list")
                      if model.datacollector is not None else None)
    except BaseException as exc:  # the record never stays at "running"
        try:
            record_outcome(out_dir, exc)
        except (OSError, ValueError) as record_exc:  # the run's own error matters more
            print(f"warning: could not record the outcome ({record_exc})", file=sys.stderr)
        raise
    finish_record(
        out_dir,
        "done",
        wall_time_s=wall,
        # the weights actually used (beta may come from the objective string)
        objective_weights=dict(cfg.learner().objective.weights),
        parameter_names=model.param_names,
        tasks=list(model.task_names),
        terms=list(model.kinds),
        measurements=meas,
        model_vars=model_vars,
        **budget,  # chaos, not a result, where unstable (max_jump > UNSTABLE_JUMP, DESIGN §2)
    )
    return out_dir, {**meas, **budget}
