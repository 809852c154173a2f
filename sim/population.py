"""A Mesa model of a population of DS learners (DESIGN.md §1-§3).

Each Mesa agent is one DS learner with its own seed, objective (terms, beta, token model,
SFT data), answer lengths L_C / L_W, transfer weights and optimiser. The model keeps their
state as structure-of-arrays and `PopulationModel.step` makes one batched Numba call
(`sim.population_kernels.population_step`) for everyone; the Mesa agents are thin views on
their rows, so `model.agents` can still be inspected, filtered and grouped the Mesa way.

What is shared by all agents of one model (it shapes the kernel's loops): the number of tasks
and the ID set, K and the final-decision rule, G, queries per step, advantage scaling, KL
estimator / placement / clamp, and the parameter layout (AgentSpec.parameter_names()).

Recording: a columnar recorder stores per recorded step and agent p, q1, q2 on every task,
the parameters, and the per-term logit gradients g_s, g_1, g_2 and attribution ratio (DESIGN
§3) -- numpy blocks, not one Python dict per agent, so recording every step stays cheap.
A Mesa DataCollector records model-level summaries (mean reward, mean total ratio) per step.
Running means of the gradients over training are always kept (the sweep's columns), and so is
each agent's largest one-step move of p, q1 or q2 on any task (`max_jump`; `unstable` when it
passes 0.5: chaos, not a result, DESIGN §2 "Update budget"; per step: the history's `jump`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import mesa
import numba
import numpy as np
import pandas as pd

from sim import population_kernels as pk
from sim.attribution import attribution_ratio
from sim.kernels import ESTIMATORS
from sim.model import AgentSpec
from sim.objectives import (
    ObjectiveConfig,
    check_sampled_attempts,
    population_token_arrays,
    token_weights,
)
from sim.optim import OptimiserConfig
from sim.rng import agent_states
from sim.stability import check_sgd_lr
from sim.terms import BY_KIND, DATA, KIND_INDEX, KINDS, N_KINDS, term_codes

COMPS = ("s", "1", "2")
PROBS = ("p", "q1", "q2")
UNSTABLE_JUMP = 0.5  # a step moving p or q by more than this is chaos (DESIGN §2)


@dataclass(frozen=True)
class LearnerConfig:
    """One DS learner: everything but its parameter values (DESIGN §1-§2)."""

    spec: AgentSpec = field(default_factory=AgentSpec)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optimiser: OptimiserConfig = field(default_factory=OptimiserConfig)
    theta0: tuple[float, float, float] = (0.0, 0.0, 0.0)  # initial w_x (u_x start at 0)

    def __post_init__(self) -> None:
        check_sampled_attempts(self.spec)  # a learner samples: 64-bit trajectory masks
        # SGD above its stability bound is chaos, not a result (sim.stability, DESIGN §2)
        check_sgd_lr(self.spec, self.objective, self.optimiser)


@dataclass(frozen=True)
class PopulationConfig:
    """Population-level training settings (DESIGN §2)."""

    n_queries: int = 4  # queries per agent and step, round-robin over the ID tasks
    ref_update_every: int | None = None  # pi_ref <- pi every so many steps (None: never)
    seed: int = 0
    record_every: int | None = 1  # None: keep only running means (sweeps)
    # Threads over agents: None = only when the population is large enough to pay for a
    # parallel region (measured: below ~64 agents its start-up costs more than the work).
    parallel: bool | None = None
    # Agent i draws from stream stream_ids[i] of the seed (None: stream i). Several sweep
    # cells trained as one population keep the streams each has alone (sim.cell_batch).
    stream_ids: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.stream_ids is not None and any(i < 0 for i in self.stream_ids):
            raise ValueError("stream_ids must be non-negative agent indices")
        if self.n_queries < 1:
            raise ValueError(f"n_queries must be >= 1, got {self.n_queries}")
        if self.ref_update_every is not None and self.ref_update_every < 1:
            raise ValueError("ref_update_every must be >= 1 (or None: never)")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.record_every is not None and self.record_every < 1:
            raise ValueError("record_every must be >= 1 (or None)")


class DSLearner(mesa.Agent):
    """A Mesa agent that views row `index` of its model's structure-of-arrays state."""

    def __init__(self, model: PopulationModel, config: LearnerConfig, index: int) -> None:
        super().__init__(model)
        self.config = config
        self.index = index

    @property
    def phi(self) -> np.ndarray:
        return self.model.phi[self.index]

    def probabilities(self) -> np.ndarray:
        """(T, 3) array of p, q1, q2 per task of the ladder."""
        return 1.0 / (1.0 + np.exp(-self.config.spec.task_logits(self.phi)))


