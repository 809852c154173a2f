"""Altair chart builders for the report (DESIGN §6). Pure functions: DataFrame -> chart.

One builder per chart kind; every builder takes tidy data (see each docstring), does only the
aggregation the chart needs, and returns an Altair chart. Regimes keep one colour everywhere
(`regime_scale`): the paper's four rows (DESIGN.md §6) have the fixed colours of the regime
table (core.regimes), any other label gets the next colour of a fallback palette in order of
first appearance in `regime_domain`.
Accuracies are shown in percent, probabilities (p, q1, q2) on 0..1.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import altair as alt
import numpy as np
import pandas as pd

from analysis.observed import REGIMES
from core.regimes import REGIME_TABLE

# one colour per paper row (the `regime` value of the tidy tables), from core.regimes
REGIME_COLOURS = {r.paper_row: r.colour for r in REGIME_TABLE}
FALLBACK_COLOURS = ("#2ca02c", "#d62728", "#17becf", "#8c564b", "#e377c2", "#bcbd22",
                    "#393b79", "#ad494a", "#637939", "#7b4173")
PANEL_W, PANEL_H = 250, 190
COMPONENT_LABELS = {"s": "θ_s (sampling)", "1": "θ_1 (STOP after correct)",
                    "2": "θ_2 (RESAMPLE after wrong)"}
_LINE_LEGEND = alt.Legend(orient="bottom", columns=2, symbolType="stroke", symbolOpacity=1,
                          symbolStrokeWidth=3)
_TERM_RE = re.compile(r"^g_s\[(.+)\]$")
_PARAM_RE = re.compile(r"^(w|u)_[s12](\[.+\])?$")


def regime_domain(*labels: Iterable[str]) -> list[str]:
    """The paper's regimes first (in Table 1 order), then every other label once."""
    seen = list(REGIMES)
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


def _colour(field: str, domain: Sequence[str] | None, title: str = "regime") -> alt.Color:
    dom = regime_domain() if domain is None else list(domain)
    return alt.Color(f"{field}:N", scale=regime_scale(dom), title=title,
                     legend=alt.Legend(orient="bottom", columns=2))


def _used_domain(values: Iterable[str], domain: Sequence[str] | None) -> list[str]:
    """Keep the global colour assignment but list only the labels that occur (legend)."""
    full = regime_domain(values) if domain is None else regime_domain(domain, values)
    present = set(values)
    return [d for d in full if d in present] if present else full


def _scale_for(values: Iterable[str], domain: Sequence[str] | None) -> alt.Scale:
    full = regime_domain(values) if domain is None else regime_domain(domain, values)
    colours = dict(zip(full, regime_scale(full).range, strict=True))
    used = _used_domain(values, full)
    return alt.Scale(domain=used, range=[colours[u] for u in used])


def _task_sort(df: pd.DataFrame) -> list[str]:
    return list(df.drop_duplicates("task").sort_values("task_index")["task"])


def _mean_ci(df: pd.DataFrame, keys: list[str], value: str) -> pd.DataFrame:
    """Mean and 95% CI of the population mean (normal approximation) of `value` per group."""
    g = df.groupby(keys, dropna=False)[value]
    out = g.agg(["mean", "std", "count"]).reset_index()
    half = 1.959963984540054 * out["std"].fillna(0) / np.sqrt(out["count"].clip(lower=1))
    out["ci_low"], out["ci_high"] = out["mean"] - half, out["mean"] + half
    return out.rename(columns={"count": "agents"})


# -------------------------------------------------------------- 1. attribution landscape


def series_labels(df: pd.DataFrame) -> pd.Series:
    """The objective, plus each other grid axis (optimiser, beta) that varies in the sweep,
    so that cells of different optimisers or betas are never averaged into one line."""
    label = df["objective"].astype(str)
    for col, fmt in (("optimiser", "{}"), ("beta", "β={:g}")):
        if col in df.columns and df[col].nunique() > 1:
            label = label + " · " + df[col].map(fmt.format)
    return label


