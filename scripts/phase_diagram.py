"""Phase diagram of the update budget (DESIGN.md §2, "Update budget") from ONE sweep grid file.

    python scripts/phase_diagram.py [--grid examples/grid_phase.toml] [--out outputs/sweeps]
                                    [--csv docs/results/simulator/phase_diagram.csv]
                                    [--workers N]

Runs (or resumes) the grid's sweep, then writes one row per optimiser / second moment /
max_grad_norm / coupling / L: medians over agents of q2[T1] and OOD accuracy for GRPO
(`surrogate+kl`), SFT-reflection and SFT-no-reflection, the number of unstable cells (some
agent moved p or q by more than 0.5 in one step, DESIGN §2) and three orderings:
GRPO OOD >= SFT-reflection OOD, GRPO OOD >= both SFT, GRPO q2[T1] >= SFT-reflection q2[T1].
Prints the table compactly. Nothing is tuned: the booleans fall as the medians fall.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.regimes import regime  # noqa: E402
from sim.grid_files import build_grid, load_grid_file  # noqa: E402
from sim.sweep import run_sweep  # noqa: E402

GRPO = regime("grpo").sweep_objective
SFT_R = regime("sft-reflection").sweep_objective
SFT_N = regime("sft-no-reflection").sweep_objective
REGIMES = {GRPO: "grpo", SFT_R: "sft_refl", SFT_N: "sft_norefl"}
KEYS = ["optimiser", "second_moment", "max_grad_norm", "coupling", "length"]
ORDERINGS = ["grpo_ood_ge_sft_refl", "grpo_ood_ge_both_sft", "grpo_q2_ge_sft_refl"]


def phase_table(results: pd.DataFrame) -> pd.DataFrame:
    """One row per KEYS: per-regime medians over agents of q2[T1] and OOD accuracy, the
    count of unstable cells, and the three orderings (module docstring)."""
    missing = set(REGIMES) - set(results["objective"])
    if missing:
        raise ValueError(f"the phase diagram needs the objectives {', '.join(sorted(missing))}")
    rows = results[results["objective"].isin(REGIMES)]
    med = (rows.groupby([*KEYS, "objective"])[["q2[T1]", "ood_accuracy"]].median()
           .unstack("objective"))
    table = pd.DataFrame(index=med.index)
    for metric, short in (("q2[T1]", "q2"), ("ood_accuracy", "ood")):
        for objective, label in REGIMES.items():
            table[f"{short}_{label}"] = med[(metric, objective)]
    unstable = rows.groupby([*KEYS, "cell_id"])["unstable"].any().groupby(KEYS).sum()
    table["unstable_cells"] = unstable.reindex(table.index).astype(int)
    table["grpo_ood_ge_sft_refl"] = table["ood_grpo"] >= table["ood_sft_refl"]
    table["grpo_ood_ge_both_sft"] = (table["grpo_ood_ge_sft_refl"]
                                     & (table["ood_grpo"] >= table["ood_sft_norefl"]))
    table["grpo_q2_ge_sft_refl"] = table["q2_grpo"] >= table["q2_sft_refl"]
    return table.reset_index()


def format_table(table: pd.DataFrame) -> str:
    """The table with short labels (couplings as their off-diagonal value) and y/. flags."""
    show = table.copy()
    show["coupling"] = show["coupling"].map(_coupling_short)
    show["second_moment"] = show["second_moment"].replace({"per-parameter": "per-param"})
    for col in ORDERINGS:
        show[col] = show[col].map({True: "y", False: "."})
    show = show.rename(columns={"second_moment": "v", "max_grad_norm": "clip",
                                "coupling": "M", "length": "L", "unstable_cells": "unst",
                                "grpo_ood_ge_sft_refl": "oodG>=R",
                                "grpo_ood_ge_both_sft": "oodG>=both",
                                "grpo_q2_ge_sft_refl": "q2G>=R"})
    return show.to_string(index=False, float_format=lambda x: f"{x:.3f}")


def _coupling_short(label: str) -> str:
    """"none", or a symmetric coupling's off-diagonal entry ("a=0.25"), else the matrix."""
    if label == "none":
        return label
    rows = [[float(x) for x in r.split()] for r in label.split(";")]
    off = {rows[i][j] for i in range(3) for j in range(3) if i != j}
    if len(off) == 1 and all(rows[i][i] == 1 for i in range(3)):
        return f"a={off.pop():g}"
    return label


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", default="examples/grid_phase.toml")
    ap.add_argument("--out", default="outputs/sweeps")
    ap.add_argument("--csv", default="docs/results/simulator/phase_diagram.csv")
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args(argv)
    source = f"grid file {args.grid}"
    name, grid = build_grid(load_grid_file(args.grid), source=source)
    result = run_sweep(grid, name or "phase", args.out, workers=args.workers, progress=False,
                       inputs={"grid": source})
    results = result.results  # the frame run_sweep wrote to results.parquet
    table = phase_table(results)
    table.round(4).to_csv(args.csv, index=False)
    print(format_table(table))
    print(f"-> {args.csv} ({len(table)} rows)")


if __name__ == "__main__":
    main()
