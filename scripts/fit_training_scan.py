"""How does one trained row's SSE change with its amount of training? (DESIGN §2, §4)

    python scripts/fit_training_scan.py outputs/fit/paper_table1 [--regime "SFT (reflection)"]
        [--amounts 25 50 100 200 400] [--steps N (default: the fit's)]

Reads a saved fit (fit.json), keeps its other values (length scales, the other rows' learning
rates) and trains the row at lr = amount / steps for each amount lr x steps (Adam moves each
logit by about lr per step, so in the small-step regime the amount sets the endpoint roughly,
not exactly: compare at one number of steps). Prints the row's SSE and residuals per amount,
and the fit's 95% SSE budget (1.96^2 s^2): where the SSE changes by less than the budget
over a range of amounts, Table 1 cannot tell them apart. An lr above the fit's max_adam_lr is
marked (outside the small-step regime the fit searches).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis.fit import FitConfig  # noqa: E402
from analysis.fit_config import FitError  # noqa: E402
from analysis.fit_io import add_saved_fit_arguments, load_saved_fit  # noqa: E402
from analysis.fit_profile import SavedFitProblem  # noqa: E402
from analysis.observed import SFT_REFLECTION  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_saved_fit_arguments(ap)
    ap.add_argument("--regime", default=SFT_REFLECTION, help="a trained row")
    ap.add_argument("--amounts", type=float, nargs="+", default=[25, 50, 100, 200, 400],
                    help="amounts of training lr x steps")
    ap.add_argument("--steps", type=int, default=None,
                    help="training steps (default: the fit's; more keep large amounts inside "
                    "the small-step regime)")
    args = ap.parse_args()
    if not all(a > 0 for a in args.amounts) or (args.steps is not None and args.steps < 1):
        sys.exit("error: --amounts must be positive and --steps at least 1")
    try:
        result, observed = load_saved_fit(args.fit_dir, args.observed)
        fitted = FitConfig(**result.config)
        steps = args.steps or fitted.effective_steps
        cfg = dataclasses.replace(fitted, steps=steps, max_adam_lr=1.0)
        problem = SavedFitProblem.of(observed, result, cfg)
        i = problem.lr_index(args.regime)
    except (FitError, OSError, ValueError, TypeError) as exc:  # one line, not a traceback
        sys.exit(f"error: {exc}")
    residuals = problem.residuals(observed, [args.regime])
    budget = problem.budget
    print(f"{args.regime}, {cfg.optimiser_config(1.0).label}, {steps} steps; the fit's "
          f"lr {np.exp(problem.x0[i]):.4g} x {fitted.effective_steps} steps = "
          f"{np.exp(problem.x0[i]) * fitted.effective_steps:.4g}; SSE budget {budget:.4f}")
    for amount in args.amounts:
        x = problem.x0.copy()
        x[i] = np.log(amount / steps)
        r = residuals(x)
        big = " (lr above the fit's max_adam_lr)" if amount / steps > fitted.max_adam_lr else ""
        print(f"  lr x steps {amount:7.4g} (lr {amount / steps:.4g}): SSE {r @ r:.4f}, "
              f"fitted - observed (pp) {' '.join(f'{100 * v:+.1f}' for v in r)}{big}")


if __name__ == "__main__":
    main()
