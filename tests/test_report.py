"""The report command (analysis.report, DESIGN §6) and compare (analysis.compare, DESIGN §4-§5),
on synthetic inputs carrying run records (test_report_fixtures)."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from test_report_fixtures import write_real, write_sweep, write_train

from analysis.report import ReportConfig
from analysis.runs import SweepRun, newest_run
from analysis.sections import sweep_accuracy
from core.records import read_record

CHARTS = ("attribution", "dynamics", "calibration", "ood", "fit", "echo", "compare")
SECTIONS = ("findings", *CHARTS)  # the Findings are text, first


@pytest.fixture(scope="session")
def built_report(tmp_path_factory) -> Path:
    """One quick report over synthetic sweep / train / real outputs (built once)."""
    from cli import main

    root = tmp_path_factory.mktemp("outputs")
    write_sweep(root)
    write_train(root)
    write_real(root)
    out = root / "report"
    res = CliRunner().invoke(main, ["report", "--quick", "--outputs", str(root), "--out",
                                    str(out)])
    assert res.exit_code == 0, res.output
    return out


def test_page_is_self_contained_with_every_section(built_report):
    page = (built_report / "index.html").read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]+src\s*=", page)  # nothing fetched: works offline
    assert not re.search(r"<link[^>]+href\s*=\s*['\"]https?:", page)
    assert "window.vegaEmbed" in page
    for slug in CHARTS:
        assert f"id='chart-{slug}'" in page
    assert "id='findings'" in page and "id='chart-findings'" not in page
    assert page.index("id='findings'") < page.index("id='attribution'")
    assert page.count("class='caption'") == len(SECTIONS)
    assert "ell" in page and "q1 = 0.9" in page  # captions state parameters and assumptions
    assert "sweeps/demo" in page and "train/demo" in page  # newest outputs were used


def _caption(page: str, slug: str) -> str:
    section = page[page.index(f"<section id='{slug}'>"):]
    return html.unescape(section[:section.index("</section>")])


def test_dynamics_caption_reads_the_train_manifest(built_report):
    """`train` writes its settings under "config": the caption states them and the weights,
    and says the gradients are Monte-Carlo estimates (exact only for the built-in run)."""
    text = _caption((built_report / "index.html").read_text(encoding="utf-8"), "dynamics")
    assert "objective = surrogate+kl" in text and "kl_estimator = k1" in text
    assert "kl × 0.01" in text and "unweighted" not in text
    assert "Monte-Carlo" in text and "exact expectations" not in text


def test_attribution_caption_states_the_sweeps_kl(built_report):
    text = _caption((built_report / "index.html").read_text(encoding="utf-8"), "attribution")
    assert "KL in-loss, k3 estimator (the sweep's manifest)" in text


def test_sweep_settings_come_from_its_grid(tmp_path):
    sweep = SweepRun.load(write_sweep(tmp_path))
    assert sweep.id_tasks == ["T1"] and sweep.task_names == ["T1", "T2", "T3"]
    assert sweep.kl_text() == "KL in-loss, k3 estimator (the sweep's manifest)"
    assert "[1.0, 3.0, 3.0]" in sweep.ell_text()


def _record(folder: Path, kind: str) -> dict:
    """The folder's run record (core.records), strict JSON, of `kind`, finished."""
    import json

    def refuse(name: str) -> None:
        raise ValueError(f"non-standard JSON constant {name}")

    json.loads((folder / "manifest.json").read_text(encoding="utf-8"), parse_constant=refuse)
    rec = read_record(folder)
    assert rec["kind"] == kind and rec["status"] == "done" and rec["error"] is None
    assert rec["packages"]["python"] and rec["wall_time_s"] >= 0
    return rec


