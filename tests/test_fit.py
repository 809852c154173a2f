"""Fitting the simulator to observed OOD curves (analysis.fit, DESIGN §4) and saving, loading
and caching fits (analysis.fit_io)."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from analysis.fit import (
    FitConfig,
    Ladder,
    base_sampling_logits,
    fit_observed,
    simulate_regime,
)
from analysis.fit_io import fit_from_json, fit_to_json
from analysis.observed import BASE, RL, load_paper_table1
from core.records import read_record
from core.twostage import accuracy_forced_stop


def test_base_offsets_reproduce_the_base_row():
    cfg = FitConfig()
    acc = np.array([0.74, 0.34, 0.05, 0.0, 1.0])
    b = base_sampling_logits(acc, cfg)
    p = 1 / (1 + np.exp(-b))
    got = accuracy_forced_stop(p, cfg.q1_base, cfg.q2_base, cfg.max_attempts)
    np.testing.assert_allclose(got, np.clip(acc, cfg.acc_floor, 1 - cfg.acc_floor), atol=1e-8)


def test_config_validation():
    with pytest.raises(ValueError, match="q1_base"):
        FitConfig(q1_base=1.0)
    with pytest.raises(ValueError, match="transfer"):
        FitConfig(transfer="nope")
    for bad in (0, 10):
        with pytest.raises(ValueError, match="--starts"):
            FitConfig(starts=bad)
    for bad in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="--max-adam-lr"):
            FitConfig(max_adam_lr=bad)


def test_adams_learning_rate_is_searched_below_the_small_step_bound():
    from analysis.fit_model import bounds_of

    assert bounds_of(f"lr[{RL}]", FitConfig())[1] == 0.05
    assert bounds_of(f"lr[{RL}]", FitConfig(max_adam_lr=0.2))[1] == 0.2
    # SGD's rate is a fraction of its own stability bound, untouched
    assert bounds_of(f"lr_frac[{RL}]", FitConfig(optimiser="sgd"))[1] == 1.0


def test_the_coarse_grid_stays_inside_the_learning_rate_bounds():
    from analysis.fit_model import GRID_LR, grid_lrs

    # Adam: the points above max_adam_lr become that bound, once
    assert grid_lrs(f"lr[{RL}]", FitConfig()) == (0.003, 0.01, 0.03, 0.05)
    assert grid_lrs(f"lr[{RL}]", FitConfig(max_adam_lr=1.0)) == GRID_LR["lr"]
    assert grid_lrs(f"lr[{RL}]", FitConfig(max_adam_lr=0.001)) == (0.001,)
    assert grid_lrs(f"lr_frac[{RL}]", FitConfig(optimiser="sgd")) == GRID_LR["lr_frac"]


def _synthetic_observed(truth: dict[str, float], cfg: FitConfig) -> pd.DataFrame:
    ladder = Ladder(("T1", "T2", "T3", "T4"), (True, True, False, False))
    base = np.array([0.7, 0.4, 0.1, 0.03])
    b_s = base_sampling_logits(base, cfg)
    rl = simulate_regime(RL, ladder, b_s, cfg, truth)[:, 3]
    rows = []
    for regime, accs in ((BASE, base), (RL, rl)):
        for i, (t, a) in enumerate(zip(ladder.names, accs, strict=True)):
            rows.append({"regime": regime, "task": t, "task_index": i + 1,
                         "in_distribution": i < 2, "accuracy": a, "ci_low": a - 0.05,
                         "ci_high": a + 0.05, "n": 100, "source": "synthetic"})
    return pd.DataFrame(rows)


def test_fit_recovers_a_simulated_curve():
    # ten large steps (lr 0.5, above the default small-step bound) keep the test fast
    cfg = FitConfig(steps=10, max_nfev=30, base="exact", max_adam_lr=1.0)
    truth = {"ell_s": 1.5, "ell_d": 4.0, f"lr[{RL}]": 0.5}
    obs = _synthetic_observed(truth, cfg)
    res = fit_observed(obs, cfg, start={"ell_s": 0.8, "ell_d": 2.0, f"lr[{RL}]": 0.2})
    assert res.rmse < 0.01
    assert res.n_free == 3 and res.n_params == 3 + 4 and res.n_obs == 8
    fitted = res.curves[res.curves["regime"] == RL]["accuracy"].to_numpy()
    np.testing.assert_allclose(fitted, obs[obs["regime"] == RL]["accuracy"], atol=0.02)
    assert any("identifiability" in n for n in res.notes)


def test_quick_fit_of_table1_reports_everything():
    res = fit_observed(load_paper_table1(), FitConfig(quick=True, base="exact",
                                                      lr_mode="per-regime"))
    free = res.params[res.params["free"]]
    assert list(free["name"]) == ["ell_s", "ell_d", "lr[SFT (no reflection)]",
                                  "lr[SFT (reflection)]", "lr[RL]"]
    assert res.n_params == 5 + 7 and res.n_obs == 28
    assert set(res.curves["regime"]) == {"Base", "SFT (no reflection)", "SFT (reflection)",
                                         "RL"}
    base = res.curves[res.curves["regime"] == BASE]
    assert np.abs(base["residual"]).max() < 0.006  # Base row fitted up to the 0.5% clipping
    text = res.summary()
    assert "RMSE" in text and "T7" in text and "q1_base" in text
    again = fit_from_json(fit_to_json(res))
    pd.testing.assert_frame_equal(again.curves, res.curves)
    assert again.summary() == text


def test_fit_command_quick_and_errors(tmp_path, monkeypatch):
    from cli import main

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    res = runner.invoke(main, ["fit", "--quick", "--name", "t"])
    assert res.exit_code == 0, res.output
    assert "RMSE (trained regimes)" in res.output and "parameters:" in res.output
    assert (tmp_path / "outputs/fit/t/fit.json").is_file()
    rec = read_record(tmp_path / "outputs/fit/t")
    assert rec["kind"] == "fit" and rec["status"] == "done"
    assert rec["inputs"]["observed"].endswith("paper_table1.csv")
    assert rec["config"] == asdict(FitConfig(quick=True))
    assert rec["results"]["n_obs"] == 28 and len(rec["results"]["observed_sha256"]) == 64
    assert rec["packages"]["python"] and rec["wall_time_s"] >= 0
    bad = runner.invoke(main, ["fit", "--observed", str(tmp_path / "missing.csv")])
    # CliRunner catches a crash too (exit code 1): only a ClickException exits via SystemExit
    assert bad.exit_code == 1 and isinstance(bad.exception, SystemExit), bad.exception
    assert bad.output.startswith("Error:") and len(bad.output.strip().splitlines()) == 1


def _write_table(path, rl: tuple[float, ...]) -> None:
    rows = [{"model": regime, "task": f"T{i + 1}", "task_index": i + 1,
             "in_distribution": i < 2, "accuracy_pct": a, "n": 100}
            for regime, accs in (("Base", (70.0, 40.0, 10.0)), ("RL", rl))
            for i, a in enumerate(accs)]
    pd.DataFrame(rows).to_csv(path, index=False)


def test_report_fit_cache_is_keyed_by_the_data(tmp_path):
    """A changed table under the same file name is fitted again, not served a stale fit."""
    from analysis.fit import observed_digest
    from analysis.observed import load_observed
    from analysis.report import ReportConfig, load_or_fit

    path = tmp_path / "obs.csv"
    _write_table(path, (80.0, 60.0, 20.0))
    cfg = ReportConfig(outputs=tmp_path / "outputs", observed=path, quick=True,
                       out_dir=tmp_path / "report")
    logs: list[str] = []
    first, first_path = load_or_fit(cfg, load_observed(path), logs.append)
    assert first.observed_sha256 == observed_digest(load_observed(path))
    assert read_record(first_path.parent)["kind"] == "fit"  # the cache is a fit folder
    again, _ = load_or_fit(cfg, load_observed(path), logs.append)
    assert logs[-1].startswith("using cached fit")  # same data: the cache is used
    pd.testing.assert_frame_equal(again.curves, first.curves)
    _write_table(path, (90.0, 80.0, 50.0))
    changed, _ = load_or_fit(cfg, load_observed(path), logs.append)
    assert logs[-1].startswith("fitting the simulator")
    rl = changed.curves[changed.curves["regime"] == RL]
    np.testing.assert_allclose(rl["observed"], [0.9, 0.8, 0.5])
    # rows in another order: the same data, the same digest
    obs = load_observed(path)
    assert observed_digest(obs.iloc[::-1]) == observed_digest(obs)


def test_fit_json_is_strict_json(tmp_path):
    """NaN (standard errors of fixed parameters, at-bound intervals) is written as null."""
    from analysis.fit_io import save_fit

    res = fit_observed(load_paper_table1(), FitConfig(quick=True))
    assert res.params["se"].isna().any()
    save_fit(res, tmp_path)
    text = (tmp_path / "fit.json").read_text(encoding="utf-8")

    def refuse(name: str) -> None:
        raise ValueError(f"non-standard JSON constant {name}")

    data = json.loads(text, parse_constant=refuse)
    back = fit_from_json(data)
    pd.testing.assert_frame_equal(back.params, res.params)
    pd.testing.assert_frame_equal(back.curves, res.curves)
    assert back.summary() == res.summary()
