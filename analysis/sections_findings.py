"""The report's Findings (first on the page) and its phase-diagram panel (DESIGN §2-§6).

Findings are sentences written from the loaded data, each with its numbers: the sweep's
headline (sim.headline: the same medians and sentence `cli.py sweep` prints), the degenerate
objectives, the paper's Table 1 OOD ordering beside the simulator's, the fit's RMSE and what
it identifies, the phase diagram and the real-model runs where they exist. Nothing here is a
literal number: a finding that has no data behind it is left out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import charts_sim
from analysis.builtin import builtin_sweep
from analysis.charts import labelled
from analysis.observed import BASE
from analysis.page import Section
from analysis.report_inputs import ReportInputs, fit_quality
from analysis.sections import sweep_accuracy
from core.regimes import display_label
from sim.columns import split_column
from sim.headline import (
    DEGENERATE_NOTE,
    cell_medians,
    format_number,
    headline_sentence,
    shown_lengths,
)


def _ood_means(acc: pd.DataFrame, value: str = "accuracy") -> pd.Series:
    """Mean accuracy over the OOD tasks per regime (display labels), best first."""
    ood = acc[~acc["in_distribution"].fillna(False).astype(bool)]
    means = ood.groupby(ood["regime"].map(display_label))[value].mean()
    return means.drop(labels=[display_label(BASE)], errors="ignore").sort_values(
        ascending=False)


def _ranking(means: pd.Series) -> str:
    return " > ".join(f"{r} ({v * 100:.1f}%)" for r, v in means.items())


def _sweep_points(results: pd.DataFrame, source: str) -> tuple[list[str], pd.DataFrame]:
    cells = cell_medians(labelled(results))
    points = [f"{source}: {headline_sentence(cells)}"]
    first, last = cells["length"].min(), cells["length"].max()
    grows = []
    for series, sub in cells.groupby("series", sort=False):
        a = sub.loc[sub["length"] == first, "ratio"]
        b = sub.loc[sub["length"] == last, "ratio"]
        if len(a) and len(b) and np.isfinite(a.iloc[0]) and np.isfinite(b.iloc[0]):
            grows.append((series, a.iloc[0], b.iloc[0]))
    if grows:
        above = [s for s, _, b in grows if b > 1]
        points.append(
            f"Attribution ratio R from L = {first:g} to {last:g}: "
            + "; ".join(f"{s} {format_number(a)} → {format_number(b)}" for s, a, b in grows)
            + f". At L = {last:g}, {len(above)} of {len(grows)} objectives have R > 1 "
            "(the sampling gradient outweighs the decision gradients).")
    dead = list(dict.fromkeys(cells.loc[cells["degenerate"], "series"]))
    if dead:
        points.append(f"Degenerate (shown, not dropped): {', '.join(dead)} — ratio "
                      f"{DEGENERATE_NOTE}: its gradients are all zero at π = π_ref.")
    unstable = cells[cells["unstable"] > 0]
    points.append(f"Unstable cells (a one-step move of p or q > 0.5, DESIGN §2): {len(unstable)} "
                  f"of {len(cells)}" + (f" ({', '.join(dict.fromkeys(unstable['series']))})"
                                        if len(unstable) else "") + ".")
    table = cells[cells["length"].isin(shown_lengths(cells["length"]))]
    table = pd.DataFrame({
        "configuration": table["series"], "L": table["length"].map("{:g}".format),
        "median R": np.where(table["degenerate"], "undefined",
                             table["ratio"].map(format_number)),
        "median R[kl]": table["ratio_kl"].map(
            lambda v: format_number(v) if np.isfinite(v) else ""),
        f"median {table['q2_column'].iloc[0] or 'q2'}": table["q2"].map("{:.3f}".format),
        "ID acc.": table["id_accuracy"].map(lambda v: f"{v * 100:.1f}%"),
        "OOD acc.": table["ood_accuracy"].map(lambda v: f"{v * 100:.1f}%"),
        "note": np.where(table["degenerate"], DEGENERATE_NOTE, "")
        + np.where(table["unstable"] > 0, " unstable agents: " + table["unstable"].astype(str),
                   "")})
    return points, table


def findings(inp: ReportInputs) -> Section:
    points: list[str] = []
    table = None
    if inp.sweep is not None:
        sweep_points, table = _sweep_points(inp.sweep.results, f"Sweep {inp.sweep.path}")
        points += sweep_points
    else:
        sweep_points, table = _sweep_points(builtin_sweep(inp.runs.sweep),
                                            "Built-in attribution run (no sweep found)")
        points += sweep_points[:3]
    paper = _ood_means(inp.observed)
    if len(paper):
        points.append(f"Observed ({inp.observed['source'].iloc[0]}), mean OOD accuracy: "
                      f"{_ranking(paper)}.")
    if inp.sweep is not None:
        sim = sweep_accuracy(inp.sweep.results, inp.sweep)
        if not sim.empty and sim["in_distribution"].notna().any():
            sim_means = _ood_means(sim)
            common = [r for r in sim_means.index if r in paper.index]
            agree = [r for r in sim_means.index if r in common] == \
                [r for r in paper.index if r in common]
            if len(common) > 1:
                points.append(f"Simulated (sweep, L nearest {_nearest_length(inp)}), mean OOD "
                              f"accuracy: {_ranking(sim_means[common])} — the order "
                              f"{'matches' if agree else 'differs from'} the observed one.")
    quality = fit_quality(inp.fit, inp.fit_path)
    points.append(f"Simulator fitted to {inp.fit.observed_source}: "
                  + "; ".join(quality.lines()) + f" (from {quality.source}).")
    if inp.phase is not None and "ratio" in inp.phase.columns:
        r = inp.phase["ratio"].astype(float)
        ok = np.isfinite(r) & (r > 0)
        points.append(f"Phase diagram ({inp.phase_path}): R > 1 in {(r[ok] > 1).sum()} of "
                      f"{ok.sum()} (setting, L, regime) cells with a defined ratio; "
                      f"{(~ok).sum()} undefined.")
    if inp.real is not None:
        real = labelled(inp.real)
        ood = real[~real["in_distribution"].fillna(False).astype(bool)]
        runs = ood.groupby("run")["observed_accuracy"].mean()
        points.append("Real-model runs, mean OOD accuracy: " + "; ".join(
            f"{run} {v * 100:.1f}%" for run, v in runs.items()) + ".")
    return Section("findings", "Findings", None,
                   "Each finding is computed from the inputs listed at the top; the table "
                   "gives the sweep's medians over agents at a few lengths (all lengths are in "
                   "section 1).", ["findings"], points=points, table=table)


def _nearest_length(inp: ReportInputs) -> str:
    from analysis.sections import SWEEP_ACCURACY_LENGTH

    lengths = np.sort(inp.sweep.results["length"].unique())
    return f"{lengths[np.argmin(np.abs(np.log(lengths) - np.log(SWEEP_ACCURACY_LENGTH)))]:g}"


def phase(inp: ReportInputs) -> Section | None:
    """The phase diagram over the update budget (DESIGN §2); None without its results."""
    if inp.phase is None or not len(inp.phase):
        return None
    src = str(inp.phase_path)
    settings = charts_sim.budget_label(inp.phase).nunique()
    cols = inp.phase.columns
    shown = []  # the metrics charts_sim.phase_diagram draws, as this table has them
    if "ratio" in cols:
        shown.append("median attribution ratio R (red: the sampling gradient dominates, R > 1; "
                     "blue: the decisions do)")
    q2 = next((c for c in cols if (parts := split_column(c)) and parts[0] == "q2"), None)
    if q2 is not None:
        shown.append(f"median {q2}")
    if "ood_accuracy" in cols:
        shown.append("median OOD accuracy")
    metrics = "; ".join(shown) or "nothing"
    return Section(
        "phase", "1b. Phase diagram: update budget × answer length",
        charts_sim.phase_diagram(labelled(inp.phase)),
        f"{metrics[0].upper() + metrics[1:]} per update-budget setting "
        f"({settings} here: optimiser, Adam's second moment v, gradient-norm clip, coupling M "
        "of the trained logits, 'off-diag c' for ones on the diagonal and c elsewhere; DESIGN "
        "§2) and answer length, one column per regime. Grey cells: the median is undefined. "
        f"Source: {src}.", [src])