def test_report_writes_a_record(built_report):
    rec = _record(built_report, "report")
    assert rec["config"]["quick"] is True and rec["config"]["out_dir"] == str(built_report)
    assert rec["inputs"]["sweep"].endswith("sweeps/demo")
    assert rec["inputs"]["train"].endswith("train/demo")
    assert rec["inputs"]["real"].endswith("real")
    assert rec["inputs"]["observed"].endswith("paper_table1.csv")
    assert rec["inputs"]["fit"].endswith("fit.json")
    assert rec["results"]["sections"] == list(SECTIONS)
    fit_dir = Path(rec["inputs"]["fit"]).parent  # the report's cached fit has one too
    assert _record(fit_dir, "fit")["inputs"]["observed"] == rec["inputs"]["observed"]


def test_png_per_chart(built_report):
    assert not (built_report / "findings.png").exists()
    for slug in CHARTS:
        data = (built_report / f"{slug}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_newest_run_and_missing_inputs(tmp_path):
    assert newest_run(tmp_path / "sweeps", "results.parquet") is None
    write_sweep(tmp_path, "a")
    b = write_sweep(tmp_path, "b")
    assert newest_run(tmp_path / "sweeps", "results.parquet") == b
    with pytest.raises(ValueError, match="--sweep"):
        ReportConfig(sweep=tmp_path / "nope")


def test_report_error_is_one_line(tmp_path):
    from cli import main

    res = CliRunner().invoke(main, ["report", "--observed", str(tmp_path / "x.csv")])
    # CliRunner catches any exception (exit code 1 either way): a ClickException exits via
    # SystemExit and prints "Error: ...", a crash leaves the exception itself here
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.exception
    assert res.output.startswith("Error") and len(res.output.strip().splitlines()) == 1


def test_compare_command(tmp_path):
    from cli import main

    real = write_real(tmp_path)
    out = tmp_path / "cmp"
    res = CliRunner().invoke(main, ["compare", "--observed", str(real), "--quick", "--out",
                                    str(tmp_path), "--name", "cmp"])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out / "comparison.csv")
    assert set(table["regime"]) == {"Base", "RL"}
    assert {"p_hat", "p_sim", "q2_hat", "q2_sim", "accuracy_residual"} <= set(table.columns)
    assert table["p_sim"].notna().all()
    assert (out / "compare.html").is_file() and (out / "compare.png").is_file()
    assert "RMSE" in res.output
    rec = _record(out, "compare")
    assert rec["inputs"]["observed"] == str(real)
    assert rec["config"]["quick"] is True and len(rec["results"]["observed_sha256"]) == 64


def _two_optimiser_sweep(token_models: tuple[str, ...] = ("per-token",)) -> pd.DataFrame:
    rows = []
    for tm in token_models:
        for opt, acc in (("sgd", 0.2), ("adam", 0.9)):
            for agent in range(3):
                rows.append({"objective": "surrogate+kl", "regime": "GRPO", "optimiser": opt,
                             "beta": 0.001, "token_model": tm, "length": 100.0,
                             "agent": agent, "acc[T1]": acc, "acc[T2]": acc / 2})
    return pd.DataFrame(rows)


def test_sweep_accuracy_keeps_optimisers_apart():
    """SGD at 0.2 and Adam at 0.9 are two series of the RL colour, never one point at 0.55."""
    results = _two_optimiser_sweep()
    grid = {"ladder": {"names": ["T1", "T2"], "in_distribution": [True, False]}}
    acc = sweep_accuracy(results, SweepRun(Path("sweeps/x"), results, grid))
    t1 = acc[acc["task"] == "T1"].set_index("series")
    assert set(acc["regime"]) == {"RL"}  # canonical regime: the colour
    assert t1.loc["GRPO · sgd", "accuracy"] == pytest.approx(0.2)
    assert t1.loc["GRPO · adam", "accuracy"] == pytest.approx(0.9)
    assert (acc["n"] == 3).all() and len(acc) == 4
    two_tm = sweep_accuracy(_two_optimiser_sweep(("per-token", "sequence")))
    assert two_tm["series"].nunique() == 4 and (two_tm["n"] == 3).all()
    assert "GRPO · adam · sequence" in set(two_tm["series"])


