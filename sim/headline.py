"""The sweep's headline (DESIGN §3-§4): a compact table of medians per configuration and answer
length, and one sentence written from those numbers. Pure functions of the results frame
(outputs/sweeps/<name>/results.parquet), so `cli.py sweep` prints it and the report's Findings
section (analysis.sections_findings) states the same numbers.

Per cell (configuration x L) the medians over agents of: the attribution ratio R = |g_s| /
mean(|g_1|, |g_2|) of the total gradient (DESIGN §3), the KL term's ratio where the objective
has a KL term, q2 of the first task, ID and OOD accuracy (DESIGN §4). An objective whose ratio
is 0/0 in every agent (the KL alone never leaves pi_ref, so all its gradients are zero) is
"degenerate": shown as such, never dropped. Cells where any agent was flagged `unstable` (a
one-step move of p or q > 0.5, DESIGN §2) are marked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sim.columns import keyed_columns

# grid axes that split one regime into several configurations when they vary (sim.grid.AXES)
CONFIG_AXES = (("token_model", "{}"), ("optimiser", "{}"), ("beta", "beta={:g}"),
               ("second_moment", "v {}"), ("max_grad_norm", "clip {:g}"), ("coupling", "M {}"))
SERIES_SEP = " · "  # between a series label's regime and its varying grid axes
SATURATION_FACTOR = 1.25  # a ratio within this factor of its value at the longest L is flat
DEGENERATE_NOTE = "undefined: 0/0, never leaves pi_ref"
SHOWN_LENGTHS = 3  # smallest, the one nearest MIDDLE_LENGTH, largest
MIDDLE_LENGTH = 100.0


@dataclass(frozen=True)
class Saturation:
    """Where a configuration's ratio stops growing (or shrinking) over L: from `length` on it
    stays within SATURATION_FACTOR of `value`, its median at the longest L. `length` is None
    when only the longest L qualifies (still moving there)."""

    series: str
    column: str
    length: float | None
    value: float
    first: float  # the median at the shortest L


def series_labels(results: pd.DataFrame, axes: tuple[tuple[str, str], ...] = CONFIG_AXES,
                  base: pd.Series | None = None) -> pd.Series:
    """`base` (default: the results' `regime` column, core.regimes labels for the paper's
    regimes), plus each of the grid `axes` (column, format) that varies in the sweep, so
    different configurations are never pooled."""
    label = (results["regime"] if base is None else base).astype(str)
    for col, fmt in axes:
        if col in results.columns and results[col].nunique() > 1:
            label = label + SERIES_SEP + results[col].map(fmt.format)
    return label


def first_column(results: pd.DataFrame, stat: str) -> str | None:
    """The `stat[task]` column of the first task (q2[T1] on the default ladder), or None."""
    cols = keyed_columns(results.columns, stat)
    return next(iter(cols.values()), None)


def cell_medians(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (series, length): medians over agents of ratio, ratio_kl, q2, id_accuracy,
    ood_accuracy; `agents`, `unstable` (agents flagged) and `degenerate` (ratio undefined in
    every agent). Series keep their order of first appearance."""
    df = results.copy()
    df["series"] = series_labels(df)
    q2 = first_column(df, "q2")
    ratio_kl = keyed_columns(df.columns, "ratio").get("kl")
    value = {"ratio": "ratio", "ratio_kl": ratio_kl, "q2": q2, "id_accuracy": "id_accuracy",
             "ood_accuracy": "ood_accuracy"}
    for name, col in value.items():
        df[f"_{name}"] = df[col].astype(float) if col in df.columns else np.nan
    df["_unstable"] = df["unstable"].astype(bool) if "unstable" in df.columns else False
    df["_defined"] = np.isfinite(df["_ratio"])
    g = df.groupby(["series", "length"], sort=False)
    with np.errstate(all="ignore"):
        out = g.agg(**{name: (f"_{name}", "median") for name in value},
                    agents=("_ratio", "size"), unstable=("_unstable", "sum"),
                    defined=("_defined", "sum")).reset_index()
    out["degenerate"] = out["defined"] == 0
    order = {s: i for i, s in enumerate(dict.fromkeys(df["series"]))}
    out = out.sort_values(["series", "length"], key=lambda c: c.map(order) if c.name ==
                          "series" else c, kind="stable").reset_index(drop=True)
    out["q2_column"] = q2
    return out.drop(columns="defined")


def shown_lengths(lengths: pd.Series | np.ndarray, n: int = SHOWN_LENGTHS) -> list[float]:
    """A few representative lengths: all of them when there are at most n + 1, else the
    smallest, the one nearest MIDDLE_LENGTH (log scale) and the largest."""
    ls = np.sort(np.unique(np.asarray(lengths, dtype=float)))
    if len(ls) <= n + 1:
        return [float(x) for x in ls]
    mid = ls[np.argmin(np.abs(np.log(ls) - math.log(MIDDLE_LENGTH)))]
    return [float(x) for x in dict.fromkeys((ls[0], mid, ls[-1]))]


