"""The table of objective terms (sim.terms, DESIGN.md §2): its invariants, its kernels against
their step coefficients, its token-weighting claims, and exact vs Monte-Carlo gradients for
every entry. The population kernel against the exact gradients, for every entry, is in
tests/test_population.py."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from numba import njit

from sim import kernels as kn
from sim import terms as tm
from sim.model import AgentSpec
from sim.objectives import (
    KL_PLACEMENTS,
    OBJECTIVE_KINDS,
    TOKEN_MODELS,
    ObjectiveConfig,
    SFTData,
    all_trajectories,
    exact_logit_gradients,
    mc_logit_gradients,
)

THETA = np.array([0.4, 2.2, 1.4])
REF = np.array([0.3, 2.0, 1.2])
SPEC = AgentSpec(max_attempts=6, len_correct=30.0, len_wrong=5.0)

# every entry, KL under both placements (k3 in loss: k1's pathwise term is too simple)
CASES = [(t, "in-reward") for t in tm.TERMS] + [
    (t, "in-loss") for t in tm.TERMS if t.kernel_in_loss is not None
]
IDS = [f"{t.kind}-{p}" for t, p in CASES]
# SFT data sets: the data-sourced terms are checked on each (DESIGN §2)
SFT_DATA = [SFTData(), SFTData("reflection", 0.7, 2, mask_wrong_attempts=True),
            SFTData("no-reflection")]


def _objective(term: tm.Term, placement: str, **kw) -> ObjectiveConfig:
    return ObjectiveConfig(weights=((term.kind, 1.0),), kl_placement=placement,
                           kl_estimator="k3" if placement == "in-loss" else "k1", **kw)


def test_table_is_the_objective_list_and_indices_are_positions():
    assert OBJECTIVE_KINDS == tm.KINDS and len(set(tm.KINDS)) == tm.N_KINDS
    for i, term in enumerate(tm.TERMS):
        assert term.index == i and tm.BY_KIND[term.kind] is term
        for placement in KL_PLACEMENTS:
            assert 0 <= term.column(placement) < tm.N_COLUMNS
    assert [k.column for k in tm.KERNELS] == list(range(tm.N_COLUMNS))
    codes = tm.term_codes("in-loss")
    assert codes["term_column"][tm.KIND_INDEX["kl"]] == tm.KL_IN_LOSS.column
    assert all(len(a) == tm.N_KINDS for a in codes.values())


@pytest.mark.parametrize("bad", [
    dict(source=tm.DATA), dict(reward_filter=tm.FAILED), dict(kernel=tm.LIKELIHOOD),
])
def test_advantage_terms_must_take_the_unfiltered_score_of_own_samples(bad):
    fields = dict(kind="x", source=tm.OWN, reward_filter=tm.ANY, sign=1.0, advantage=True,
                  token_weighted=False, kernel=tm.SCORE)
    tm.Term(**fields)
    with pytest.raises(ValueError, match="advantage"):
        tm.Term(**{**fields, **bad})


def test_kernel_columns_are_their_step_coefficients():
    """trajectory_terms' column c = sum_t KERNELS[c](w, pi, x, Q, k') grad log pi(a_t)."""
    k_max, w_c, w_w = SPEC.max_attempts, 30.0, 5.0
    for final, norm in ((False, 1.0), (True, 1.0), (False, 17.0), (True, kn.NORM_TRAJECTORY)):
        masks, ns, truncs = all_trajectories(k_max, final)
        cols, _, _ = kn.batch_terms(masks, ns, truncs, k_max, final, THETA, REF, w_c, w_w,
                                    kn.K3, 0.0, 0.9, norm)
        bufs, ibufs = kn.scratch(k_max)
        param, attempt = ibufs
        glogp, prob, xdev, weight, r, q, dk = bufs
        for i in range(len(masks)):
            nsteps = kn.walk_steps(masks[i], ns[i], truncs[i], k_max, final, THETA, REF, w_c,
                                   w_w, param, glogp, prob, xdev, weight, attempt)
            kn.steps_penalties_and_q(nsteps, xdev, weight, attempt, kn.K3, 0.0, 0.9, r, q, dk)
            expect = np.zeros((tm.N_COLUMNS, 3))
            for c, kernel in enumerate(tm.KERNELS):
                for t in range(nsteps):
                    coef = kernel.coefficient.py_func(weight[t], prob[t], xdev[t], q[t], dk[t])
                    expect[c, param[t]] += coef * glogp[t]
            # the loss normaliser: a constant, or |o| = sum_t w_t (TRL's "grpo")
            tokens = weight[:nsteps].sum()
            assert kn.trajectory_tokens(masks[i], ns[i], truncs[i], k_max, final, w_c,
                                        w_w) == pytest.approx(tokens, rel=1e-15)
            expect /= tokens if norm == kn.NORM_TRAJECTORY else norm
            np.testing.assert_allclose(cols[i], expect, rtol=1e-13, atol=1e-15)


def test_add_step_adds_each_kernels_step_value_to_its_column_from_c():
    """sim.terms.add_step (generated from KERNELS): out[c + i, j] += KERNELS[i](...) * g."""
    out = np.full((tm.N_COLUMNS + 2, 3), 0.5)
    args = (2.0, 0.3, -0.7, 1.1, 0.4)  # w, prob, x, q, dk
    assert tm.add_step(out, 1, 2, 3.0, *args) == 1 + tm.N_COLUMNS
    expect = np.full_like(out, 0.5)
    for i, kernel in enumerate(tm.KERNELS):
        expect[1 + i, 2] += kernel.coefficient.py_func(*args) * 3.0
    np.testing.assert_array_equal(out, expect)


def test_trajectory_terms_refuses_an_output_of_another_width():
    bufs, ibufs = kn.scratch(4)
    with pytest.raises(ValueError, match="one row per kernel"):
        kn.trajectory_terms(1, 1, 0, 4, False, THETA, REF, 1.0, 1.0, kn.K1, 0.0, 1.0, 1.0,
                            np.zeros((tm.N_COLUMNS + 1, 3)), bufs, ibufs)
    with pytest.raises(ValueError, match="NORM_BATCH"):
        kn.trajectory_terms(1, 1, 0, 4, False, THETA, REF, 1.0, 1.0, kn.K1, 0.0, 1.0,
                            kn.NORM_BATCH, np.zeros((tm.N_COLUMNS, 3)), bufs, ibufs)


@pytest.mark.parametrize(("term", "placement"), CASES, ids=IDS)
def test_token_weighted_says_whether_the_gradient_depends_on_answer_length(term, placement):
    """DESIGN §2: w(L) = L (per-token model) reaches exactly the token-weighted terms; under
    the sequence model w(L) = 1 and no term depends on L."""
    obj = _objective(term, placement)
    short, long_ = replace(SPEC, len_correct=3.0, len_wrong=2.0), SPEC
    g_short = exact_logit_gradients(THETA, REF, short, obj)[term.kind]
    g_long = exact_logit_gradients(THETA, REF, long_, obj)[term.kind]
    assert (not np.array_equal(g_short, g_long)) == term.token_weighted
    seq = replace(obj, token_model="sequence")
    np.testing.assert_array_equal(exact_logit_gradients(THETA, REF, short, seq)[term.kind],
                                  exact_logit_gradients(THETA, REF, long_, seq)[term.kind])


def _data_cases():
    """(term, placement, SFT data): every data set for the data-sourced terms."""
    return [(t, p, d) for t, p in CASES for d in (SFT_DATA if t.source == tm.DATA
                                                   else SFT_DATA[:1])]


@pytest.mark.parametrize("std_scaling", [True, False])
@pytest.mark.parametrize(("term", "placement", "data"), _data_cases(),
                         ids=[f"{t.kind}-{p}-{d.kind}{'-masked' * d.mask_wrong_attempts}"
                              for t, p, d in _data_cases()])
def test_exact_and_monte_carlo_agree_for_every_term(term, placement, data, std_scaling):
    obj = _objective(term, placement, std_scaling=std_scaling, sft_data=data)
    exact = exact_logit_gradients(THETA, REF, SPEC, obj)[term.kind]
    mc = mc_logit_gradients(THETA, REF, SPEC, obj, n_groups=3000, seed=5)[term.kind]
    assert np.any(exact != 0)
    # 5 standard errors, plus a floor for terms that are exactly deterministic (SFT data)
    assert np.all(np.abs(mc.mean - exact) <= 5 * mc.stderr + 1e-9), (exact, mc)


@pytest.mark.parametrize("token_model", TOKEN_MODELS)
@pytest.mark.parametrize(("term", "placement"), CASES, ids=IDS)
def test_exact_and_monte_carlo_agree_under_every_token_model(term, placement, token_model):
    """DESIGN §2 "Loss normalisation in real trainers": each trajectory's sum divided by its
    |o|, by the batch's mean |o| (exact: E|o|, the large-batch limit) or by a constant."""
    data = SFTData("reflection", 0.5, 1, mask_wrong_attempts=token_model == "grpo")
    obj = _objective(term, placement, token_model=token_model, sft_data=data)
    exact = exact_logit_gradients(THETA, REF, SPEC, obj)[term.kind]
    mc = mc_logit_gradients(THETA, REF, SPEC, obj, n_groups=3000, seed=7)[term.kind]
    assert np.any(exact != 0)
    # the batch normaliser's ratio estimator has an O(1/N) bias, far below 5 stderr here
    assert np.all(np.abs(mc.mean - exact) <= 5 * mc.stderr + 1e-9 * np.abs(exact).max()), \
        (exact, mc)