def test_simulated_calibration_is_sim_simulate():
    """The report's simulated calibration is sim.simulate's sampler + core.calibration."""
    from analysis.builtin import CalibrationSample, simulated_calibration
    from sim.simulate import simulate_and_calibrate

    curves = pd.DataFrame({"regime": ["Base"], "task": ["T1"], "task_index": [1],
                           "in_distribution": [True], "p": [0.6], "q1": [0.8], "q2": [0.3]})
    row = simulated_calibration(curves, 8, CalibrationSample(n=200, n_boot=10)).iloc[0]
    want = simulate_and_calibrate(0.6, 0.8, 0.3, 8, 200, seed=0, n_boot=10)
    for key, est in want.items():
        assert row[key] == pytest.approx(est.estimate, nan_ok=True)
        assert row[f"{key}_ci_low"] == pytest.approx(est.ci_low, nan_ok=True)


@pytest.mark.parametrize("case", ["not-a-fit", "directory", "not-implemented"])
def test_report_errors_are_click_errors(tmp_path, monkeypatch, case):
    """A bad --fit (KeyError inside -> ReportError), an OSError and a NotImplementedError all
    end as one 'Error: ...' line, never a traceback."""
    from cli import main

    fit = tmp_path / "fit.json"
    if case == "not-a-fit":
        fit.write_text("{}", encoding="utf-8")
    elif case == "directory":
        fit.mkdir()
    else:
        fit.write_text("{}", encoding="utf-8")

        def not_implemented(*a, **k):
            raise NotImplementedError("no such chart yet")

        monkeypatch.setattr("analysis.report.write_report", not_implemented)
    res = CliRunner().invoke(main, ["report", "--fit", str(fit), "--no-png", "--outputs",
                                    str(tmp_path), "--out", str(tmp_path / "r")])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.exception
    assert res.output.startswith("Error") and len(res.output.strip().splitlines()) == 1


# ------------------------------------------------------------------ findings and new panels


def test_findings_state_numbers_from_the_data(built_report):
    """The Findings come first and are written from the inputs: the sweep's OOD winner (the
    fixture's accuracies), the degenerate objective kept as a row, the fit's RMSE."""
    page = (built_report / "index.html").read_text(encoding="utf-8")
    text = _caption(page, "findings")
    assert "sweeps/demo" in text and "Attribution ratio R from L = 10 to 1000" in text
    assert "GRPO · per-token" in text  # the sweep's "RL" rows under their display label
    assert "Observed (paper Table 1), mean OOD accuracy: GRPO" in text  # labels, not "RL"
    assert "RMSE" in text and "pp over the trained regimes" in text
    assert "Real-model runs, mean OOD accuracy: base-smol" in text


def test_findings_follow_the_numbers(tmp_path):
    """The same sweep with the OOD accuracies of two regimes swapped names the other one."""
    from analysis.report_inputs import load_inputs
    from analysis.sections_findings import findings

    run = write_sweep(tmp_path)
    df = pd.read_parquet(run / "results.parquet")
    cfg = ReportConfig(out_dir=tmp_path / "r", outputs=tmp_path, quick=True, png=False)
    inputs = load_inputs(cfg, log=lambda _: None)
    texts = []
    for winner in ("SFT (reflection)", "RL"):
        d = df.copy()
        d["ood_accuracy"] = [0.5 if (r, tm) == (winner, "sequence") else 0.1
                             for r, tm in zip(d["regime"], d["token_model"], strict=True)]
        sweep = type(inputs.sweep)(inputs.sweep.path, d, inputs.sweep.grid)
        texts.append(" ".join(findings(inputs.__class__(**{**inputs.__dict__,
                                                            "sweep": sweep})).points))
    assert "SFT (reflection) · sequence generalises best" in texts[0]
    assert "GRPO · sequence generalises best" in texts[1]


