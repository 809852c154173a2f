"""Intervals of a saved fit's training parameters that carry the base shape's uncertainty
(DESIGN §4; analysis.fit_profile.joint_intervals).

    python scripts/fit_joint_intervals.py outputs/fit/paper_table1 [--observed TABLE.csv]
        [--truth TRUTH_FIT_DIR]

The fit's own 95% intervals (and the profile's) hold the base shape at its fit to the untrained
rows, so they leave out that fit's noise. This prints, per free training parameter, the fit's
(conditional) span and the joint delta-method interval of the untrained and trained rows
together; with --truth (a fit whose values generated the table, scripts/fit_recovery.py)
whether each interval holds the true value.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis.fit_config import FitError  # noqa: E402
from analysis.fit_io import add_saved_fit_arguments, load_fit, load_saved_fit  # noqa: E402
from analysis.fit_profile import joint_intervals  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_saved_fit_arguments(ap)
    ap.add_argument("--truth", type=Path, default=None,
                    help="the fit folder whose values generated the table")
    args = ap.parse_args()
    try:
        result, observed = load_saved_fit(args.fit_dir, args.observed)
        truth = (load_fit(args.truth / "fit.json").params.set_index("name")["value"]
                 if args.truth else None)
        table = joint_intervals(observed, result)
    except (FitError, OSError, ValueError, KeyError) as exc:  # one line, not a traceback
        sys.exit(f"error: {exc}")
    for r in table.itertuples():
        line = (f"{r.name:<24} {r.value:<10.4g} conditional x{r.conditional_span:<8.3g} "
                f"joint [{r.joint_low:.3g}, {r.joint_high:.3g}] x{r.joint_span:.3g}"
                f"{' (at its search bound)' if r.at_bound else ''}"
                f"{'' if r.identified else ': NOT identified'}")
        if truth is not None:
            t = float(truth[r.name])
            line += f"; truth {t:.4g} {'in' if r.joint_low <= t <= r.joint_high else 'OUT'}"
        print(line)


if __name__ == "__main__":
    main()
