"""Charts of simulator runs (DESIGN §2-§3): the attribution landscape of a sweep and the
training dynamics of one run (the paper's Figure 1 layout). Pure functions: DataFrame -> chart.

Column names are read through sim.columns (`p[T1]`, `g_s[kl]`, `ratio[total]`, ...).
"""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import numpy as np
import pandas as pd

from analysis.charts import (
    PANEL_H,
    PANEL_W,
    legend_pick,
    mean_ci,
    series_labels,
    series_scale,
)
from sim.columns import column, keyed_columns, split_column
from sim.model import parse_coupling

COMPONENT_LABELS = {"s": "θ_s (sampling)", "1": "θ_1 (STOP after correct)",
                    "2": "θ_2 (RESAMPLE after wrong)"}
LINE_LEGEND = alt.Legend(orient="bottom", columns=2, symbolType="stroke", symbolOpacity=1,
                         symbolStrokeWidth=3)
SHARED_PARAMS = ("w_s", "w_1", "w_2")  # sim.model.AgentSpec.parameter_names
TASK_PARAMS = ("u_s", "u_1", "u_2")  # u_x[t] per ID task
AGENT_BAND = (0.025, 0.975)  # quantiles of the band over agents
UNDEFINED_RATIO = "undefined (0/0: never leaves π_ref)"  # a series whose ratio is never finite
# px for the row labels of a heatmap (Vega's default, 180, cuts the budget settings short);
# the phase diagram has no y title: Vega places it by an estimate of the labels' width, onto them
ROW_LABEL_LIMIT = 420


