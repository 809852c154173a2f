"""How rough is one trained row's SSE in its learning rate? (analysis.fit_model.sse_roughness)

    python scripts/fit_roughness_scan.py outputs/fit/paper_table1 [--regime RL]
        [--scales 0.5 1 2] [--max-grad-norm C] [--second-moment shared|per-parameter]
        [--steps N]

Reads a saved fit (fit.json), keeps its length scales, and prints, for the learning rate at
each scale of the fitted one, the row's SSE range over a 1% grid (+-10%, log space) and its
roughness (RMS off the quadratic, over the fit's own 95% SSE budget, 1.96^2 s^2). The update
budget can be changed to see which part of it makes the endpoint sensitive (DESIGN §2).
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
from analysis.fit_model import (  # noqa: E402
    ROUGH_OFFSETS,
    max_jump,
    sse_roughness,
)
from analysis.fit_profile import SavedFitProblem  # noqa: E402
from analysis.observed import RL  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_saved_fit_arguments(ap)
    ap.add_argument("--regime", default=RL, help="a trained row with a free learning rate")
    ap.add_argument("--scales", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    ap.add_argument("--max-grad-norm", type=float, default=None)
    ap.add_argument("--second-moment", default=None)
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: the fit's)")
    args = ap.parse_args()
    try:
        result, observed = load_saved_fit(args.fit_dir, args.observed)
        changes = {k: v for k, v in (("max_grad_norm", args.max_grad_norm),
                                     ("second_moment", args.second_moment),
                                     ("steps", args.steps)) if v is not None}
        problem = SavedFitProblem.of(observed, result,
                                     dataclasses.replace(FitConfig(**result.config), **changes))
        i = problem.lr_index(args.regime)
    except (FitError, OSError, ValueError, TypeError) as exc:  # one line, not a traceback
        sys.exit(f"error: {exc}")
    cfg, names, budget = problem.cfg, problem.names, problem.budget
    residuals = problem.residuals(observed, [args.regime])
    print(f"{args.regime}, {cfg.optimiser_config(1.0).label}, {cfg.effective_steps} steps: "
          f"SSE budget {budget:.4f}")
    for scale in args.scales:
        x = problem.x0.copy()
        x[i] += np.log(scale)
        sse = [float(r @ r) for r in (residuals(x + np.eye(len(x))[i] * d)
                                      for d in ROUGH_OFFSETS)]
        rough = sse_roughness(residuals, x, np.full(len(x), -np.inf), np.full(len(x), np.inf),
                              budget)[i]
        jump = max_jump(args.regime, problem.ladder, problem.b_s, cfg,
                        {n: float(np.exp(v)) for n, v in zip(names, x, strict=True)})
        print(f"  lr x{scale:g} ({np.exp(x[i]):.4g}): SSE {min(sse):.4f}-{max(sse):.4f}, "
              f"roughness {rough:.2f}, largest one-step move of p or q {jump:.3f}")


if __name__ == "__main__":
    main()
