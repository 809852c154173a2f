"""Profile-likelihood intervals of a saved fit (analysis.fit_profile, DESIGN §4).

    python scripts/fit_profile.py outputs/fit/paper_table1 [--observed PATH] [--csv OUT]
        [--offsets 0.1 0.25 0.5 ...]

Reads the fit (fit.json, as `cli.py fit` writes it), re-minimises its SSE with each free
training parameter fixed on a grid of log offsets, and prints the SSE per grid point and the
95% profile set's span per parameter; a parameter whose SSE the fit found rough at the 1%
scale (params' sse_roughness above analysis.fit_model.ROUGH_LIMIT) is not identified here
either: the grid's SSE values are then draws from that jitter. Several minutes at K = 16 on
one core.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis.fit_config import FitError  # noqa: E402
from analysis.fit_io import add_saved_fit_arguments, load_saved_fit  # noqa: E402
from analysis.fit_model import ROUGH_LIMIT  # noqa: E402
from analysis.fit_profile import (  # noqa: E402
    PROFILE_OFFSETS,
    ProfileConfig,
    profile_fit,
    profile_spans,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_saved_fit_arguments(ap)
    ap.add_argument("--csv", type=Path, default=None, help="write the grid table here")
    ap.add_argument("--offsets", type=float, nargs="+", default=list(PROFILE_OFFSETS),
                    help="log offsets from the fit, both signs: a finer grid bounds a span "
                    "more tightly (default: %(default)s)")
    args = ap.parse_args()
    try:
        grid = ProfileConfig(offsets=tuple(args.offsets))
        result, observed = load_saved_fit(args.fit_dir, args.observed)
    except (FitError, ValueError) as exc:  # one line, not a traceback
        sys.exit(f"error: {exc}")
    t0 = time.time()
    table, sse0, threshold = profile_fit(observed, result, grid)
    print(f"fit {args.fit_dir}: SSE* {sse0:.5f}, 95% threshold {threshold:.5f} "
          f"(RMSE {result.rmse * 100:.2f} pp; profile in {time.time() - t0:.0f} s)")
    for name, g in table.groupby("name", sort=False):
        cells = ", ".join(f"{r.offset:+.2f}: {r.sse:.4f}{'' if r.inside else ' (out)'}"
                          for r in g.itertuples())
        print(f"  {name} SSE by log offset: {cells}")
    spans = profile_spans(table)
    if "sse_roughness" in result.params.columns:  # a profile on a rough SSE reads its jitter
        rough = result.params.set_index("name")["sse_roughness"]
        spans["sse_roughness"] = [float(rough.get(n, float("nan"))) for n in spans["name"]]
        spans["identified"] &= ~(spans["sse_roughness"] > ROUGH_LIMIT)
    print(spans.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    if args.csv:
        table.to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")


if __name__ == "__main__":
    main()
