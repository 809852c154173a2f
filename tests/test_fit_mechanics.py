"""The fit's training mechanics and identification (analysis.fit, analysis.fit_model;
DESIGN §2 "Update budget", §4): the paper's RL KL, the update budget, K, the parametrisations
that tie parameters, and the identified flag of params.csv."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from analysis.fit import FitConfig, Ladder, base_sampling_logits, parameter_table
from analysis.fit_model import bounds_of, free_parameter_names, regime_objective, simulate_regime
from analysis.observed import RL, SFT_NO_REFLECTION, SFT_REFLECTION
from core.regimes import PAPER_RL_KL

LADDER = Ladder(("T1", "T2", "T3", "T4"), (True, True, False, False))
REGIMES = [SFT_NO_REFLECTION, SFT_REFLECTION, RL]


def _offsets(cfg: FitConfig) -> np.ndarray:
    return base_sampling_logits(np.array([0.7, 0.4, 0.1, 0.03]), cfg)


def test_rl_regime_is_the_papers_run_k3_in_the_loss():
    obj = regime_objective(RL, FitConfig(), 0.001)
    assert (obj.kl_estimator, obj.kl_placement) == ("k3", "in-loss")
    assert (obj.kl_estimator, obj.kl_placement) == (PAPER_RL_KL.estimator, PAPER_RL_KL.placement)
    assert dict(obj.weights)["kl"] == pytest.approx(0.001)
    assert FitConfig().beta == PAPER_RL_KL.beta
    # the SFT rows have no KL term: their objective keeps its data and nothing else
    sft = regime_objective(SFT_REFLECTION, FitConfig(ft_share=0.3), 0.001)
    assert sft.kinds == ("sft",) and sft.sft_data.ft_share == 0.3


def test_rl_training_differs_from_k1_in_the_reward():
    """The fitted RL curve is the k3-in-loss one (k1 in the reward trains differently)."""
    import analysis.fit_model as fm

    cfg = FitConfig(steps=8, beta=1.0)  # a large beta makes the KL's placement visible
    vals = {"ell_s": 1.0, "ell_d": 2.0, f"lr[{RL}]": 0.2}
    ours = simulate_regime(RL, LADDER, _offsets(cfg), cfg, vals)
    k1 = fm._simulate_cached.__wrapped__  # same computation with the theory's KL
    orig = fm.regime_objective
    try:
        fm.regime_objective = lambda r, c, b: orig(r, c, b).__class__.parse(
            "surrogate+kl", beta=b)
        theory = k1(RL, LADDER, tuple(_offsets(cfg)), cfg, 1.0, 2.0, 0.2, 1.0)[0]
    finally:
        fm.regime_objective = orig
    assert np.abs(ours - theory).max() > 1e-3


def test_max_attempts_reaches_the_trained_dynamics():
    """K changes the trained policy itself (the exact gradients enumerate K attempts), not only
    the accuracy formula; K up to the fit's cap (exact gradients are O(K)) is accepted."""
    from analysis.fit_config import MAX_FIT_ATTEMPTS

    vals = {"ell_s": 1.0, "ell_d": 2.0, f"lr[{RL}]": 0.1}
    probs = {}
    for k in (2, 6):
        cfg = FitConfig(max_attempts=k, steps=10)
        probs[k] = simulate_regime(RL, LADDER, _offsets(FitConfig(max_attempts=6)), cfg,
                                   vals)[:, :3]
    assert np.abs(probs[2] - probs[6]).max() > 1e-3
    FitConfig(max_attempts=MAX_FIT_ATTEMPTS)
    with pytest.raises(ValueError, match="max-attempts"):
        FitConfig(max_attempts=MAX_FIT_ATTEMPTS + 1)


