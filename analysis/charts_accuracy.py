"""Charts of accuracy and calibration (DESIGN §4-§6): the paper's Figures 2-3 calibration
layout, OOD accuracy curves, the fit overlay with residuals, the echo effect and the
measured-vs-simulated comparison. Pure functions: tidy DataFrame -> chart (each docstring
names its columns); colours per regime from analysis.charts.
"""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import numpy as np
import pandas as pd

from analysis.charts import PANEL_H, PANEL_W, legend_pick, scale_for, task_sort

CITED_COLOURS = ("#111111", "#555555", "#999999")  # models of a cited study (echo chart)

# ---------------------------------------------------------------------------- calibration


def calibration_chart(cal: pd.DataFrame, domain: Sequence[str] | None = None) -> alt.VConcatChart:
    """The paper's Figures 2-3 layout (DESIGN §4): p̂, q̂1, q̂2 per task with bootstrap CIs,
    and predicted vs observed accuracy per task (diagonal = perfect prediction).

    `cal`: regime, source, task, task_index, and for S in p_hat, q1_hat, q2_hat,
    predicted_accuracy, observed_accuracy: S, S_ci_low, S_ci_high.
    """
    df = cal.copy()
    df["label"] = df["regime"].astype(str)
    tasks = task_sort(df)
    scale = scale_for(df["label"].unique(), domain)
    panels = []
    for stat, title in (("p_hat", "estimated p (first-attempt accuracy)"),
                        ("q1_hat", "estimated q1 (STOP after correct)"),
                        ("q2_hat", "estimated q2 (RESAMPLE after wrong)")):
        enc = alt.Chart(df).encode(
            x=alt.X("task:N", sort=tasks, title="task"),
            xOffset=alt.XOffset("label:N", scale=alt.Scale(domain=list(scale.domain))),
            color=alt.Color("label:N", scale=scale, title="regime",
                            legend=alt.Legend(orient="bottom", columns=2)))
        pts = enc.mark_point(filled=True, size=45).encode(
            y=alt.Y(f"{stat}:Q", scale=alt.Scale(domain=[0, 1]), title=f"{stat} (0–1)"),
            shape=alt.Shape("source:N", title="data"),
            tooltip=["label:N", "source:N", "task:N",
                     alt.Tooltip(f"{stat}:Q", format=".3f"),
                     alt.Tooltip(f"{stat}_ci_low:Q", format=".3f"),
                     alt.Tooltip(f"{stat}_ci_high:Q", format=".3f")])
        bars = enc.mark_rule().encode(y=f"{stat}_ci_low:Q", y2=f"{stat}_ci_high:Q")
        # an estimate the sample leaves undefined (e.g. q̂2 with no wrong candidate): a marked
        # gap at its task, not a missing point
        gap = enc.mark_text(text="undefined", angle=270, fontSize=11, baseline="middle").encode(
            y=alt.value(PANEL_H / 2), tooltip=["label:N", "task:N"]).transform_filter(
            f"!isValid(datum['{stat}']) || !isFinite(datum['{stat}'])")
        panels.append(alt.layer(bars, pts, gap).properties(width=PANEL_W, height=PANEL_H,
                                                           title=title))
    pct = df.copy()
    for c in ("predicted_accuracy", "observed_accuracy"):
        for s in ("", "_ci_low", "_ci_high"):
            pct[c + s] = pct[c + s] * 100
    enc = alt.Chart(pct).encode(color=alt.Color("label:N", scale=scale, title="regime"))
    axis_x = alt.X("observed_accuracy:Q", scale=alt.Scale(domain=[0, 100]),
                   title="observed accuracy (%)")
    axis_y = alt.Y("predicted_accuracy:Q", scale=alt.Scale(domain=[0, 100]),
                   title="predicted accuracy, two-stage model (%)")
    diag = alt.Chart(pd.DataFrame({"x": [0, 100], "y": [0, 100]})).mark_line(
        strokeDash=[4, 4], color="#888").encode(x="x:Q", y="y:Q")
    scatter = alt.layer(
        diag,
        enc.mark_rule(opacity=0.6).encode(x=axis_x, y="predicted_accuracy_ci_low:Q",
                                          y2="predicted_accuracy_ci_high:Q"),
        enc.mark_rule(opacity=0.6).encode(x="observed_accuracy_ci_low:Q",
                                          x2="observed_accuracy_ci_high:Q", y=axis_y),
        enc.mark_point(filled=True, size=50).encode(
            x=axis_x, y=axis_y, shape=alt.Shape("source:N", title="data"),
            tooltip=["label:N", "source:N", "task:N",
                     alt.Tooltip("observed_accuracy:Q", format=".1f", title="observed %"),
                     alt.Tooltip("predicted_accuracy:Q", format=".1f", title="predicted %")]),
    ).properties(width=PANEL_W, height=PANEL_H, title="predicted vs observed accuracy")
    return alt.vconcat(alt.hconcat(*panels[:2]), alt.hconcat(panels[2], scatter))