def saturation(cells: pd.DataFrame, series: str, column: str = "ratio") -> Saturation | None:
    """Where `series`' median `column` saturates over L (see Saturation); None without two
    finite positive values."""
    sub = cells[(cells["series"] == series) & np.isfinite(cells[column])
                & (cells[column] > 0)].sort_values("length")
    if len(sub) < 2:
        return None
    values, lengths = sub[column].to_numpy(), sub["length"].to_numpy(dtype=float)
    last = values[-1]
    within = np.abs(np.log(values / last)) <= math.log(SATURATION_FACTOR)
    start = len(values) - 1
    while start > 0 and within[start - 1]:
        start -= 1
    return Saturation(series, column, None if start == len(values) - 1 else lengths[start],
                      float(last), float(values[0]))


def format_number(x: float) -> str:
    """A ratio as the headline and the report's Findings print it: "-" when undefined, three
    significant digits below 1,000, thousands separated up to a million ("1,420"), then
    scientific notation."""
    if not math.isfinite(x):
        return "-"
    if abs(x) >= 1e6:
        return f"{x:.2e}"
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"


def _prob(x: float) -> str:
    return f"{x:.3f}" if math.isfinite(x) else "-"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%" if math.isfinite(x) else "-"


def headline_sentence(cells: pd.DataFrame) -> str:
    """One sentence from the numbers: which configuration has the best median OOD accuracy at
    the longest L (and the runner-up), and where the KL term's ratio (else the total ratio) of
    the configurations that have one saturates."""
    longest = cells["length"].max()
    at = cells[(cells["length"] == longest) & np.isfinite(cells["ood_accuracy"])]
    at = at.sort_values("ood_accuracy", ascending=False, kind="stable")
    parts = []
    if len(at):
        best = at.iloc[0]
        text = (f"at the longest L = {longest:g}, {best['series']} generalises best out of "
                f"distribution (median OOD accuracy {_pct(best['ood_accuracy'])}")
        if len(at) > 1:
            nxt = at.iloc[1]
            text += f"; next {nxt['series']} {_pct(nxt['ood_accuracy'])}"
        parts.append(text + ")")
    kl_series = [s for s in dict.fromkeys(cells["series"])
                 if np.isfinite(cells.loc[cells["series"] == s, "ratio_kl"]).any()]
    for s in kl_series:
        sat = saturation(cells, s, "ratio_kl")
        if sat is not None:
            parts.append(f"{s}'s KL-term ratio {_saturation_text(sat)}")
    if not kl_series:
        for s in dict.fromkeys(cells["series"]):
            sat = saturation(cells, s, "ratio")
            if sat is not None:
                parts.append(f"{s}'s ratio {_saturation_text(sat)}")
                break
    if not parts:
        return "No finite result to summarise."
    sentence = "; ".join(parts) + "."
    return sentence[0].upper() + sentence[1:]


def _saturation_text(sat: Saturation) -> str:
    if sat.length is None:
        return (f"has not saturated by the longest L (median {format_number(sat.first)} at "
                f"the shortest, {format_number(sat.value)} at the longest)")
    return (f"saturates from L ≈ {sat.length:g} at about {format_number(sat.value)} (median "
            f"{format_number(sat.first)} at the shortest L)")


def headline_table(cells: pd.DataFrame, lengths: list[float] | None = None) -> str:
    """The medians at `lengths` (default: shown_lengths) as fixed-width text, one row per
    configuration and length; degenerate rows say why, unstable rows are flagged."""
    lengths = shown_lengths(cells["length"]) if lengths is None else lengths
    sub = cells[cells["length"].isin(lengths)]
    q2 = cells["q2_column"].iloc[0] if len(cells) and cells["q2_column"].iloc[0] else "q2"
    width = max([len("configuration"), *(len(s) for s in sub["series"])])
    head = (f"{'configuration':<{width}} {'L':>6} {'R':>8} {'R[kl]':>8} {q2:>8} "
            f"{'ID acc':>7} {'OOD acc':>7}  note")
    rows = [head, "-" * len(head)]
    for r in sub.itertuples():
        notes = []
        if r.degenerate:
            notes.append(DEGENERATE_NOTE)
        if r.unstable:
            notes.append(f"UNSTABLE: {r.unstable}/{r.agents} agents")
        ratio = "undef" if r.degenerate else format_number(r.ratio)
        line = (f"{r.series:<{width}} {r.length:>6g} {ratio:>8} "
                f"{format_number(r.ratio_kl):>8} "
                f"{_prob(r.q2):>8} {_pct(r.id_accuracy):>7} {_pct(r.ood_accuracy):>7}  "
                + "; ".join(notes))
        rows.append(line.rstrip())
    return "\n".join(rows)


def headline(results: pd.DataFrame) -> str:
    """The table and the sentence, with a line saying what the numbers are."""
    cells = cell_medians(results)
    lengths = shown_lengths(cells["length"])
    n_all = cells["length"].nunique()
    shown = "all" if len(lengths) == n_all else f"{len(lengths)} of {n_all}"
    agents = int(cells["agents"].max()) if len(cells) else 0
    unstable = int((cells["unstable"] > 0).sum())
    intro = (f"Headline: medians over {agents} agents per cell, {shown} lengths shown; R = "
             f"|g_s| / mean(|g_1|, |g_2|) of the total gradient, R[kl] the KL term's (DESIGN "
             f"§3); {unstable} of {len(cells)} cells have unstable agents.")
    return "\n".join([intro, headline_table(cells, lengths), headline_sentence(cells)])