@pytest.mark.parametrize("args, want", [
    (["--max-attempts", "12", "--lr-mode", "sft-shared", "--transfer", "single"],
     {"max_attempts": 12, "lr_mode": "sft-shared", "transfer": "single"}),
    (["--mask-wrong-attempts", "--transfer", "global-decisions", "--decomposition"],
     {"mask_wrong_attempts": True, "transfer": "global-decisions", "decomposition": True}),
    (["--transfer", "flat-decisions"], {"transfer": "flat-decisions"}),
])
def test_fit_options_reach_the_config(tmp_path, monkeypatch, args, want):
    from cli import main

    seen = {}

    def fake_fit(observed, cfg, out, path):
        seen["cfg"] = cfg
        raise ValueError("stop here")

    monkeypatch.setattr("analysis.fit_io.fit_and_save", fake_fit)
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["fit", *args, "--name", "k"])
    assert "stop here" in res.output
    assert {k: getattr(seen["cfg"], k) for k in want} == want


def test_update_budget_reaches_the_dynamics():
    """Adam's shared second moment (the default) and gradient clipping change the fit
    (clipping under SGD: Adam's step hardly feels a global rescaling of the gradient)."""
    vals = {"ell_s": 1.0, "ell_d": 2.0, f"lr[{SFT_REFLECTION}]": 0.1,
            f"lr_frac[{SFT_REFLECTION}]": 0.5}
    cfgs = [FitConfig(steps=10), FitConfig(steps=10, second_moment="per-parameter"),
            FitConfig(steps=10, optimiser="sgd", max_grad_norm=0.0),
            FitConfig(steps=10, optimiser="sgd", max_grad_norm=0.01)]
    assert FitConfig().optimiser == "adam" and FitConfig().second_moment == "shared"
    out = [simulate_regime(SFT_REFLECTION, LADDER, _offsets(c), c, vals) for c in cfgs]
    assert np.abs(out[0] - out[1]).max() > 1e-3 and np.abs(out[2] - out[3]).max() > 1e-3


def test_tied_parametrisations():
    cfg = FitConfig(transfer="single", lr_mode="sft-shared")
    assert free_parameter_names(REGIMES, cfg) == ["ell", "lr[SFT]", "lr[RL]"]
    assert free_parameter_names(REGIMES, FitConfig(lr_mode="per-regime")) == [
        "ell_s", "ell_d", f"lr[{SFT_NO_REFLECTION}]", f"lr[{SFT_REFLECTION}]", "lr[RL]"]
    single = simulate_regime(SFT_NO_REFLECTION, LADDER, _offsets(cfg), cfg,
                             {"ell": 1.7, "lr[SFT]": 0.05})
    shared = simulate_regime(SFT_NO_REFLECTION, LADDER, _offsets(cfg), FitConfig(),
                             {"ell_s": 1.7, "ell_d": 1.7, f"lr[{SFT_NO_REFLECTION}]": 0.05})
    np.testing.assert_allclose(single, shared)
    with pytest.raises(ValueError, match="lr-mode"):
        FitConfig(lr_mode="nope")


def test_sgd_learning_rate_is_a_fraction_of_the_stability_bound():
    import analysis.fit_model as fm
    from sim.dynamics import train_expected
    from sim.stability import sgd_lr_bound

    cfg = FitConfig(optimiser="sgd", steps=1)
    assert free_parameter_names([RL], cfg) == ["ell_s", "ell_d", "lr_frac[RL]"]
    assert bounds_of("lr_frac[RL]", cfg)[1] == 1.0  # never above the bound
    b_s = _offsets(cfg)
    got = simulate_regime(SFT_REFLECTION, LADDER, b_s, cfg,
                          {"ell_s": 1.0, "ell_d": 2.0, f"lr_frac[{SFT_REFLECTION}]": 0.5})
    spec = fm.agent_spec(LADDER, tuple(b_s), cfg, 1.0, 2.0)
    obj = regime_objective(SFT_REFLECTION, cfg, cfg.beta)
    lr = 0.5 * sgd_lr_bound(spec, obj)
    phi, _ = train_expected(spec, obj, spec.initial_params(), 1, cfg.optimiser_config(lr))
    want = 1 / (1 + np.exp(-spec.task_logits(phi)))
    np.testing.assert_allclose(got[:, :3], want, rtol=1e-10)


