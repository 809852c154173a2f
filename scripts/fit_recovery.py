"""Does the fit recover known parameters, from accuracy alone and with the decomposition?
(DESIGN §4)

    python scripts/fit_recovery.py write FIT_DIR OUT.csv [--n 100] [--seed 0]
    python cli.py fit --observed OUT.csv [fit options of FIT_DIR] --name acc
    python cli.py fit --observed OUT.csv [fit options of FIT_DIR] --decomposition --name dec
    python scripts/fit_recovery.py compare FIT_DIR outputs/fit/acc outputs/fit/dec

`write` simulates every row of a saved fit at its fitted values (the truth) and draws a
table as a real evaluation would measure it, n queries per task: accuracy ~ Bin(n, Acc_K)/n,
p_hat ~ Bin(n, p)/n (first attempts), q1_hat from the first decisions after a correct first
candidate (about n p of them), q2_hat from those after a wrong one (the rest); NaN where
there are none. `compare` prints each free parameter's truth, and each fit's value and 95%
interval (x the interval's span; "in" when the truth lies inside it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis.fit_config import FitError  # noqa: E402
from analysis.fit_io import load_fit, load_saved_fit  # noqa: E402
from analysis.fit_model import simulate_regime  # noqa: E402
from analysis.fit_profile import SavedFitProblem  # noqa: E402
from analysis.observed import BASE  # noqa: E402
from core.calibration import normal_ci  # noqa: E402


def synthetic_table(fit_dir: Path, n: int, seed: int) -> pd.DataFrame:
    """The saved fit's rows, measured on n queries per task (module docstring)."""
    result, observed = load_saved_fit(fit_dir)
    problem = SavedFitProblem.of(observed, result)
    values = dict(zip(problem.names, np.exp(problem.x0), strict=True))
    rng = np.random.default_rng(seed)
    rows = []
    for regime in [BASE, *problem.regimes]:
        sim = simulate_regime(regime, problem.ladder, problem.b_s, problem.cfg, values)
        for i, task in enumerate(problem.ladder.names):
            p, q1, q2, acc = (float(v) for v in sim[i])
            first_right = int(rng.binomial(n, p))
            a = normal_ci(rng.binomial(n, acc), n)  # the paper's interval (DESIGN §4)
            rows.append({"regime": regime, "task": task, "task_index": i + 1,
                         "in_distribution": problem.ladder.in_distribution[i],
                         "accuracy": a.estimate, "ci_low": a.ci_low, "ci_high": a.ci_high,
                         "n": n,
                         "p": first_right / n,
                         "q1": rng.binomial(first_right, q1) / first_right
                         if first_right else np.nan,
                         "q2": rng.binomial(n - first_right, q2) / (n - first_right)
                         if first_right < n else np.nan})
    return pd.DataFrame(rows)


def compare(truth_dir: Path, fit_dirs: list[Path]) -> str:
    truth = load_fit(truth_dir / "fit.json").params.set_index("name")
    fits = {d.name: load_fit(d / "fit.json").params.set_index("name") for d in fit_dirs}
    free = [n for n in truth.index if bool(truth.loc[n, "free"])]
    lines = [f"{'parameter':<24} {'truth':>10}  " + "  ".join(f"{k:<44}" for k in fits)]
    for name in free:
        cells = []
        for params in fits.values():
            if name not in params.index:
                cells.append(f"{'(not in this fit)':<44}")
                continue
            r = params.loc[name]
            lo, hi = float(r["ci_low"]), float(r["ci_high"])
            t = float(truth.loc[name, "value"])
            span = f"x{hi / lo:.3g}" if lo > 0 and np.isfinite(hi) else "no interval"
            inside = "in" if lo <= t <= hi else "OUT"
            cells.append(f"{r['value']:<9.4g} [{lo:.3g}, {hi:.3g}] {span} {inside:<4}"[:44]
                         .ljust(44))
        lines.append(f"{name:<24} {float(truth.loc[name, 'value']):>10.4g}  " + "  ".join(cells))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write", help="write a synthetic observed table from a saved fit")
    w.add_argument("fit_dir", type=Path)
    w.add_argument("out", type=Path)
    w.add_argument("--n", type=int, default=100, help="queries per task (paper: 100)")
    w.add_argument("--seed", type=int, default=0)
    c = sub.add_parser("compare", help="truth against fits of the synthetic table")
    c.add_argument("truth_dir", type=Path)
    c.add_argument("fit_dirs", type=Path, nargs="+")
    args = ap.parse_args()
    try:
        if args.cmd == "write":
            if args.n < 1:
                sys.exit("error: --n must be at least 1")
            table = synthetic_table(args.fit_dir, args.n, args.seed)
            table.to_csv(args.out, index=False)
            print(f"wrote {args.out} ({len(table)} rows, n = {args.n}, seed {args.seed})")
        else:
            print(compare(args.truth_dir, args.fit_dirs))
    except (FitError, OSError, ValueError, KeyError) as exc:  # one line, not a traceback
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
