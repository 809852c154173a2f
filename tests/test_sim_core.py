"""The simulator core against the paper, closed forms, and Monte Carlo (DESIGN §1-§4)."""

from __future__ import annotations

import math
from dataclasses import replace

import numba
import numpy as np
import pandas as pd
import pytest

from core.twostage import accuracy_forced_stop
from sim import kernels as kn
from sim.attribution import appendix_c, attribution_by_length, attribution_ratio
from sim.model import AgentSpec, TaskLadder, TransferConfig
from sim.objectives import (
    OBJECTIVE_KINDS,
    ObjectiveConfig,
    SFTData,
    all_trajectories,
    exact_logit_gradients,
    mc_logit_gradients,
)
from sim.reference import numpy_sample_slots, numpy_sample_trajectories
from sim.rng import agent_states, threshold53
from sim.simulate import sample_trajectories

THETA = np.array([0.4, 2.2, 1.4])
REF = np.array([0.3, 2.0, 1.2])
SPEC = AgentSpec(max_attempts=8, len_correct=10.0, len_wrong=10.0)


def test_appendix_c_steps_and_net_match_paper(reference):
    steps, net = appendix_c()
    paper = pd.read_csv(reference / "appendix_c.csv")
    assert list(steps["action"]) == list(paper["action"])
    assert list(steps["param"]) == list(paper["param"])
    for col in ("immediate_penalty", "q_value", "kl_contribution"):
        np.testing.assert_allclose(steps[col], paper[col], atol=0.002, err_msg=col)
    paper_net = pd.read_csv(reference / "appendix_c_net.csv")
    assert list(net["param"]) == list(paper_net["param"])
    for col in ("reward_push", "kl_drag", "net"):
        np.testing.assert_allclose(net[col], paper_net[col], atol=0.002, err_msg=col)


def test_trajectory_probabilities_sum_to_one():
    for final in ("forced", "sampled"):
        spec = replace(SPEC, final_decision=final)
        m, n, t = all_trajectories(spec.max_attempts, spec.final_sampled)
        lp = kn.batch_log_probs(m, n, t, spec.max_attempts, spec.final_sampled, THETA)
        assert math.isclose(np.exp(lp).sum(), 1.0, rel_tol=1e-12)


ALL_TERMS = ObjectiveConfig(weights=tuple((k, 1.0) for k in OBJECTIVE_KINDS))


@pytest.mark.parametrize("cfg", [
    ALL_TERMS,
    replace(ALL_TERMS, std_scaling=False, kl_placement="in-loss", kl_estimator="k3",
            token_model="sequence"),
    replace(ALL_TERMS, kl_estimator="k2", sft_data=SFTData("no-reflection")),
])
@pytest.mark.parametrize("lengths", [(10.0, 10.0), (30.0, 5.0)])
def test_exact_and_monte_carlo_gradients_agree(cfg, lengths):
    spec = replace(SPEC, len_correct=lengths[0], len_wrong=lengths[1])
    exact = exact_logit_gradients(THETA, REF, spec, cfg)
    mc = mc_logit_gradients(THETA, REF, spec, cfg, n_groups=4000, seed=11)
    for kind in cfg.kinds:
        err = np.abs(mc[kind].mean - exact[kind])
        # 5 standard errors, plus a floor for terms that are exactly deterministic
        assert np.all(err <= 5 * mc[kind].stderr + 1e-9), (kind, exact[kind], mc[kind])


