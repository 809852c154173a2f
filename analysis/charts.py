"""What every chart of the report shares (DESIGN §6): regime colours, scales, panel sizes and
small table helpers. The builders themselves are pure functions DataFrame -> chart, one module
per family: `analysis.charts_sim` (simulator runs: attribution landscape, training dynamics)
and `analysis.charts_accuracy` (accuracy and calibration: calibration, OOD curves, fit
overlay, echo effect, compare).

Regimes keep one colour everywhere (`regime_scale`): the paper's four rows (DESIGN §6) have
the fixed colours of the regime table (core.regimes), any other label gets the next colour of
a fallback palette in order of first appearance in `regime_domain`. Accuracies are shown in
percent, probabilities (p, q1, q2) on 0..1.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import altair as alt
import numpy as np
import pandas as pd

from analysis.observed import REGIMES
from core.calibration import Z95
from core.regimes import REGIME_TABLE, display_label
from sim import headline

# one colour per regime, under its paper row ("RL") and its display label ("GRPO")
REGIME_COLOURS = {k: r.colour for r in REGIME_TABLE for k in (r.paper_row, r.label)}
FADED = 0.15  # opacity of the series a legend click did not pick
FALLBACK_COLOURS = ("#2ca02c", "#d62728", "#17becf", "#8c564b", "#e377c2", "#bcbd22",
                    "#393b79", "#ad494a", "#637939", "#7b4173")
PANEL_W, PANEL_H = 250, 190


def regime_domain(*labels: Iterable[str]) -> list[str]:
    """The paper's regimes first (in Table 1 order, display labels: core.regimes), then every
    other label once."""
    seen = [display_label(r) for r in REGIMES]
    for group in labels:
        for lab in group:
            if lab not in seen:
                seen.append(str(lab))
    return seen


def regime_scale(domain: Sequence[str] | None = None) -> alt.Scale:
    """Fixed colour per regime (one scale for every chart of the report)."""
    domain = list(domain) if domain is not None else list(REGIMES)
    colours, k = [], 0
    for lab in domain:
        if lab in REGIME_COLOURS:
            colours.append(REGIME_COLOURS[lab])
        else:
            colours.append(FALLBACK_COLOURS[k % len(FALLBACK_COLOURS)])
            k += 1
    return alt.Scale(domain=list(domain), range=colours)


def used_domain(values: Iterable[str], domain: Sequence[str] | None) -> list[str]:
    """Keep the global colour assignment but list only the labels that occur (legend)."""
    full = regime_domain(values) if domain is None else regime_domain(domain, values)
    present = set(values)
    return [d for d in full if d in present] if present else full


def scale_for(values: Iterable[str], domain: Sequence[str] | None) -> alt.Scale:
    """The regime colour scale restricted to `values`, colours as in the full `domain`."""
    values = list(values)
    full = regime_domain(values) if domain is None else regime_domain(domain, values)
    colours = dict(zip(full, regime_scale(full).range, strict=True))
    used = used_domain(values, full)
    return alt.Scale(domain=used, range=[colours[u] for u in used])


SERIES_SEP = headline.SERIES_SEP


def series_regime(label: str) -> str:
    """The regime part of a series label (series_labels: "GRPO · adam · β=0.01" -> "GRPO")."""
    return str(label).split(SERIES_SEP)[0]


def series_scale(series: Iterable[str], domain: Sequence[str] | None = None) -> alt.Scale:
    """Colour per series label: its regime's colour (the regime table's for the paper's
    regimes, a fallback colour for other objectives, as in `scale_for` over `domain`), so every
    configuration of a regime keeps that regime's colour (line dash tells them apart). Series
    listed in regime order."""
    labels = list(dict.fromkeys(map(str, series)))
    heads = [series_regime(s) for s in labels]
    full = regime_domain(heads) if domain is None else regime_domain(domain, heads)
    colours = dict(zip(full, regime_scale(full).range, strict=True))
    ordered = sorted(labels, key=lambda s: full.index(series_regime(s)))
    return alt.Scale(domain=ordered, range=[colours[series_regime(s)] for s in ordered])


def task_sort(df: pd.DataFrame) -> list[str]:
    """Task names in task_index order (the x-axis order of every per-task chart)."""
    return list(df.drop_duplicates("task").sort_values("task_index")["task"])


def mean_ci(df: pd.DataFrame, keys: list[str], value: str) -> pd.DataFrame:
    """Mean and 95% CI of the population mean (normal approximation) of `value` per group."""
    g = df.groupby(keys, dropna=False)[value]
    out = g.agg(["mean", "std", "count"]).reset_index()
    half = Z95 * out["std"].fillna(0) / np.sqrt(out["count"].clip(lower=1))
    out["ci_low"], out["ci_high"] = out["mean"] - half, out["mean"] + half
    return out.rename(columns={"count": "agents"})


# the grid axes a report series keeps apart (the token model is a facet of its own)
REPORT_AXES = (("optimiser", "{}"), ("beta", "β={:g}"), ("second_moment", "v {}"),
               ("max_grad_norm", "clip {:g}"), ("coupling", "M {}"))


def series_labels(df: pd.DataFrame) -> pd.Series:
    """The regime's display label (core.regimes; else the objective), plus each other grid
    axis (optimiser, beta, the update budget of DESIGN §2) that varies in the sweep, so that
    cells that differ in one are never averaged into one line (sim.headline.series_labels)."""
    base = df["regime"].map(display_label) if "regime" in df.columns else df["objective"]
    return headline.series_labels(df, REPORT_AXES, base)


def message_chart(text: str) -> alt.Chart:
    """A placeholder chart carrying a message (a section whose inputs are missing)."""
    return alt.Chart(pd.DataFrame({"text": [text]})).mark_text(
        align="left", fontSize=13, color="#555").encode(text="text:N").properties(
        width=500, height=40)


def labelled(df: pd.DataFrame, column: str = "regime") -> pd.DataFrame:
    """A copy whose `column` holds display labels (core.regimes: "RL" -> "GRPO")."""
    out = df.copy()
    out[column] = out[column].map(display_label)
    return out


def legend_pick(field: str) -> tuple[alt.Parameter, dict]:
    """A selection bound to the legend of `field` (click an entry to pick its series,
    shift-click for several, double-click to reset) and the opacity that fades the rest."""
    sel = alt.selection_point(fields=[field], bind="legend")
    return sel, {"opacity": alt.condition(sel, alt.value(1.0), alt.value(FADED))}