def test_degenerate_objective_is_marked_not_dropped(tmp_path):
    from analysis import charts_sim

    run = write_sweep(tmp_path)
    df = pd.read_parquet(run / "results.parquet")
    df.loc[df["objective"] == "kl", "ratio"] = float("nan")
    spec = json.dumps(charts_sim.attribution_landscape(df).to_dict())
    assert "KL only: ratio undefined (0/0: never leaves" in spec
    assert '"R = 1"' in spec  # the reference line
    assert '"bind": "legend"' in spec


def test_fit_subtitle_reads_params_csv_when_it_says_what_is_identified(tmp_path):
    from analysis.fit import FitConfig, fit_observed
    from analysis.fit_io import fit_to_json
    from analysis.observed import load_paper_table1
    from analysis.report_inputs import fit_quality

    fit = fit_observed(load_paper_table1(), FitConfig(quick=True))
    folder = tmp_path / "fit"
    folder.mkdir()
    (folder / "fit.json").write_text(json.dumps(fit_to_json(fit), default=str))
    q = fit_quality(fit, folder / "fit.json")  # no params.csv: from the fit's own table
    assert q.source.name == "fit.json"
    free = [n for n, f in zip(fit.params["name"], fit.params["free"], strict=True) if f]
    pd.DataFrame({"name": free, "value": 1.0, "se": 0.1, "ci_low": 0.0, "ci_high": 2.0,
                  "identified": [i == 0 for i in range(len(free))]}).to_csv(
        folder / "params.csv", index=False)
    q = fit_quality(fit, folder / "fit.json")
    assert q.source.name == "params.csv"
    assert q.identified == (free[0],) and q.not_identified == tuple(free[1:])
    assert f"identified: {free[0]}; not identified: {free[1]}" in q.lines()[1]


def test_phase_panel_only_with_results(tmp_path, built_report):
    from cli import main

    page = (built_report / "index.html").read_text(encoding="utf-8")
    assert "id='phase'" not in page
    rows = [{"optimiser": o, "second_moment": "shared", "max_grad_norm": c, "coupling": "none",
             "L": L, "regime": "GRPO", "median_ratio": r, "median_q2[T1]": 0.5}
            for o in ("sgd", "adam") for c in (0.0, 1.0) for L, r in ((10, 0.5), (100, 3.0))]
    rows[0]["median_ratio"] = float("nan")
    pd.DataFrame(rows).to_csv(tmp_path / "phase.csv", index=False)
    out = tmp_path / "rep"
    res = CliRunner().invoke(main, ["report", "--quick", "--no-png", "--outputs",
                                    str(built_report.parent), "--out", str(out),
                                    "--phase-diagram", str(tmp_path / "phase.csv")])
    assert res.exit_code == 0, res.output
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "id='chart-phase'" in page
    assert "R > 1 in 4 of 7" in _caption(page, "findings")
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"x": [1]}).to_csv(bad, index=False)
    res = CliRunner().invoke(main, ["report", "--quick", "--no-png", "--outputs",
                                    str(built_report.parent), "--out", str(tmp_path / "r2"),
                                    "--phase-diagram", str(bad)])
    assert res.exit_code != 0 and "expected columns regime" in res.output


def test_charts_have_legible_fonts_and_the_export_menu(built_report):
    page = (built_report / "index.html").read_text(encoding="utf-8")
    assert '"labelFontSize": 13' in page and '"titleFontSize": 13' in page
    assert '"export": true' in page