def test_exact_surrogate_is_scaled_gradient_of_forced_stop_accuracy():
    """Without std scaling E[A grad log pi] = (1 - 1/G) grad Acc_K (DESIGN §2, §4)."""
    obj = ObjectiveConfig(std_scaling=False)
    g = exact_logit_gradients(THETA, REF, SPEC, obj)["surrogate"]
    eps = 1e-6
    fd = np.zeros(3)
    for i in range(3):
        hi, lo = THETA.copy(), THETA.copy()
        hi[i] += eps
        lo[i] -= eps
        acc = [accuracy_forced_stop(*(1 / (1 + np.exp(-x))), SPEC.max_attempts) for x in (hi, lo)]
        fd[i] = (acc[0] - acc[1]) / (2 * eps)
    np.testing.assert_allclose(g, (1 - 1 / obj.group_size) * fd, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_kl_score_plus_pathwise_terms_is_full_gradient_of_expected_penalty(estimator):
    """In-reward (score-function) + in-loss (pathwise) = grad of -E[sum_t w_t k(x_t)]."""
    obj = ObjectiveConfig(weights=(("kl", 1.0),), kl_estimator=estimator, kl_clamp=0.0)
    score = exact_logit_gradients(THETA, REF, SPEC, obj)["kl"]
    path = exact_logit_gradients(THETA, REF, SPEC, replace(obj, kl_placement="in-loss"))["kl"]
    m, n, t = all_trajectories(SPEC.max_attempts, False)

    def expected_penalty(theta):
        p = np.exp(kn.batch_log_probs(m, n, t, SPEC.max_attempts, False, theta))
        _, _, pen = kn.batch_terms(m, n, t, SPEC.max_attempts, False, theta, REF, 10.0, 10.0,
                                   kn.ESTIMATORS[estimator], 0.0, 1.0)
        return -(p @ pen)

    eps = 1e-6
    fd = np.array([(expected_penalty(THETA + eps * e) - expected_penalty(THETA - eps * e))
                   / (2 * eps) for e in np.eye(3)])
    np.testing.assert_allclose(score + path, fd, rtol=1e-5, atol=1e-8)


def test_k1_in_loss_sequence_model_has_zero_expected_gradient():
    obj = ObjectiveConfig(weights=(("kl", 1.0),), kl_placement="in-loss", token_model="sequence")
    np.testing.assert_allclose(exact_logit_gradients(THETA, REF, SPEC, obj)["kl"], 0, atol=1e-12)


def test_design_doc_in_reward_k1_ratios():
    """DESIGN §2: ratios 19.9 (L=10), 186 (L=100), 205 (L=1000) at the Appendix C theta."""
    obj = ObjectiveConfig(weights=(("kl", 1.0),))
    df = attribution_by_length(np.array([10, 100, 1000]), THETA, REF, SPEC, obj, "kl")
    np.testing.assert_allclose(df["ratio"], [19.9, 186, 205], rtol=0.01)


def test_attribution_shapes_over_length():
    lengths = np.array([10, 20, 50, 100, 200, 500, 1000])
    sur = attribution_by_length(lengths, THETA, REF, SPEC, ObjectiveConfig(), "surrogate")
    assert sur["ratio"].max() / sur["ratio"].min() < 1.0001  # flat: no length factor
    assert 0.1 < sur["ratio"].iloc[0] < 10  # O(1)
    kl = ObjectiveConfig(weights=(("kl", 1.0),))
    per_tok = attribution_by_length(lengths, THETA, REF, SPEC, kl, "kl")["ratio"].to_numpy()
    assert np.all(np.diff(per_tok) > 0)  # grows with L ...
    assert per_tok[1] / per_tok[0] > 1.8  # ... near-linearly at first (x2 in L -> ~x2)
    assert per_tok[-1] / per_tok[-4] < 1.5  # ... then saturates (x10 in L -> < x1.5)
    seq = attribution_by_length(lengths, THETA, REF, SPEC, replace(kl, token_model="sequence"),
                                "kl")["ratio"]
    assert seq.max() / seq.min() < 1.0001


def test_attribution_ratio_definition():
    assert attribution_ratio(np.array([2.0, 1.0, -3.0])) == 1.0
    assert math.isinf(attribution_ratio(np.array([1.0, 0.0, 0.0])))
    assert math.isnan(attribution_ratio(np.zeros(3)))


def test_sampler_matches_forced_stop_accuracy_formula():
    p, q1, q2, k = 0.35, 0.7, 0.85, 6
    masks, ns, truncs = sample_trajectories(p, q1, q2, k, 400_000, seed=5)
    final = ((masks >> (ns - 1)) & 1).mean()
    acc = float(accuracy_forced_stop(p, q1, q2, k))
    assert abs(final - acc) < 4 * math.sqrt(acc * (1 - acc) / len(masks))


@pytest.mark.parametrize("reference", [numpy_sample_trajectories, numpy_sample_slots])
def test_numpy_reference_samplers_have_the_same_distribution(reference):
    p, q1, q2, k, n = 0.5, 0.6, 0.7, 5, 200_000
    masks, ns, _ = sample_trajectories(p, q1, q2, k, n, seed=2)
    rm, rn = reference(p, q1, q2, k, n, np.random.default_rng(2))
    for a, b in ((ns, rn), ((masks >> (ns - 1)) & 1, (rm >> (rn - 1)) & 1),
                 (masks * (k + 1) + ns, rm * (k + 1) + rn)):  # whole trajectories
        size = 2**k * (k + 1)
        fa, fb = np.bincount(a, minlength=size) / n, np.bincount(b, minlength=size) / n
        assert np.max(np.abs(fa - fb)) < 0.01


def test_sampling_is_reproducible_and_independent_of_thread_count():
    logits = np.random.default_rng(0).normal(size=(7, 3))
    runs = []
    for threads in (1, numba.config.NUMBA_NUM_THREADS):
        numba.set_num_threads(threads)
        runs.append(kn.sample_population(agent_states(42, 7), logits, 8, False, 500))
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)
    other = kn.sample_population(agent_states(43, 7), logits, 8, False, 500)
    assert not np.array_equal(runs[0][0], other[0])