# ----------------------------------------------------------------------------- OOD curves


def _id_band(df: pd.DataFrame, tasks: list[str]) -> alt.Chart | None:
    ids = [t for t in tasks if bool(df.loc[df["task"] == t, "in_distribution"].fillna(False)
                                    .astype(bool).any())]
    if not ids:
        return None
    return alt.Chart(pd.DataFrame({"task": ids, "label": "ID (trained)"})).mark_bar(
        color="#000", opacity=0.06).encode(
        x=alt.X("task:N", sort=tasks), tooltip=[alt.Tooltip("label:N", title="in-distribution")])


def _with_series(df: pd.DataFrame) -> pd.DataFrame:
    d = df.copy()
    d["series"] = (d["series"].fillna(d["regime"]) if "series" in d.columns
                   else d["regime"]).astype(str)
    return d


def _accuracy_panel(df: pd.DataFrame, title: str, scale: alt.Scale, tasks: list[str],
                    offsets: list[str], lines: bool = True) -> alt.LayerChart:
    """One panel of accuracy vs task. Colour = regime; where the rows carry a `series`
    (e.g. sweep cells of one regime under two optimisers) each series is its own line and
    point column, told apart by dash and shape. `offsets`: the x-offset slots, the same in
    every panel (concatenated panels share the scale)."""
    d = _with_series(df)
    for c in ("accuracy", "ci_low", "ci_high"):
        d[c] = d[c] * 100
    several = bool((d["series"] != d["regime"]).any())
    enc = alt.Chart(d).encode(
        x=alt.X("task:N", sort=tasks, title="task (difficulty →)"),
        color=alt.Color("regime:N", scale=scale, title="regime",
                        legend=alt.Legend(orient="bottom", columns=2)))
    y = alt.Y("accuracy:Q", scale=alt.Scale(domain=[0, 100], clamp=True),
              title="accuracy (%)")
    tip = ["regime:N", *(["series:N"] if several else []), "task:N",
           alt.Tooltip("accuracy:Q", format=".1f", title="accuracy %"),
           alt.Tooltip("ci_low:Q", format=".1f"), alt.Tooltip("ci_high:Q", format=".1f"),
           "source:N"]
    layers = []
    band = _id_band(df, tasks)
    if band is not None:
        layers.append(band)
    off = alt.XOffset("series:N", scale=alt.Scale(domain=offsets))
    dash, shape = {}, {}
    if several:
        legend = alt.Legend(orient="bottom", columns=2)
        dash = {"strokeDash": alt.StrokeDash("series:N", title="series", legend=legend)}
        shape = {"shape": alt.Shape("series:N", title="series", legend=legend)}
    layers.append(enc.mark_rule(strokeWidth=1.5).encode(
        xOffset=off, y=alt.Y("ci_low:Q", scale=alt.Scale(domain=[0, 100], clamp=True)),
        y2="ci_high:Q"))
    if lines:
        layers.append(enc.mark_line(opacity=0.7).encode(xOffset=off, y=y, detail="series:N",
                                                        **dash))
    layers.append(enc.mark_point(filled=True, size=40).encode(xOffset=off, y=y, tooltip=tip,
                                                             **shape))
    return alt.layer(*layers).properties(width=PANEL_W + 40, height=PANEL_H + 20, title=title)


