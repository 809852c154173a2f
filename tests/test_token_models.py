"""Token models of real trainers' losses, the KL clamp, answer-level NSR/PSR and the
wrong-attempt mask of SFT data (DESIGN.md §2; docs/token_models.md). Exact vs Monte-Carlo
agreement under every token model is in tests/test_terms.py, the population's in
tests/test_population.py."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from cli import main
from sim import kernels as kn
from sim.attribution import attribution_by_length, length_decomposition
from sim.model import AgentSpec
from sim.objectives import (
    TOKEN_MODELS,
    ObjectiveConfig,
    SFTData,
    all_trajectories,
    exact_logit_gradients,
    token_normaliser,
)
from tests.conftest import assert_clean_cli_error

THETA = np.array([0.4, 2.2, 1.4])
REF = np.array([0.3, 2.0, 1.2])
SPEC = AgentSpec(max_attempts=6, len_correct=30.0, len_wrong=5.0)
ALL = ObjectiveConfig(weights=tuple((k, 1.0) for k in ("surrogate", "kl", "sft", "dft", "nsr",
                                                       "psr")))


def _run(*args: str):
    return CliRunner().invoke(main, list(args))


def _expected_tokens(spec: AgentSpec, theta) -> float:
    m, n, t = all_trajectories(spec.max_attempts, spec.final_sampled)
    probs = np.exp(kn.batch_log_probs(m, n, t, spec.max_attempts, spec.final_sampled, theta))
    return float(probs @ kn.batch_tokens(m, n, t, spec.max_attempts, spec.final_sampled,
                                         spec.len_correct, spec.len_wrong))


# ------------------------------------------------------------------------------ KL clamp

def test_kl_clamp_applies_to_k3_only():
    """DESIGN §2 and verl: low_var_kl (k3) is clamped to [-10, 10]; k1 and k2 are not."""
    for x in (-30.0, -12.0, 12.0, 30.0):
        assert kn.kl_estimate(x, kn.K1, 10.0) == (x, 1.0)
        assert kn.kl_estimate(x, kn.K2, 10.0) == (0.5 * x * x, x)
    k, dk = kn.kl_estimate(-20.0, kn.K3, 10.0)  # e^20 - 21: far above 10
    assert (k, dk) == (10.0, 0.0)
    k, dk = kn.kl_estimate(-20.0, kn.K3, 0.0)  # clamp off
    assert k == pytest.approx(np.exp(20.0) - 21.0) and dk == pytest.approx(1 - np.exp(20.0))
    k, dk = kn.kl_estimate(0.5, kn.K3, 10.0)  # inside the clamp: untouched
    assert k == pytest.approx(np.exp(-0.5) - 0.5) and dk == pytest.approx(1 - np.exp(-0.5))


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_far_from_the_reference_only_k3_gradients_feel_the_clamp(estimator):
    far_ref = np.array([-12.0, 9.0, -11.0])  # |x| > 10 on most actions
    obj = ObjectiveConfig(weights=(("kl", 1.0),), kl_estimator=estimator)
    for placement in ("in-reward", "in-loss"):
        o = replace(obj, kl_placement=placement)
        clamped = exact_logit_gradients(THETA, far_ref, SPEC, o)["kl"]
        free = exact_logit_gradients(THETA, far_ref, SPEC, replace(o, kl_clamp=0.0))["kl"]
        assert np.array_equal(clamped, free) == (estimator != "k3"), placement


# ------------------------------------------------------------------------------ NSR / PSR

@pytest.mark.parametrize("kind", ["nsr", "psr"])
def test_nsr_psr_ratio_is_flat_in_length_at_the_cli(kind):
    res = _run("attribution", "--objective", kind, "--lengths", "10..1000", "--points", "7",
               "--format", "csv")
    assert res.exit_code == 0, res.output
    ratio = pd.read_csv(io.StringIO(res.output))["ratio"]
    assert ratio.max() / ratio.min() <= 1.01


# ------------------------------------------------------------------------------ token models

def test_token_normalisers():
    obj = ObjectiveConfig()
    assert token_normaliser(SPEC, obj) == 1.0
    assert token_normaliser(SPEC, replace(obj, token_model="sequence")) == 1.0
    assert token_normaliser(SPEC, replace(obj, token_model="grpo")) == kn.NORM_TRAJECTORY
    for tm in ("dapo", "bnpo", "sft-token-mean"):
        assert token_normaliser(SPEC, replace(obj, token_model=tm)) == kn.NORM_BATCH
    # dr_grpo: max completion length = K attempts of L_max tokens, one decision token each
    assert token_normaliser(SPEC, replace(obj, token_model="dr_grpo")) == 6 * 31.0


def test_constant_normalisers_divide_the_per_token_gradients():
    """dapo/bnpo (exact: E|o| over own samples, E_data|o| over the data), dr_grpo (K(L+1)),
    sft-token-mean: the per-token gradients over one constant, so the ratios do not move."""
    per_token = exact_logit_gradients(THETA, REF, SPEC, ALL)
    e_own = _expected_tokens(SPEC, THETA)
    f = ALL.sft_data.ft_share  # data: (W, RESAMPLE, C, STOP) and (C, STOP)
    e_data = f * (5.0 + 1 + 30.0 + 1) + (1 - f) * (30.0 + 1)
    for tm in ("dapo", "bnpo", "sft-token-mean", "dr_grpo"):
        g = exact_logit_gradients(THETA, REF, SPEC, replace(ALL, token_model=tm))
        for kind, value in g.items():
            own = 6 * 31.0 if tm == "dr_grpo" else e_own
            data = 6 * 31.0 if tm == "dr_grpo" else e_data
            norm = data if kind in ("sft", "dft") else own
            np.testing.assert_allclose(value, per_token[kind] / norm, rtol=1e-12, atol=1e-16)


def test_grpo_divides_each_trajectory_by_its_own_length():
    """One trajectory W -> RESAMPLE -> C -> STOP under grpo: |o| = L_W + L_C + 2, so the SFT
    weights are L/|o| per answer and 1/|o| per decision (docs/token_models.md)."""
    data = SFTData("reflection", ft_share=1.0)
    sft = ObjectiveConfig(weights=(("sft", 1.0),), sft_data=data)
    g_pt = exact_logit_gradients(THETA, REF, SPEC, sft)["sft"]
    g_grpo = exact_logit_gradients(THETA, REF, SPEC, replace(sft, token_model="grpo"))["sft"]
    np.testing.assert_allclose(g_grpo, g_pt / (5.0 + 30.0 + 2), rtol=1e-13)


def test_length_decomposition_refuses_normalised_token_models():
    for tm in TOKEN_MODELS:
        obj = ObjectiveConfig(weights=(("kl", 1.0),), token_model=tm)
        if tm in ("per-token", "sequence"):
            length_decomposition(THETA, REF, SPEC, obj, "kl")
        else:
            with pytest.raises(ValueError, match="affine"):
                length_decomposition(THETA, REF, SPEC, obj, "kl")


def test_cli_token_models_are_the_objectives_tuple():
    for tm in TOKEN_MODELS:
        res = _run("attribution", "--objective", "kl", "--token-model", tm, "--lengths", "10..100",
                   "--points", "2")
        assert res.exit_code == 0, (tm, res.output)
    bad = _run("attribution", "--token-model", "grpo", "--explain", "--lengths", "10")
    assert_clean_cli_error(bad)
    assert "affine" in bad.output


# ------------------------------------------------------------------------------ the SFT mask

@pytest.mark.parametrize("f", [0.3, 0.5, 1.0])
def test_unmasked_reflection_sft_pins_p_at_one_over_one_plus_f(f):
    """Trained at weight L, the F->T chains' wrong answers push p down: the SFT sampling
    gradient L (1 - p (1 + f)) vanishes at p = 1 / (1 + f). Masked, it is L (1 - p) > 0."""
    spec = AgentSpec(max_attempts=4, len_correct=50.0, len_wrong=50.0)
    theta = np.array([np.log(1 / f), 1.0, 1.0])  # p = 1 / (1 + f)
    data = SFTData("reflection", ft_share=f)
    obj = ObjectiveConfig(weights=(("sft", 1.0),), sft_data=data)
    assert exact_logit_gradients(theta, REF, spec, obj)["sft"][0] == pytest.approx(0, abs=1e-12)
    masked = replace(obj, sft_data=replace(data, mask_wrong_attempts=True))
    g = exact_logit_gradients(theta, REF, spec, masked)["sft"]
    p = 1 / (1 + f)
    assert g[0] == pytest.approx(50.0 * (1 - p))
    # the decisions are still trained: the RESAMPLE after the wrong attempts included
    np.testing.assert_array_equal(g[1:], exact_logit_gradients(theta, REF, spec, obj)["sft"][1:])


def test_mask_wrong_attempts_at_the_cli_and_in_sft_data():
    args = ("attribution", "--objective", "sft", "--lengths", "100", "--format", "csv")
    plain = pd.read_csv(io.StringIO(_run(*args).output))
    masked = pd.read_csv(io.StringIO(_run(*args, "--mask-wrong-attempts").output))
    assert masked["g_s"].iloc[0] > plain["g_s"].iloc[0]
    assert masked["g_2"].iloc[0] == plain["g_2"].iloc[0]
    with pytest.raises(ValueError, match="mask_wrong_attempts"):
        SFTData(mask_wrong_attempts="yes")


def test_attribution_by_length_under_every_token_model_is_finite():
    lengths = np.array([10, 100, 1000])
    for tm in TOKEN_MODELS:
        for kind in ("surrogate", "kl", "sft"):
            df = attribution_by_length(lengths, THETA, REF, SPEC,
                                       ObjectiveConfig(weights=((kind, 1.0),), token_model=tm),
                                       kind)
            assert np.all(np.isfinite(df[["g_s", "g_1", "g_2", "ratio"]]))
