"""The sweep's headline (sim.headline): table and sentence from a synthetic results frame, and
`cli.py sweep` printing it before its JSON summary (still the last line)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from click.testing import CliRunner

from sim.headline import (
    DEGENERATE_NOTE,
    cell_medians,
    format_number,
    headline,
    headline_sentence,
    saturation,
    shown_lengths,
)

LENGTHS = (10.0, 100.0, 1000.0)


def _frame(ood: dict[str, float], kl_ratio=lambda L: min(L, 100.0), unstable_cell=None,
           agents: int = 5) -> pd.DataFrame:
    """Three regimes over LENGTHS: GRPO (a KL term whose ratio grows then flattens from
    L = 100), SFT (reflection) and KL only (ratio 0/0 everywhere); OOD accuracy per regime."""
    rows = []
    for regime, objective in (("GRPO", "surrogate+kl"), ("SFT (reflection)", "sft-reflection"),
                              ("KL only", "kl")):
        for L in LENGTHS:
            for a in range(agents):
                jitter = 1 + 0.01 * (a - agents // 2)  # median 1
                rows.append({
                    "objective": objective, "regime": regime, "length": L, "agent": a,
                    "ratio": np.nan if objective == "kl" else 2.0 * jitter,
                    "ratio[kl]": kl_ratio(L) * jitter if objective == "surrogate+kl" else np.nan,
                    "q2[T1]": 0.3, "q2[T2]": 0.9, "id_accuracy": 0.9,
                    "ood_accuracy": ood[regime] * jitter,
                    "unstable": (regime, L) == unstable_cell and a == 0})
    return pd.DataFrame(rows)


def test_sentence_names_the_ood_winner_in_either_order():
    a = headline_sentence(cell_medians(_frame({"GRPO": 0.3, "SFT (reflection)": 0.1,
                                               "KL only": 0.05})))
    b = headline_sentence(cell_medians(_frame({"GRPO": 0.1, "SFT (reflection)": 0.3,
                                               "KL only": 0.05})))
    assert "L = 1000, GRPO generalises best" in a
    assert "(median OOD accuracy 30.0%; next SFT (reflection) 10.0%)" in a
    assert "L = 1000, SFT (reflection) generalises best" in b and "next GRPO 10.0%" in b


def test_sentence_says_where_the_kl_ratio_saturates_or_not():
    ood = {"GRPO": 0.3, "SFT (reflection)": 0.1, "KL only": 0.05}
    flat_from_100 = headline_sentence(cell_medians(_frame(ood)))
    assert "KL-term ratio saturates from L ≈ 100 at about 100 " in flat_from_100
    growing = headline_sentence(cell_medians(_frame(ood, kl_ratio=lambda L: L)))
    assert "has not saturated by the longest L" in growing and "1,000 at the longest" in growing


def test_table_marks_degenerate_and_unstable_cells_and_uses_q2_of_the_first_task():
    text = headline(_frame({"GRPO": 0.3, "SFT (reflection)": 0.1, "KL only": 0.05},
                           unstable_cell=("SFT (reflection)", 100.0)))
    lines = text.splitlines()
    kl_rows = [ln for ln in lines if ln.startswith("KL only")]
    assert len(kl_rows) == 3 and all("undef" in ln and DEGENERATE_NOTE in ln for ln in kl_rows)
    flagged = [ln for ln in lines if "UNSTABLE" in ln]
    assert flagged == [ln for ln in lines if ln.startswith("SFT (reflection)") and " 100 " in ln]
    assert "UNSTABLE: 1/5 agents" in flagged[0]
    assert "q2[T1]" in lines[1] and "0.300" in text and "0.900" not in text
    assert "1 of 9 cells have unstable agents" in lines[0]


def test_configurations_that_differ_in_an_axis_stay_apart():
    df = _frame({"GRPO": 0.3, "SFT (reflection)": 0.1, "KL only": 0.05})
    df2 = df.copy()
    df["optimiser"], df2["optimiser"] = "adam", "sgd"
    df2["ood_accuracy"] *= 2
    cells = cell_medians(pd.concat([df, df2], ignore_index=True))
    assert "GRPO · sgd" in set(cells["series"]) and "GRPO · adam" in set(cells["series"])
    assert "GRPO · sgd generalises best" in headline_sentence(cells)


def test_shown_lengths_keep_the_ends_and_the_middle():
    many = np.geomspace(10, 1000, 16).round()
    assert shown_lengths(many) == [10.0, 86.0, 1000.0]
    assert shown_lengths([10, 20]) == [10.0, 20.0]


def test_saturation_of_a_flat_series_starts_at_the_shortest_length():
    cells = cell_medians(_frame({"GRPO": 0.3, "SFT (reflection)": 0.1, "KL only": 0.05}))
    sat = saturation(cells, "SFT (reflection)", "ratio")
    assert sat is not None and sat.length == 10.0
    assert saturation(cells, "KL only", "ratio") is None


def test_sweep_prints_the_headline_before_its_json_summary(tmp_path):
    import cli

    res = CliRunner().invoke(cli.main, [
        "sweep", "--lengths", "10..20:10", "--objectives", "surrogate+kl,kl", "--steps", "2",
        "--agents", "2", "--queries", "2", "--workers", "1", "--no-progress", "--out",
        str(tmp_path), "--name", "h"])
    assert res.exit_code == 0, res.output
    lines = res.stdout.strip().splitlines()
    assert json.loads(lines[-1])["computed"] == 4
    assert any(ln.startswith("Headline:") for ln in lines)
    assert any(ln.startswith("KL only") and DEGENERATE_NOTE in ln for ln in lines)
    assert "GRPO" in lines[-2] or "generalises best" in lines[-2]


def test_numbers_read_with_thousands_separators():
    """The one formatter of the headline and the report's Findings."""
    assert [format_number(x) for x in (0.941, 55.2, 1420.0, 2164.4, 3.2e6, float("nan"))] == \
        ["0.941", "55.2", "1,420", "2,164", "3.20e+06", "-"]