def ood_curves(acc: pd.DataFrame, domain: Sequence[str] | None = None) -> alt.HConcatChart:
    """Accuracy vs task per training regime, one panel per data source (simulated sweep,
    the paper's Table 1, real-model calibrations), 95% CIs as bars, ID tasks shaded.

    `acc`: regime, task, task_index, in_distribution, accuracy, ci_low, ci_high (fractions),
    source; optionally series (configurations kept apart within a regime's colour).
    """
    scale = scale_for(acc["regime"].unique(), domain)
    rank = {r: i for i, r in enumerate(scale.domain)}
    pairs = dict.fromkeys(zip(*(_with_series(acc)[c] for c in ("regime", "series")),
                              strict=True))
    offsets = [s for _, s in sorted(pairs, key=lambda rs: rank.get(rs[0], len(rank)))]
    offsets = list(dict.fromkeys(offsets))
    panels = []
    for source in list(dict.fromkeys(acc["source"])):
        sub = acc[acc["source"] == source]
        panels.append(_accuracy_panel(sub, source, scale, task_sort(sub), offsets))
    return alt.hconcat(*panels).resolve_scale(x="independent")


def ood_overlay(acc: pd.DataFrame, domain: Sequence[str] | None = None,
                regimes: Sequence[str] | None = None,
                columns: int = 3) -> alt.ConcatChart:
    """One panel per regime (its colour), simulated and observed accuracy vs task overlaid in
    it: each data source (the sweep or fitted simulator, the paper's Table 1, real-model runs)
    one line style and point shape, in one legend ("data", click to pick); 95% CIs as bars, ID
    tasks shaded. Panels wrap after `columns` (the page is about 1,200 px wide); `regimes`
    (display labels) picks and orders the panels, default every regime of `acc`.

    `acc`: as for ood_curves (regime, task, task_index, in_distribution, accuracy, ci_low,
    ci_high, source; optionally series).
    """
    d = _with_series(acc)
    if regimes is not None:
        d = d[d["regime"].isin(list(regimes))]
    d["curve"] = np.where(d["series"] != d["regime"], d["source"] + " · " + d["series"],
                          d["source"])
    for c in ("accuracy", "ci_low", "ci_high"):
        d[c] = d[c] * 100
    scale = scale_for(d["regime"].unique(), domain)
    curves = list(dict.fromkeys(d["curve"]))
    style = alt.Scale(domain=curves)
    legend = alt.Legend(orient="bottom", columns=1, title="data (click to pick)",
                        symbolStrokeColor="#333", symbolFillColor="#333", labelLimit=420)
    yd = alt.Scale(domain=[0, 100], clamp=True)
    panels = []
    pick, faded = legend_pick("curve")  # one selection for every panel (one legend)
    order = list(regimes) if regimes is not None else list(scale.domain)
    for regime in [r for r in order if r in set(d["regime"])]:
        sub = d[d["regime"] == regime]
        tasks = task_sort(sub)
        enc = alt.Chart(sub).encode(
            x=alt.X("task:N", sort=tasks, title="task (difficulty →)"),
            color=alt.Color("regime:N", scale=scale, legend=None), **faded)
        tip = ["regime:N", "curve:N", "task:N",
               alt.Tooltip("accuracy:Q", format=".1f", title="accuracy %"),
               alt.Tooltip("ci_low:Q", format=".1f"), alt.Tooltip("ci_high:Q", format=".1f")]
        layers = []
        band = _id_band(sub, tasks)
        if band is not None:
            layers.append(band)
        layers += [
            enc.mark_rule(strokeWidth=1.5).encode(y=alt.Y("ci_low:Q", scale=yd), y2="ci_high:Q"),
            enc.mark_line(strokeWidth=2).encode(
                y=alt.Y("accuracy:Q", scale=yd, title="accuracy (%)"), detail="curve:N",
                strokeDash=alt.StrokeDash("curve:N", scale=style, legend=legend)),
            enc.mark_point(filled=True, size=50).encode(
                y=alt.Y("accuracy:Q", scale=yd), tooltip=tip,
                shape=alt.Shape("curve:N", scale=style, legend=legend)),
        ]
        panels.append(alt.layer(*layers).properties(width=PANEL_W, height=PANEL_H + 20,
                                                    title=str(regime)))
    return alt.concat(*panels, columns=columns).resolve_scale(x="independent").add_params(pick)


