"""Exact gradients by dynamic programming over attempts (sim.exact_dp, DESIGN §3) equal the
enumeration of every trajectory, for every term, KL estimator and placement, token model,
final-decision rule and SFT data option; and stay finite and consistent up to K = 10,000."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner

from sim import exact_dp
from sim import kernels as kn
from sim.attribution import attribution_by_length
from sim.commands import attribution
from sim.grid import TrainingConfig
from sim.model import AgentSpec
from sim.objectives import (
    KL_PLACEMENTS,
    MAX_EXACT_ATTEMPTS,
    MAX_SAMPLED_ATTEMPTS,
    OBJECTIVE_KINDS,
    TOKEN_MODELS,
    ObjectiveConfig,
    SFTData,
    exact_logit_gradients,
    mc_logit_gradients,
)
from sim.optim import OptimiserConfig
from sim.population import LearnerConfig

ALL_TERMS = tuple((k, 1.0) for k in OBJECTIVE_KINDS)
ESTIMATORS = tuple(kn.ESTIMATORS)
LENGTHS = ((100.0, 100.0), (100.0, 37.0))  # L_C = L_W, and L_C != L_W (grpo's O(K^2) path)


def _logits(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 1.5, 3), rng.normal(0.0, 1.5, 3)


def _assert_same(dp: dict, enum: dict) -> None:
    """Equal to 1e-12 relative; a value that cancels to ~0 (e.g. k1's in-loss KL, exactly 0
    in expectation) to 1e-12 absolute, in units of the call's largest gradient (>= 1)."""
    assert dp.keys() == enum.keys()
    scale = max([1.0] + [float(np.max(np.abs(g))) for g in enum.values()])
    for kind in enum:
        np.testing.assert_allclose(dp[kind], enum[kind], rtol=1e-12, atol=1e-12 * scale,
                                   err_msg=kind)


def _compare(theta, ref, spec: AgentSpec, obj: ObjectiveConfig) -> None:
    try:
        enum = exact_logit_gradients(theta, ref, spec, obj, method="enumerate")
    except NotImplementedError:  # std-scaled advantages with gamma < 1: both refuse
        with pytest.raises(NotImplementedError):
            exact_logit_gradients(theta, ref, spec, obj)
        return
    _assert_same(exact_logit_gradients(theta, ref, spec, obj), enum)


def _sft_data(k: int, mask: bool, variant: int) -> SFTData:
    if k == 1 or variant % 3 == 2:
        return SFTData("no-reflection", mask_wrong_attempts=mask)
    return SFTData("reflection", ft_share=0.3, n_reflections=1 + variant % (k - 1),
                   mask_wrong_attempts=mask)


@pytest.mark.parametrize("k", [1, 2, 5])
@pytest.mark.parametrize("final", ["forced", "sampled"])
@pytest.mark.parametrize("token_model", TOKEN_MODELS)
def test_dp_equals_enumeration_every_option(k, final, token_model):
    combos = itertools.product(ESTIMATORS, KL_PLACEMENTS, (False, True), (True, False),
                               (1.0, 0.8), LENGTHS)
    for i, (est, placement, mask, std, gamma, (l_c, l_w)) in enumerate(combos):
        theta, ref = _logits(i)
        spec = AgentSpec(max_attempts=k, final_decision=final, gamma=gamma, len_correct=l_c,
                         len_wrong=l_w)
        obj = ObjectiveConfig(weights=ALL_TERMS, kl_estimator=est, kl_placement=placement,
                              token_model=token_model, std_scaling=std, group_size=3 + i % 6,
                              sft_data=_sft_data(k, mask, i))
        _compare(theta, ref, spec, obj)


@pytest.mark.parametrize("final", ["forced", "sampled"])
@pytest.mark.parametrize("token_model", TOKEN_MODELS)
def test_dp_equals_enumeration_at_k14(final, token_model):
    """2^15 trajectories per call: two rotating option sets per token model and rule."""
    for i in range(2):
        theta, ref = _logits(100 + i)
        l_c, l_w = LENGTHS[i]
        spec = AgentSpec(max_attempts=14, final_decision=final, len_correct=l_c, len_wrong=l_w,
                         gamma=1.0 if i == 0 else 0.9)
        obj = ObjectiveConfig(weights=ALL_TERMS, kl_estimator=ESTIMATORS[i + (final == "sampled")],
                              kl_placement=KL_PLACEMENTS[i], token_model=token_model,
                              std_scaling=i == 0, sft_data=_sft_data(14, i == 1, 4 + 3 * i))
        _compare(theta, ref, spec, obj)