def test_clipped_surrogate_equals_plain_at_the_behaviour_policy():
    obj = ObjectiveConfig(clip_epsilon=0.2)
    clipped = mc_logit_gradients(THETA, REF, SPEC, obj, 500, seed=3, old_logits=THETA)
    plain = mc_logit_gradients(THETA, REF, SPEC, ObjectiveConfig(), 500, seed=3)
    np.testing.assert_allclose(clipped["surrogate"].mean, plain["surrogate"].mean, atol=1e-12)
    moved = mc_logit_gradients(THETA + 1.0, REF, SPEC, obj, 500, seed=3, old_logits=THETA)
    assert not np.allclose(moved["surrogate"].mean, plain["surrogate"].mean)


def test_ladder_jacobian_chain_rule_matches_finite_differences():
    ladder = TaskLadder.uniform(4, 2, base=(0.2, 1.0, -0.5))
    spec = AgentSpec(ladder=ladder, transfer=TransferConfig((1.5, 0.0, math.inf)),
                     coupling=((1, 0.2, 0), (0, 1, 0.1), (0.3, 0, 1)))
    phi = np.random.default_rng(1).normal(size=spec.n_params) * 0.3
    jac = spec.jacobians()
    eps = 1e-6
    for i in range(spec.n_params):
        e = np.zeros(spec.n_params)
        e[i] = eps
        fd = (spec.task_logits(phi + e) - spec.task_logits(phi - e)) / (2 * eps)
        np.testing.assert_allclose(fd, jac[:, :, i], atol=1e-8)
    # without coupling, the tabular component (ell_1 = 0) of an OOD task is untouched by the
    # per-task parameters u_1, and the logit agent's component (ell_2 = inf) has only w_2
    plain = replace(spec, coupling=None)
    names = plain.parameter_names()
    u1 = [i for i, nm in enumerate(names) if nm.startswith("u_1")]
    assert np.all(plain.jacobians()[3, 1, u1] == 0)
    assert np.all(plain.jacobians()[2:, 1, u1] == 0)
    assert not any(nm.startswith("u_2") for nm in names)


@pytest.mark.parametrize("bad", [
    lambda: ObjectiveConfig.parse("surrogate+kl", beta=-0.1),
    lambda: ObjectiveConfig.parse("surrogate+bogus"),
    lambda: ObjectiveConfig(group_size=1),
    lambda: AgentSpec(max_attempts=0),
    lambda: AgentSpec(gamma=0.0),
    lambda: TransferConfig((-1.0, 1.0, 1.0)),
    lambda: SFTData(ft_share=1.5),
    lambda: exact_logit_gradients(THETA, REF, replace(SPEC, gamma=0.9), ObjectiveConfig()),
])
def test_bad_configurations_raise_clear_errors(bad):
    with pytest.raises((ValueError, NotImplementedError)):
        bad()


