"""The population step's count form (sim.population_counts, DESIGN.md §1-§3): the same
trajectories as the per-trajectory sampler, the same kernels as sim.kernels, and a step
equal to one built from per-trajectory kernels on the same draws."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim import kernels as kn
from sim import population_counts as pc
from sim.model import AgentSpec, TaskLadder, TransferConfig
from sim.objectives import ObjectiveConfig, SFTData, population_token_arrays
from sim.optim import OptimiserConfig
from sim.population import LearnerConfig, PopulationConfig, PopulationModel, homogeneous
from sim.rng import threshold53
from sim.terms import KERNELS, KINDS, KL_IN_REWARD, OWN, TERMS, keeps


def _sequential(st, thresholds, g, k, final_sampled):
    out = []
    for _ in range(g):
        m, n, tr, st = kn.sample_trajectory(np.uint64(st), *thresholds, k, final_sampled)
        out.append((int(m), int(n), int(tr)))
    return out, np.uint64(st)


@pytest.mark.parametrize(("k", "final_sampled", "probs"), [
    (8, False, (0.5, 0.5, 0.5)), (3, True, (0.3, 0.4, 0.9)), (5, False, (0.1, 0.9, 0.95)),
    (60, True, (0.05, 0.5, 0.99))])  # long trajectories: several blocks of slots per group
def test_sample_group_draws_what_sample_trajectory_draws(k, final_sampled, probs) -> None:
    thresholds = tuple(threshold53(p) for p in probs)
    codes = np.empty(pc.GROUP_SLOTS, np.uint8)
    rec = np.zeros((pc.N_RECORD, 3 * 40), np.int64)
    st = np.uint64(0x1234ABCD)
    for q in range(3):  # consecutive groups continue the stream
        want, st_want = _sequential(st, thresholds, 40, k, final_sampled)
        # (the interpreter gets uint64 results back as ints: pass them on as uint64)
        st = np.uint64(pc.sample_group(st, *thresholds, 40, k, final_sampled, codes, rec,
                                       q * 40))
        assert [tuple(int(v) for v in pc.record(rec, q * 40 + i)) for i in range(40)] == want
        assert st == st_want


def _all_trajectories(k, final_sampled):
    masks, ns, truncs = [], [], []
    for n in range(1, k + 1):
        for mask in range(2**n):
            for trunc in ((0, 1) if n == k and final_sampled else (0,)):
                masks.append(mask)
                ns.append(n)
                truncs.append(trunc)
    return np.array(masks), np.array(ns), np.array(truncs)


@pytest.mark.parametrize("final_sampled", [False, True])
@pytest.mark.parametrize(("estimator", "clamp"), [("k1", 0.0), ("k2", 0.0), ("k3", 0.3)])
def test_counts_times_table_is_every_kernel(final_sampled, estimator, clamp) -> None:
    # every trajectory of K = 4: its six counts give its log-probability and, through the
    # coefficient table, every kernel column of sim.kernels.trajectory_terms but Q_t's
    k, w_c, w_w, gamma = 4, 7.0, 3.0, 0.9
    logits, ref = np.array([0.4, 1.3, -0.8]), np.array([-0.2, 0.9, 0.1])
    masks, ns, truncs = _all_trajectories(k, final_sampled)
    est = kn.ESTIMATORS[estimator]
    table = np.empty((len(KERNELS), pc.N_TYPES))
    pc.count_table(logits, ref, w_c, w_w, est, clamp, True, table)
    terms, rewards, _ = kn.batch_terms(masks, ns, truncs, k, final_sampled, logits, ref, w_c,
                                       w_w, est, clamp, gamma)
    ls = [kn.log_sigmoid(s * logits[x]) for s, x in
          ((1, 0), (-1, 0), (-1, 1), (1, 1), (1, 2), (-1, 2))]
    rows = np.empty((1, pc.N_TYPES))
    counts = rows[0]
    for i in range(len(masks)):
        rec = np.array([[masks[i]], [ns[i] | truncs[i] << 8]], np.int64)
        r = pc.trajectory_counts(rec, 0, k, final_sampled, gamma, rows)
        assert r == rewards[i]
        lp = kn.trajectory_log_prob(masks[i], ns[i], truncs[i], k, final_sampled, logits)
        assert counts @ ls == pytest.approx(lp, abs=1e-12)
        tokens = kn.trajectory_tokens(masks[i], ns[i], truncs[i], k, final_sampled, w_c, w_w)
        assert pc.trajectory_token_count(rows, 0, w_c, w_w) == tokens
        for col in range(len(KERNELS)):
            if pc.READS_RETURN[col]:
                continue
            got = np.zeros((1, 3))
            pc.apply_table(table, col, counts, 1.0, got, 0)
            np.testing.assert_allclose(got[0], terms[i, col], rtol=1e-12, atol=1e-12)


def test_only_the_kl_return_kernel_is_walked() -> None:
    assert [KERNELS[c] for c in np.flatnonzero(pc.READS_RETURN)] == [KL_IN_REWARD]


# ----------------------------------------------------------------------------- the step
def _reference_grads(model: PopulationModel, a: int, phi, ref_phi, streams, step: int):
    """Agent a's per-term logit gradients of one step from per-trajectory kernels
    (sim.kernels.batch_terms) on the trajectories sim.kernels.sample_trajectory draws."""
    lc, sh = model.learners[a], model.shared
    spec, obj = lc.spec, lc.objective
    arrays = population_token_arrays([(spec, obj)])
    norm, norm_data = float(arrays["norm_own"][0]), float(arrays["norm_data"][0])
    w_c, w_w = model.learner_arrays.w_c[a], model.learner_arrays.w_w[a]
    k, fs, g, q_n = sh.max_attempts, sh.final_sampled, sh.group_size, sh.n_queries
    st, draws = streams[a], []
    for q in range(q_n):
        t = sh.id_tasks[((step - 1) * q_n + q) % len(sh.id_tasks)]
        logits = spec.task_logits(phi)[t]
        th = tuple(threshold53(1.0 / (1.0 + math.exp(-x))) for x in logits)
        traj, st = _sequential(st, th, g, k, fs)
        draws.append((t, np.array(traj)))
    if norm == kn.NORM_BATCH:
        norm = np.mean([kn.trajectory_tokens(m, n, tr, k, fs, w_c, w_w)
                        for _, tr_ in draws for m, n, tr in tr_])
    grads = np.zeros((len(TERMS), 3))
    for t, tr_ in draws:
        logits, ref = spec.task_logits(phi)[t], spec.task_logits(ref_phi)[t]
        terms, r, _ = kn.batch_terms(tr_[:, 0], tr_[:, 1], tr_[:, 2], k, fs, logits, ref, w_c,
                                     w_w, kn.ESTIMATORS[obj.kl_estimator], obj.kl_clamp,
                                     spec.gamma, norm)
        adv = (r - r.mean()) / (r.std(ddof=obj.std_ddof) + obj.adv_eps)
        for term in TERMS:
            if term.kind not in obj.kinds:
                continue
            col = term.column(obj.kl_placement)
            if term.source == OWN:
                keep = np.array([keeps(term.reward_filter, x) for x in r])
                w = (adv if term.advantage else np.ones(g)) * keep * term.sign
                grads[term.index] += (w @ terms[:, col]) / g / q_n
            else:
                dm, dn, dt, dw = obj.sft_data.trajectories(k)
                dnorm = norm_data
                dterms, dr, _ = kn.batch_terms(dm, dn, dt, k, fs, logits, ref, w_c,
                                               float(arrays["data_w_w"][0]),
                                               kn.ESTIMATORS[obj.kl_estimator], obj.kl_clamp,
                                               spec.gamma, dnorm)
                keep = np.array([keeps(term.reward_filter, x) for x in dr])
                grads[term.index] += term.sign * ((dw / dw.sum() * keep) @ dterms[:, col]) / q_n
    return grads


CASES = [("per-token", "in-loss", "k1", False), ("grpo", "in-reward", "k1", True),
         ("dapo", "in-loss", "k3", False), ("sequence", "in-reward", "k2", True)]


@pytest.mark.parametrize(("token_model", "placement", "estimator", "ladder"), CASES)
def test_step_equals_per_trajectory_kernels_on_the_same_draws(token_model, placement,
                                                              estimator, ladder) -> None:
    kw = dict(ladder=TaskLadder.uniform(4, 2, base=(0.2, 1.0, -0.5)),
              transfer=TransferConfig((1.5, 0.0, math.inf))) if ladder else {}
    spec = AgentSpec(len_correct=20, len_wrong=5, max_attempts=5,
                     final_decision="sampled" if ladder else "forced", gamma=0.9, **kw)
    obj = ObjectiveConfig(weights=tuple((k, 0.1 if k == "kl" else 1.0) for k in KINDS),
                          kl_placement=placement, kl_estimator=estimator,
                          token_model=token_model, sft_data=SFTData("reflection", 0.5, 1))
    lc = LearnerConfig(spec, obj, OptimiserConfig("adam", 0.05), theta0=(0.4, 1.2, 0.4))
    model = PopulationModel(homogeneous(lc, 3), PopulationConfig(n_queries=5, seed=7))
    model.ref_phi[:] = spec.initial_params((0.3, 1.0, 0.2))
    model.run(2)  # not at the start: the round-robin over ID tasks has moved on
    phi, ref_phi, streams = model.phi.copy(), model.ref_phi.copy(), model.state.streams.copy()
    model.step()
    for a in range(3):
        want = _reference_grads(model, a, phi[a], ref_phi[a], streams, model.step_count)
        np.testing.assert_allclose(model.grads[a], want, rtol=1e-10, atol=1e-12)


def test_running_sums_are_the_sums_of_the_steps() -> None:
    obj = ObjectiveConfig.parse("surrogate+kl", beta=0.05)
    lc = LearnerConfig(AgentSpec(), obj, OptimiserConfig(lr=0.1))
    model = PopulationModel(homogeneous(lc, 5), PopulationConfig(n_queries=2, seed=1))
    model.run(6)
    h = model.history().query("step > 0")
    total = model.grad_sum[:, len(TERMS)]
    for x, c in enumerate("s12"):
        np.testing.assert_allclose(total[:, x], h.groupby("agent")[f"g_{c}[total]"].sum(),
                                   rtol=1e-12)
        np.testing.assert_allclose(model.abs_grad_sum[:, KINDS.index("kl"), x],
                                   h[f"g_{c}[kl]"].abs().groupby(h["agent"]).sum(), rtol=1e-12)
    np.testing.assert_array_equal(model.max_jump, h.groupby("agent")["jump"].max())