def accuracy_panel(acc: pd.DataFrame, title: str,
                   domain: Sequence[str] | None = None) -> alt.LayerChart:
    """One compact panel of accuracy vs task, a line per regime in its colour (e.g. a
    sweep's ablations, which have no observed counterpart); 95% CIs as bars, ID tasks
    shaded. `acc`: as for ood_curves."""
    scale = scale_for(acc["regime"].unique(), domain)
    offsets = list(dict.fromkeys(_with_series(acc)["series"]))
    return _accuracy_panel(acc, title, scale, task_sort(acc), offsets)


def fit_overlay(curves: pd.DataFrame, domain: Sequence[str] | None = None,
                subtitle: Sequence[str] = ()) -> alt.HConcatChart:
    """Fitted simulated curves (lines) over the observed accuracies (points, 95% CIs), and the
    per-task residuals observed - fitted in percentage points.

    `curves`: analysis.fit.FitResult.curves (regime, task, task_index, in_distribution,
    accuracy = fitted, observed, ci_low, ci_high, residual). `subtitle`: lines under the
    overlay's title (the fit's RMSE and which parameters the data identify).
    """
    scale = scale_for(curves["regime"].unique(), domain)
    tasks = task_sort(curves)
    d = curves.copy()
    for c in ("accuracy", "observed", "ci_low", "ci_high"):
        d[c] = d[c] * 100
    d["residual_pp"] = d["residual"] * 100
    enc = alt.Chart(d).encode(
        x=alt.X("task:N", sort=tasks, title="task (difficulty →)"),
        color=alt.Color("regime:N", scale=scale, title="regime",
                        legend=alt.Legend(orient="bottom", columns=2)))
    yd = alt.Scale(domain=[0, 100], clamp=True)
    off = alt.XOffset("regime:N", scale=alt.Scale(domain=list(scale.domain)))
    layers = []
    band = _id_band(curves, tasks)
    if band is not None:
        layers.append(band)
    layers += [
        enc.mark_line(strokeWidth=2).encode(
            y=alt.Y("accuracy:Q", scale=yd, title="accuracy (%)"), detail="regime:N",
            tooltip=["regime:N", "task:N",
                     alt.Tooltip("accuracy:Q", format=".1f", title="fitted %")]),
        enc.mark_rule().encode(xOffset=off, y=alt.Y("ci_low:Q", scale=yd), y2="ci_high:Q"),
        enc.mark_point(size=45, filled=False, strokeWidth=2).encode(
            xOffset=off, y=alt.Y("observed:Q", scale=yd),
            tooltip=["regime:N", "task:N",
                     alt.Tooltip("observed:Q", format=".1f", title="observed %"),
                     alt.Tooltip("accuracy:Q", format=".1f", title="fitted %"),
                     alt.Tooltip("residual_pp:Q", format="+.1f", title="residual (pp)")]),
    ]
    overlay = alt.layer(*layers).properties(
        width=PANEL_W + 60, height=PANEL_H + 20,
        title=alt.TitleParams("fitted simulator (lines) over observed (points, 95% CI)",
                              subtitle=list(subtitle), anchor="start"))
    resid = enc.mark_bar().encode(
        xOffset=off, y=alt.Y("residual_pp:Q", title="residual, observed − fitted (pp)"),
        tooltip=["regime:N", "task:N",
                 alt.Tooltip("residual_pp:Q", format="+.1f", title="residual (pp)")],
    ).properties(width=PANEL_W + 60, height=PANEL_H + 20, title="per-task residuals")
    return alt.hconcat(overlay, resid)


# ---------------------------------------------------------------------------- echo effect