def test_kl_gradient_is_affine_in_length_and_saturates_where_decisions_pick_up_l():
    from sim.attribution import length_decomposition

    obj = ObjectiveConfig(weights=(("kl", 1.0),))
    d = length_decomposition(THETA, REF, SPEC, obj, "kl")
    for length in (7.0, 333.0):
        direct = exact_logit_gradients(THETA, REF, replace(SPEC, len_correct=length,
                                                           len_wrong=length), obj)["kl"]
        np.testing.assert_allclose(direct, d["g0"] + length * d["g1"], rtol=1e-9, atol=1e-12)
    far = attribution_by_length(np.array([1e6]), THETA, REF, SPEC, obj, "kl")["ratio"].iloc[0]
    assert far == pytest.approx(d["asymptotic_ratio"], rel=1e-3)
    assert 50 < d["crossover_L_theta_2"] < 200  # ~105 at the Appendix C theta


def test_k1_in_loss_ratio_is_undefined_not_noise():
    obj = ObjectiveConfig(weights=(("kl", 1.0),), kl_placement="in-loss")
    df = attribution_by_length(np.array([10, 1000]), THETA, REF, SPEC, obj, "kl")
    assert df["ratio"].isna().all()


@pytest.mark.parametrize("sampler", ["alias", "sequential"])
@pytest.mark.parametrize("final", ["forced", "sampled"])
def test_samplers_match_exact_trajectory_probabilities(final, sampler):
    from sim.alias import sample_population_alias

    k, n = 4, 400_000
    logits = np.array([0.3, 0.8, -0.4])
    draw = sample_population_alias if sampler == "alias" else kn.sample_population
    m, ns, t = draw(agent_states(3, 1), logits[None], k, final == "sampled", n)
    table = all_trajectories(k, final == "sampled")
    probs = np.exp(kn.batch_log_probs(*table, k, final == "sampled", logits))
    key = {(a, b, c): i for i, (a, b, c) in enumerate(zip(*table, strict=True))}
    counts = np.zeros(len(probs))
    for a, b, c in zip(m[0], ns[0], t[0], strict=True):
        counts[key[(int(a), int(b), int(c))]] += 1
    sigma = np.sqrt(probs * (1 - probs) / n)
    assert np.all(np.abs(counts / n - probs) < 5 * sigma + 1e-9)


@numba.njit
def _one_trajectory_at_a_time(states, logits, max_attempts, final_sampled, masks, ns, truncs):
    for a in range(masks.shape[0]):
        t_p = threshold53(kn.sigmoid(logits[a, 0]))
        t_q1 = threshold53(kn.sigmoid(logits[a, 1]))
        t_q2 = threshold53(kn.sigmoid(logits[a, 2]))
        st = states[a]
        for i in range(masks.shape[1]):
            masks[a, i], ns[a, i], truncs[a, i], st = kn.sample_trajectory(
                st, t_p, t_q1, t_q2, max_attempts, final_sampled)
        states[a] = st


@pytest.mark.parametrize("final_sampled", [False, True])
@pytest.mark.parametrize("max_attempts", [1, 2, 8, 60])
def test_block_sampler_draws_what_one_trajectory_at_a_time_draws(max_attempts, final_sampled):
    # the two-pass block sampler must be the per-trajectory sampler, bit for bit, whatever
    # the block boundaries (n = 1, 7, > SLOT_BLOCK) and however the calls are split
    logits = np.random.default_rng(4).normal(scale=3.0, size=(6, 3))
    logits[0] = (-40.0, 40.0, 40.0)  # always wrong, always resamples: every trajectory hits K
    logits[1] = (40.0, -40.0, -40.0)  # always correct, always resamples
    for n in (1, 7, kn.SLOT_BLOCK + 3, 3 * kn.SLOT_BLOCK):
        s_block, s_one = agent_states(9, 6), agent_states(9, 6)
        block = kn.sample_population(s_block, logits, max_attempts, final_sampled, n)
        one = tuple(np.empty_like(x) for x in block)
        _one_trajectory_at_a_time(s_one, logits, max_attempts, final_sampled, *one)
        for x, y in zip(block, one, strict=True):
            np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(s_block, s_one)
        assert (block[1][:2] == max_attempts).all()
        assert (block[2][:2] == int(final_sampled)).all()
    # continuing the stream in two calls gives the same trajectories as one call
    states = agent_states(9, 6)
    first = kn.sample_population(states, logits, max_attempts, final_sampled, 300)
    second = kn.sample_population(states, logits, max_attempts, final_sampled, 700)
    whole = kn.sample_population(agent_states(9, 6), logits, max_attempts, final_sampled, 1000)
    for a, b, w in zip(first, second, whole, strict=True):
        np.testing.assert_array_equal(np.hstack([a, b]), w)