def _sol(x, lo, hi, se_log):
    """A least-squares result whose covariance gives the log-space standard errors se_log."""
    n = 40
    jac = np.zeros((n, len(x)))
    for i, s in enumerate(se_log):
        jac[i, i] = 1.0 / s  # cov = s^2 (J^T J)^-1 with s^2 = 1 (fun below)
    fun = np.ones(n) * np.sqrt((n - len(x)) / n)
    return SimpleNamespace(x=np.array(x), fun=fun, jac=jac, active_mask=np.zeros(len(x)))


def test_identified_flag_bounds_and_interval_width():
    lo, hi = np.log([1e-3] * 3), np.log([10.0] * 3)
    # narrow interval; wide interval (x ~ 3.9^2 > 10); at the lower bound
    sol = _sol([0.0, 0.0, np.log(1e-3)], lo, hi, [0.1, 0.7, 0.1])
    table = parameter_table(["a", "b", "c"], sol, lo, hi, FitConfig())
    free = table[table["free"]].set_index("name")
    assert list(table.columns[:6]) == ["name", "value", "se", "ci_low", "ci_high", "identified"]
    assert free.loc["a", "identified"] and free.loc["a", "ci_low"] > 0
    assert free.loc["a", "ci_high"] / free.loc["a", "ci_low"] == pytest.approx(
        np.exp(2 * 1.959964 * 0.1), rel=1e-4)
    assert not free.loc["b", "identified"]  # spans more than 10x
    assert not free.loc["c", "identified"] and free.loc["c", "at_bound"]
    assert np.isnan(free.loc["c", "se"]) and np.isnan(free.loc["c", "ci_low"])
    assert not table.loc[~table["free"], "identified"].any()


def test_fit_folder_has_params_and_residuals(tmp_path):
    from analysis.fit import fit_observed
    from analysis.fit_io import save_fit
    from analysis.observed import load_paper_table1

    res = fit_observed(load_paper_table1(), FitConfig(quick=True, transfer="single",
                                                      lr_mode="sft-shared", base="exact"))
    save_fit(res, tmp_path)
    params = pd.read_csv(tmp_path / "params.csv")
    assert {"name", "value", "se", "ci_low", "ci_high", "identified"} <= set(params.columns)
    assert params["identified"].dtype == bool
    assert list(params.loc[params["free"], "name"]) == ["ell", "lr[SFT]", "lr[RL]"]
    resid = pd.read_csv(tmp_path / "residuals.csv")
    assert len(resid) == 21 and set(resid["regime"]) == set(REGIMES)
    np.testing.assert_allclose(resid["residual_pp"], 100 * (resid["observed"] - resid["fitted"]))
    assert np.sqrt(np.mean(resid["residual_pp"] ** 2)) == pytest.approx(res.rmse * 100)
    assert "k3 in-loss" in res.summary()


def test_fitted_bases_are_least_squares_optima_of_the_base_row():
    from analysis.fit_base import base_shape, fitted_base
    from core.twostage import accuracy_forced_stop

    acc = np.array([0.74, 0.34, 0.05, 0.01, 0.04, 0.03, 0.01])
    d = np.arange(1, 8)
    for base, n_params in (("linear", 2), ("floored", 3)):
        cfg = FitConfig(base=base)
        b_s, sol, names = fitted_base(acc, cfg)
        assert len(names) == len(sol.x) == n_params
        d_half, slope = np.exp(sol.x[:2])
        line = slope * (d_half - d)
        expect = line if base == "linear" else np.logaddexp(line, np.log(
            np.exp(sol.x[2]) / (1 - np.exp(sol.x[2]))))
        np.testing.assert_allclose(b_s, expect)
        assert np.all(np.diff(b_s) < 0)  # the noisy 1% / 4% cells do not reorder tasks

        def sse(x, base=base, cfg=cfg):
            p = 1 / (1 + np.exp(-base_shape(base, x, d)))
            return np.sum((accuracy_forced_stop(p, cfg.q1_base, cfg.q2_base,
                                                cfg.max_attempts) - acc) ** 2)
        for i in range(n_params):
            for step in (0.01, -0.01):
                assert sse(sol.x + step * np.eye(n_params)[i]) >= sse(sol.x)
    exact = base_sampling_logits(acc, FitConfig())
    assert exact[4] > exact[3]  # ... which the exact offsets do
    # the floor: the far tasks keep p near the untrained rows' few percent, where the line
    # without one falls to ~1e-4 (13 of 800 correct on T4-T7 in Base + SFT no-reflection)
    floored, _, _ = fitted_base(acc, FitConfig(base="floored"))
    linear, _, _ = fitted_base(acc, FitConfig(base="linear"))
    p_floor, p_line = 1 / (1 + np.exp(-floored[3:])), 1 / (1 + np.exp(-linear[3:]))
    assert p_floor.min() > 0.005 and p_line[-1] < 1e-3

