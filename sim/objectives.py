"""Training objectives of DESIGN.md §2 as gradients on the three logits of one task.

Sign convention: every term is something to *maximise* (gradient ascent):
  surrogate  E[A grad log pi(tau)], group-relative advantages (GRPO-like)
  kl         the token-level KL *penalty* as a return, -E[sum_t w_t k(x_t)]; its weight is beta
  sft, dft   log-likelihood of data trajectories (token-weighted; DFT probability-weighted)
  nsr, psr   -likelihood of the agent's own failed / +likelihood of its own successful samples
A combination is a weighted sum with non-negative weights, e.g. GRPO = surrogate + beta * kl.

Each term is one entry of `sim.terms.TERMS` (its kernel, trajectories, reward filter, sign,
advantage); two estimators read that table and share the per-trajectory kernels
(`sim.kernels.trajectory_terms`):
  exact  enumeration of every trajectory (2^(K+1) of them) weighted by its probability
  mc     Monte-Carlo average over sampled groups, with a standard error
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy.stats import binom

from sim import kernels as kn
from sim.model import AgentSpec
from sim.rng import agent_states
from sim.terms import ANY, BY_KIND, DATA, KINDS, keeps

OBJECTIVE_KINDS = KINDS  # the order of sim.terms.TERMS
TOKEN_MODELS = ("per-token", "sequence")
KL_PLACEMENTS = ("in-reward", "in-loss")
SFT_KINDS = ("reflection", "no-reflection")


@dataclass(frozen=True)
class SFTData:
    """SFT data set of DESIGN §2.

    no-reflection: one correct attempt, STOP.
    reflection: a share `ft_share` of F->T chains (`n_reflections` wrong attempts, each
    followed by RESAMPLE, then a correct attempt and STOP) and 1 - ft_share verified-correct
    STOPs (one correct attempt, STOP).
    """

    kind: str = "reflection"
    ft_share: float = 0.5
    n_reflections: int = 1

    def __post_init__(self) -> None:
        if self.kind not in SFT_KINDS:
            raise ValueError(f"SFT data kind must be one of {SFT_KINDS}, got {self.kind!r}")
        if not 0 <= self.ft_share <= 1:
            raise ValueError(f"ft_share must be in [0, 1], got {self.ft_share}")
        if self.n_reflections < 1:
            raise ValueError(f"n_reflections must be >= 1, got {self.n_reflections}")

    def trajectories(self, max_attempts: int) -> tuple[np.ndarray, ...]:
        """(masks, ns, truncs, weights) of the data distribution."""
        if self.kind == "no-reflection":
            return (np.array([1], np.int64), np.array([1], np.int64), np.array([0], np.int64),
                    np.array([1.0]))
        m = self.n_reflections
        if m + 1 > max_attempts:
            raise ValueError(f"n_reflections={m} needs max_attempts >= {m + 1}")
        return (np.array([1 << m, 1], np.int64), np.array([m + 1, 1], np.int64),
                np.array([0, 0], np.int64), np.array([self.ft_share, 1.0 - self.ft_share]))


@dataclass(frozen=True)
class ObjectiveConfig:
    """Which terms, with which weights, and how each is computed (DESIGN §2)."""

    weights: tuple[tuple[str, float], ...] = (("surrogate", 1.0),)
    group_size: int = 8  # G
    std_scaling: bool = True  # False: Dr.GRPO-style advantages R - mean(R)
    std_ddof: int = 1  # torch's unbiased std, as TRL computes it
    adv_eps: float = 1e-4
    clip_epsilon: float | None = None  # PPO ratio clipping (MC with a behaviour policy only)
    kl_estimator: str = "k1"
    kl_placement: str = "in-reward"
    kl_clamp: float = 10.0  # verl clamps low_var_kl to [-10, 10]; 0 = off
    token_model: str = "per-token"  # w(L) = L, or "sequence": w(L) = 1
    sft_data: SFTData = field(default_factory=SFTData)

    def __post_init__(self) -> None:
        if not self.weights:
            raise ValueError("an objective needs at least one term")
        seen = set()
        for kind, w in self.weights:
            if kind not in OBJECTIVE_KINDS:
                raise ValueError(f"unknown objective {kind!r}; choose from "
                                 f"{', '.join(OBJECTIVE_KINDS)}")
            if kind in seen:
                raise ValueError(f"objective term {kind!r} given twice")
            seen.add(kind)
            if not (w >= 0 and math.isfinite(w)):
                what = "beta" if kind == "kl" else "weight"
                raise ValueError(f"{what} of {kind!r} must be a finite number >= 0, got {w}")
        if self.group_size < 2:
            raise ValueError(f"group_size must be >= 2, got {self.group_size}")
        if self.kl_estimator not in kn.ESTIMATORS:
            raise ValueError(f"kl_estimator must be one of {sorted(kn.ESTIMATORS)}")
        if self.kl_placement not in KL_PLACEMENTS:
            raise ValueError(f"kl_placement must be one of {KL_PLACEMENTS}")
        if self.token_model not in TOKEN_MODELS:
            raise ValueError(f"token_model must be one of {TOKEN_MODELS}")
        if self.clip_epsilon is not None and not self.clip_epsilon > 0:
            raise ValueError("clip_epsilon must be > 0 (or None for no clipping)")
        if self.kl_clamp < 0 or self.adv_eps < 0 or self.std_ddof not in (0, 1):
            raise ValueError("kl_clamp and adv_eps must be >= 0, std_ddof 0 or 1")

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.weights)

    @classmethod
    def parse(cls, spec: str, beta: float | None = None, **kwargs) -> ObjectiveConfig:
        """Parse "surrogate+kl", "surrogate+0.001*kl", "sft".

        `beta` is the weight of a `kl` term written without a coefficient; a coefficient
        written in `spec` and a different `beta` contradict each other: an error.
        """
        terms = []
        # split on "+" that starts a term, not on the exponent sign of 1e+3
        for part in re.split(r"(?<![0-9][eE])\+", spec.replace(" ", "")):
            m = re.fullmatch(r"(?:([0-9.]+(?:[eE][+-]?[0-9]+)?)\*)?([a-z]+)", part)
            if not m:
                raise ValueError(f"malformed objective term {part!r} in {spec!r} "
                                 "(expected e.g. 'surrogate+0.001*kl')")
            weight = float(m.group(1)) if m.group(1) else 1.0
            if m.group(2) == "kl" and beta is not None:
                if m.group(1) and weight != beta:
                    raise ValueError(f"the KL weight is given twice ({weight:g} in {spec!r} "
                                     f"and beta = {beta:g}): give it once")
                weight = beta
            terms.append((m.group(2), weight))
        return cls(weights=tuple(terms), **kwargs)



# ---------------------------------------------------------------------------- enumeration


MAX_EXACT_ATTEMPTS = 16  # 2^17 trajectories: beyond, enumeration costs seconds and gigabytes


@lru_cache(maxsize=64)
def all_trajectories(max_attempts: int, final_sampled: bool) -> tuple[np.ndarray, ...]:
    """Every trajectory (masks, ns, truncs) for K = max_attempts (DESIGN §3, exact)."""
    if max_attempts > MAX_EXACT_ATTEMPTS:
        raise ValueError(f"exact gradients enumerate 2^(K+1) trajectories: K must be <= "
                         f"{MAX_EXACT_ATTEMPTS}, got {max_attempts} (Monte Carlo has no limit)")
    masks, ns, truncs = [], [], []
    for n in range(1, max_attempts + 1):
        for mask in range(1 << n):
            masks.append(mask)
            ns.append(n)
            truncs.append(0)
            if n == max_attempts and final_sampled:
                masks.append(mask)
                ns.append(n)
                truncs.append(1)
    out = tuple(np.array(a, dtype=np.int64) for a in (masks, ns, truncs))
    for a in out:
        a.setflags(write=False)
    return out


def token_weights(spec: AgentSpec, obj: ObjectiveConfig) -> tuple[float, float]:
    """w(L_C), w(L_W): L for the per-token model, 1 for the sequence model (DESIGN §2)."""
    if obj.token_model == "per-token":
        return float(spec.len_correct), float(spec.len_wrong)
    return 1.0, 1.0


def _terms(masks, ns, truncs, logits, ref_logits, spec: AgentSpec, obj: ObjectiveConfig):
    w_c, w_w = token_weights(spec, obj)
    return kn.batch_terms(masks, ns, truncs, spec.max_attempts, spec.final_sampled,
                          np.asarray(logits, float), np.asarray(ref_logits, float), w_c, w_w,
                          kn.ESTIMATORS[obj.kl_estimator], obj.kl_clamp, spec.gamma)


def group_advantage_factor(p_success: float, obj: ObjectiveConfig) -> float:
    """a(1) - a(0): the expected group advantage of a success minus that of a failure.

    For binary rewards E[A_i grad log pi_i] = E[grad log pi 1{R=1}] (a(1) - a(0)), where
    a(r) averages the advantage of a trajectory with reward r over the other G-1 rewards,
    which are Binomial(G-1, P(R=1)). Without std scaling this is 1 - 1/G.
    """
    g = obj.group_size
    m = np.arange(g)
    pmf = binom.pmf(m, g - 1, p_success)

    def adv(r: int) -> float:
        s = r + m
        mean = s / g
        if not obj.std_scaling:
            return float(pmf @ (r - mean))
        var = (s * (1 - mean) ** 2 + (g - s) * mean**2) / (g - obj.std_ddof)
        return float(pmf @ ((r - mean) / (np.sqrt(var) + obj.adv_eps)))

    return adv(1) - adv(0)


def exact_logit_gradients(logits, ref_logits, spec: AgentSpec,
                          obj: ObjectiveConfig) -> dict[str, np.ndarray]:
    """Exact expected gradient of each term (unweighted) on (theta_s, theta_1, theta_2).

    Each term is read from `sim.terms.TERMS`: its kernel weighted by the probability of every
    trajectory of the agent (or by the data set's weights), times its reward filter and sign.
    """
    masks, ns, truncs = all_trajectories(spec.max_attempts, spec.final_sampled)
    logits = np.asarray(logits, float)
    probs = np.exp(kn.batch_log_probs(masks, ns, truncs, spec.max_attempts, spec.final_sampled,
                                      logits))
    terms, rewards, _ = _terms(masks, ns, truncs, logits, ref_logits, spec, obj)
    data = None  # the SFT data set's kernels, weights and rewards, computed once
    out: dict[str, np.ndarray] = {}
    for kind in obj.kinds:
        term = BY_KIND[kind]
        col = term.column(obj.kl_placement)
        if term.source == DATA:
            if data is None:
                dm, dn, dt, dw = obj.sft_data.trajectories(spec.max_attempts)
                dterms, drewards, _ = _terms(dm, dn, dt, logits, ref_logits, spec, obj)
                data = dterms, dw, drewards
            kern, weights, r = data
        else:
            kern, weights, r = terms, probs, rewards
        if term.advantage:  # own trajectories, unfiltered, the score (sim.terms.Term)
            if obj.std_scaling and not np.all((rewards == 0) | (rewards == 1)):
                raise NotImplementedError("exact std-scaled advantages need binary rewards "
                                          "(gamma = 1); use the Monte-Carlo estimator")
            # E[A grad log pi] for binary R; for gamma < 1 without std scaling the same
            # identity gives (1 - 1/G) grad E[R].
            e_success = (probs * rewards) @ kern[:, col]
            factor = (group_advantage_factor(float(probs @ rewards), obj) if obj.std_scaling
                      else 1.0 - 1.0 / obj.group_size)
            grad = factor * e_success
            out[kind] = -grad if term.sign < 0 else grad
            continue
        if term.reward_filter != ANY:
            weights = weights * keeps(term.reward_filter, r)
        if term.sign < 0:
            weights = -weights
        out[kind] = weights @ kern[:, col]
    return out


@dataclass(frozen=True)
class MCEstimate:
    mean: np.ndarray
    stderr: np.ndarray


def mc_logit_gradients(logits, ref_logits, spec: AgentSpec, obj: ObjectiveConfig, n_groups: int,
                       seed: int = 0, old_logits=None) -> dict[str, MCEstimate]:
    """Monte-Carlo estimate of each term from `n_groups` groups of G sampled trajectories.

    `old_logits` is the behaviour policy that sampled them (default: the current one); with
    `clip_epsilon` set the surrogate is PPO-clipped per action, ratio pi / pi_old.
    """
    if n_groups < 2:
        raise ValueError("n_groups must be >= 2 for a standard error")
    logits = np.asarray(logits, float)
    behaviour = logits if old_logits is None else np.asarray(old_logits, float)
    g = obj.group_size
    states = agent_states(seed, 1)
    masks, ns, truncs = kn.sample_population(states, behaviour[None, :], spec.max_attempts,
                                             spec.final_sampled, n_groups * g)
    masks, ns, truncs = masks[0], ns[0].astype(np.int64), truncs[0].astype(np.int64)
    terms, rewards, _ = _terms(masks, ns, truncs, logits, ref_logits, spec, obj)
    data = None  # kernels and rewards of n_groups * G draws from the SFT data set
    per_group: dict[str, np.ndarray] = {}  # (n_groups, 3): each group's own estimate
    for kind in obj.kinds:
        term = BY_KIND[kind]
        col = term.column(obj.kl_placement)
        if term.source == DATA:
            if data is None:
                dm, dn, dt, dw = obj.sft_data.trajectories(spec.max_attempts)
                rng = np.random.default_rng(seed)
                idx = rng.choice(len(dw), size=n_groups * g, p=dw / dw.sum())
                dterms, drewards, _ = _terms(dm[idx], dn[idx], dt[idx], logits, ref_logits, spec,
                                             obj)
                data = dterms, drewards
            kern, r = data
        else:
            kern, r = terms, rewards
        if term.advantage:  # own trajectories, unfiltered, the score (sim.terms.Term)
            rg = rewards.reshape(n_groups, g)
            adv = rg - rg.mean(axis=1, keepdims=True)
            if obj.std_scaling:
                adv = adv / (rg.std(axis=1, ddof=obj.std_ddof, keepdims=True) + obj.adv_eps)
            if obj.clip_epsilon is not None and old_logits is not None:
                contrib = kn.batch_clipped_scores(masks, ns, truncs, spec.max_attempts,
                                                  spec.final_sampled, logits, behaviour,
                                                  adv.ravel(), obj.clip_epsilon)
            else:
                contrib = kern[:, col] * adv.reshape(-1, 1)
        else:
            contrib = kern[:, col]
        if term.sign < 0:
            contrib = -contrib
        if term.reward_filter != ANY:
            contrib = contrib * keeps(term.reward_filter, r)[:, None]
        per_group[kind] = contrib.reshape(n_groups, g, 3).mean(axis=1)
    return {k: MCEstimate(v.mean(axis=0), v.std(axis=0, ddof=1) / math.sqrt(n_groups))
            for k, v in per_group.items()}


def combine(gradients: dict[str, np.ndarray], obj: ObjectiveConfig) -> np.ndarray:
    """Weighted sum of the terms: the gradient of the whole objective."""
    return sum(w * np.asarray(gradients[k]) for k, w in obj.weights)
