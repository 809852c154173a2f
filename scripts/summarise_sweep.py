"""Per-cell medians over agents of a sweep's results.parquet: the CSVs in docs/results/simulator.

    python scripts/summarise_sweep.py outputs/sweeps/<name>/results.parquet > summary.csv

Rows: one per cell, keyed by objective and length plus every other grid axis that varies
(optimiser, Adam's second moment, max_grad_norm, coupling, token model, beta). Columns: the
sampled and exact expected attribution ratios (total, and of the KL term where the objective
has one), T1's learned p and q2, in/out-of-distribution accuracy, and the update budget's
stability flags (DESIGN §2): `unstable` (1 if some agent moved p or q by more than 0.5 in one
step) and the largest one-step move `max_jump` over agents.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sim.columns import column  # noqa: E402

COLUMNS = {"ratio": "ratio", "exp_ratio": "exp_ratio", column("ratio", "kl"): "kl_ratio",
           column("exp_ratio", "kl"): "kl_exp_ratio", column("q2", "T1"): "q2_T1",
           column("p", "T1"): "p_T1", "id_accuracy": "id_acc", "ood_accuracy": "ood_acc"}


AXES = ("optimiser", "second_moment", "max_grad_norm", "coupling", "token_model", "beta")


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    keys = [k for k in AXES if k in results.columns and results[k].nunique() > 1]
    keys += ["objective", "length"]
    cols = [c for c in COLUMNS if c in results.columns]
    grouped = results.groupby(keys)
    table = grouped[cols].median().rename(columns=COLUMNS)
    if "unstable" in results.columns:  # per cell: any agent (DESIGN §2)
        table["unstable"] = grouped["unstable"].any().astype(int)
        table["max_jump"] = grouped["max_jump"].max()
    return table.round(4).reset_index()


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: " + __doc__.strip().splitlines()[2].strip())
    try:
        results = pd.read_parquet(sys.argv[1])
    except (OSError, ValueError) as err:  # missing file, or not a Parquet file
        sys.exit(f"Error: cannot read {sys.argv[1]}: {err}")
    summarise(results).to_csv(sys.stdout, index=False)


if __name__ == "__main__":
    main()