def test_dp_equals_enumeration_with_the_k3_clamp_active():
    """A reference far from the policy: k3 is clamped on some actions (derivative 0)."""
    theta, ref = np.array([3.0, -2.5, 2.0]), np.array([-4.0, 4.0, -3.5])
    for clamp, placement in itertools.product((10.0, 2.0, 0.0), KL_PLACEMENTS):
        spec = AgentSpec(max_attempts=6, len_correct=50.0, len_wrong=20.0)
        obj = ObjectiveConfig(weights=(("kl", 1.0),), kl_estimator="k3", kl_clamp=clamp,
                              kl_placement=placement)
        _compare(theta, ref, spec, obj)


@pytest.mark.parametrize("kind", OBJECTIVE_KINDS)
def test_attribution_cli_at_k14_equals_the_enumeration(kind):
    """`cli.py attribution -K 14` (the DP) prints the enumeration's gradients."""
    args = ["--objective", kind, "-K", "14", "--lengths", "10..1000", "--points", "3",
            "--format", "json"]
    result = CliRunner().invoke(attribution, args)
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output.splitlines()[0])
    spec = AgentSpec(max_attempts=14)
    obj = ObjectiveConfig(weights=((kind, 1.0),))
    lengths = np.array([row["L"] for row in printed])
    theta, ref = np.array([0.4, 2.2, 1.4]), np.array([0.3, 2.0, 1.2])
    enum = attribution_by_length(lengths, theta, ref, spec, obj, kind, method="enumerate")
    dp = attribution_by_length(lengths, theta, ref, spec, obj, kind)
    for col in ("g_s", "g_1", "g_2"):
        scale = np.abs(enum[["g_s", "g_1", "g_2"]].to_numpy()).max()
        np.testing.assert_allclose(dp[col], enum[col], rtol=1e-12, atol=1e-12 * scale)
        # json prints 10 significant digits
        np.testing.assert_allclose([row[col] for row in printed], enum[col], rtol=1e-9,
                                   atol=1e-9 * scale)


