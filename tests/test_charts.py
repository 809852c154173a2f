"""Chart builders (analysis.charts, charts_sim, charts_accuracy) and observed-data loaders
(analysis.observed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import charts, charts_accuracy, charts_sim, observed
from analysis.observed import (
    BASE,
    REGIMES,
    RL,
    SFT_NO_REFLECTION,
    SFT_REFLECTION,
    ObservedDataError,
    canonical_regime,
    load_kang2025,
    load_paper_table1,
    reference_dir,
)


def _nodes(node):
    """Every dict inside a Vega-Lite spec, depth first."""
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _nodes(v)
    elif isinstance(node, list):
        for v in node:
            yield from _nodes(v)


def _add_scale(found: dict[str, str], sc: dict) -> None:
    for d, r in zip(sc["domain"], sc["range"], strict=True):
        assert found.setdefault(d, r) == r, f"two colours for {d}"


def _colour_map(spec: dict) -> dict[str, str]:
    """Every (domain value -> colour) assignment of a regime colour scale in a spec."""
    found: dict[str, str] = {}
    for node in _nodes(spec):
        sc = node.get("scale")
        if node.get("field") == "regime" and isinstance(sc, dict) and "range" in sc:
            _add_scale(found, sc)
    return found


@pytest.mark.parametrize("label,expected", [
    ("Base", BASE), ("base-smol", BASE), ("SFT (no reflection)", SFT_NO_REFLECTION),
    ("sft-no-reflection", SFT_NO_REFLECTION), ("SFT-reflection", SFT_REFLECTION),
    ("sft", SFT_REFLECTION), ("GRPO", RL), ("grpo-smol", RL), ("RL", RL),
    ("surrogate+kl", RL), ("KL only", "KL only")])
def test_canonical_regime(label, expected):
    assert canonical_regime(label) == expected


def test_paper_table1_is_tidy_fractions():
    t = load_paper_table1()
    assert set(t["regime"]) == set(REGIMES) and len(t) == 28
    assert t["accuracy"].between(0, 1).all()
    rl = t[(t["regime"] == RL) & (t["task"] == "T7")].iloc[0]
    assert rl["accuracy"] == pytest.approx(0.34) and rl["ci_high"] == pytest.approx(0.433)
    assert list(t[t["in_distribution"]]["task"].unique()) == ["T1", "T2"]
    assert len(load_kang2025()) == 6


def test_reference_dir_is_package_data_unless_overridden(monkeypatch, tmp_path):
    """DESIGN §6: the tables ship in analysis/data/; $DS_STUDY_REFERENCE overrides them."""
    monkeypatch.delenv("DS_STUDY_REFERENCE", raising=False)
    default = reference_dir()
    assert default == Path(observed.__file__).resolve().parent / "data"
    for name in ("paper_table1.csv", "appendix_c.csv", "appendix_c_net.csv", "kang2025_p_FT.csv"):
        assert (default / name).is_file(), name
    (tmp_path / "paper_table1.csv").write_text((default / "paper_table1.csv").read_text())
    monkeypatch.setenv("DS_STUDY_REFERENCE", str(tmp_path))
    assert reference_dir() == tmp_path


def test_reference_dir_error_is_clear(monkeypatch, tmp_path):
    monkeypatch.setenv("DS_STUDY_REFERENCE", str(tmp_path / "nowhere"))
    with pytest.raises(ObservedDataError, match="DS_STUDY_REFERENCE") as err:
        reference_dir()
    assert "\n" not in str(err.value) and "nowhere" in str(err.value)
    monkeypatch.delenv("DS_STUDY_REFERENCE")
    monkeypatch.setattr(observed, "REFERENCE_DATA", tmp_path / "missing")
    with pytest.raises(ObservedDataError, match="DS_STUDY_REFERENCE") as err:
        reference_dir()
    assert "\n" not in str(err.value)


def test_regime_colours_are_fixed_across_charts():
    t = load_paper_table1()
    ood = charts_accuracy.ood_curves(t[t["regime"].isin([RL, BASE])]).to_dict()
    curves = t.rename(columns={"accuracy": "observed"}).assign(
        accuracy=lambda d: d["observed"] * 0.9, residual=lambda d: d["observed"] * 0.1)
    fitc = charts_accuracy.fit_overlay(curves).to_dict()
    a, b = _colour_map(ood), _colour_map(fitc)
    assert a[RL] == b[RL] == charts.REGIME_COLOURS[RL]
    assert a[BASE] == b[BASE] == charts.REGIME_COLOURS[BASE]
    assert set(a) == {RL, BASE}  # the legend lists only the regimes shown
    extra = charts.regime_scale(charts.regime_domain(["my run", "other"]))
    assert extra.range[:4] == [charts.REGIME_COLOURS[r] for r in REGIMES]
    assert len(set(extra.range)) == 6


def test_every_builder_produces_a_valid_spec(tmp_path):
    from test_report_fixtures import write_sweep, write_train

    sweep = pd.read_parquet(write_sweep(tmp_path) / "results.parquet")
    hist = pd.read_parquet(write_train(tmp_path) / "history.parquet")
    cal = pd.DataFrame({"regime": [BASE, RL], "task": ["T1", "T1"], "task_index": [1, 1],
                        "source": ["sim", "sim"]})
    for s in ("p_hat", "q1_hat", "q2_hat", "predicted_accuracy", "observed_accuracy"):
        cal[s], cal[s + "_ci_low"], cal[s + "_ci_high"] = 0.5, 0.4, 0.6
    curves = pd.DataFrame({"regime": [BASE, RL], "task": ["T1", "T1"], "task_index": [1, 1],
                           "p": [0.5, 0.6], "q1": 0.9, "q2": 0.2})
    echo = pd.DataFrame({"regime": [SFT_REFLECTION] * 2, "ft_ratio_pct": [0, 100],
                         "p_ft": [0.5, 0.4]})
    built = [charts_sim.attribution_landscape(sweep, ["T1"]),
             charts_sim.training_dynamics(hist, {"surrogate": 1.0, "kl": 0.01}),
             charts_accuracy.calibration_chart(cal),
             charts_accuracy.echo_chart(echo, load_kang2025()),
             charts_accuracy.compare_chart(cal, curves), charts.message_chart("nothing here")]
    for chart in built:
        spec = chart.to_dict()  # validates against the Vega-Lite schema
        assert spec["$schema"].startswith("https://vega.github.io/schema/vega-lite/v6")
    text = str(built[0].to_dict())
    assert "'type': 'log'" in text and "token model: per-token" in text
    dyn = str(built[1].to_dict())
    assert "0.01 × kl" in dyn and "strokeDash" in dyn  # weighted KL; reset rules drawn


def test_training_dynamics_bands_over_agents():
    from test_report_fixtures import write_train  # noqa: F401  (fixture module importable)

    h = pd.DataFrame({"step": [0, 0, 1, 1], "agent": [0, 1, 0, 1], "w_s": [0.0, 1.0, 1.0, 3.0],
                      "g_s[surrogate]": 1.0, "g_1[surrogate]": 1.0, "g_2[surrogate]": 1.0,
                      "g_s[total]": 1.0, "g_1[total]": 1.0, "g_2[total]": 1.0,
                      "ratio[surrogate]": 1.0, "ratio[total]": [1.0, np.inf, 2.0, 2.0]})
    spec = charts_sim.training_dynamics(h).to_dict()
    assert spec["vconcat"]
    band = charts_sim.agent_band(h.melt(id_vars=["step", "agent"], value_vars=["w_s"],
                                     var_name="parameter"), ["step", "parameter"])
    assert band["value"].tolist() == [0.5, 2.0] and band["hi"].iloc[1] > band["lo"].iloc[1]


def test_series_labels_keep_optimisers_and_betas_apart() -> None:
    import pandas as pd

    from analysis.charts import series_labels

    df = pd.DataFrame({"objective": ["surrogate"] * 4, "optimiser": ["sgd", "adam"] * 2,
                       "beta": [0.001, 0.001, 0.01, 0.01]})
    assert series_labels(df).nunique() == 4
    assert series_labels(df.assign(optimiser="sgd", beta=0.001)).tolist() == ["surrogate"] * 4


def test_ood_curves_draw_each_series_of_a_regime() -> None:
    """Two sweep configurations of one regime: one colour, two lines (dash) and point columns."""
    acc = pd.DataFrame({"regime": [RL] * 4, "series": ["surrogate · sgd"] * 2
                        + ["surrogate · adam"] * 2, "task": ["T1", "T2"] * 2,
                        "task_index": [1, 2] * 2, "in_distribution": [True, False] * 2,
                        "accuracy": [0.2, 0.1, 0.9, 0.5], "ci_low": 0.0, "ci_high": 1.0,
                        "source": "simulated (sweep)"})
    obs = load_paper_table1()
    spec = charts_accuracy.ood_curves(pd.concat([acc, obs[obs["regime"] == RL]])).to_dict()
    text = str(spec)
    assert "'detail': {'field': 'series'" in text and "strokeDash" in text
    assert _colour_map(spec) == {RL: charts.REGIME_COLOURS[RL]}


def _scale_of(spec: dict, field: str, channel: str = "color") -> dict[str, str]:
    """domain -> range of every `channel` encoding of `field` that carries an explicit range."""
    found: dict[str, str] = {}
    for node in _nodes(spec):
        enc = node.get("encoding", {})
        ch = enc.get(channel) if isinstance(enc, dict) else None
        if isinstance(ch, dict) and ch.get("field") == field:
            sc = ch.get("scale", {})
            assert "range" in sc, f"{channel} of {field} without the regime colours: {sc}"
            _add_scale(found, sc)
    return found


def test_attribution_colours_are_the_regime_tables(tmp_path):
    """The attribution landscape colours each objective as every other chart does: a paper
    regime in its core.regimes colour (not a scheme's), an ablation in the colour the OOD
    ablation panel gives it over the same domain."""
    from test_report_fixtures import write_sweep

    sweep = pd.read_parquet(write_sweep(tmp_path) / "results.parquet")
    domain = ["Base", "SFT (no reflection)", "SFT (reflection)", "GRPO", "KL only"]
    colours = _scale_of(charts_sim.attribution_landscape(sweep, domain=domain).to_dict(),
                        "series")
    for label in ("GRPO", "SFT (reflection)"):
        assert colours[label] == charts.REGIME_COLOURS[label]
    acc = pd.DataFrame({"regime": ["KL only"] * 2, "task": ["T1", "T2"], "task_index": [1, 2],
                        "in_distribution": [True, False], "accuracy": [0.5, 0.2],
                        "ci_low": 0.1, "ci_high": 0.6, "source": "simulated (sweep)"})
    panel = _scale_of(charts_accuracy.accuracy_panel(acc, "ablations", domain).to_dict(),
                      "regime")
    assert colours["KL only"] == panel["KL only"] not in charts.REGIME_COLOURS.values()


def test_series_of_one_regime_share_its_colour():
    """Configurations of one regime (optimisers, betas) keep the regime's colour."""
    scale = charts.series_scale(["KL only", "GRPO · adam", "GRPO · sgd"])
    mapping = dict(zip(scale.domain, scale.range, strict=True))
    assert mapping["GRPO · adam"] == mapping["GRPO · sgd"] == charts.REGIME_COLOURS["GRPO"]
    assert list(scale.domain)[-1] == "KL only"  # the paper's regimes first


def test_ood_overlay_wraps_its_panels_and_shows_the_regimes_asked_for():
    """Panels in the order asked for, wrapped after `columns` (the page is ~1,200 px wide);
    regimes not asked for (ablations) are left out."""
    t = load_paper_table1()
    sim = t.assign(source="simulated (sweep)", accuracy=t["accuracy"] * 0.9)
    ablation = sim[sim["regime"] == RL].assign(regime="KL only")
    acc = charts.labelled(pd.concat([t, sim, ablation], ignore_index=True))
    wanted = ["GRPO", "SFT (reflection)", "SFT (no reflection)"]
    spec = charts_accuracy.ood_overlay(acc, regimes=wanted, columns=2).to_dict()
    assert spec["columns"] == 2
    assert [p["title"] for p in spec["concat"]] == wanted
    assert "KL only" not in str(spec)


def test_phase_diagram_row_labels_have_room():
    """The update-budget row labels are short (a coupling matrix of equal off-diagonals is
    named by that value) and the axis gives them more than Vega's default 180 px."""
    table = pd.DataFrame({
        "regime": ["GRPO"] * 3, "length": [10] * 3, "optimiser": ["adam", "adam", "sgd"],
        "coupling": ["1 -0.25 -0.25; -0.25 1 -0.25; -0.25 -0.25 1", "none",
                     "1 0.5 0; 0 1 0; 0 0 1"], "ratio": [0.5, 2.0, 1.0]})
    labels = charts_sim.budget_label(table).tolist()
    assert labels[:2] == ["adam · M off-diag -0.25", "adam · M none"]
    assert labels[2] == "sgd · M 1 0.5 0; 0 1 0; 0 0 1"  # unequal off-diagonals: as given
    text = str(charts_sim.phase_diagram(table).to_dict())
    limit = charts_sim.ROW_LABEL_LIMIT
    assert f"'labelLimit': {limit}" in text and limit >= 7 * max(map(len, labels))


def test_cited_models_use_no_regime_or_ablation_colour():
    """The echo chart's cited models (Kang et al.) are greys, not colours that name a regime
    or a sweep's ablation elsewhere in the report."""
    spec = str(charts_accuracy.echo_chart(
        pd.DataFrame({"regime": [SFT_REFLECTION] * 2, "ft_ratio_pct": [0, 100],
                      "p_ft": [0.5, 0.4]}), load_kang2025()).to_dict())
    for colour in charts_accuracy.CITED_COLOURS:
        assert colour in spec
    assert not set(charts_accuracy.CITED_COLOURS) & (set(charts.REGIME_COLOURS.values())
                                                     | set(charts.FALLBACK_COLOURS))
