"""Calibration tables from parsed responses (DESIGN.md §4): per task (or any column), the
observed accuracy, p̂, q̂1, q̂2, predicted accuracy and echo rate from `core.calibration`
(the simulator's statistics), with response statistics; and a compact text view.

Used by `realmodel eval` (calibration.csv) and the training callbacks (calibration.parquet).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from core.calibration import TrajectoryCounts, calibrate
from core.errors import ExpectedError
from realmodel.parsing import calibration_attempts, parse_response
from realmodel.responses import read_responses

STATS = ("observed_accuracy", "p_hat", "p_pooled", "q1_hat", "q2_hat", "predicted_accuracy",
         "echo_p_ft")
_SHOWN = ("observed_accuracy", "p_hat", "q1_hat", "q2_hat", "predicted_accuracy", "echo_p_ft")


class CalibrationError(ExpectedError, ValueError):
    """Nothing to calibrate (message is one line, for the CLI)."""


def reparse_rows(rows: Iterable[dict[str, Any]],
                 markers: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The rows with `parse` redone from `response` (with `markers`; None: the defaults)."""
    return [{**r, "parse": parse_response(r["response"], r["a"], r["b"], markers,
                                          bool(r.get("truncated"))).to_dict()} for r in rows]


def calibrate_responses(
    source: str | Path | Sequence[dict[str, Any]],
    by: str | None = "task",
    n_boot: int = 100,
    seed: int = 0,
    max_attempts: int | None = None,
    reparse: bool = False,
    markers: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Calibration table from responses (a responses.jsonl path or its records), per `by`
    group (None: one row for all). `reparse=True` re-parses each response with `markers`
    (e.g. after extending the marker list) instead of using the stored parse.

    Columns: <group>, n, then for each statistic S in observed_accuracy, p_hat, p_pooled,
    q1_hat, q2_hat, predicted_accuracy, echo_p_ft: S, S_ci_low, S_ci_high; then
    answerless_rate, truncated_rate, mean_attempts, mean_tokens.
    """
    rows = read_responses(source) if isinstance(source, str | Path) else list(source)
    if not rows:
        raise CalibrationError("no responses to calibrate")
    if reparse:
        rows = reparse_rows(rows, markers)
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault("all" if by is None else str(row[by]), []).append(row)
    return pd.DataFrame([_group_row(by or "group", key, members, max_attempts, n_boot, seed)
                         for key, members in groups.items()])


def _group_row(column: str, key: str, members: list[dict[str, Any]],
               max_attempts: int | None, n_boot: int, seed: int) -> dict[str, Any]:
    counts = TrajectoryCounts.from_attempts(
        [calibration_attempts(r["parse"]["attempts"]) for r in members],
        [r["parse"]["correct"] for r in members],
    )
    est = calibrate(counts, max_attempts=max_attempts, n_boot=n_boot, seed=seed)
    out: dict[str, Any] = {column: key, "n": len(members)}
    if members[0].get("in_distribution") is not None:
        out["in_distribution"] = bool(members[0]["in_distribution"])
    for stat in STATS:
        e = est[stat]
        out.update({stat: e.estimate, f"{stat}_ci_low": e.ci_low, f"{stat}_ci_high": e.ci_high})
    n = len(members)
    out["answerless_rate"] = sum(  # no candidate at all (truncated or not)
        all(a["answer"] is None for a in r["parse"]["attempts"]) for r in members) / n
    out["truncated_rate"] = sum(bool(r.get("truncated")) for r in members) / n
    out["mean_attempts"] = sum(sum(a["answer"] is not None for a in r["parse"]["attempts"])
                               for r in members) / n
    out["mean_tokens"] = sum(int(r.get("n_tokens", 0)) for r in members) / n
    return out


def format_table(table: pd.DataFrame) -> str:
    """A compact human-readable view: estimate [ci_low, ci_high] per statistic."""
    key = table.columns[0]
    lines = [f"{key:>6} {'n':>4}  " + "  ".join(
        f"{s:<22}" for s in ("obs_acc", "p_hat", "q1_hat", "q2_hat", "pred_acc", "echo_p_ft"))]
    for _, r in table.iterrows():
        cells = [f"{r[s]:.2f} [{r[s + '_ci_low']:.2f},{r[s + '_ci_high']:.2f}]"
                 .replace("nan", " - ") for s in _SHOWN]
        lines.append(f"{r[key]!s:>6} {int(r['n']):>4}  " + "  ".join(f"{c:<22}" for c in cells))
    return "\n".join(lines)