def test_untrained_no_reflection_row_and_its_upper_bound():
    from analysis.fit import fit_observed
    from analysis.observed import load_paper_table1

    # ten steps: large ones, to train at all
    cfg = FitConfig(quick=True, max_adam_lr=1.0)
    assert cfg.lr_mode == "no-refl-bound"
    assert f"lr[{SFT_NO_REFLECTION}]" not in free_parameter_names(REGIMES, cfg)
    b_s = _offsets(cfg)
    untrained = simulate_regime(SFT_NO_REFLECTION, LADDER, b_s, cfg, {"ell_s": 1, "ell_d": 1})
    base = simulate_regime("Base", LADDER, b_s, cfg, {})
    np.testing.assert_array_equal(untrained, base)
    res = fit_observed(load_paper_table1(), cfg)
    row = res.params.set_index("name").loc[f"lr[{SFT_NO_REFLECTION}]"]
    assert not row["free"] and row["value"] == 0 and 0 < row["ci_high"] < np.inf
    assert "upper bound" in res.summary()
    with pytest.raises(ValueError, match="no-refl-bound"):
        FitConfig(transfer="per-regime", lr_mode="no-refl-bound")


def test_reflection_row_trained_onto_its_plateau_and_its_lower_bound():
    """lr_mode sft-limits: SFT (no reflection) untrained, SFT (reflection) trained at the top of
    its lr range, its lr bounded below (DESIGN §4)."""
    from analysis.fit import fit_observed
    from analysis.fit_io import fit_from_json, fit_to_json
    from analysis.fit_model import fixed_lr, max_jump
    from analysis.observed import load_paper_table1

    cfg = FitConfig(quick=True, lr_mode="sft-limits")
    assert free_parameter_names(REGIMES, cfg) == ["ell_s", "ell_d", f"lr[{RL}]"]
    assert fixed_lr(SFT_REFLECTION, cfg) == cfg.max_adam_lr
    assert fixed_lr(SFT_NO_REFLECTION, cfg) == 0 and fixed_lr(RL, cfg) is None
    # SGD's range tops out at its stability bound: lr_frac 1
    assert fixed_lr(SFT_REFLECTION, FitConfig(optimiser="sgd", max_grad_norm=0.0,
                                              lr_mode="sft-limits")) == 1.0
    b_s, ells = _offsets(cfg), {"ell_s": 1.0, "ell_d": 1.0}
    plateau = simulate_regime(SFT_REFLECTION, LADDER, b_s, cfg, ells)
    given = simulate_regime(SFT_REFLECTION, LADDER, b_s, cfg,
                            {**ells, f"lr[{SFT_REFLECTION}]": cfg.max_adam_lr})
    smaller = simulate_regime(SFT_REFLECTION, LADDER, b_s, cfg,
                              {**ells, f"lr[{SFT_REFLECTION}]": cfg.max_adam_lr / 10})
    np.testing.assert_array_equal(plateau, given)
    assert not np.allclose(plateau, smaller)  # trained, and at the top lr
    assert max_jump(SFT_REFLECTION, LADDER, b_s, cfg, ells) > 0
    with pytest.raises(KeyError, match="lr\\[RL\\]"):  # a free lr must be given
        simulate_regime(RL, LADDER, b_s, cfg, ells)
    res = fit_observed(load_paper_table1(), cfg)
    row = res.params.set_index("name").loc[f"lr[{SFT_REFLECTION}]"]
    assert not row["free"] and row["value"] == cfg.max_adam_lr
    assert 0 <= row["ci_low"] <= cfg.max_adam_lr and row["ci_high"] == np.inf
    assert "95% lower bound" in res.summary()
    top = f"{SFT_REFLECTION} is trained at the top of its lr range"
    assert any(n.startswith(top) for n in res.notes)
    back = fit_from_json(fit_to_json(res)).params.set_index("name")
    assert back.loc[f"lr[{SFT_REFLECTION}]", "ci_high"] == np.inf
    assert np.isnan(back.loc["K", "ci_high"])  # a fixed setting stays without an interval
    with pytest.raises(ValueError, match="sft-limits"):
        FitConfig(transfer="per-regime", lr_mode="sft-limits")


