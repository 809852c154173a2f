"""The update budget's figures (DESIGN.md §2, "Update budget") from ONE sweep grid file.

    python scripts/update_budget_check.py [--grid examples/grid_update_budget.toml]
                                          [--out outputs/sweeps] [--workers N]

Runs (or resumes) the grid's sweep and, for SFT-reflection alone, the same grid at F->T shares
0, 0.5 and 1 (`sft_ft_share`, every clip of the grid), then prints, per second moment and
clip of the grid, medians over agents of:
  (a) SFT-reflection's q2[T1] at the longest L against the shortest (target: at most half);
  (b) GRPO's q2[T1] against SFT-reflection's at every L >= 100 (target: GRPO >=);
  (c) OOD accuracy at the longest L: GRPO against both SFT variants (target: GRPO >=);
and SFT-reflection's p*q2 on T1 (the echo p(F->T), DESIGN §4) by F->T share, per second
moment, clip and L (target: share 1 <= share 0 + 0.02; Kang et al. measured it flat at
0.04-0.06). Nothing is tuned to the targets: the lines say "met" or "NOT met" as the numbers
fall. Unstable cells (DESIGN §2) are counted in every heading.
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
SHARES = (0.0, 0.5, 1.0)
KEYS = ["objective", "second_moment", "max_grad_norm", "length"]


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _run(file_data: dict, source: str, out: str, workers: int | None, **overrides) -> pd.DataFrame:
    name, grid = build_grid(file_data, source=source, **overrides)
    result = run_sweep(grid, name, out, workers=workers, progress=False,
                       inputs={"grid": source})
    return result.results  # the frame run_sweep wrote to results.parquet


def budget_lines(df: pd.DataFrame, sm: str, clip: float) -> list[str]:
    """(a), (b), (c) for one second moment and clip (module docstring)."""
    sub = df[(df["second_moment"] == sm) & (df["max_grad_norm"] == clip)]
    med = sub.groupby(["objective", "length"])[["q2[T1]", "ood_accuracy"]].median()
    lengths = sorted(sub["length"].unique())
    short, long = lengths[0], lengths[-1]
    n_bad = int(sub.groupby("cell_id")["unstable"].any().sum())
    lines = [f"== Adam, {sm} second moment, max_grad_norm {clip:g} "
             f"({'no clipping' if clip == 0 else 'clipped'}); unstable cells: {n_bad} =="]
    q_short, q_long = med.loc[(SFT_R, short), "q2[T1]"], med.loc[(SFT_R, long), "q2[T1]"]
    lines.append(f"(a) SFT-reflection q2[T1]: L={short} {q_short:.3f} -> L={long} {q_long:.3f} "
                 f"(ratio {q_long / q_short:.2f}; target <= 0.5: {_met(q_long <= q_short / 2)})")
    parts = []
    for length in [x for x in lengths if x >= 100]:
        g, s = med.loc[(GRPO, length), "q2[T1]"], med.loc[(SFT_R, length), "q2[T1]"]
        parts.append(f"L={length} {g:.3f} vs {s:.3f} ({_met(g >= s)})")
    lines.append("(b) q2[T1] GRPO vs SFT-reflection: " + "; ".join(parts))
    ood = {o: med.loc[(o, long), "ood_accuracy"] for o in (GRPO, SFT_R, SFT_N)}
    lines.append(f"(c) OOD accuracy at L={long}: GRPO {ood[GRPO]:.3f} vs SFT-reflection "
                 f"{ood[SFT_R]:.3f} ({_met(ood[GRPO] >= ood[SFT_R])}), SFT-no-reflection "
                 f"{ood[SFT_N]:.3f} ({_met(ood[GRPO] >= ood[SFT_N])})")
    return lines


def share_lines(by_share: dict[float, pd.DataFrame]) -> list[str]:
    """SFT-reflection's p*q2 on T1 by F->T share, per second moment, clip and L."""
    lines = ["== SFT-reflection p*q2 on T1 (echo p(F->T)) by F->T share; target: share 1 <= "
             "share 0 + 0.02 (Kang et al.: flat, 0.04-0.06) =="]
    lines.append(f"{'second moment':<15}{'clip':>6}{'L':>6}"
                 + "".join(f"{f'share {s:g}':>11}" for s in SHARES) + "  target")
    table = {}
    for share, df in by_share.items():
        sub = df[df["objective"] == SFT_R]
        echo = sub["p[T1]"] * sub["q2[T1]"]
        table[share] = echo.groupby([sub["second_moment"], sub["max_grad_norm"],
                                     sub["length"]]).median()
    for sm, clip, length in table[SHARES[0]].index:
        vals = [table[s][(sm, clip, length)] for s in SHARES]
        lines.append(f"{sm:<15}{clip:>6g}{length:>6}" + "".join(f"{v:>11.3f}" for v in vals)
                     + f"  {_met(vals[-1] <= vals[0] + 0.02)}")
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", default="examples/grid_update_budget.toml")
    ap.add_argument("--out", default="outputs/sweeps")
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args(argv)
    data = load_grid_file(args.grid)
    source = f"grid file {args.grid}"
    name, grid = build_grid(data, source=source)
    name = name or "update-budget"
    base_share = grid.training.sft_ft_share
    df = _run(data, source, args.out, args.workers)
    by_share = {}
    for share in SHARES:
        if share == base_share:
            by_share[share] = df
        else:
            by_share[share] = _run(data, source, args.out, args.workers, objectives=(SFT_R,),
                                   sft_ft_share=share, name=f"{name}-share{share:g}")
    for sm in df["second_moment"].unique():
        for clip in sorted(df["max_grad_norm"].unique()):
            print("\n".join(budget_lines(df, sm, clip)))
    print("\n".join(share_lines(by_share)))


if __name__ == "__main__":
    main()