def undefined_ratios(df: pd.DataFrame, ratio_column: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(series x token model with no finite positive ratio at any L: degenerate objectives,
    e.g. the KL alone, whose gradients are all zero at pi = pi_ref; the (series, token model,
    length) cells undefined in every agent of an otherwise defined series: gaps)."""
    ok = np.isfinite(df[ratio_column]) & (df[ratio_column] > 0)
    cell = df.assign(ok=ok).groupby(["series", "token_model", "length"], as_index=False)["ok"].any()
    per_series = cell.groupby(["series", "token_model"], as_index=False)["ok"].any()
    degenerate = per_series[~per_series["ok"]][["series", "token_model"]]
    defined = per_series[per_series["ok"]][["series", "token_model"]]
    gaps = cell[~cell["ok"]].merge(defined, on=["series", "token_model"])
    return degenerate.reset_index(drop=True), gaps[["series", "token_model", "length"]]


# ---------------------------------------------------------------- attribution landscape


def attribution_landscape(results: pd.DataFrame, id_tasks: Sequence[str] | None = None,
                          ratio_column: str = "ratio",
                          domain: Sequence[str] | None = None) -> alt.VConcatChart:
    """Attribution ratio vs L per objective and token model (log axes, population CIs), and
    heatmaps of the learned p and q2 (mean over agents and ID tasks) over L x objective.
    Colour: the regime's (analysis.charts.series_scale over the report's `domain`).

    `results`: the sweep table (DESIGN §3; one row per cell and agent) with objective,
    token_model, length, `ratio_column`, p[T], q2[T].
    """
    df = results.copy()
    df["series"] = series_labels(df)
    degenerate, gaps = undefined_ratios(df, ratio_column)
    finite = df[np.isfinite(df[ratio_column]) & (df[ratio_column] > 0)]
    agg = mean_ci(finite, ["series", "token_model", "length"], ratio_column)
    agg["ci_low"] = agg["ci_low"].clip(lower=agg["mean"] * 1e-3)
    pick, faded = legend_pick("series")
    colours = series_scale(df["series"], domain)
    base = alt.Chart(agg).encode(
        x=alt.X("length:Q", scale=alt.Scale(type="log"),
                title="answer length L (tokens, log scale)"),
        # one colour per regime (core.regimes), configurations of a regime told apart by dash
        color=alt.Color("series:N", title="objective (click to pick)", legend=LINE_LEGEND,
                        scale=colours),
        **faded,
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
        # the same field, title and legend as the colour: one legend with coloured dashes
        strokeDash=alt.StrokeDash("series:N", title="objective (click to pick)",
                                  legend=LINE_LEGEND,
                                  scale=alt.Scale(domain=list(colours.domain)))).add_params(pick)
    # R = 1: sampling and decision gradients equally large (DESIGN §3)
    unit = alt.Chart(pd.DataFrame({"R": [1.0], "label": ["R = 1"]}))
    unit_rule = unit.mark_rule(color="#444", strokeDash=[6, 3]).encode(y="R:Q")
    unit_text = unit.mark_text(align="left", dx=4, dy=-7, fontSize=12, color="#444").encode(
        y="R:Q", x=alt.value(0), text="label:N")
    panels = []
    for tm in sorted(set(agg["token_model"]) | set(degenerate["token_model"])):
        layers = [band, line, unit_rule, unit_text]
        gap = gaps[gaps["token_model"] == tm]
        if len(gap):  # a defined series undefined at some L: a marked gap, not a silent hole
            gap = gap.assign(label="undefined: " + gap["series"])
            g = alt.Chart(gap)
            layers += [g.mark_rule(color="#c00", strokeDash=[2, 2]).encode(
                           x="length:Q", tooltip=["label:N", "length:Q"]),
                       g.mark_text(angle=270, align="right", baseline="bottom", dx=-4,
                                   fontSize=12, color="#c00").encode(
                           x="length:Q", y=alt.value(0), text="label:N")]
        dead = degenerate[degenerate["token_model"] == tm]
        for i, series in enumerate(dead["series"]):  # degenerate objectives: listed, not dropped
            layers.append(alt.Chart(pd.DataFrame({"label": [f"{series}: ratio {UNDEFINED_RATIO}"]}))
                          .mark_text(align="left", baseline="bottom", fontSize=12, color="#c00")
                          .encode(x=alt.value(4), y=alt.value(PANEL_H - 4 - 16 * i),
                                  text="label:N"))
        sub = alt.layer(*[lay.transform_filter(alt.datum.token_model == tm)
                          if lay is band or lay is line else lay for lay in layers])
        panels.append(sub.properties(
            width=PANEL_W + 60, height=PANEL_H, title=f"token model: {tm}"))
    landscape = alt.hconcat(*panels)

    wanted = set(id_tasks) if id_tasks else None
    cols = [c for c in df.columns if (parts := split_column(c)) is not None
            and parts[0] in ("p", "q2") and (wanted is None or parts[1] in wanted)]
    long = df.melt(id_vars=["series", "token_model", "length"], value_vars=cols,
                   var_name="column", value_name="value")
    long["component"] = long["column"].map(lambda c: split_column(c)[0])
    several_models = long["token_model"].nunique() > 1
    long["row"] = (long["series"] + " · " + long["token_model"].astype(str) if several_models
                   else long["series"])
    heat = long.groupby(["component", "row", "length"], as_index=False)["value"].mean()
    maps = []
    for comp, title in (("p", "learned p (ID mean)"), ("q2", "learned q2 (ID mean)")):
        data = heat[heat["component"] == comp].assign(
            label=lambda d: np.where(np.isfinite(d["value"]), "", "undefined"))
        cells = alt.Chart(data).encode(
            x=alt.X("length:O", title="answer length L (tokens)"),
            y=alt.Y("row:N", title="objective · token model" if several_models else "objective",
                    axis=alt.Axis(labelLimit=ROW_LABEL_LIMIT)))
        rect = cells.mark_rect().encode(
            color=alt.Color("value:Q", scale=alt.Scale(domain=[0, 1], scheme="viridis"),
                            title=f"{comp} (0–1)"),
            tooltip=["row:N", alt.Tooltip("length:O", title="L"),
                     alt.Tooltip("value:Q", title=comp, format=".3f")])
        # an unresolved value (NaN) is a hatched-grey cell saying so, not a hole
        undefined = cells.mark_rect(color="#ddd").encode(
            tooltip=["row:N", alt.Tooltip("length:O", title="L"), "label:N"]).transform_filter(
            alt.datum.label == "undefined")
        text = cells.mark_text(fontSize=10, color="#a00", angle=270).encode(
            text="label:N").transform_filter(alt.datum.label == "undefined")
        maps.append(alt.layer(rect, undefined, text).properties(
            width=PANEL_W, height=max(60, 22 * heat["row"].nunique()), title=title))
    heatmaps = alt.hconcat(*maps).resolve_scale(color="independent")
    return alt.vconcat(landscape, heatmaps)


# -------------------------------------------------------------------- training dynamics


def terms_of(history: pd.DataFrame) -> list[str]:
    """The objective terms of a history (its g_s[term] columns), without the total."""
    return [t for t in keyed_columns(history.columns, "g_s") if t != "total"]


def parameter_columns(history: pd.DataFrame) -> list[str]:
    """The parameter columns of a history: w_x and u_x[t] (sim.model.AgentSpec)."""
    return [c for c in history.columns if c in SHARED_PARAMS
            or ((parts := split_column(c)) is not None and parts[0] in TASK_PARAMS)]


def agent_band(long: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean over agents with the AGENT_BAND percentile band (a single agent: band = line)."""
    g = long.groupby(keys, as_index=False)["value"]
    out = g.mean()
    out["lo"] = g.quantile(AGENT_BAND[0])["value"].to_numpy()
    out["hi"] = g.quantile(AGENT_BAND[1])["value"].to_numpy()
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
    params = parameter_columns(h)
    terms = terms_of(h)
    resets = (sorted(h.loc[h["ref_reset"].astype(bool), "step"].unique())
              if "ref_reset" in h.columns else [])

    def line_chart(data: pd.DataFrame, colour: str, title: str, ytitle: str,
                   log: bool = False, legend_title: str | None = None) -> alt.LayerChart:
        yscale = alt.Scale(type="log") if log else alt.Scale(zero=False)
        enc = alt.Chart(data).encode(
            x=alt.X("step:Q", title="training step"),
            color=alt.Color(f"{colour}:N", title=legend_title or colour,
                            legend=LINE_LEGEND))
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
    p_chart = line_chart(agent_band(plong, ["step", "parameter"]), "parameter",
                         "parameters", "value (logit units)")

    gcols = {column(f"g_{x}", "total"): label for x, label in COMPONENT_LABELS.items()}
    nlong = h.melt(id_vars=["step", "agent"], value_vars=list(gcols), var_name="col")
    nlong["component"] = nlong["col"].map(gcols)
    net = line_chart(agent_band(nlong, ["step", "component"]), "component",
                     "net gradient (weighted sum)", "d objective / d logit")

    ratio_cols = keyed_columns(h.columns, "ratio")
    rcols = {ratio_cols[t]: t for t in [*terms, "total"] if t in ratio_cols}
    rlong = h.melt(id_vars=["step", "agent"], value_vars=list(rcols), var_name="col")
    rlong["term"] = rlong["col"].map(rcols)
    rlong = rlong[np.isfinite(rlong["value"]) & (rlong["value"] > 0)]
    ratio = line_chart(agent_band(rlong, ["step", "term"]), "term",
                       "attribution ratio over time", "|g_s| / mean(|g_1|,|g_2|) (log)",
                       log=True, legend_title="objective term")

    comp_charts = []
    for x, label in COMPONENT_LABELS.items():
        frames = []
        for t in terms:
            col = column(f"g_{x}", t)
            sub = h[["step", "agent", col]].rename(columns={col: "value"})
            sub["value"] = sub["value"] * weights.get(t, 1.0)
            sub["term"] = f"{weights[t]:g} × {t}" if t in weights and weights[t] != 1 else t
            frames.append(sub)
        comp_charts.append(line_chart(agent_band(pd.concat(frames), ["step", "term"]), "term",
                                      f"gradient components: {label}",
                                      "d term / d logit", legend_title="objective term"))
    top = alt.hconcat(p_chart, net, ratio).resolve_scale(color="independent")
    bottom = alt.hconcat(*comp_charts).resolve_scale(color="shared")
    return alt.vconcat(top, bottom).resolve_scale(color="independent")


