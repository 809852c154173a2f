"""The report's parts (DESIGN §6): one function per section, captions written from the
parameter objects the built-in runs use, the Figure 1 setting defined once (TrainConfig)."""

from __future__ import annotations

import html
import json
from dataclasses import replace
from pathlib import Path

import pytest

from analysis import builtin, sections
from analysis.builtin import FULL, QUICK, BuiltinSweep, CalibrationSample, EchoSFT
from analysis.page import render_html
from analysis.report import ReportConfig, build_sections
from analysis.report_inputs import ReportInputs, load_inputs
from sim.optim import OptimiserConfig
from sim.training_run import TrainConfig

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> ReportInputs:
    """The report's inputs with nothing under outputs/: every simulator section built-in."""
    root = tmp_path_factory.mktemp("bare")
    cfg = ReportConfig(out_dir=root / "report", outputs=root / "outputs", quick=True)
    return load_inputs(cfg, log=lambda _: None)


def _datasets(section) -> list[list[dict]]:
    return list(section.chart.to_dict().get("datasets", {}).values())


def test_no_analysis_module_is_over_450_lines():
    sizes = {p.name: len(p.read_text(encoding="utf-8").splitlines())
             for p in (REPO / "analysis").glob("*.py")}
    assert max(sizes.values()) <= 450, sizes


def test_the_sections_are_a_list_of_functions(inputs):
    from analysis.report import SECTIONS

    assert [f.__name__ for f in SECTIONS] == [
        "findings", "attribution", "phase", "dynamics", "calibration", "ood", "fit", "echo",
        "compare"]
    built = build_sections(inputs)  # no real-model runs or phase diagram: no such sections
    assert [s.slug for s in built] == ["findings", "attribution", "dynamics", "calibration",
                                       "ood", "fit", "echo"]
    assert all(s.caption and s.inputs for s in built)
    assert built[0].chart is None and built[0].points  # the Findings are text


def test_figure1_is_the_train_default_in_every_mode():
    """One definition of the paper's Figure 1 setting: sim.training_run.TrainConfig()."""
    assert FULL.figure1 == QUICK.figure1 == TrainConfig()
    assert QUICK.sweep.steps < FULL.sweep.steps and QUICK.echo.steps < FULL.echo.steps


def test_figure1_history_follows_the_train_job_conventions():
    """Same learner, steps and reference resets as `train` (the reset is marked on the update
    that used the fresh reference, as sim.population records it)."""
    from sim.training_run import run_training

    cfg = TrainConfig(steps=12, ref_update_every=5, n_agents=1)
    hist = builtin.figure1_history(cfg)
    _, sampled = run_training(cfg)
    assert hist["step"].tolist() == list(range(13))
    assert (hist.loc[hist["ref_reset"], "step"].tolist()
            == sorted(sampled.loc[sampled["ref_reset"].astype(bool), "step"].unique()))
    assert set(sampled.columns) >= set(hist.columns) - {"ref_reset"}


def test_dynamics_caption_states_the_run(inputs):
    cfg = TrainConfig(steps=7, lr=0.2, ref_update_every=3)
    sec = sections.dynamics(replace(inputs, runs=replace(inputs.runs, figure1=cfg)))
    assert "SGD lr 0.2, 7 steps" in sec.caption and "reset every 3 steps" in sec.caption
    assert "kl × 0.01" in sec.caption and "exact expectations" in sec.caption
    steps = {r["step"] for d in _datasets(sec) for r in d if "step" in r}
    assert max(steps) == 7


def test_builtin_attribution_chart_has_data_and_its_settings(inputs):
    """The ratio at the Appendix C point is the first update's gradient (row 0 of a history
    has none: the built-in chart used to come out empty)."""
    sweep = BuiltinSweep(lengths=(10, 100), steps=2, optimiser=OptimiserConfig(lr=0.03))
    sec = sections.attribution(replace(inputs, runs=replace(inputs.runs, sweep=sweep)))
    assert "after 2 SGD steps (lr 0.03)" in sec.caption and "beta = 0.001" in sec.caption
    assert "KL in reward, k1 estimator" in sec.caption
    ratios = [r["mean"] for d in _datasets(sec) for r in d if "mean" in r]
    assert len(ratios) == 2 * 3 * 2 and all(r > 0 for r in ratios)


def test_echo_and_calibration_captions_state_the_run(inputs):
    runs = replace(inputs.runs, echo=EchoSFT(length=50.0, steps=3,
                                             optimiser=OptimiserConfig(lr=0.004)),
                   calibration=CalibrationSample(n=30, n_boot=5))
    inp = replace(inputs, runs=runs)
    echo = sections.echo(inp)
    assert "3 SGD steps (lr 0.004) of token-weighted SFT (L = 50)" in echo.caption
    assert "q1 = 0.9, q2 = 0.1" in echo.caption  # the fit's base decisions
    assert "flat at 4–6%" in echo.caption  # the cited table's range
    cal = sections.calibration(inp)
    assert "30 sampled trajectories per task" in cal.caption
    assert all(r.get("n", 30) == 30 for d in _datasets(cal) for r in d)


def test_ood_caption_reads_the_observed_table(inputs):
    text = sections.observed_text(inputs.observed)
    assert "100 problems per task; T1, T2 in-distribution" in text
    other = inputs.observed.assign(n=50, in_distribution=inputs.observed["task"] == "T1")
    assert "50 problems per task; T1 in-distribution" in sections.observed_text(other)


def test_page_escapes_and_embeds_every_section(inputs):
    built = build_sections(inputs)[:3]  # findings (text), attribution, dynamics
    page = render_html(built, "t <x>", "m")
    specs = json.loads(page[page.index("const SPECS = ") + 14:page.index(";\n", page.index(
        "const SPECS = "))].replace("<\\/", "</"))
    assert list(specs) == ["attribution", "dynamics"] and "t &lt;x&gt;" in page
    assert html.escape(built[0].caption) in page


def test_the_fit_caption_states_the_fits_data_and_transfer_options():
    """A fit with masked wrong attempts, global decisions or the measured decomposition is
    described as run, not as the default (analysis.fit_config)."""
    from analysis.fit_config import FitConfig

    default = FitConfig()
    masked = FitConfig(mask_wrong_attempts=True, transfer="global-decisions")
    assert "wrong first attempts" not in sections.trained_text(default)
    assert "no loss on its wrong first attempts" in sections.trained_text(masked)
    assert "(shared length scales)" in sections.transfer_text(default)
    assert "each decision one logit shared by every task" in sections.transfer_text(masked)
    flat = sections.transfer_text(FitConfig(transfer="flat-decisions"))
    assert "kernel flat over every task" in flat and "one logit" not in flat


def test_a_decomposition_fit_says_it_fitted_the_measured_p_and_q(inputs):
    fit = replace(inputs.fit, config={**inputs.fit.config, "decomposition": True})
    text = sections.fit(replace(inputs, fit=fit)).caption
    assert "(accuracy and the measured p, q1, q2)" in text
    assert "measured p, q1, q2" not in sections.fit(inputs).caption
