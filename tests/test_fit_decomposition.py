"""The fit's measured decomposition (analysis.fit_decomposition, DESIGN §4): observed p, q1, q2
per task as residuals, their loaders, and the recovery script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.fit import FitConfig, fit_observed, ladder_of
from analysis.fit_base import base_offsets
from analysis.fit_config import FitError
from analysis.fit_decomposition import fit_residuals, observed_components, regime_residuals
from analysis.fit_io import fit_from_json, fit_to_json, save_fit
from analysis.fit_model import (
    TRAINED_REGIMES,
    free_parameter_names,
    observed_rows,
    simulate_regime,
    trained_residuals,
)
from analysis.fit_profile import SavedFitProblem
from analysis.observed import (
    RL,
    ObservedDataError,
    calibration_accuracy,
    check_observed,
    load_accuracy_table,
    load_paper_table1,
)

SMALL = dict(steps=3, max_attempts=3, max_nfev=2, starts=1)
SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "fit_recovery.py"


def _with_rl_components(observed: pd.DataFrame) -> pd.DataFrame:
    """Table 1 with a measured (p, q1, q2) on RL's first two tasks, NaN elsewhere."""
    out = observed.copy()
    for c in ("p", "q1", "q2"):
        out[c] = np.nan
    rl = out.index[(out["regime"] == RL) & (out["task"].isin(["T1", "T2"]))]
    out.loc[rl, ["p", "q1", "q2"]] = [[0.8, 0.95, 0.5], [0.6, 0.9, 0.4]]
    return out


def _problem(observed: pd.DataFrame, cfg: FitConfig):
    ladder = ladder_of(observed)
    regimes = [r for r in TRAINED_REGIMES if r in set(observed["regime"])]
    return ladder, regimes, base_offsets(observed, ladder, cfg)[0], \
        free_parameter_names(regimes, cfg)


def test_without_the_option_the_residuals_are_the_accuracy_cells():
    observed = _with_rl_components(load_paper_table1())
    cfg = FitConfig(**SMALL)
    ladder, regimes, b_s, names = _problem(observed, cfg)
    x = np.log([2.0, 3.0, 0.01, 0.02])
    ours = fit_residuals(observed, ladder, regimes, b_s, cfg, names)(x)
    plain = trained_residuals(regimes, ladder, b_s, cfg, names,
                              observed_rows(observed, ladder, regimes))(x)
    np.testing.assert_array_equal(ours, plain)


def test_with_the_option_each_measured_cell_is_a_residual():
    observed = _with_rl_components(load_paper_table1())
    cfg = FitConfig(decomposition=True, **SMALL)
    ladder, regimes, b_s, names = _problem(observed, cfg)
    x = np.log([2.0, 3.0, 0.01, 0.02])
    res = fit_residuals(observed, ladder, regimes, b_s, cfg, names)(x)
    n_acc = 21  # three trained rows x seven tasks
    assert res.size == n_acc + 6
    vals = dict(zip(names, np.exp(x), strict=True))
    sim = simulate_regime(RL, ladder, b_s, cfg, vals)[:2, :3]
    # each cell weighted by the share of queries it rests on: 1, sqrt(p̂), sqrt(1 - p̂)
    weights = np.sqrt([[1, 0.8, 0.2], [1, 0.6, 0.4]])
    np.testing.assert_allclose(res[n_acc:], (weights * (sim - [[0.8, 0.95, 0.5],
                                                               [0.6, 0.9, 0.4]])).ravel())
    comp = observed_components(observed, ladder, [RL])[RL]
    assert comp.shape == (7, 3, 2) and np.isnan(comp[2:]).all()
    np.testing.assert_array_equal(comp[:2, :, 0], comp[:2, :, 1])  # a value v is [v, v]


def _least_squares_and_row_residuals(decomposition: bool, simulate):
    """(the least squares' residuals, each row's regime_residuals) at one point of the small
    problem, on Table 1 with RL's measured components; `simulate`: simulate_regime or a
    stand-in patched into the fit's modules."""
    observed = _with_rl_components(load_paper_table1())
    cfg = FitConfig(decomposition=decomposition, **SMALL)
    ladder, regimes, b_s, names = _problem(observed, cfg)
    x = np.log([2.0, 3.0, 0.01, 0.02])
    res = fit_residuals(observed, ladder, regimes, b_s, cfg, names)(x)
    vals = dict(zip(names, np.exp(x), strict=True))
    y = observed_rows(observed, ladder, regimes)
    comps = observed_components(observed, ladder, regimes) if decomposition else {}
    return res, {r: regime_residuals(simulate(r, ladder, b_s, cfg, vals), y[r], comps.get(r))
                 for r in regimes}