# ------------------------------------------------------------------------ phase diagram


def coupling_text(value: object) -> str:
    """A short name of a coupling matrix M (DESIGN §2): "none" for M = I; "off-diag c" for
    ones on the diagonal and c everywhere else; else the matrix as given."""
    try:
        matrix = parse_coupling(value)
    except ValueError:
        return str(value)
    if matrix is None:
        return "none"
    m = np.array(matrix)
    off = m[~np.eye(3, dtype=bool)]
    if np.all(np.diag(m) == 1) and np.all(off == off[0]):
        return f"off-diag {off[0]:g}"
    return str(value)


def budget_label(table: pd.DataFrame) -> pd.Series:
    """One label per update-budget setting (DESIGN §2): the axes that vary, else the one."""
    axes = [("optimiser", "{}"), ("second_moment", "v {}"), ("max_grad_norm", "clip {:g}"),
            ("coupling", "M {}")]
    if "coupling" in table.columns:
        table = table.assign(coupling=table["coupling"].map(
            lambda v: v if pd.isna(v) else coupling_text(v)))
    present = [(c, f) for c, f in axes if c in table.columns]
    varying = [(c, f) for c, f in present if table[c].nunique(dropna=False) > 1] or present[:1]
    if not varying:
        return pd.Series("default", index=table.index)
    parts = [table[c].map(lambda v, f=f: "–" if pd.isna(v) else f.format(v)) for c, f in varying]
    label = parts[0].astype(str)
    for p in parts[1:]:
        label = label + " · " + p.astype(str)
    return label