def test_phase_csv_in_the_wide_layout_is_read_per_regime(tmp_path):
    from analysis.report_inputs import read_phase_csv

    pd.DataFrame({"optimiser": ["adam", "sgd"], "length": [10, 10], "q2_grpo": [0.1, 0.2],
                  "q2_sft_refl": [0.7, 0.8], "ood_sft_norefl": [0.05, 0.06]}).to_csv(
        tmp_path / "p.csv", index=False)
    df = read_phase_csv(tmp_path / "p.csv")
    grpo = df[df["regime"] == "GRPO"].set_index("optimiser")
    assert grpo.loc["sgd", "q2[T1]"] == 0.2
    assert set(df["regime"]) == {"GRPO", "SFT (reflection)", "SFT (no reflection)"}
    assert df.loc[df["regime"] == "SFT (no reflection)", "ood_accuracy"].tolist() == [0.05, 0.06]


@pytest.fixture(scope="module")
def quick_inputs(tmp_path_factory):
    """The report's loaded inputs over the synthetic sweep (quick fit), for section tests."""
    from analysis.report_inputs import load_inputs

    root = tmp_path_factory.mktemp("inputs")
    write_sweep(root)
    cfg = ReportConfig(out_dir=root / "r", outputs=root, quick=True, png=False)
    return load_inputs(cfg, log=lambda _: None)


def test_ood_overlays_only_the_papers_regimes_with_both_curves(quick_inputs):
    """The OOD overlay has a panel per trained regime of the paper with a simulated and an
    observed curve (the sweep has GRPO and SFT (reflection); Table 1 has all three), wrapped
    in columns; the sweep's ablation (KL only) is a panel of its own, SFT (no reflection)
    (observed only) is named in the caption."""
    from analysis.sections import PAPER_LABELS, ood

    sec = ood(quick_inputs)
    spec = sec.chart.to_dict()
    overlay, ablations = spec["vconcat"]
    swept = {"GRPO", "SFT (reflection)"}  # the fixture sweep's paper regimes ("RL", "SFT ...")
    assert [p["title"] for p in overlay["concat"]] == [r for r in PAPER_LABELS if r in swept]
    assert overlay["columns"] == 3
    assert "KL only" not in json.dumps(overlay) and "KL only" in json.dumps(ablations)
    assert "Not overlaid, as they lack a simulated or an observed curve: SFT (no reflection)" \
        in sec.caption


def test_fit_caption_reads_the_fit_config(quick_inputs):
    """The caption states the base-offset mode, beta and the KL's estimator and placement of
    the FitConfig the fit ran with: a different config gives a different caption."""
    from dataclasses import replace

    from analysis.fit import FitConfig, regime_objective
    from analysis.observed import RL
    from analysis.sections import fit

    cfg = FitConfig(**quick_inputs.fit.config)
    rl = regime_objective(RL, cfg, cfg.beta)
    text = fit(quick_inputs).caption
    assert cfg.base == "floored" and "logaddexp(slope·(d_half − d(t)), logit(floor))" in text
    assert f"beta {cfg.beta:g}, {rl.kl_estimator} estimator {rl.kl_placement.replace('-', ' ')}" \
        in text
    other = {**quick_inputs.fit.config, "base": "exact", "beta": 0.25}
    changed = replace(quick_inputs, fit=replace(quick_inputs.fit, config=other))
    text = fit(changed).caption
    assert "solved one per task from the Base row" in text and "slope·" not in text
    assert "beta 0.25," in text
    linear = {**quick_inputs.fit.config, "base": "linear"}
    text = fit(replace(quick_inputs, fit=replace(quick_inputs.fit, config=linear))).caption
    assert "b_s(t) = slope·(d_half − d(t))" in text and "logaddexp" not in text


def test_findings_table_formats_ratios_as_the_headline(quick_inputs):
    """A median ratio of 1420 reads "1,420" in the Findings (as `cli.py sweep` prints it),
    not "1.42e+03"."""
    from analysis.sections_findings import _sweep_points
    from sim.headline import format_number

    df = quick_inputs.sweep.results.assign(ratio=1420.0)
    points, table = _sweep_points(df, "sweep")
    assert set(table["median R"]) - {"undefined"} == {format_number(1420.0)} == {"1,420"}
    assert "1.42e+03" not in " ".join(points)