def test_per_row_residuals_give_the_least_squares_own_sse():
    # the start grid and the one-sided lr bounds sum rows' SSEs: with the option, they must
    # read the same cells (and weights) as the least squares, or the bounds use a wrong budget
    for decomposition in (False, True):
        res, rows = _least_squares_and_row_residuals(decomposition, simulate_regime)
        rows = list(rows.values())
        assert sum(np.isfinite(r).sum() for r in rows) == res.size
        np.testing.assert_allclose(sum(float(np.nansum(r**2)) for r in rows),
                                   float(res @ res), rtol=1e-12)


def test_a_fitted_nan_misses_by_one_in_the_row_sse_as_in_the_least_squares(monkeypatch):
    # a training that overflowed (NaN) must not read as a perfect fit to the start grid or
    # the one-sided bounds (they sum rows' SSEs), while the least squares counts it as 1
    import analysis.fit_decomposition as fd
    import analysis.fit_model as fm

    real = fm.simulate_regime

    def overflowing(regime, *args, **kwargs):
        out = real(regime, *args, **kwargs).copy()
        if regime == RL:
            out[0, :] = np.nan  # T1: accuracy and p, q1, q2 all NaN, every cell observed
            out[5, 3] = np.nan  # T6's accuracy
        return out

    monkeypatch.setattr(fm, "simulate_regime", overflowing)
    monkeypatch.setattr(fd, "simulate_regime", overflowing)
    res, rows = _least_squares_and_row_residuals(True, overflowing)
    # RL's T1 accuracy, T6 accuracy and T1's p, q1, q2 (weights 1, sqrt .8, sqrt .2) miss by 1
    np.testing.assert_allclose(rows[RL][[0, 5]], 1.0)
    np.testing.assert_allclose(rows[RL][7:10], np.sqrt([1.0, 0.8, 0.2]))
    assert np.isnan(rows[RL][13:]).all()  # T3..T7's p, q1, q2: not observed, not counted
    np.testing.assert_allclose(sum(float(np.nansum(r**2)) for r in rows.values()),
                               float(res @ res), rtol=1e-12)


def test_component_weights_follow_the_share_of_queries():
    from analysis.fit_decomposition import component_weights

    comp = np.array([[0.25, 0.5, 0.5], [np.nan, 0.5, 0.5], [1.0, 0.9, np.nan]])
    bounds = np.stack([comp, comp], axis=-1)
    np.testing.assert_allclose(component_weights(bounds),
                               [[1, 0.5, np.sqrt(0.75)], [1, 1, 1], [1, 1, 0]])
    bounds[0, 0] = [0.0, 0.2]  # p stated as a range: no p̂ to weigh the q's by
    np.testing.assert_allclose(component_weights(bounds)[0], [1, 1, 1])


def test_the_option_without_measurements_is_a_one_line_error():
    with pytest.raises(FitError, match="--decomposition needs observed p"):
        fit_observed(load_paper_table1(), FitConfig(decomposition=True, **SMALL))


def test_measured_columns_are_loaded_and_checked(tmp_path):
    table = pd.read_csv(Path(__file__).resolve().parent.parent / "analysis" / "data"
                        / "paper_table1.csv")
    table["p_hat"] = 0.5
    path = tmp_path / "t.csv"
    table.to_csv(path, index=False)
    loaded = load_accuracy_table(path)
    assert (loaded["p"] == 0.5).all() and "q2" not in loaded.columns
    check_observed(loaded, path)
    table.loc[3, "p_hat"] = 1.5
    table.to_csv(path, index=False)
    with pytest.raises(ObservedDataError, match=r"row 4 \(Base, T4\): p 1.5 is outside"):
        check_observed(load_accuracy_table(path), path)
    cal = pd.DataFrame({"regime": ["RL"], "task": ["1x1"], "task_index": [1],
                        "in_distribution": [True], "observed_accuracy": [0.7],
                        "observed_accuracy_ci_low": [0.6], "observed_accuracy_ci_high": [0.8],
                        "p_hat": [0.6], "q1_hat": [0.9], "q2_hat": [0.3], "source": ["run"]})
    tidy = calibration_accuracy(cal)
    assert tidy.loc[0, ["p", "q1", "q2"]].tolist() == [0.6, 0.9, 0.3]