def phase_diagram(table: pd.DataFrame) -> alt.VConcatChart:
    """Heatmaps over answer length x update-budget setting, one column per regime: the median
    attribution ratio (log colour, R = 1 at the middle of the diverging scale) and, where
    present, the median q2 of the first task. Undefined medians are grey cells saying so.

    `table`: analysis.report_inputs.phase_table (regime, length, budget axes, medians).
    """
    d = table.copy()
    d["setting"] = budget_label(d)
    q2 = next((c for c in d.columns if (parts := split_column(c)) and parts[0] == "q2"), None)
    rows = []
    for metric, title, scale in (
            ("ratio", "median attribution ratio R (log; R = 1 white)",
             alt.Scale(type="log", scheme="redblue", reverse=True, domainMid=1)),
            (q2, f"median {q2} (0–1)", alt.Scale(domain=[0, 1], scheme="viridis")),
            ("ood_accuracy", "median OOD accuracy (0–1)",
             alt.Scale(domain=[0, 1], scheme="viridis"))):
        if metric is None or metric not in d.columns:
            continue
        m = d.assign(value=d[metric].astype(float))
        m["label"] = np.where(np.isfinite(m["value"]) & ((m["value"] > 0) | (metric != "ratio")),
                              "", "undefined")
        cells = alt.Chart(m).encode(
            x=alt.X("length:O", title="answer length L (tokens)"),
            y=alt.Y("setting:N", title=None, axis=alt.Axis(labelLimit=ROW_LABEL_LIMIT)))
        rect = cells.mark_rect().encode(
            color=alt.Color("value:Q", scale=scale, title=metric),
            tooltip=["regime:N", "setting:N", "length:O",
                     alt.Tooltip("value:Q", format=".3g", title=metric)]).transform_filter(
            alt.datum.label == "")
        grey = cells.mark_rect(color="#ddd").encode(
            tooltip=["regime:N", "setting:N", "length:O", "label:N"]).transform_filter(
            alt.datum.label == "undefined")
        text = cells.mark_text(fontSize=10, color="#a00", text="undef.").transform_filter(
            alt.datum.label == "undefined")
        rows.append(alt.layer(rect, grey, text).properties(
            width=max(160, 26 * d["length"].nunique()),
            height=max(40, 22 * d["setting"].nunique())).facet(
            column=alt.Column("regime:N", title=None),
            title=alt.TitleParams(title, subtitle="rows: update budget (optimiser · Adam's v · "
                                  "gradient-norm clip · coupling M)", anchor="start")))
    return alt.vconcat(*rows).resolve_scale(color="independent")
