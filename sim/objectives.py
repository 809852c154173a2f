"""Training objectives of DESIGN.md §2 as gradients on the three logits of one task.

Sign convention: every term is something to *maximise* (gradient ascent):
  surrogate  E[A grad log pi(tau)], group-relative advantages (GRPO-like)
  kl         the token-level KL *penalty* as a return, -E[sum_t w_t k(x_t)]; its weight is beta
  sft, dft   log-likelihood of data trajectories (token-weighted; DFT probability-weighted)
  nsr, psr   policy gradient on the agent's failed samples (reward -1) / its successful ones
             (reward +1): answer-level scores, no length factor
A combination is a weighted sum with non-negative weights, e.g. GRPO = surrogate + beta * kl.

Each term is one entry of `sim.terms.TERMS` (its kernel, trajectories, reward filter, sign,
advantage); two estimators read that table and share the kernels' step values
(`sim.kernels`, `sim.terms.add_step`):
  exact  expectations by dynamic programming over attempts (sim.exact_dp), or by enumerating
         every trajectory (2^(K+1), sim.exact_dp_enumeration: the reference it is tested on)
  mc     Monte-Carlo average over sampled groups, with a standard error
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from sim import exact_dp
from sim import kernels as kn
from sim.exact_dp import MAX_EXACT_ATTEMPTS as MAX_EXACT_ATTEMPTS
from sim.exact_dp_enumeration import MAX_ENUMERATED_ATTEMPTS as MAX_ENUMERATED_ATTEMPTS
from sim.exact_dp_enumeration import all_trajectories as all_trajectories
from sim.exact_dp_enumeration import enumerated_moments
from sim.model import AgentSpec
from sim.rng import agent_states
from sim.terms import ANY, BY_KIND, DATA, FAILED, KINDS, SUCCEEDED, keeps

OBJECTIVE_KINDS = KINDS  # the order of sim.terms.TERMS
# Token models (DESIGN §2; docs/token_models.md): the weight w(L) of a sampling action and the
# loss normaliser a trajectory's weighted sum is divided by. per-token: w = L, none (the
# paper's model); sequence: w = 1, none; the rest are the normalisations of real trainers,
# all with w = L: grpo (TRL loss_type "grpo": each trajectory by its own |o|), dapo and bnpo
# (the batch's token sum by its total tokens), dr_grpo (by the constant K (L_max + 1)),
# sft-token-mean (SFT's token mean over the batch: dapo's formula on the data batch).
TOKEN_MODELS = ("per-token", "sequence", "grpo", "dapo", "bnpo", "dr_grpo", "sft-token-mean")
UNNORMALISED_TOKEN_MODELS = ("per-token", "sequence")
BATCH_NORMALISED_TOKEN_MODELS = ("dapo", "bnpo", "sft-token-mean")
KL_PLACEMENTS = ("in-reward", "in-loss")
SFT_KINDS = ("reflection", "no-reflection")


@dataclass(frozen=True)
class SFTData:
    """SFT data set of DESIGN §2.

    no-reflection: one correct attempt, STOP.
    reflection: a share `ft_share` of F->T chains (`n_reflections` wrong attempts, each
    followed by RESAMPLE, then a correct attempt and STOP) and 1 - ft_share verified-correct
    STOPs (one correct attempt, STOP).
    mask_wrong_attempts: no loss on the wrong attempts' answers (their tokens weigh 0 and
    leave |o|; the RESAMPLE decisions after them keep theirs). Unmasked, those answers are
    trained at weight w(L_W) and pin p near 1/(1 + f) (f = F->T share of the data).
    """

    kind: str = "reflection"
    ft_share: float = 0.5
    n_reflections: int = 1
    mask_wrong_attempts: bool = False

    def __post_init__(self) -> None:
        if self.kind not in SFT_KINDS:
            raise ValueError(f"SFT data kind must be one of {SFT_KINDS}, got {self.kind!r}")
        if not 0 <= self.ft_share <= 1:
            raise ValueError(f"ft_share must be in [0, 1], got {self.ft_share}")
        if self.n_reflections < 1:
            raise ValueError(f"n_reflections must be >= 1, got {self.n_reflections}")
        if self.mask_wrong_attempts not in (True, False):
            raise ValueError(f"mask_wrong_attempts must be a bool, got "
                             f"{self.mask_wrong_attempts!r}")

    def chains(self, max_attempts: int) -> tuple[np.ndarray, np.ndarray]:
        """(attempts, weights): each data trajectory is W^(attempts - 1) C, then STOP."""
        if self.kind == "no-reflection":
            return np.array([1], np.int64), np.array([1.0])
        m = self.n_reflections
        if m + 1 > max_attempts:
            raise ValueError(f"n_reflections={m} needs max_attempts >= {m + 1}")
        return np.array([m + 1, 1], np.int64), np.array([self.ft_share, 1.0 - self.ft_share])

    def trajectories(self, max_attempts: int) -> tuple[np.ndarray, ...]:
        """(masks, ns, truncs, weights) of the data distribution (sim.kernels' encoding)."""
        ns, weights = self.chains(max_attempts)
        if ns.max() > kn.MAX_ATTEMPTS:
            raise ValueError(f"a data chain of {ns.max()} attempts exceeds the trajectory "
                             f"masks of sim.kernels (K <= {kn.MAX_ATTEMPTS})")
        return np.left_shift(1, ns - 1), ns, np.zeros_like(ns), weights


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
    token_model: str = "per-token"  # one of TOKEN_MODELS: w(L) and the loss normaliser
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



# ---------------------------------------------------------------------------- exact

# exact gradients: "dp", the dynamic programme over attempts (sim.exact_dp, K up to
# MAX_EXACT_ATTEMPTS), or "enumerate", every trajectory (sim.exact_dp_enumeration, K <= 16)
EXACT_METHODS = ("dp", "enumerate")
MAX_SAMPLED_ATTEMPTS = kn.MAX_ATTEMPTS  # sampled trajectories are 64-bit masks (sim.kernels)


def token_weights(spec: AgentSpec, obj: ObjectiveConfig) -> tuple[float, float]:
    """w(L_C), w(L_W): 1 for the sequence model, L for every other (DESIGN §2)."""
    if obj.token_model == "sequence":
        return 1.0, 1.0
    return float(spec.len_correct), float(spec.len_wrong)


def data_token_weights(spec: AgentSpec, obj: ObjectiveConfig) -> tuple[float, float]:
    """w(L_C), w(L_W) on the SFT data: w(L_W) = 0 where its wrong attempts are masked
    (SFTData.mask_wrong_attempts, DESIGN §2)."""
    w_c, w_w = token_weights(spec, obj)
    return w_c, 0.0 if obj.sft_data.mask_wrong_attempts else w_w


def token_normaliser(spec: AgentSpec, obj: ObjectiveConfig) -> float:
    """What each trajectory's weighted sum is divided by (DESIGN §2 "Loss normalisation in
    real trainers"; docs/token_models.md): 1 (per-token, sequence), kn.NORM_TRAJECTORY (grpo:
    its own |o|), kn.NORM_BATCH (dapo, bnpo, sft-token-mean: the batch's mean |o|, resolved
    by each estimator on its batch) or the constant K (L_max + 1) of dr_grpo: TRL's
    max_completion_length taken as K attempts of at most L_max = max(L_C, L_W) tokens, each
    with its decision token."""
    tm = obj.token_model
    if tm in UNNORMALISED_TOKEN_MODELS:
        return 1.0
    if tm == "grpo":
        return kn.NORM_TRAJECTORY
    if tm in BATCH_NORMALISED_TOKEN_MODELS:
        return kn.NORM_BATCH
    return float(spec.max_attempts * (max(spec.len_correct, spec.len_wrong) + 1.0))


def check_sampled_attempts(spec: AgentSpec) -> None:
    """Sampled trajectories are 64-bit masks (sim.kernels): K <= MAX_SAMPLED_ATTEMPTS, while
    exact gradients (sim.exact_dp) take K up to MAX_EXACT_ATTEMPTS."""
    if spec.max_attempts > MAX_SAMPLED_ATTEMPTS:
        raise ValueError(f"sampled trajectories need K <= {MAX_SAMPLED_ATTEMPTS}, got "
                         f"{spec.max_attempts} (exact gradients take K <= {MAX_EXACT_ATTEMPTS})")


def _tokens(masks, ns, truncs, spec: AgentSpec, weights) -> np.ndarray:
    """|o| of each trajectory under token weights (w(L_C), w(L_W))."""
    return kn.batch_tokens(masks, ns, truncs, spec.max_attempts, spec.final_sampled, *weights)


def population_token_arrays(pairs) -> dict[str, np.ndarray]:
    """The per-agent loss normalisers and data token weights of the population kernel
    (`sim.population_kernels.Learners` fields norm_own, norm_data, data_w_w) from one
    (AgentSpec, ObjectiveConfig) pair per agent. On own samples NORM_BATCH stays (the kernel
    resolves it on each step's batch); on the SFT data, whose expectation the kernel takes
    exactly, it is resolved here to E_data |o| (DESIGN §2)."""
    norm_own, norm_data, data_w_w = [], [], []
    for spec, obj in pairs:
        norm = token_normaliser(spec, obj)
        dweights = data_token_weights(spec, obj)
        norm_own.append(norm)
        data_w_w.append(dweights[1])
        if norm == kn.NORM_BATCH:
            dm, dn, dt, dw = obj.sft_data.trajectories(spec.max_attempts)
            norm = float(dw @ _tokens(dm, dn, dt, spec, dweights) / dw.sum())
        norm_data.append(norm)
    return {"norm_own": np.array(norm_own), "norm_data": np.array(norm_data),
            "data_w_w": np.array(data_w_w)}


def _terms(masks, ns, truncs, logits, ref_logits, spec: AgentSpec, obj: ObjectiveConfig,
           weights, norm: float):
    """The kernels of a batch under token weights (w(L_C), w(L_W)) and a resolved loss
    normaliser (a constant, or kn.NORM_TRAJECTORY)."""
    return kn.batch_terms(masks, ns, truncs, spec.max_attempts, spec.final_sampled,
                          np.asarray(logits, float), np.asarray(ref_logits, float), *weights,
                          kn.ESTIMATORS[obj.kl_estimator], obj.kl_clamp, spec.gamma, norm)


def group_mean_advantages(p_success: float, obj: ObjectiveConfig) -> tuple[float, float]:
    """(a(0), a(1)): the expected group advantage of a failure and of a success.

    a(r) averages the advantage of a trajectory with reward r over the other G-1 rewards,
    which are Binomial(G-1, P(R=1)); for binary rewards E[A_i f_i] = a(1) E[1{R=1} f] +
    a(0) E[1{R=0} f] for any per-trajectory f (DESIGN §2).
    """
    g = obj.group_size
    m = np.arange(g)
    pmf = exact_dp.binomial_pmf(g - 1, p_success)

    def adv(r: int) -> float:
        s = r + m
        mean = s / g
        if not obj.std_scaling:
            return float(pmf @ (r - mean))
        var = (s * (1 - mean) ** 2 + (g - s) * mean**2) / (g - obj.std_ddof)
        return float(pmf @ ((r - mean) / (np.sqrt(var) + obj.adv_eps)))

    return adv(0), adv(1)


def group_advantage_factor(p_success: float, obj: ObjectiveConfig) -> float:
    """a(1) - a(0): for binary rewards and a zero-mean f (the score), E[A_i f_i] =
    E[f 1{R=1}] (a(1) - a(0)). Without std scaling this is 1 - 1/G."""
    a0, a1 = group_mean_advantages(p_success, obj)
    return a1 - a0


def _data_terms(logits, ref_logits, spec: AgentSpec, obj: ObjectiveConfig, method: str):
    """(kernels, weights, rewards) of the SFT data set under its token weights and loss
    normaliser (a batch normaliser: the data's mean |o|, DESIGN §2)."""
    dweights, dnorm = data_token_weights(spec, obj), token_normaliser(spec, obj)
    if method == "dp":
        attempts, dw = obj.sft_data.chains(spec.max_attempts)
        kern, rewards = exact_dp.chain_terms(attempts, dw, spec.max_attempts, spec.final_sampled,
                                             logits, ref_logits, *dweights,
                                             kn.ESTIMATORS[obj.kl_estimator], obj.kl_clamp,
                                             spec.gamma, dnorm)
        return kern, dw, rewards
    dm, dn, dt, dw = obj.sft_data.trajectories(spec.max_attempts)
    if dnorm == kn.NORM_BATCH:
        dnorm = float(dw @ _tokens(dm, dn, dt, spec, dweights) / dw.sum())
    kern, rewards, _ = _terms(dm, dn, dt, logits, ref_logits, spec, obj, dweights, dnorm)
    return kern, dw, rewards


def _advantage_gradient(own: exact_dp.OwnMoments, col: int, norm: float,
                        obj: ObjectiveConfig) -> np.ndarray:
    """E[A grad log pi] (the surrogate's kernel column `col`) for binary R; for gamma < 1
    without std scaling the same identity gives (1 - 1/G) grad E[R] (DESIGN §2)."""
    if obj.std_scaling and not own.binary_rewards:
        raise NotImplementedError("exact std-scaled advantages need binary rewards "
                                  "(gamma = 1); use the Monte-Carlo estimator")
    e_success = own.by_weight[exact_dp.REWARD_WEIGHTED, col]
    p_success = own.p_reward
    if norm == kn.NORM_TRAJECTORY:  # score / |o|: no longer zero-mean
        e_all = own.by_weight[exact_dp.ALL, col]
        if obj.std_scaling:
            a0, a1 = group_mean_advantages(p_success, obj)
            return a1 * e_success + a0 * (e_all - e_success)
        # E[(R_i - mean R) f_i] = (1 - 1/G) (E[R f] - E[R] E[f])
        return (1.0 - 1.0 / obj.group_size) * (e_success - p_success * e_all)
    factor = (group_advantage_factor(p_success, obj) if obj.std_scaling
              else 1.0 - 1.0 / obj.group_size)
    return factor * e_success


# the row of OwnMoments.by_weight that a reward filter reads (sim.terms)
_FILTER_ROWS = {ANY: exact_dp.ALL, FAILED: exact_dp.FAILED_ONLY,
                SUCCEEDED: exact_dp.SUCCEEDED_ONLY}


def exact_logit_gradients(logits, ref_logits, spec: AgentSpec, obj: ObjectiveConfig,
                          method: str = "dp") -> dict[str, np.ndarray]:
    """Exact expected gradient of each term (unweighted) on (theta_s, theta_1, theta_2).

    Each term is read from `sim.terms.TERMS`: its kernel's expectation over the agent's
    trajectories (or over the data set's), under its reward filter and sign. `method` "dp"
    takes the expectations by dynamic programming over attempts (sim.exact_dp: O(K), O(K^2)
    for grpo with L_C != L_W; K <= MAX_EXACT_ATTEMPTS), "enumerate" by enumerating all
    2^(K+1) trajectories (K <= MAX_ENUMERATED_ATTEMPTS); they agree to rounding (DESIGN §3).
    A batch loss normaliser (dapo, bnpo, sft-token-mean: the batch's token sum over its total
    tokens) is taken in its large-batch limit, the ratio of expectations E[sum_t w_t g_t] /
    E|o| (DESIGN §2; docs/token_models.md).
    """
    if method not in EXACT_METHODS:
        raise ValueError(f"method must be one of {EXACT_METHODS}, got {method!r}")
    logits, ref_logits = np.asarray(logits, float), np.asarray(ref_logits, float)
    norm = token_normaliser(spec, obj)
    moments = exact_dp.own_moments if method == "dp" else enumerated_moments
    own = moments(logits, ref_logits, spec.max_attempts, spec.final_sampled, spec.gamma,
                  *token_weights(spec, obj), kn.ESTIMATORS[obj.kl_estimator], obj.kl_clamp,
                  norm)
    data = None  # the SFT data set's kernels, weights and rewards, computed once
    out: dict[str, np.ndarray] = {}
    for kind in obj.kinds:
        term = BY_KIND[kind]
        col = term.column(obj.kl_placement)
        if term.source == DATA:
            if data is None:
                data = _data_terms(logits, ref_logits, spec, obj, method)
            kern, weights, r = data
            if term.reward_filter != ANY:
                weights = weights * keeps(term.reward_filter, r)
            grad = weights @ kern[:, col]
        elif term.advantage:  # own trajectories, unfiltered, the score (sim.terms.Term)
            grad = _advantage_gradient(own, col, norm, obj)
        else:
            grad = own.by_weight[_FILTER_ROWS[term.reward_filter], col]
        out[kind] = -grad if term.sign < 0 else grad
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
    A batch loss normaliser (dapo, bnpo, sft-token-mean) is the sample's mean |o| (own
    samples and data draws each their own batch); its standard error is the delta method's
    for that ratio estimator (DESIGN §2).
    """
    if n_groups < 2:
        raise ValueError("n_groups must be >= 2 for a standard error")
    check_sampled_attempts(spec)
    logits = np.asarray(logits, float)
    behaviour = logits if old_logits is None else np.asarray(old_logits, float)
    g = obj.group_size
    states = agent_states(seed, 1)
    masks, ns, truncs = kn.sample_population(states, behaviour[None, :], spec.max_attempts,
                                             spec.final_sampled, n_groups * g)
    masks, ns, truncs = masks[0], ns[0].astype(np.int64), truncs[0].astype(np.int64)
    weights, norm = token_weights(spec, obj), token_normaliser(spec, obj)
    tokens = _tokens(masks, ns, truncs, spec, weights)
    batch = norm == kn.NORM_BATCH
    if batch:
        norm = float(tokens.mean())
    terms, rewards, _ = _terms(masks, ns, truncs, logits, ref_logits, spec, obj, weights, norm)
    data = None  # kernels, rewards, tokens, normaliser of n_groups * G draws of the SFT data
    per_group: dict[str, np.ndarray] = {}  # (n_groups, 3): each group's own estimate
    for kind in obj.kinds:
        term = BY_KIND[kind]
        col = term.column(obj.kl_placement)
        if term.source == DATA:
            if data is None:
                dm, dn, dt, dw = obj.sft_data.trajectories(spec.max_attempts)
                rng = np.random.default_rng(seed)
                idx = rng.choice(len(dw), size=n_groups * g, p=dw / dw.sum())
                dweights, dnorm = data_token_weights(spec, obj), token_normaliser(spec, obj)
                dtokens = _tokens(dm[idx], dn[idx], dt[idx], spec, dweights)
                if batch:
                    dnorm = float(dtokens.mean())
                dterms, drewards, _ = _terms(dm[idx], dn[idx], dt[idx], logits, ref_logits, spec,
                                             obj, dweights, dnorm)
                data = dterms, drewards, dtokens, dnorm
            kern, r, tok, tnorm = data
        else:
            kern, r, tok, tnorm = terms, rewards, tokens, norm
        if term.advantage:  # own trajectories, unfiltered, the score (sim.terms.Term)
            rg = rewards.reshape(n_groups, g)
            adv = rg - rg.mean(axis=1, keepdims=True)
            if obj.std_scaling:
                adv = adv / (rg.std(axis=1, ddof=obj.std_ddof, keepdims=True) + obj.adv_eps)
            if obj.clip_epsilon is not None and old_logits is not None:
                contrib = kn.batch_clipped_scores(masks, ns, truncs, spec.max_attempts,
                                                  spec.final_sampled, logits, behaviour,
                                                  adv.ravel(), obj.clip_epsilon)
                if tnorm != 1.0:  # the kernels' loss normaliser, applied here by hand
                    contrib = contrib / (tok[:, None] if tnorm == kn.NORM_TRAJECTORY else tnorm)
            else:
                contrib = kern[:, col] * adv.reshape(-1, 1)
        else:
            contrib = kern[:, col]
        if term.sign < 0:
            contrib = -contrib
        if term.reward_filter != ANY:
            contrib = contrib * keeps(term.reward_filter, r)[:, None]
        per_group[kind] = contrib.reshape(n_groups, g, 3).mean(axis=1)
        if batch:  # delta method of the ratio estimator: each group's linearised estimate
            est = per_group[kind].mean(axis=0)
            share = tok.reshape(n_groups, g).mean(axis=1, keepdims=True) / tnorm
            per_group[kind] = per_group[kind] + est * (1.0 - share)
    return {k: MCEstimate(v.mean(axis=0), v.std(axis=0, ddof=1) / math.sqrt(n_groups))
            for k, v in per_group.items()}


def combine(gradients: dict[str, np.ndarray], obj: ObjectiveConfig) -> np.ndarray:
    """Weighted sum of the terms: the gradient of the whole objective."""
    return sum(w * np.asarray(gradients[k]) for k, w in obj.weights)
