"""Assemble the study's report (DESIGN §6): one self-contained HTML page plus a PNG per chart.

The report is a list of sections (SECTIONS below: the Findings first, then one per chart),
each a function of the loaded inputs (analysis.report_inputs) that returns its chart and
caption; the page and PNGs come from analysis.page. The output folder gets a run record
(core.records, kind "report": config = the ReportConfig, inputs = every path read).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from analysis.observed import REGIMES
from analysis.page import PAGE_PACKAGES, Section, write_page, write_pngs
from analysis.report_inputs import (
    ReportConfig,
    ReportError,
    ReportInputs,
    load_inputs,
    load_or_fit,
)
from analysis.sections import attribution, calibration, compare, dynamics, echo, fit, ood
from analysis.sections_findings import findings, phase
from core.records import finish_record, manifest_path, record_outcome, start_record
from core.regimes import display_label

__all__ = ["ReportConfig", "ReportError", "build_sections", "load_or_fit", "write_report"]

TITLE = "Decision-Sampling study: report"
# in page order; a section with nothing to show (phase, compare without their data) is left out
SECTIONS: tuple[Callable[[ReportInputs], Section | None], ...] = (
    findings, attribution, phase, dynamics, calibration, ood, fit, echo, compare)


def build_sections(inputs: ReportInputs) -> list[Section]:
    """Every section of the report that has something to show, in page order."""
    return [s for make in SECTIONS if (s := make(inputs)) is not None]


def write_report(cfg: ReportConfig, log: Callable[[str], None] = print) -> dict[str, Path]:
    """Load the inputs, build every section and write index.html, one PNG per chart and the
    run record into cfg.out_dir."""
    t0 = time.time()
    inputs = load_inputs(cfg, log)  # a new fit is cached under <out>/fit/ with its own record
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    start_record(cfg.out_dir, "report", cfg.as_record(), inputs.paths(),
                 packages=PAGE_PACKAGES)
    try:
        sections = build_sections(inputs)
        meta = (f"Generated {time.strftime('%Y-%m-%d %H:%M')} by `python cli.py report`; "
                "regimes keep one colour across charts "
                f"({', '.join(map(display_label, REGIMES))}). Inputs: "
                + "; ".join(dict.fromkeys(i for s in sections for i in s.inputs)))
        out = {"index.html": write_page(sections, cfg.out_dir / "index.html", TITLE, meta)}
        if cfg.png:
            out |= {p.name: p for p in write_pngs(sections, cfg.out_dir, cfg.png_scale)}
    except BaseException as exc:
        record_outcome(cfg.out_dir, exc, wall_time_s=time.time() - t0)
        raise
    finish_record(cfg.out_dir, wall_time_s=time.time() - t0,
                  sections=[s.slug for s in sections])
    out["manifest.json"] = manifest_path(cfg.out_dir)
    n_charts = sum(s.chart is not None for s in sections)
    log(f"report: {out['index.html']} ({len(sections)} sections, {n_charts} charts, "
        f"{time.time() - t0:.1f} s)")
    return out
