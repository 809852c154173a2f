"""`cli.py compare` (DESIGN §4, §5): fit the simulator to a real run's observed accuracies
(Base row needed), then place the measured (p̂, q̂1, q̂2) per task and regime beside the
simulator's (p, q1, q2).

Writes comparison.csv, the fit's files (analysis.fit_io), compare.html, a PNG per chart and
the run record (core.records, kind "compare": config = the FitConfig, inputs = the run read).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from analysis import charts
from analysis.charts_accuracy import compare_chart, fit_overlay
from analysis.fit import FitConfig, FitResult, fit_observed
from analysis.fit_io import fit_results, params_text, save_fit
from analysis.observed import load_calibrations, load_observed
from analysis.page import PAGE_PACKAGES, Section, write_page, write_pngs
from core.records import finish_record, manifest_path, record_outcome, start_record


def compare_sections(run: Path, cal: pd.DataFrame, result: FitResult) -> list[Section]:
    domain = charts.regime_domain(cal["regime"])
    return [
        Section("compare", "Measured (p, q1, q2) vs the fitted simulator",
                compare_chart(cal, result.curves, domain),
                f"Real-model calibrations under {run} (points, bootstrap CIs, DESIGN §4) beside "
                "the simulator fitted to the same runs' observed accuracies (dashed). The base "
                f"q1, q2 are fixed ({result.config.get('q1_base')}, "
                f"{result.config.get('q2_base')}): accuracy alone does not identify them."),
        Section("fit", "Simulated vs observed OOD curves and residuals",
                fit_overlay(result.curves, domain),
                f"Fitted: {params_text(result)}. RMSE over the trained regimes "
                f"{result.rmse * 100:.1f} pp; {result.n_free} free parameters + "
                f"{result.n_params - result.n_free} base offsets for {result.n_obs} cells."),
    ]


def write_compare(run: Path, out_dir: Path, fit_cfg: FitConfig | None = None,
                  log: Callable[[str], None] = print) -> tuple[FitResult, pd.DataFrame,
                                                              list[Path]]:
    """Fit, compare and write (see the module docstring); returns (fit, table, paths)."""
    t0 = time.time()
    fit_cfg = fit_cfg or FitConfig()
    out_dir.mkdir(parents=True, exist_ok=True)
    start_record(out_dir, "compare", asdict(fit_cfg), {"observed": run},
                 packages=PAGE_PACKAGES)
    try:
        cal = load_calibrations(run)
        result = fit_observed(load_observed(run), fit_cfg)
        sim = result.curves.rename(columns={"p": "p_sim", "q1": "q1_sim", "q2": "q2_sim",
                                            "accuracy": "accuracy_sim"})
        table = cal.merge(sim[["regime", "task", "p_sim", "q1_sim", "q2_sim", "accuracy_sim"]],
                          on=["regime", "task"], how="left")
        table["accuracy_residual"] = table["observed_accuracy"] - table["accuracy_sim"]
        paths = save_fit(result, out_dir)
        table.to_csv(out_dir / "comparison.csv", index=False)
        paths.append(out_dir / "comparison.csv")
        sections = compare_sections(run, cal, result)
        meta = f"Generated {time.strftime('%Y-%m-%d %H:%M')} by `python cli.py compare`"
        paths.append(write_page(sections, out_dir / "compare.html", f"Compare: {run}", meta))
        paths += write_pngs(sections, out_dir)
    except BaseException as exc:
        record_outcome(out_dir, exc, wall_time_s=time.time() - t0)
        raise
    finish_record(out_dir, wall_time_s=time.time() - t0, **fit_results(result))
    paths.append(manifest_path(out_dir))
    log(f"compare: {out_dir / 'compare.html'}")
    return result, table, paths