def test_one_sided_bounds_on_a_known_sse():
    """The bound is where the row's SSE has risen by the budget from its fixed end: upper for
    an untrained row, lower for a row on its plateau; open where the range stays inside."""
    from analysis.fit_bounds import one_sided_lr_bound

    # a plateau above lr 0.01: SSE = 1 + (log(lr / 0.01))^2 below it, 1 above
    def sse(rows, vals):
        lr = vals.get(f"lr[{SFT_REFLECTION}]", FitConfig().max_adam_lr)
        return 1 + max(0.0, np.log(0.01 / lr)) ** 2

    limits = FitConfig(lr_mode="sft-limits")
    bound = one_sided_lr_bound(SFT_REFLECTION, {}, sse, limits, budget=1.0)
    assert bound == pytest.approx(0.01 / np.e, rel=1e-3)  # (log)^2 = 1
    assert one_sided_lr_bound(SFT_REFLECTION, {}, sse, limits, budget=1e6) == 0.0

    # an untrained row: SSE = 1 + (lr / 0.001)^2
    def sse_up(rows, vals):
        return 1 + (vals.get(f"lr[{SFT_NO_REFLECTION}]", 0.0) / 0.001) ** 2

    up = one_sided_lr_bound(SFT_NO_REFLECTION, {}, sse_up, FitConfig(), budget=4.0)
    assert up == pytest.approx(0.002, rel=1e-3)
    assert one_sided_lr_bound(SFT_NO_REFLECTION, {}, sse_up, FitConfig(), 1e12) == np.inf


def test_chaotic_training_is_flagged_not_identified():
    """A learning rate whose steps move p or q by more than 0.5 is chaos (DESIGN §2)."""
    from analysis.fit import fit_observed
    from analysis.fit_model import max_jump

    cfg = FitConfig(steps=30, base="exact")
    b_s = _offsets(cfg)
    calm = max_jump(RL, LADDER, b_s, cfg, {"ell_s": 1, "ell_d": 2, f"lr[{RL}]": 0.05})
    wild = max_jump(RL, LADDER, b_s, cfg, {"ell_s": 1, "ell_d": 2, f"lr[{RL}]": 1.0})
    assert calm < 0.5 < wild
    rows = [{"regime": reg, "task": t, "task_index": i + 1, "in_distribution": i < 2,
             "accuracy": a, "ci_low": a - 0.05, "ci_high": a + 0.05, "n": 100, "source": "s"}
            for reg, accs in (("Base", (0.7, 0.4, 0.1, 0.03)), (RL, (1.0, 1.0, 1.0, 1.0)))
            for i, (t, a) in enumerate(zip(LADDER.names, accs, strict=True))]
    res = fit_observed(pd.DataFrame(rows), FitConfig(steps=30, base="exact", max_nfev=1,
                                                    grid_start=False, max_adam_lr=1.0),
                       start={"ell_s": 1.0, "ell_d": 2.0, f"lr[{RL}]": 1.0})
    assert any(n.startswith("UNSTABLE") for n in res.notes)
    assert not res.params.set_index("name").loc[f"lr[{RL}]", "identified"]