def echo_chart(simulated: pd.DataFrame, cited: pd.DataFrame,
               domain: Sequence[str] | None = None) -> alt.HConcatChart:
    """p(F→T) against the share of F→T corrections in the SFT data: the simulator's SFT
    regimes beside the cited study's table (DESIGN §2 SFT data mix, §6 reference data).

    `simulated`: regime, ft_ratio_pct, p_ft (and optionally task); `cited`: model,
    ft_ratio_pct, p_ft.
    """
    scale = scale_for(simulated["regime"].unique(), domain)
    x = alt.X("ft_ratio_pct:Q", title="share of F→T corrections in the SFT data (%)",
              scale=alt.Scale(domain=[-5, 105]))
    y = alt.Y("p_ft:Q", title="p(F→T), wrong → resample → correct (0–1)",
              scale=alt.Scale(domain=[0, 1]))
    extra = {"detail": "series:N"} if "series" in simulated.columns else {}
    sim = alt.Chart(simulated).mark_line(point=True).encode(
        x=x, y=y, color=alt.Color("regime:N", scale=scale, title="simulated regime",
                                  legend=alt.Legend(orient="bottom", columns=1)),
        **extra,
        tooltip=[c for c in ("regime:N", "series:N", "ft_ratio_pct:Q") if c.split(":")[0]
                 in simulated.columns] + [alt.Tooltip("p_ft:Q", format=".3f")],
    ).properties(width=PANEL_W + 40, height=PANEL_H, title="simulator (after SFT)")
    # the cited models in greys: no colour that names a regime or an ablation elsewhere
    cit = alt.Chart(cited).mark_line(point=True, strokeDash=[4, 2]).encode(
        x=x, y=y, color=alt.Color("model:N", title="cited study: model",
                                  scale=alt.Scale(range=list(CITED_COLOURS)),
                                  legend=alt.Legend(orient="bottom", columns=1)),
        tooltip=["model:N", "ft_ratio_pct:Q", alt.Tooltip("p_ft:Q", format=".3f")],
    ).properties(width=PANEL_W + 40, height=PANEL_H, title="Kang et al. 2025 (observed)")
    return alt.hconcat(sim, cit).resolve_scale(color="independent")


# ---------------------------------------------------------------- compare (DESIGN §4, §5)


def compare_chart(measured: pd.DataFrame, simulated: pd.DataFrame,
                  domain: Sequence[str] | None = None) -> alt.HConcatChart:
    """Measured (p̂, q̂1, q̂2) per task and regime (points, bootstrap CIs) beside the fitted
    simulator's (p, q1, q2) for the same regimes (lines). DESIGN §4 calibration, §5.

    `measured`: a calibration table (regime, task, task_index, p_hat, q1_hat, q2_hat + CIs);
    `simulated`: FitResult.curves (regime, task, task_index, p, q1, q2).
    """
    regimes = list(dict.fromkeys([*measured["regime"], *simulated["regime"]]))
    scale = scale_for(regimes, domain)
    tasks = task_sort(pd.concat([measured[["task", "task_index"]],
                                  simulated[["task", "task_index"]]]))
    panels = []
    off = alt.XOffset("regime:N", scale=alt.Scale(domain=list(scale.domain)))
    for stat, sim_col, title in (("p_hat", "p", "p (sampling accuracy)"),
                                 ("q1_hat", "q1", "q1 (STOP after correct)"),
                                 ("q2_hat", "q2", "q2 (RESAMPLE after wrong)")):
        colour = alt.Color("regime:N", scale=scale, title="regime",
                           legend=alt.Legend(orient="bottom", columns=2))
        xe = alt.X("task:N", sort=tasks, title="task")
        ys = alt.Scale(domain=[0, 1])
        line = alt.Chart(simulated).mark_line(strokeDash=[5, 3]).encode(
            x=xe, y=alt.Y(f"{sim_col}:Q", scale=ys, title=f"{sim_col} (0–1)"), color=colour,
            tooltip=["regime:N", "task:N",
                     alt.Tooltip(f"{sim_col}:Q", format=".3f", title=f"simulated {sim_col}")])
        bars = alt.Chart(measured).mark_rule().encode(
            x=xe, xOffset=off, y=alt.Y(f"{stat}_ci_low:Q", scale=ys), y2=f"{stat}_ci_high:Q",
            color=colour)
        pts = alt.Chart(measured).mark_point(filled=True, size=45).encode(
            x=xe, xOffset=off, y=alt.Y(f"{stat}:Q", scale=ys), color=colour,
            tooltip=["regime:N", "task:N", alt.Tooltip(f"{stat}:Q", format=".3f",
                                                       title=f"measured {sim_col}")])
        panels.append(alt.layer(line, bars, pts).properties(
            width=PANEL_W, height=PANEL_H, title=f"{title}: measured (points) vs simulated "
            "(dashed)"))
    return alt.hconcat(*panels)
