"""The report's built-in simulations (DESIGN §1-§4), each driven by one frozen parameter
object; the report's captions are written from the same objects, so they state what ran.

* `BuiltinSweep`: the attribution landscape when no sweep is found: one deterministic agent per
  (objective, token model, L), exact expected gradients (sim.dynamics.train_expected).
* the Figure 1 run when no `train` output is found: `sim.training_run.TrainConfig()` (the one
  definition of the paper's Figure 1 setting), trained on exact expected gradients instead of
  Monte-Carlo groups (`figure1_history`).
* `CalibrationSample`: trajectories sampled from the fitted simulator and calibrated with the
  estimators used for a real model (sim.simulate, core.calibration).
* `EchoSFT`: p(F→T) after SFT on reflection data with each F→T share (DESIGN §2).

`FULL` is what `cli.py report` runs; `QUICK` (`--quick`, for tests) overrides the fields
named there and nothing else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from core.regimes import BY_NAME, PAPER_RL_KL
from sim.attribution import (  # DESIGN §3 worked example
    APPENDIX_C_REF,
    APPENDIX_C_THETA,
    attribution_ratio,
)
from sim.columns import column
from sim.dynamics import expected_gradients, train_expected
from sim.grid import regime_label
from sim.model import AgentSpec, TaskLadder
from sim.objectives import ObjectiveConfig, SFTData, combine
from sim.optim import OptimiserConfig
from sim.training_run import TrainConfig


@dataclass(frozen=True)
class BuiltinSweep:
    """A one-agent-per-cell sweep in the results.parquet layout (single task, AgentSpec's
    default K): the attribution ratio at `theta` against `theta_ref` (the Appendix C point,
    DESIGN §3) and p, q1, q2 after `steps` steps of `optimiser`. A combined objective
    ("surrogate+kl") weighs its KL with `beta` (the paper's, core.regimes)."""

    lengths: tuple[float, ...] = (1, 3, 10, 30, 100, 300, 1000)
    objectives: tuple[str, ...] = ("surrogate", "kl", "surrogate+kl")
    token_models: tuple[str, ...] = ("per-token", "sequence")
    steps: int = 30
    optimiser: OptimiserConfig = field(default_factory=lambda: OptimiserConfig(lr=0.05))
    beta: float = PAPER_RL_KL.beta
    theta: tuple[float, float, float] = APPENDIX_C_THETA
    theta_ref: tuple[float, float, float] = APPENDIX_C_REF

    def objective(self, name: str, token_model: str) -> ObjectiveConfig:
        return ObjectiveConfig.parse(name, beta=self.beta if "+" in name else None,
                                     token_model=token_model)

    def spec(self, length: float) -> AgentSpec:
        return AgentSpec(len_correct=float(length), len_wrong=float(length))

    def ratio(self, spec: AgentSpec, obj: ObjectiveConfig) -> float:
        """The attribution ratio of the total expected gradient at theta against theta_ref
        (the gradient of the first update; row 0 of a history has none)."""
        on_logits, _ = expected_gradients(spec, obj, spec.initial_params(self.theta),
                                          spec.initial_params(self.theta_ref))
        return float(attribution_ratio(combine(on_logits, obj)))


@dataclass(frozen=True)
class CalibrationSample:
    """Trajectories sampled per (regime, task) from the fitted simulator, calibrated with
    `n_boot` bootstrap resamples (DESIGN §4)."""

    n: int = 100
    n_boot: int = 100
    seed: int = 0


@dataclass(frozen=True)
class EchoSFT:
    """Token-weighted SFT of one ID task (L_C = L_W = `length`) from the fitted base, on
    reflection data with each F→T share in `shares` (`reflection` gives the other SFTData
    fields) and on no-reflection data (DESIGN §2)."""

    length: float = 100.0
    steps: int = 40
    optimiser: OptimiserConfig = field(default_factory=lambda: OptimiserConfig(lr=0.002))
    shares: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    reflection: SFTData = field(default_factory=SFTData)


@dataclass(frozen=True)
class BuiltinRuns:
    """Every built-in simulation of the report."""

    sweep: BuiltinSweep = field(default_factory=BuiltinSweep)
    figure1: TrainConfig = field(default_factory=TrainConfig)  # the paper's Figure 1
    calibration: CalibrationSample = field(default_factory=CalibrationSample)
    echo: EchoSFT = field(default_factory=EchoSFT)


FULL = BuiltinRuns()
# --quick: fewer steps and resamples for tests; the Figure 1 run is cheap (exact gradients,
# one task) and stays the Figure 1 setting
QUICK = replace(FULL, sweep=replace(FULL.sweep, steps=5),
                calibration=replace(FULL.calibration, n_boot=20),
                echo=replace(FULL.echo, steps=10))


def builtin_sweep(cfg: BuiltinSweep) -> pd.DataFrame:
    """The results.parquet layout of a sweep (one agent per cell), see BuiltinSweep."""
    rows = []
    p, q1, q2 = (column(s, "T1") for s in ("p", "q1", "q2"))
    for tm in cfg.token_models:
        for objective in cfg.objectives:
            obj = cfg.objective(objective, tm)
            for length in cfg.lengths:
                spec = cfg.spec(length)
                with np.errstate(over="ignore", invalid="ignore"):
                    _, hist = train_expected(spec, obj, spec.initial_params(cfg.theta),
                                             cfg.steps, cfg.optimiser,
                                             phi_ref=spec.initial_params(cfg.theta_ref),
                                             record_every=cfg.steps)
                last = hist.iloc[-1]
                rows.append({"cell_id": f"{objective}/{tm}/{length:g}", "objective": objective,
                             "regime": regime_label(objective), "token_model": tm,
                             "length": float(length),
                             "agent": 0, "seed": 0, "steps": cfg.steps,
                             "ratio": cfg.ratio(spec, obj), p: last[p], q1: last[q1],
                             q2: last[q2]})
    return pd.DataFrame(rows)


def figure1_history(cfg: TrainConfig) -> pd.DataFrame:
    """The `train` job's configuration (its learner: agent, objective, optimiser, start;
    steps, reference resets, recording) followed on exact expected gradients: the history
    layout of outputs/train/<name>/history.parquet for one agent, without sampling noise
    (the Monte-Carlo settings n_agents, n_queries and seed play no part)."""
    learner = cfg.learner()
    spec = learner.spec
    _, hist = train_expected(spec, learner.objective, spec.initial_params(learner.theta0),
                             cfg.steps, learner.optimiser, ref_update_every=cfg.ref_update_every,
                             record_every=cfg.record_every)
    return hist


def simulated_calibration(curves: pd.DataFrame, max_attempts: int,
                          cfg: CalibrationSample) -> pd.DataFrame:
    """Calibrate (DESIGN §4) on `cfg.n` sampled trajectories per (regime, task) of the fitted
    simulator: the same estimators and CIs as for a real model (sim.simulate's sampler and
    counts, core.calibration.calibrate)."""
    from core.calibration import calibrate
    from sim.simulate import sample_trajectories, trajectory_counts

    rows = []
    for i, r in enumerate(curves.itertuples()):
        sampled = sample_trajectories(r.p, r.q1, r.q2, max_attempts, cfg.n, cfg.seed + i)
        est = calibrate(trajectory_counts(*sampled, max_attempts), max_attempts=max_attempts,
                        n_boot=cfg.n_boot, seed=cfg.seed)
        row = {"regime": r.regime, "task": r.task, "task_index": r.task_index,
               "in_distribution": r.in_distribution, "n": cfg.n,
               "source": "simulator (fitted), sampled"}
        for key, e in est.items():
            row.update({key: e.estimate, f"{key}_ci_low": e.ci_low, f"{key}_ci_high": e.ci_high})
        rows.append(row)
    return pd.DataFrame(rows)


def simulated_echo(cfg: EchoSFT, p: float, q1: float, q2: float) -> pd.DataFrame:
    """p(F→T) after SFT on reflection data with each F→T share, and after SFT without
    reflection (plotted at 0%), from a base with first-attempt accuracy p and decisions q1,
    q2. In the two-stage model attempts are independent, so p(F→T) = P(next candidate
    correct | wrong, RESAMPLE) = p of the task (DESIGN §1-§2)."""
    b = tuple(math.log(x / (1 - x)) for x in (p, q1, q2))
    spec = AgentSpec(ladder=TaskLadder(("T1",), (1.0,), (True,), (b,)), len_correct=cfg.length,
                     len_wrong=cfg.length)
    refl, plain = BY_NAME["sft-reflection"], BY_NAME["sft-no-reflection"]  # core.regimes
    cases = [(refl.paper_row, s, replace(cfg.reflection, kind=refl.sft_data, ft_share=s))
             for s in cfg.shares]
    cases.append((plain.paper_row, 0.0, SFTData(plain.sft_data)))
    rows = []
    for regime, share, data in cases:
        obj = ObjectiveConfig(weights=(("sft", 1.0),), sft_data=data)
        _, hist = train_expected(spec, obj, spec.initial_params(), cfg.steps, cfg.optimiser,
                                 record_every=cfg.steps)
        last = hist.iloc[-1]
        rows.append({"regime": regime, "ft_ratio_pct": 100 * share,
                     "p_ft": float(last[column("p", "T1")]),
                     "q2": float(last[column("q2", "T1")])})
    return pd.DataFrame(rows)