def test_grid_start_with_the_default_parametrisation():
    """The coarse grid skips the untrained row (it has no learning rate to choose)."""
    from analysis.fit import fit_observed
    from analysis.observed import load_paper_table1

    res = fit_observed(load_paper_table1(), FitConfig(steps=2, max_attempts=3, max_nfev=1))
    # floored base (3) + ell_s, ell_d + lr of SFT (reflection) and RL; no-refl untrained
    assert res.n_free == 7 and np.isfinite(res.rmse)
    assert list(res.params["name"][:3]) == ["base_d_half", "base_slope", "base_floor"]


def test_the_kept_start_is_the_best_one_not_in_chaos():
    from analysis.fit import best_solution

    sols = [SimpleNamespace(x=np.array([float(i)]), fun=np.array([e]))
            for i, e in enumerate((0.3, 0.1, 0.2))]
    assert best_solution(sols, lambda x: False).x[0] == 1  # lowest SSE
    assert best_solution(sols, lambda x: x[0] == 1).x[0] == 2  # lowest SSE not in chaos
    assert best_solution(sols, lambda x: True).x[0] == 1  # all chaos: lowest SSE (flagged)


def test_grid_starts_are_ranked_by_their_sse():
    """Every length-scale combination is a start, best first, with its own best lr."""
    from analysis.fit_model import GRID_ELL, GRID_ELL_D, grid_starts

    cfg = FitConfig()
    target = {"ell_s": 2.0, "ell_d": 16.0, f"lr[{RL}]": 0.01}

    def sse(rows: list[str], vals: dict[str, float]) -> float:
        return sum((np.log(vals[n]) - np.log(v))**2 for n, v in target.items())

    starts = grid_starts([RL], cfg, {}, sse)
    assert len(starts) == len(GRID_ELL) * len(GRID_ELL_D)
    assert starts[0] == target
    errs = [sse([RL], s) for s in starts]
    assert errs == sorted(errs) and all(s[f"lr[{RL}]"] == 0.01 for s in starts)


def test_several_starts_keep_the_lowest_sse():
    from analysis.fit import fit_observed
    from analysis.observed import load_paper_table1

    kw = {"steps": 3, "max_attempts": 3, "max_nfev": 2}
    one = fit_observed(load_paper_table1(), FitConfig(**kw, starts=1))
    three = fit_observed(load_paper_table1(), FitConfig(**kw, starts=3))
    note = next(n for n in three.notes if n.startswith("starts: 3 local fits"))
    entries = note.rsplit("of ", 1)[1].split(", ")
    sses = [float(v.split()[0]) for v in entries]
    calm = [v for v, e in zip(sses, entries, strict=True) if "(chaos)" not in e] or sses
    assert len(sses) == 3 and not any(n.startswith("starts:") for n in one.notes)
    # the kept fit is the best of the three whose training is not chaos
    trained = three.curves[three.curves["regime"] != "Base"]["residual"].dropna()
    assert float(trained @ trained) == pytest.approx(min(calm), abs=1e-4)


def test_per_regime_length_scales_fit_runs():
    """transfer per-regime: one length scale per trained row, each with its start value."""
    from analysis.fit import fit_observed
    from analysis.observed import load_paper_table1

    res = fit_observed(load_paper_table1(), FitConfig(
        steps=2, max_attempts=3, max_nfev=1, transfer="per-regime", lr_mode="per-regime"))
    names = set(res.params.loc[res.params["free"], "name"])
    assert {f"ell[{r}]" for r in REGIMES} <= names and np.isfinite(res.rmse)


