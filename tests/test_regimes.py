"""The one table of training regimes (core.regimes) and the packages that read it."""

from __future__ import annotations

import pandas as pd
import pytest

from core.regimes import BY_NAME, PAPER_RL_KL, REGIME_TABLE, TRAINED, lookup, normalise, regime


def test_names_rows_labels_and_colours_are_unique():
    for field in ("name", "paper_row", "label", "colour"):
        values = [getattr(r, field) for r in REGIME_TABLE]
        assert len(set(values)) == len(values), field
    spellings = [s for r in REGIME_TABLE for s in {normalise(x) for x in r.spellings()}]
    assert len(set(spellings)) == len(spellings)
    assert [r.name for r in REGIME_TABLE] == ["base", "sft-no-reflection", "sft-reflection",
                                              "grpo"]
    assert [r.label for r in REGIME_TABLE] == ["Base", "SFT (no reflection)",
                                               "SFT (reflection)", "GRPO"]


def test_every_objective_spec_parses():
    """DESIGN §2: each trained regime's term spec, with its KL weight and SFT data."""
    from sim.objectives import ObjectiveConfig, SFTData

    assert [r.name for r in TRAINED] == ["sft-no-reflection", "sft-reflection", "grpo"]
    assert regime("base").objective is None and not regime("base").trained
    for r in TRAINED:
        kw = {"sft_data": SFTData(r.sft_data)} if r.sft_data else {}
        obj = ObjectiveConfig.parse(r.objective, beta=r.kl.beta if r.kl else None, **kw)
        assert obj.kinds and ("kl" in obj.kinds) == (r.kl is not None), r.name
        assert (r.sft_data is not None) == ("sft" in obj.kinds), r.name


def test_every_paper_row_maps_to_a_regime(reference):
    rows = pd.read_csv(reference / "paper_table1.csv")["model"].unique()
    found = {row: lookup(row) for row in rows}
    assert all(r is not None and r.paper_row == row for row, r in found.items()), found
    assert {r.name for r in found.values()} == set(BY_NAME)


@pytest.mark.parametrize("label,name", [
    ("Base", "base"), ("base-smol", "base"), ("instruct", "base"),
    ("SFT (no reflection)", "sft-no-reflection"), ("sft_no_reflection", "sft-no-reflection"),
    ("sft-smol-no-reflection", "sft-no-reflection"), ("SFT-reflection", "sft-reflection"),
    ("sft", "sft-reflection"), ("sft-smol", "sft-reflection"), ("GRPO", "grpo"),
    ("grpo-smol", "grpo"), ("grpo2", "grpo"), ("RL", "grpo"), ("surrogate+kl", "grpo"),
    ("KL only", None), ("Surrogate only", None), ("DFT (reflection data)", None)])
def test_lookup_maps_spellings(label, name):
    found = lookup(label)
    assert (found.name if found else None) == name


def test_unknown_regime_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown regime 'ppo'.*grpo"):
        regime("ppo")


def test_the_packages_read_the_table():
    from analysis import charts, fit, observed
    from sim import grid as sim_grid

    assert observed.REGIMES == tuple(r.paper_row for r in REGIME_TABLE)
    assert fit.TRAINED_REGIMES == tuple(r.paper_row for r in TRAINED)
    assert charts.REGIME_COLOURS == {k: r.colour for r in REGIME_TABLE
                                     for k in (r.paper_row, r.label)}
    for r in TRAINED:
        assert sim_grid.NAMED_OBJECTIVES[r.sweep_objective] == (r.label, r.objective, r.sft_data)
        assert sim_grid.regime_label(r.sweep_objective) == r.label
        assert observed.canonical_regime(r.sweep_objective) == r.paper_row
    tr, grid = sim_grid.TrainingConfig(), sim_grid.GridConfig()
    assert (tr.kl_estimator, tr.kl_placement, grid.betas) == ("k3", "in-loss", (0.001,))
    assert (PAPER_RL_KL.estimator, PAPER_RL_KL.placement) == (tr.kl_estimator, tr.kl_placement)


def test_fit_objectives_are_the_papers_runs():
    """analysis.fit.regime_objective: RL is the paper's RL run (k3 in the loss, DESIGN §5), SFT
    the two data sets of DESIGN §2. No-reflection data carries the fit's
    ft_share too, which it never reads (DESIGN §2: one correct attempt, STOP)."""
    from analysis.fit import FitConfig, FitError, regime_objective
    from sim.objectives import ObjectiveConfig, SFTData

    cfg = FitConfig(ft_share=0.3)
    assert regime_objective("SFT (no reflection)", cfg, 0.01) == ObjectiveConfig(
        weights=(("sft", 1.0),), sft_data=SFTData("no-reflection", ft_share=0.3))
    assert regime_objective("SFT (reflection)", cfg, 0.01) == ObjectiveConfig(
        weights=(("sft", 1.0),), sft_data=SFTData("reflection", ft_share=0.3))
    assert regime_objective("RL", cfg, 0.01) == ObjectiveConfig.parse(
        "surrogate+kl", beta=0.01, kl_estimator="k3", kl_placement="in-loss")
    for bad in ("Base", "grpo", "KL only"):
        with pytest.raises(FitError):
            regime_objective(bad, cfg, 0.01)