def test_the_budget_is_the_fits_own_and_survives_json():
    observed = _with_rl_components(load_paper_table1())
    res = fit_observed(observed, FitConfig(decomposition=True, **SMALL))
    back = fit_from_json(fit_to_json(res))
    assert back.budget == pytest.approx(res.budget) and np.isfinite(res.budget)
    assert SavedFitProblem.of(observed, back).budget == pytest.approx(res.budget)
    # older fits, saved without it: the accuracy cells' budget, as before
    d = fit_to_json(res)
    del d["budget"]
    old = fit_from_json(d)
    assert np.isnan(old.budget)
    assert np.isfinite(SavedFitProblem.of(observed, old).budget)


def test_the_recovery_script_writes_a_measured_table_and_compares(tmp_path):
    res = fit_observed(load_paper_table1(), FitConfig(**SMALL))
    save_fit(res, tmp_path / "truth")
    out = tmp_path / "synth.csv"
    ok = subprocess.run([sys.executable, str(SCRIPT), "write", str(tmp_path / "truth"),
                         str(out), "--n", "50", "--seed", "3"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    table = load_accuracy_table(out)
    check_observed(table, out)
    assert len(table) == 28 and (table["n"] == 50).all()
    assert (table["accuracy"] * 50).round(9).mod(1).eq(0).all()  # whole counts of 50
    assert table["p"].notna().all()
    again = subprocess.run([sys.executable, str(SCRIPT), "write", str(tmp_path / "truth"),
                            str(tmp_path / "again.csv"), "--n", "50", "--seed", "3"],
                           capture_output=True, text=True)
    assert again.returncode == 0 and (tmp_path / "again.csv").read_text() == out.read_text()
    refit = fit_observed(table, FitConfig(decomposition=True, **SMALL))
    save_fit(refit, tmp_path / "dec")
    cmp = subprocess.run([sys.executable, str(SCRIPT), "compare", str(tmp_path / "truth"),
                          str(tmp_path / "dec")], capture_output=True, text=True)
    assert cmp.returncode == 0, cmp.stderr
    assert cmp.stdout.splitlines()[0].split()[:2] == ["parameter", "truth"]
    assert sum(line.startswith(("ell_", "lr[")) for line in cmp.stdout.splitlines()) == 4
    bad = subprocess.run([sys.executable, str(SCRIPT), "write", str(tmp_path / "nope"),
                          str(out)], capture_output=True, text=True)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr


def test_a_fit_saved_before_the_new_settings_is_still_found_in_the_cache(tmp_path):
    """Settings added since a fit was saved ran as their defaults: the cache still matches it;
    a saved setting that differs does not."""
    import json

    from analysis.fit_io import find_cached_fit

    observed = load_paper_table1()
    cfg = FitConfig(**SMALL)
    res = fit_observed(observed, cfg)
    save_fit(res, tmp_path / "old")
    path = tmp_path / "old" / "fit.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    for new in ("mask_wrong_attempts", "decomposition"):
        del data["config"][new]
    path.write_text(json.dumps(data), encoding="utf-8")
    assert find_cached_fit(observed, cfg, [tmp_path]) is not None
    assert find_cached_fit(observed, FitConfig(mask_wrong_attempts=True, **SMALL),
                           [tmp_path]) is None
    data["config"]["unknown_setting"] = 1
    path.write_text(json.dumps(data), encoding="utf-8")
    assert find_cached_fit(observed, cfg, [tmp_path]) is None


def test_a_real_run_folder_is_fitted_with_its_measured_decomposition(tmp_path):
    """cli.py fit --observed <real runs> --decomposition: the calibration's p_hat, q1_hat,
    q2_hat become residuals (a base and an RL run, three tasks each)."""
    import json

    from click.testing import CliRunner
    from test_report_fixtures import write_real

    from analysis.observed import load_observed
    from cli import main

    real = write_real(tmp_path / "outputs")
    observed = load_observed(real)
    rl = observed[observed["regime"] == RL]
    assert rl[["p", "q1", "q2"]].notna().all().all()
    res = CliRunner().invoke(main, ["fit", "--observed", str(real), "--decomposition", "--quick",
                                    "--out", str(tmp_path / "fits"), "--name", "dec"])
    assert res.exit_code == 0, res.output
    saved = json.loads((tmp_path / "fits" / "dec" / "fit.json").read_text(encoding="utf-8"))
    assert saved["config"]["decomposition"] is True and np.isfinite(saved["budget"])


def test_joint_intervals_carry_the_base_shapes_uncertainty(tmp_path):
    """The joint covariance's training block is the conditional one plus a Schur complement
    term: never narrower at one difference step, and wider where the trained rows depend on
    the base shape (they all do: training starts from it)."""
    from analysis.fit import central_jacobian
    from analysis.fit_base import untrained_regimes
    from analysis.fit_profile import joint_intervals

    observed = load_paper_table1()
    cfg = FitConfig(**SMALL)
    res = fit_observed(observed, cfg)
    joint = joint_intervals(observed, res, steps=(0.01,))
    problem = SavedFitProblem.of(observed, res, cfg)
    trained = [r for r in problem.regimes if r not in untrained_regimes(observed, cfg)]
    f = fit_residuals(observed, problem.ladder, trained, problem.b_s, cfg, problem.names)
    r = f(problem.x0)
    jac = central_jacobian(f, problem.x0, problem.lo, problem.hi, 0.01)
    s2 = float(r @ r) / (r.size - len(problem.names))
    se = np.sqrt(np.diag(s2 * np.linalg.pinv(jac.T @ jac)))
    joint_se = np.log(joint["joint_high"] / joint["value"]).to_numpy() / 1.959963984540054
    assert list(joint["name"]) == problem.names
    at_bound = res.params.set_index("name").loc[problem.names, "at_bound"].to_numpy(bool)
    assert (joint["at_bound"].to_numpy(bool) == at_bound).all()
    assert not joint.loc[joint["at_bound"], "identified"].any()
    assert (joint_se >= se * (1 - 1e-9)).all() and (joint_se > se * 1.01).any()
    with pytest.raises(FitError, match="fitted base shape"):
        joint_intervals(observed, fit_observed(observed, FitConfig(base="exact", **SMALL)))
    save_fit(res, tmp_path / "fit")
    script = SCRIPT.parent / "fit_joint_intervals.py"
    ok = subprocess.run([sys.executable, str(script), str(tmp_path / "fit"), "--truth",
                         str(tmp_path / "fit")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    lines = ok.stdout.splitlines()
    assert len(lines) == len(problem.names)
    assert all(line.endswith(" in") for line in lines)  # a fit's own values lie inside


def test_the_stated_q2_example_is_table1_plus_rls_q2_cells():
    # examples/paper_table1_rl_q2_stated.csv: the paper's Table 1 unchanged, and q2 = 0.50 (the
    # centre of the stated 40-60%) on RL's tasks only; a drifted copy would fit another table
    path = Path(__file__).resolve().parent.parent / "examples" / "paper_table1_rl_q2_stated.csv"
    stated = load_accuracy_table(path)
    check_observed(stated, path)
    table1 = load_paper_table1()
    cols = ["regime", "task", "accuracy", "ci_low", "ci_high", "n"]
    pd.testing.assert_frame_equal(stated[cols].reset_index(drop=True),
                                  table1[cols].reset_index(drop=True))
    rl = stated["regime"] == RL
    np.testing.assert_array_equal(stated.loc[rl, "q2"], 0.5)
    assert stated.loc[~rl, "q2"].isna().all() and "p" not in stated and "q1" not in stated
    comp = observed_components(stated, ladder_of(stated), [RL])[RL]
    assert np.isnan(comp[:, :2]).all() and (comp[:, 2] == 0.5).all()  # [0.5, 0.5] each


def test_the_stated_q2_table_at_another_level_changes_rls_q2_only(tmp_path):
    # scripts/stated_q2_table.py: the example read at another level of the stated 40-60%
    script = Path(__file__).resolve().parent.parent / "scripts" / "stated_q2_table.py"
    out = tmp_path / "q2.csv"
    ok = subprocess.run([sys.executable, str(script), "0.6", str(out)], capture_output=True,
                        text=True)
    assert ok.returncode == 0, ok.stderr
    example = pd.read_csv(script.parent.parent / "examples" / "paper_table1_rl_q2_stated.csv")
    table = load_accuracy_table(out)
    check_observed(table, out)
    rl = table["regime"] == RL
    np.testing.assert_array_equal(table.loc[rl, "q2"], 0.6)
    assert table.loc[~rl, "q2"].isna().all()
    written = pd.read_csv(out)
    pd.testing.assert_frame_equal(written.drop(columns=["q2", "q2_source"]),
                                  example.drop(columns=["q2", "q2_source"]))
    assert written.loc[written["q2"].notna(), "q2_source"].str.endswith("[read as 0.6]").all()
    outside = subprocess.run([sys.executable, str(script), "0.8", str(out)],
                             capture_output=True, text=True)
    assert outside.returncode == 0 and "outside the stated range" in pd.read_csv(out).iloc[-1, -1]
    bad = subprocess.run([sys.executable, str(script), "1.5", str(out)], capture_output=True,
                         text=True)
    assert bad.returncode != 0 and "must lie in (0, 1)" in bad.stderr


RANGES = Path(__file__).resolve().parent.parent / "examples" / "paper_table1_rl_stated_ranges.csv"


def test_the_stated_ranges_example_is_table1_plus_rls_two_ranges():
    # the paper's two quantified statements on RL's decomposition (§4.2), as ranges: q2 in
    # [0.4, 0.6] on every task, p <= 0.2 on the hardest; Table 1 otherwise unchanged
    stated = load_accuracy_table(RANGES)
    check_observed(stated, RANGES)
    cols = ["regime", "task", "accuracy", "ci_low", "ci_high", "n"]
    table1 = load_paper_table1()
    pd.testing.assert_frame_equal(stated[cols].reset_index(drop=True),
                                  table1[cols].reset_index(drop=True))
    comp = observed_components(stated, ladder_of(stated), [RL, "SFT (reflection)"])
    rl = comp[RL]
    np.testing.assert_array_equal(rl[:, 2], [[0.4, 0.6]] * 7)
    np.testing.assert_array_equal(rl[6, 0], [0.0, 0.2])  # an empty low end is 0
    assert np.isnan(rl[:6, 0]).all() and np.isnan(rl[:, 1]).all()
    assert np.isnan(comp["SFT (reflection)"]).all()


def test_a_stated_range_costs_only_the_distance_outside_it():
    from analysis.fit_decomposition import component_residuals

    bounds = np.full((4, 3, 2), np.nan)
    bounds[:, 2] = [0.4, 0.6]
    simulated = np.array([[0.5, 0.9, 0.5, 0.7], [0.5, 0.9, 0.7, 0.7], [0.5, 0.9, 0.25, 0.7],
                          [0.5, 0.9, np.nan, 0.7]])
    res = component_residuals(simulated, bounds).reshape(4, 3)
    assert np.isnan(res[:, :2]).all()  # p, q1 not observed
    # inside: 0; above: fitted - high; below: fitted - low; a fitted NaN misses by 1
    np.testing.assert_allclose(res[:, 2], [0.0, 0.1, -0.15, 1.0])


@pytest.mark.parametrize("extra, message", [
    ({"q2_low": 0.7, "q2_high": 0.6}, "q2_low 0.7 is above q2_high 0.6"),
    ({"q2": 0.5, "q2_low": 0.4}, "q2 has a value and a range"),
    ({"p_high": 1.2}, r"p_high 1.2 is outside \[0, 1\]"),
])
def test_a_bad_stated_range_is_refused_with_its_row(tmp_path, extra, message):
    table = pd.read_csv(RANGES).drop(columns=["p_low", "p_high", "q2_low", "q2_high"])
    for col, value in extra.items():
        table[col] = np.nan
        table.loc[table["model"] == "RL", col] = value
    path = tmp_path / "bad.csv"
    table.to_csv(path, index=False)
    with pytest.raises(ObservedDataError, match=message) as err:
        check_observed(load_accuracy_table(path), path)
    assert "RL, T1" in str(err.value)