def test_attribution_cli_takes_k_in_the_thousands():
    result = CliRunner().invoke(attribution, ["--objective", "kl", "-K", "1000", "--lengths",
                                              "100", "--format", "json"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(attribution, ["-K", str(MAX_EXACT_ATTEMPTS + 1)])
    assert result.exit_code != 0


@pytest.mark.parametrize("k", [1000, 10_000])
@pytest.mark.parametrize("token_model", TOKEN_MODELS)
def test_large_k_is_finite_and_the_score_has_mean_zero(k, token_model):
    """Long horizons: finite gradients; E[grad log pi] = 0 (the class probabilities sum to
    1, p_reward in [0, 1]) for a policy that almost never stops and one that stops soon."""
    for theta in (np.array([-0.5, -6.0, 6.0]), np.array([0.4, 2.2, 1.4])):
        spec = AgentSpec(max_attempts=k, final_decision="sampled", len_correct=200.0,
                         len_wrong=80.0)
        obj = ObjectiveConfig(weights=ALL_TERMS, token_model=token_model, kl_estimator="k3",
                              sft_data=SFTData(n_reflections=3))
        grads = exact_logit_gradients(theta, [0.3, 2.0, 1.2], spec, obj)
        for kind, g in grads.items():
            assert np.all(np.isfinite(g)), (kind, g)
        own = exact_dp.own_moments(theta, [0.3, 2.0, 1.2], k, True, 1.0, 1.0, 1.0,
                                   kn.K1, 10.0, 1.0)
        score = own.by_weight[exact_dp.ALL, 0]
        assert np.all(np.isfinite(own.by_weight))
        np.testing.assert_allclose(score, 0.0, atol=1e-9 * (1 + np.abs(
            own.by_weight[exact_dp.SUCCEEDED_ONLY, 0]).max()))
        assert 0.0 <= own.p_reward <= 1.0


def test_truncation_is_irrelevant_once_long_trajectories_vanish():
    """A policy that stops soon: the gradients at K = 1000 and K = 10,000 agree (the extra
    trajectories have probability 0 in float64), also on grpo's O(K^2) path."""
    theta, ref = np.array([0.4, 2.2, 1.4]), np.array([0.3, 2.0, 1.2])
    for tm in ("per-token", "grpo", "dapo"):
        obj = ObjectiveConfig(weights=ALL_TERMS, token_model=tm, kl_estimator="k2")
        g = [exact_logit_gradients(theta, ref, AgentSpec(max_attempts=k, len_wrong=30.0), obj)
             for k in (1000, 10_000)]
        _assert_same(g[1], g[0])


def test_dp_agrees_with_monte_carlo_beyond_the_enumeration():
    """K = 40 (2^41 trajectories: no enumeration): the DP within 4 standard errors of MC."""
    theta, ref = np.array([-0.3, -1.0, 1.5]), np.array([0.0, -0.5, 1.0])
    spec = AgentSpec(max_attempts=40, len_correct=20.0, len_wrong=10.0)
    obj = ObjectiveConfig(weights=(("surrogate", 1.0), ("kl", 1.0), ("nsr", 1.0)),
                          token_model="grpo", std_scaling=False)
    exact = exact_logit_gradients(theta, ref, spec, obj)
    mc = mc_logit_gradients(theta, ref, spec, obj, n_groups=20_000, seed=3)
    for kind in exact:
        assert np.all(np.abs(exact[kind] - mc[kind].mean) <= 4 * mc[kind].stderr + 1e-12), kind


def test_long_sft_chains_beyond_64_bit_masks():
    """A chain of 100 wrong attempts then a correct one (no 64-bit trajectory mask holds it):
    the per-token SFT gradient is w(L) grad log pi of each action, counted by hand."""
    theta = np.array([0.4, 2.2, 1.4])
    spec = AgentSpec(max_attempts=200, len_correct=50.0, len_wrong=20.0)
    data = SFTData(ft_share=0.25, n_reflections=100)
    g = exact_logit_gradients(theta, theta, spec, ObjectiveConfig(weights=(("sft", 1.0),),
                                                                  sft_data=data))["sft"]
    p, q1, q2 = 1.0 / (1.0 + np.exp(-theta))
    chain = np.array([50.0 * (1 - p) - 100 * 20.0 * p, 1 - q1, 100 * (1 - q2)])
    verified = np.array([50.0 * (1 - p), 1 - q1, 0.0])
    np.testing.assert_allclose(g, 0.25 * chain + 0.75 * verified, rtol=1e-12)
    with pytest.raises(ValueError, match="masks"):
        data.trajectories(200)


def test_sampling_keeps_its_k_limit():
    """Exact gradients take K up to MAX_EXACT_ATTEMPTS; sampling (64-bit masks) does not."""
    spec = AgentSpec(max_attempts=MAX_SAMPLED_ATTEMPTS + 1)
    with pytest.raises(ValueError, match="sampled trajectories need K"):
        mc_logit_gradients([0.0] * 3, [0.0] * 3, spec, ObjectiveConfig(), n_groups=2)
    with pytest.raises(ValueError, match="sampled trajectories need K"):
        LearnerConfig(spec, ObjectiveConfig(), OptimiserConfig(name="adam", lr=0.02))
    with pytest.raises(ValueError, match="in a sweep"):
        TrainingConfig(max_attempts=MAX_SAMPLED_ATTEMPTS + 1)
    with pytest.raises(ValueError, match="max_attempts"):
        AgentSpec(max_attempts=MAX_EXACT_ATTEMPTS + 1)
    with pytest.raises(ValueError, match="method"):
        exact_logit_gradients([0.0] * 3, [0.0] * 3, replace(spec, max_attempts=3),
                              ObjectiveConfig(), method="guess")


def test_a_kernel_not_affine_in_the_return_is_refused(monkeypatch):
    """The DP's premise (every kernel affine in Q_t) is checked once at import, in Python,
    not inside the compiled kernels: a kernel reading Q_t squared is refused."""
    from sim.terms import KERNELS, Kernel

    squared = Kernel("q_squared", lambda w, prob, x, q, dk: q * q)
    exact_dp._check_affine_in_q()  # today's table passes
    monkeypatch.setattr(exact_dp, "KERNELS", (*KERNELS, squared))
    with pytest.raises(ValueError, match="q_squared is not affine"):
        exact_dp._check_affine_in_q()