def test_nsr_and_psr_are_answer_level_policy_gradients_of_the_accuracy():
    """DESIGN §2: policy gradient on negative-only (reward -1) / positive-only (+1) samples,
    log pi(tau) with no length factor. For binary rewards both equal grad E[R] and their
    difference is the score's mean, 0; neither depends on L."""
    obj = ObjectiveConfig(weights=(("nsr", 1.0), ("psr", 1.0), ("surrogate", 1.0)),
                          std_scaling=False)
    g = exact_logit_gradients(THETA, REF, SPEC, obj)
    np.testing.assert_allclose(g["psr"], g["nsr"], rtol=1e-12, atol=1e-15)
    # the surrogate without std scaling is (1 - 1/G) grad E[R]
    np.testing.assert_allclose(g["psr"] * (1 - 1 / obj.group_size), g["surrogate"],
                               rtol=1e-12, atol=1e-15)
    g_long = exact_logit_gradients(THETA, REF, replace(SPEC, len_correct=900.0), obj)
    for kind in ("nsr", "psr"):
        np.testing.assert_array_equal(g[kind], g_long[kind])


def test_caches_compiled_against_other_sources_are_dropped():
    @njit
    def f():
        return 1

    f()
    before = list(f.overloads.values())[0]
    namespace = {"__name__": __name__, "f": f}
    tm.drop_stale_caches(namespace, lambda: "today", "today")
    assert list(f.overloads.values())[0] is before
    tm.drop_stale_caches(namespace, lambda: "yesterday", "today")
    assert list(f.overloads.values())[0] is not before and f() == 1