def test_the_base_shape_is_fitted_to_every_untrained_row():
    """Stacked rows (NaN = not observed) are the same least squares as their cells pooled."""
    from analysis.fit_base import fitted_base

    cfg = FitConfig(base="floored")
    base = np.array([0.74, 0.34, 0.05, 0.01, 0.04, 0.03, 0.01])
    no_refl = np.array([0.75, 0.32, 0.06, 0.02, 0.01, 0.0, np.nan])
    both, sol_both, _ = fitted_base(np.vstack([base, no_refl]), cfg)
    alone, _, _ = fitted_base(base, cfg)
    assert sol_both.fun.size == 13  # the NaN cell is left out
    assert not np.allclose(both, alone)  # the second row moves the fit
    same, _, _ = fitted_base(np.vstack([base, base]), cfg)
    np.testing.assert_allclose(same, alone, atol=1e-6)  # a repeated row: the same optimum


def test_central_jacobian_and_the_widest_interval_of_several_jacobians():
    from analysis.fit import central_jacobian

    a = np.array([[1.0, 2.0], [3.0, -1.0], [0.5, 0.0]])
    lo, hi = np.array([-1.0, -1.0]), np.array([1.0, 0.995])
    jac = central_jacobian(lambda x: a @ x + x[0] ** 2, np.array([0.2, 0.99]), lo, hi, 0.01)
    np.testing.assert_allclose(jac, a + np.array([[0.4, 0]] * 3), atol=1e-9)  # one-sided at hi
    sol = SimpleNamespace(x=np.zeros(2), fun=np.array([0.1, -0.2, 0.1, 0.05]),
                          jac=np.vstack([a, [1.0, 1.0]]), active_mask=np.zeros(2))
    lo, hi = np.full(2, -5.0), np.full(2, 5.0)
    one = parameter_table(["a", "b"], sol, lo, hi, FitConfig())
    both = parameter_table(["a", "b"], sol, lo, hi, FitConfig(), [sol.jac, sol.jac / 4])
    # a Jacobian four times flatter gives four times the standard error; the wider is kept
    np.testing.assert_allclose(both["se"][:2] / one["se"][:2], 4.0, rtol=1e-9)


def test_sse_roughness_reads_jitter_not_trend():
    from analysis.fit_model import ROUGH_LIMIT, sse_roughness

    lo, hi = np.full(3, -5.0), np.full(3, 5.0)
    x0 = np.zeros(3)

    def residuals(x: np.ndarray) -> np.ndarray:
        # coordinate 0: a steep smooth bowl; 1: flat with a 1%-scale sawtooth; 2: at a bound
        saw = 0.05 * (np.round(x[1] / 0.01) % 2)
        return np.array([3.0 * x[0] + 0.1, 0.1 + saw, 0.1 + x[2]])

    rough = sse_roughness(residuals, x0, lo, hi, budget=0.01)
    assert rough[0] < 1e-9  # an exact quadratic leaves nothing, however steep
    # the sawtooth moves the SSE between 0.03 and about 0.0525 from one 1% step to the next
    assert rough[1] > ROUGH_LIMIT
    # within 3% of a bound on both sides: 4 grid points, too few for a quadratic
    rough[2] = sse_roughness(residuals, x0, np.array([-5, -5, 0.0]), np.array([5, 5, 0.03]),
                             0.01)[2]
    assert np.isnan(rough[2])
    table = parameter_table(["a", "b", "c"], _sol([0.0, 0.0, 0.0], lo, hi, [0.1, 0.1, 0.1]),
                            lo, hi, FitConfig(), roughness=rough)
    free = table.set_index("name")
    # equally narrow intervals; only the rough one is not identified
    assert free.loc["a", "identified"] and not free.loc["b", "identified"]
    assert free.loc["c", "identified"] and np.isnan(free.loc["c", "sse_roughness"])


def test_a_solution_stopped_just_short_of_a_bound_is_at_it():
    lo, hi = np.log([1e-3] * 2), np.log([0.05] * 2)
    # 0.05% and 0.5% below the upper bound (log space); neither is an active constraint
    sol = _sol([hi[0] - 5e-4, hi[1] - 5e-3], lo, hi, [0.1, 0.1])
    free = parameter_table(["a", "b"], sol, lo, hi, FitConfig()).set_index("name")
    assert free.loc["a", "at_bound"] and not free.loc["a", "identified"]
    assert not free.loc["b", "at_bound"] and free.loc["b", "identified"]