def attribution_landscape(results: pd.DataFrame, id_tasks: Sequence[str] | None = None,
                          ratio_column: str = "ratio") -> alt.VConcatChart:
    """Attribution ratio vs L per objective and token model (log axes, population CIs), and
    heatmaps of the learned p and q2 (mean over agents and ID tasks) over L x objective.

    `results`: the sweep table (DESIGN §3; one row per cell and agent) with objective,
    token_model, length, `ratio_column`, p[T], q2[T].
    """
    df = results.copy()
    df = df[np.isfinite(df[ratio_column]) & (df[ratio_column] > 0)]
    df["series"] = series_labels(df)
    agg = _mean_ci(df, ["series", "token_model", "length"], ratio_column)
    agg["ci_low"] = agg["ci_low"].clip(lower=agg["mean"] * 1e-3)
    base = alt.Chart(agg).encode(
        x=alt.X("length:Q", scale=alt.Scale(type="log"),
                title="answer length L (tokens, log scale)"),
        # dark2 has 8 colours: beyond that (e.g. objectives x optimisers) use 20
        color=alt.Color("series:N", title="objective", legend=_LINE_LEGEND,
                        scale=alt.Scale(scheme="dark2" if agg["series"].nunique() <= 8
                                        else "tableau20")),
    )
    tooltip = [alt.Tooltip("series:N", title="objective"), "token_model:N",
               alt.Tooltip("length:Q", title="L (tokens)"),
               alt.Tooltip("mean:Q", title="ratio (mean)", format=".3g"),
               alt.Tooltip("ci_low:Q", format=".3g"), alt.Tooltip("ci_high:Q", format=".3g"),
               "agents:Q"]
    ytitle = "attribution ratio |g_s| / mean(|g_1|, |g_2|) (log)"
    band = base.mark_area(opacity=0.2).encode(
        y=alt.Y("ci_low:Q", scale=alt.Scale(type="log"), title=ytitle), y2="ci_high:Q")
    line = base.mark_line(point=True).encode(
        y=alt.Y("mean:Q", scale=alt.Scale(type="log"), title=ytitle), tooltip=tooltip,
        strokeDash=alt.StrokeDash("series:N", legend=None))
    panels = []
    for tm in sorted(agg["token_model"].unique()):
        sub = alt.layer(band, line).transform_filter(alt.datum.token_model == tm)
        panels.append(sub.properties(width=PANEL_W + 60, height=PANEL_H,
                                     title=f"token model: {tm}"))
    landscape = alt.hconcat(*panels).resolve_scale(y="shared")

    cols = [c for c in df.columns if re.fullmatch(r"(p|q2)\[.+\]", c)]
    if id_tasks:
        cols = [c for c in cols if c.split("[", 1)[1][:-1] in set(id_tasks)]
    long = df.melt(id_vars=["series", "token_model", "length"], value_vars=cols,
                   var_name="column", value_name="value")
    long["component"] = long["column"].str.split("[").str[0]
    long["row"] = long["series"] + " · " + long["token_model"].astype(str)
    heat = long.groupby(["component", "row", "length"], as_index=False)["value"].mean()
    maps = []
    for comp, title in (("p", "learned p (ID mean)"), ("q2", "learned q2 (ID mean)")):
        maps.append(alt.Chart(heat[heat["component"] == comp]).mark_rect().encode(
            x=alt.X("length:O", title="answer length L (tokens)"),
            y=alt.Y("row:N", title="objective · token model"),
            color=alt.Color("value:Q", scale=alt.Scale(domain=[0, 1], scheme="viridis"),
                            title=f"{comp} (0–1)"),
            tooltip=["row:N", alt.Tooltip("length:O", title="L"),
                     alt.Tooltip("value:Q", title=comp, format=".3f")],
        ).properties(width=PANEL_W, height=max(60, 22 * heat["row"].nunique()), title=title))
    heatmaps = alt.hconcat(*maps).resolve_scale(color="independent")
    return alt.vconcat(landscape, heatmaps)


# --------------------------------------------------------------- 2. training dynamics


def _terms_of(history: pd.DataFrame) -> list[str]:
    return [m.group(1) for c in history.columns if (m := _TERM_RE.match(c))
            and m.group(1) != "total"]