def test_alias_sampler_is_reproducible_across_thread_counts():
    from sim.alias import sample_population_alias

    logits = np.random.default_rng(1).normal(size=(5, 3))
    runs = []
    for threads in (1, numba.config.NUMBA_NUM_THREADS):
        numba.set_num_threads(threads)
        runs.append(sample_population_alias(agent_states(8, 5), logits, 6, False, 300))
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)


def _brute_force_steps(outcomes, k_max, theta, w_c, w_w):
    """Per-step (param, d log pi / d logit, pi(action), token weight), written from DESIGN §1
    directly (no kernel code): RESAMPLE after attempts 1..n-1, STOP at n unless forced at K."""
    p, q1, q2 = 1 / (1 + np.exp(-np.asarray(theta)))
    steps, n = [], len(outcomes)
    for k, c in enumerate(outcomes):
        steps.append((0, 1 - p, p, w_c) if c else (0, -p, 1 - p, w_w))
        if k == n - 1 and n == k_max:
            break
        resample = k < n - 1
        if c:
            steps.append((1, -q1, 1 - q1, 1.0) if resample else (1, 1 - q1, q1, 1.0))
        else:
            steps.append((2, 1 - q2, q2, 1.0) if resample else (2, -q2, 1 - q2, 1.0))
    return steps


def test_likelihood_objectives_against_brute_force_enumeration():
    import itertools

    k_max, w_c, w_w, f = 3, 7.0, 4.0, 0.3
    spec = replace(SPEC, max_attempts=k_max, len_correct=w_c, len_wrong=w_w)
    obj = ObjectiveConfig(weights=tuple((k, 1.0) for k in ("sft", "dft", "nsr", "psr")),
                          sft_data=SFTData("reflection", ft_share=f, n_reflections=1))
    ours = exact_logit_gradients(THETA, REF, spec, obj)

    def grad(steps, use_prob=False):
        g = np.zeros(3)
        for param, glogp, prob, w in steps:
            g[param] += w * (prob if use_prob else 1.0) * glogp
        return g

    data = [((0, 1), f), ((1,), 1 - f)]  # W -> RESAMPLE -> C -> STOP, and C -> STOP
    sft = sum(w * grad(_brute_force_steps(o, k_max, THETA, w_c, w_w)) for o, w in data)
    dft = sum(w * grad(_brute_force_steps(o, k_max, THETA, w_c, w_w), True) for o, w in data)
    nsr, psr = np.zeros(3), np.zeros(3)  # answer-level policy gradients: no length weight
    for n in range(1, k_max + 1):
        for outcomes in itertools.product((0, 1), repeat=n):
            steps = _brute_force_steps(outcomes, k_max, THETA, 1.0, 1.0)
            prob = np.prod([s[2] for s in steps])
            if outcomes[-1]:
                psr += prob * grad(steps)
            else:
                nsr -= prob * grad(steps)
    for name, expected in (("sft", sft), ("dft", dft), ("nsr", nsr), ("psr", psr)):
        np.testing.assert_allclose(ours[name], expected, rtol=1e-12, atol=1e-14, err_msg=name)
    # the wrong attempts masked: their answers weigh 0, their RESAMPLE decisions stay
    masked = replace(obj, sft_data=replace(obj.sft_data, mask_wrong_attempts=True))
    sft = sum(w * grad(_brute_force_steps(o, k_max, THETA, w_c, 0.0)) for o, w in data)
    np.testing.assert_allclose(exact_logit_gradients(THETA, REF, spec, masked)["sft"], sft,
                               rtol=1e-12, atol=1e-14)


def test_binomial_pmf_is_scipys():
    from scipy.stats import binom

    from sim.exact_dp import binomial_pmf

    for n in (0, 1, 7, 15, 63):
        for p in (0.0, 1e-9, 0.3, 0.5, 0.97, 1.0):
            np.testing.assert_allclose(binomial_pmf(n, p), binom.pmf(np.arange(n + 1), n, p),
                                       rtol=1e-12, atol=1e-300)