class PopulationModel(mesa.Model):
    """Population of DS learners trained with sampled (Monte-Carlo) gradients."""

    def __init__(
        self,
        learners: Sequence[LearnerConfig],
        config: PopulationConfig | None = None,
        collect_model_vars: bool = True,
    ) -> None:
        config = config or PopulationConfig()
        super().__init__(seed=config.seed)
        if not learners:
            raise ValueError("a population needs at least one learner")
        self.config = config
        self.learners = tuple(learners)
        self._check_shared()
        first = self.learners[0]
        self.spec0 = first.spec
        self.obj0 = first.objective
        self.param_names = first.spec.parameter_names()
        self.task_names = first.spec.ladder.names
        # the union of the terms present, in the canonical order
        present = {k for lc in self.learners for k in lc.objective.kinds}
        self.kinds = tuple(k for k in KINDS if k in present)
        n = len(self.learners)
        self.n_agents = n
        self.parallel = (
            (n >= 64 and numba.get_num_threads() > 1)
            if config.parallel is None
            else config.parallel
        )
        phi = np.stack([lc.spec.initial_params(lc.theta0) for lc in self.learners])
        # explicit per-agent streams: agent i of seed s is reproducible whatever the threads
        self.state = pk.State(phi=phi, ref_phi=phi.copy(), adam_m=np.zeros_like(phi),
                              adam_v=np.zeros_like(phi), streams=_streams(config, n))
        active = np.zeros((n, N_KINDS), dtype=np.bool_)
        term_w = np.zeros((n, N_KINDS))
        tokens = np.array([token_weights(lc.spec, lc.objective) for lc in self.learners])
        data_masks = np.zeros((n, 2), dtype=np.int64)
        data_ns = np.ones((n, 2), dtype=np.int64)
        data_w = np.zeros((n, 2))
        for i, lc in enumerate(self.learners):
            for kind, w in lc.objective.weights:
                active[i, KIND_INDEX[kind]] = True
                term_w[i, KIND_INDEX[kind]] = w
            if any(BY_KIND[k].source == DATA for k in lc.objective.kinds):
                dm, dn, _, dw = lc.objective.sft_data.trajectories(lc.spec.max_attempts)
                data_masks[i, : len(dm)] = dm
                data_ns[i, : len(dn)] = dn
                data_w[i, : len(dw)] = dw / dw.sum()
        opts = [lc.optimiser for lc in self.learners]
        self.learner_arrays = pk.Learners(
            jac=np.ascontiguousarray(np.stack([lc.spec.jacobians() for lc in self.learners])),
            offsets=np.ascontiguousarray(np.stack([lc.spec.offsets() for lc in self.learners])),
            active=active,
            term_w=term_w,
            w_c=np.ascontiguousarray(tokens[:, 0]),
            w_w=np.ascontiguousarray(tokens[:, 1]),
            gamma=np.array([float(lc.spec.gamma) for lc in self.learners]),
            data_masks=data_masks,
            data_ns=data_ns,
            data_w=data_w,
            opt_kind=np.array([pk.OPT_SGD if o.name == "sgd" else pk.OPT_ADAM for o in opts],
                              dtype=np.int64),
            lr=np.array([float(o.lr) for o in opts]),
            beta1=np.array([float(o.beta1) for o in opts]),
            beta2=np.array([float(o.beta2) for o in opts]),
            eps=np.array([float(o.eps) for o in opts]),
            second_moment=np.array([pk.V_SHARED if o.second_moment == "shared"
                                    else pk.V_PER_PARAMETER for o in opts], dtype=np.int64),
            max_grad_norm=np.array([float(o.max_grad_norm) for o in opts]),
            # loss normalisers and data token weights of the token model (DESIGN §2)
            **population_token_arrays([(lc.spec, lc.objective) for lc in self.learners]),
        )
        s0, o0 = first.spec, first.objective
        self.shared = pk.Shared(
            id_tasks=first.spec.ladder.id_indices.astype(np.int64),
            max_attempts=int(s0.max_attempts),
            final_sampled=bool(s0.final_sampled),
            group_size=int(o0.group_size),
            n_queries=int(config.n_queries),
            std_scaling=bool(o0.std_scaling),
            std_ddof=int(o0.std_ddof),
            adv_eps=float(o0.adv_eps),
            estimator=ESTIMATORS[o0.kl_estimator],
            clamp=float(o0.kl_clamp),
            **term_codes(o0.kl_placement),
        )
        # the kernel keeps, per agent, running sums over training (signed and absolute) of
        # the per-term and total gradients, and the largest one-step move of p, q1 or q2 on
        # any task so far: above UNSTABLE_JUMP the run is chaos, not a result (DESIGN §2,
        # "Update budget")
        self.out = pk.Out(grads=np.zeros((n, N_KINDS, 3)), rewards=np.zeros(n),
                          jumps=np.zeros(n), grad_sum=np.zeros((n, N_KINDS + 1, 3)),
                          abs_grad_sum=np.zeros((n, N_KINDS + 1, 3)), max_jump=np.zeros(n))
        # the kernel's arguments as plain tuples (sim.population_kernels.population_step),
        # fixed: each step updates their arrays in place
        self._kernel_args = tuple(tuple(t) for t in (self.state, self.learner_arrays,
                                                      self.shared, self.out))
        self.step_count = 0
        self.ref_reset = False
        self._blocks: list[dict[str, np.ndarray]] = []
        for i, lc in enumerate(self.learners):
            DSLearner(self, lc, i)
        self.datacollector = None
        if collect_model_vars:
            self.datacollector = mesa.DataCollector(
                model_reporters={
                    "step": lambda m: m.step_count,
                    "mean_reward": lambda m: float(m.rewards.mean()),
                    "median_ratio_total": lambda m: (
                        float(np.nanmedian(attribution_ratio(m.total_grad())))
                        if m.step_count
                        else float("nan")
                    ),
                }
            )
        if config.record_every is not None:
            self._record()

    # ------------------------------------------------------------------ validation
    def _check_shared(self) -> None:
        first = self.learners[0]
        s0, o0 = first.spec, first.objective
        for lc in self.learners[1:]:
            s, o = lc.spec, lc.objective
            if s.ladder.n_tasks != s0.ladder.n_tasks or not np.array_equal(
                s.ladder.id_indices, s0.ladder.id_indices
            ):
                raise ValueError("all learners of a population need the same tasks and ID set")
            if (s.max_attempts, s.final_decision) != (s0.max_attempts, s0.final_decision):
                raise ValueError("all learners of a population need the same K and final rule")
            if s.parameter_names() != s0.parameter_names():
                raise ValueError("all learners of a population need the same parameter layout")
            shared = (
                "group_size",
                "std_scaling",
                "std_ddof",
                "adv_eps",
                "kl_estimator",
                "kl_placement",
                "kl_clamp",
            )
            if any(getattr(o, f) != getattr(o0, f) for f in shared):
                raise ValueError(f"all learners of a population need the same {shared}")

    # ------------------------------------------------------------------ the kernel's arrays
    @property
    def phi(self) -> np.ndarray:
        """(A, P) parameters (updated in place by each step)."""
        return self.state.phi

    @property
    def ref_phi(self) -> np.ndarray:
        """(A, P) reference parameters (assign in place: `model.ref_phi[:] = ...`)."""
        return self.state.ref_phi

    @property
    def grads(self) -> np.ndarray:
        """(A, N_KINDS, 3) the last step's unweighted per-term logit gradients, rows in the
        order of sim.terms.TERMS."""
        return self.out.grads

    @property
    def grad_sum(self) -> np.ndarray:
        """(A, N_KINDS + 1, 3) sums over the steps so far of the per-term gradients and (row
        N_KINDS) of their weighted total."""
        return self.out.grad_sum

    @property
    def abs_grad_sum(self) -> np.ndarray:
        """(A, N_KINDS + 1, 3) the same sums of their magnitudes."""
        return self.out.abs_grad_sum

    @property
    def max_jump(self) -> np.ndarray:
        """(A,) each agent's largest one-step move of p, q1 or q2 on any task so far."""
        return self.out.max_jump

    @property
    def rewards(self) -> np.ndarray:
        """(A,) the last step's mean reward per agent."""
        return self.out.rewards

    # ------------------------------------------------------------------ dynamics
    def total_grad(self) -> np.ndarray:
        """(A, 3) weighted total of the last step's per-term logit gradients."""
        la = self.learner_arrays
        return np.einsum("ak,akx->ax", la.term_w * la.active, self.grads)

    def step(self) -> None:
        """One batched training step of every agent (DESIGN §2), then record."""
        cfg = self.config
        self.ref_reset = bool(
            cfg.ref_update_every
            and self.step_count > 0
            and self.step_count % cfg.ref_update_every == 0
        )
        if self.ref_reset:
            self.ref_phi[:] = self.phi
        self.step_count += 1
        kernel = pk.population_step if self.parallel else pk.population_step_serial
        state, learners, shared, out = self._kernel_args
        kernel(state, learners, shared, self.step_count, out)
        if self.datacollector is not None:
            self.datacollector.collect(self)
        rec = cfg.record_every
        if rec is not None and (self.step_count % rec == 0 or self.ref_reset):
            self._record()

    def run(self, steps: int, progress: bool = False) -> None:
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        iterator = range(steps)
        if progress:
            from tqdm import tqdm

            iterator = tqdm(iterator, desc="train", unit="step")
        for _ in iterator:
            self.step()
        rec = self.config.record_every
        if rec is not None and steps and self._blocks[-1]["step"][0] != self.step_count:
            self._record()

    # ------------------------------------------------------------------ recording
    def probabilities(self) -> np.ndarray:
        """(A, T, 3): p, q1, q2 of every agent on every task."""
        out = np.empty(self.learner_arrays.offsets.shape)
        pk.population_probs(self.phi, self.learner_arrays.jac, self.learner_arrays.offsets, out)
        return out

    def _term_columns(
        self,
        grads: np.ndarray,
        total: np.ndarray,
        abs_means: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        cols: dict[str, np.ndarray] = {}
        pairs = [(k, grads[:, KIND_INDEX[k]]) for k in self.kinds]
        pairs.append(("total", total))
        for name, g in pairs:
            for x, c in enumerate(COMPS):
                cols[f"g_{c}[{name}]"] = g[:, x].copy()  # copies: grads is reused
            cols[f"ratio[{name}]"] = attribution_ratio(g)
        if abs_means is not None:  # sweep summaries: ratio of mean magnitudes instead
            a_terms, a_total = abs_means
            for name, a in [(k, a_terms[:, KIND_INDEX[k]]) for k in self.kinds] + [
                ("total", a_total)
            ]:
                for x, c in enumerate(COMPS):
                    cols[f"abs_g_{c}[{name}]"] = a[:, x]
                cols[f"ratio[{name}]"] = attribution_ratio(a)
        for c in COMPS:
            cols[f"g_{c}"] = cols[f"g_{c}[total]"]
        cols["ratio"] = cols["ratio[total]"]
        return cols

    def _record(self) -> None:
        n = self.n_agents
        block: dict[str, np.ndarray] = {
            "step": np.full(n, self.step_count, dtype=np.int64),
            "agent": np.arange(n, dtype=np.int64),
        }
        for j, name in enumerate(self.param_names):
            block[name] = self.phi[:, j].copy()
        probs = self.probabilities()
        for t, task in enumerate(self.task_names):
            for x, c in enumerate(PROBS):
                block[f"{c}[{task}]"] = probs[:, t, x]
        if self.step_count == 0:  # no gradient yet
            cols = self._term_columns(np.full_like(self.grads, np.nan), np.full((n, 3), np.nan))
        else:
            cols = self._term_columns(self.grads, self.total_grad())
        block.update(cols)
        block["mean_reward"] = self.rewards.copy() if self.step_count else np.full(n, np.nan)
        block["jump"] = self.out.jumps.copy() if self.step_count else np.zeros(n)
        block["ref_reset"] = np.full(n, self.ref_reset)
        self._blocks.append(block)

    def history(self) -> pd.DataFrame:
        """One row per (recorded step, agent), columns as sim.dynamics._record plus agent.

        Row `step = s` holds the parameters and p, q1, q2 after s updates, the gradients of
        update s (estimated at the parameters after s - 1 updates; NaN at s = 0) and
        ref_reset = True when update s used a reference just reset to the current policy.
        """
        if not self._blocks:
            return pd.DataFrame()
        keys = self._blocks[0].keys()
        return pd.DataFrame({k: np.concatenate([b[k] for b in self._blocks]) for k in keys})

    def summary(self) -> pd.DataFrame:
        """One row per agent: final p, q1, q2 per task and gradient means over training.

        g_x[term] is the mean over steps of the (signed) ID-mean logit gradient;
        abs_g_x[term] the mean of its magnitude, and ratio[term] = abs_g_s / mean(abs_g_1,
        abs_g_2) -- a ratio of mean magnitudes, stable where signed means cancel (KL at the
        reference) and where one step's decision gradient is ~0.
        """
        n, steps = self.n_agents, max(self.step_count, 1)
        out: dict[str, np.ndarray] = {"agent": np.arange(n, dtype=np.int64)}
        probs = self.probabilities()
        for t, task in enumerate(self.task_names):
            for x, c in enumerate(PROBS):
                out[f"{c}[{task}]"] = probs[:, t, x]
        mean = self.grad_sum / steps
        abs_mean = self.abs_grad_sum / steps
        out.update(
            self._term_columns(
                mean[:, : N_KINDS],
                mean[:, N_KINDS],
                (abs_mean[:, : N_KINDS], abs_mean[:, N_KINDS]),
            )
        )
        out["mean_reward_last"] = self.rewards.copy()
        out["max_jump"] = self.max_jump.copy()
        return pd.DataFrame(out)

    @property
    def unstable(self) -> bool:
        """Whether any agent's p or q moved by more than UNSTABLE_JUMP in one step."""
        return bool((self.max_jump > UNSTABLE_JUMP).any())


def _streams(config: PopulationConfig, n: int) -> np.ndarray:
    """Each agent's initial RNG state: stream i of the seed, or stream_ids[i]."""
    if config.stream_ids is None:
        return agent_states(config.seed, n)
    if len(config.stream_ids) != n:
        raise ValueError(f"stream_ids has {len(config.stream_ids)} entries for {n} agents")
    return agent_states(config.seed, max(config.stream_ids) + 1)[list(config.stream_ids)]


def homogeneous(learner: LearnerConfig, n_agents: int) -> list[LearnerConfig]:
    """`n_agents` copies of one configuration (they differ by their RNG streams)."""
    if n_agents < 1:
        raise ValueError(f"n_agents must be >= 1, got {n_agents}")
    return [learner] * n_agents