def _agent_band(long: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean over agents with the 2.5/97.5 percentile band (a single agent: band = line)."""
    g = long.groupby(keys, as_index=False)["value"]
    out = g.mean()
    out["lo"] = g.quantile(0.025)["value"].to_numpy()
    out["hi"] = g.quantile(0.975)["value"].to_numpy()
    return out


def training_dynamics(history: pd.DataFrame,
                      weights: dict[str, float] | None = None) -> alt.VConcatChart:
    """The paper's Figure 1 layout from a training history (sim.dynamics.train_expected or
    outputs/train/<name>/history.parquet; DESIGN §2-§3): parameters over steps, the gradient
    components of each objective term per parameter (weighted by `weights`, e.g. beta for the
    KL), the net gradients, and the attribution ratio over time (log scale). Several agents:
    mean with a 2.5-97.5 percentile band.
    """
    h = history.copy()
    if "agent" not in h.columns:
        h["agent"] = 0
    weights = weights or {}
    params = [c for c in h.columns if _PARAM_RE.match(c)]
    terms = _terms_of(h)
    resets = (sorted(h.loc[h["ref_reset"].astype(bool), "step"].unique())
              if "ref_reset" in h.columns else [])

    def line_chart(data: pd.DataFrame, colour: str, title: str, ytitle: str,
                   log: bool = False, legend_title: str | None = None) -> alt.LayerChart:
        yscale = alt.Scale(type="log") if log else alt.Scale(zero=False)
        enc = alt.Chart(data).encode(
            x=alt.X("step:Q", title="training step"),
            color=alt.Color(f"{colour}:N", title=legend_title or colour,
                            legend=_LINE_LEGEND))
        band = enc.mark_area(opacity=0.2).encode(y=alt.Y("lo:Q", scale=yscale, title=ytitle),
                                                 y2="hi:Q")
        line = enc.mark_line().encode(
            y=alt.Y("value:Q", scale=yscale, title=ytitle),
            tooltip=["step:Q", f"{colour}:N", alt.Tooltip("value:Q", format=".4g")])
        layers = [band, line]
        if resets:
            layers.append(alt.Chart(pd.DataFrame({"step": resets})).mark_rule(
                strokeDash=[3, 3], color="#999").encode(x="step:Q"))
        return alt.layer(*layers).properties(width=PANEL_W, height=PANEL_H, title=title)

    plong = h.melt(id_vars=["step", "agent"], value_vars=params, var_name="parameter")
    p_chart = line_chart(_agent_band(plong, ["step", "parameter"]), "parameter",
                         "parameters", "value (logit units)")

    gcols = {f"g_{x}[total]": COMPONENT_LABELS[x] for x in ("s", "1", "2")}
    nlong = h.melt(id_vars=["step", "agent"], value_vars=list(gcols), var_name="col")
    nlong["component"] = nlong["col"].map(gcols)
    net = line_chart(_agent_band(nlong, ["step", "component"]), "component",
                     "net gradient (weighted sum)", "d objective / d logit")

    rcols = [f"ratio[{t}]" for t in [*terms, "total"] if f"ratio[{t}]" in h.columns]
    rlong = h.melt(id_vars=["step", "agent"], value_vars=rcols, var_name="col")
    rlong["term"] = rlong["col"].str.slice(6, -1)
    rlong = rlong[np.isfinite(rlong["value"]) & (rlong["value"] > 0)]
    ratio = line_chart(_agent_band(rlong, ["step", "term"]), "term",
                       "attribution ratio over time", "|g_s| / mean(|g_1|,|g_2|) (log)",
                       log=True, legend_title="objective term")

    comp_charts = []
    for x, label in COMPONENT_LABELS.items():
        frames = []
        for t in terms:
            col = f"g_{x}[{t}]"
            sub = h[["step", "agent", col]].rename(columns={col: "value"})
            sub["value"] = sub["value"] * weights.get(t, 1.0)
            sub["term"] = f"{weights[t]:g} × {t}" if t in weights and weights[t] != 1 else t
            frames.append(sub)
        comp_charts.append(line_chart(_agent_band(pd.concat(frames), ["step", "term"]), "term",
                                      f"gradient components: {label}",
                                      "d term / d logit", legend_title="objective term"))
    top = alt.hconcat(p_chart, net, ratio).resolve_scale(color="independent")
    bottom = alt.hconcat(*comp_charts).resolve_scale(color="shared")
    return alt.vconcat(top, bottom).resolve_scale(color="independent")


# ------------------------------------------------------------------------ 3. calibration


def calibration_chart(cal: pd.DataFrame, domain: Sequence[str] | None = None) -> alt.VConcatChart:
    """The paper's Figures 2-3 layout (DESIGN §4): p̂, q̂1, q̂2 per task with bootstrap CIs,
    and predicted vs observed accuracy per task (diagonal = perfect prediction).

    `cal`: regime, source, task, task_index, and for S in p_hat, q1_hat, q2_hat,
    predicted_accuracy, observed_accuracy: S, S_ci_low, S_ci_high.
    """
    df = cal.copy()
    df["label"] = df["regime"].astype(str)
    tasks = _task_sort(df)
    scale = _scale_for(df["label"].unique(), domain)
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
        panels.append(alt.layer(bars, pts).properties(width=PANEL_W, height=PANEL_H,
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


# ------------------------------------------------------------------------- 4. OOD curves


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
        layers.append(enc.mark_line(opacity=0.7).encode(y=y, detail="series:N", **dash))
    layers.append(enc.mark_point(filled=True, size=40).encode(xOffset=off, y=y, tooltip=tip,
                                                             **shape))
    return alt.layer(*layers).properties(width=PANEL_W + 40, height=PANEL_H + 20, title=title)


def ood_curves(acc: pd.DataFrame, domain: Sequence[str] | None = None) -> alt.HConcatChart:
    """Accuracy vs task per training regime, one panel per data source (simulated sweep,
    the paper's Table 1, real-model calibrations), 95% CIs as bars, ID tasks shaded.

    `acc`: regime, task, task_index, in_distribution, accuracy, ci_low, ci_high (fractions),
    source; optionally series (configurations kept apart within a regime's colour).
    """
    scale = _scale_for(acc["regime"].unique(), domain)
    rank = {r: i for i, r in enumerate(scale.domain)}
    pairs = dict.fromkeys(zip(*(_with_series(acc)[c] for c in ("regime", "series")),
                              strict=True))
    offsets = [s for _, s in sorted(pairs, key=lambda rs: rank.get(rs[0], len(rank)))]
    offsets = list(dict.fromkeys(offsets))
    panels = []
    for source in list(dict.fromkeys(acc["source"])):
        sub = acc[acc["source"] == source]
        panels.append(_accuracy_panel(sub, source, scale, _task_sort(sub), offsets))
    return alt.hconcat(*panels).resolve_scale(x="independent")


def fit_overlay(curves: pd.DataFrame, domain: Sequence[str] | None = None) -> alt.HConcatChart:
    """Fitted simulated curves (lines) over the observed accuracies (points, 95% CIs), and the
    per-task residuals observed - fitted in percentage points.

    `curves`: analysis.fit.FitResult.curves (regime, task, task_index, in_distribution,
    accuracy = fitted, observed, ci_low, ci_high, residual).
    """
    scale = _scale_for(curves["regime"].unique(), domain)
    tasks = _task_sort(curves)
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
        title="fitted simulator (lines) over observed (points, 95% CI)")
    resid = enc.mark_bar().encode(
        xOffset=off, y=alt.Y("residual_pp:Q", title="residual, observed − fitted (pp)"),
        tooltip=["regime:N", "task:N",
                 alt.Tooltip("residual_pp:Q", format="+.1f", title="residual (pp)")],
    ).properties(width=PANEL_W + 60, height=PANEL_H + 20, title="per-task residuals")
    return alt.hconcat(overlay, resid)


# --------------------------------------------------------------------------- 5. echo effect


def echo_chart(simulated: pd.DataFrame, cited: pd.DataFrame,
               domain: Sequence[str] | None = None) -> alt.HConcatChart:
    """p(F→T) against the share of F→T corrections in the SFT data: the simulator's SFT
    regimes beside the cited study's table (DESIGN §2 SFT data mix, §6 reference data).

    `simulated`: regime, ft_ratio_pct, p_ft (and optionally task); `cited`: model,
    ft_ratio_pct, p_ft.
    """
    scale = _scale_for(simulated["regime"].unique(), domain)
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
    cit = alt.Chart(cited).mark_line(point=True, strokeDash=[4, 2]).encode(
        x=x, y=y, color=alt.Color("model:N", title="cited study: model",
                                  scale=alt.Scale(range=["#2ca02c", "#d62728", "#17becf"]),
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
    scale = _scale_for(regimes, domain)
    tasks = _task_sort(pd.concat([measured[["task", "task_index"]],
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


def message_chart(text: str) -> alt.Chart:
    """A placeholder chart carrying a message (a section whose inputs are missing)."""
    return alt.Chart(pd.DataFrame({"text": [text]})).mark_text(
        align="left", fontSize=13, color="#555").encode(text="text:N").properties(
        width=500, height=40)
