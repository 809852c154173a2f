"""The paper's stated RL q2 read at another level of its range (DESIGN §4, §6): Table 1 plus
q2 = LEVEL on RL's seven tasks, for `cli.py fit --decomposition`.

    python scripts/stated_q2_table.py 0.6 outputs/rl_q2_0.6.csv
    python cli.py fit --observed outputs/rl_q2_0.6.csv --decomposition \
        --mask-wrong-attempts --transfer flat-decisions

examples/paper_table1_rl_q2_stated.csv reads the paper's "between 40-60% even far
out-of-distribution" (§4.2, RL's q2) as 0.50 on every task. The statement is a range, so a fit
on it should be read across the range: this writes the same table at any level in it (the
sensitivity of docs/results/simulator/fit_decomposition/README.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

STATED = Path(__file__).resolve().parent.parent / "examples" / "paper_table1_rl_q2_stated.csv"
STATED_RANGE = (0.4, 0.6)  # the paper's "between 40-60%"


def stated_q2_table(level: float) -> pd.DataFrame:
    """The stated-q2 example table with RL's q2 cells at `level` (in (0, 1)); every other
    cell as in the example. A level outside STATED_RANGE is allowed (a what-if) and said so
    in q2_source."""
    if not 0 < level < 1:
        raise ValueError(f"q2 level must lie in (0, 1), got {level}")
    table = pd.read_csv(STATED)
    stated = table["q2"].notna()
    table.loc[stated, "q2"] = level
    inside = STATED_RANGE[0] <= level <= STATED_RANGE[1]
    table.loc[stated, "q2_source"] = (table.loc[stated, "q2_source"].astype(str)
                                      + f" [read as {level:g}"
                                      + ("" if inside else ", outside the stated range") + "]")
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("level", type=float, help="RL's q2 on every task, in (0, 1)")
    ap.add_argument("out", type=Path, help="the table to write (CSV)")
    args = ap.parse_args()
    try:
        table = stated_q2_table(args.level)
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    print(f"wrote {args.out}: Table 1 plus RL's q2 = {args.level:g} on "
          f"{int(table['q2'].notna().sum())} tasks")


if __name__ == "__main__":
    main()
