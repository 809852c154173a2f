"""Parse answer-length ranges for sweeps and attribution curves (DESIGN.md §2-§3).

The per-token KL model weights each sampling action by ``w(L) = L`` (DESIGN.md §2), so the
attribution ratio is studied as a function of the answer length L. Users give L as a range:

- ``A..B``       inclusive, ``points`` values log-spaced between A and B (default 16),
                 rounded to integers and de-duplicated (a short range yields fewer points);
- ``A..B:STEP``  inclusive linear range A, A+STEP, ... up to B;
- ``A``          a single length.

Anything malformed raises ``ValueError`` with a one-line message that the CLI shows verbatim.
"""

from __future__ import annotations

import re

import numpy as np

__all__ = ["parse_lengths"]

_RANGE = re.compile(r"^\s*(\d+)\s*\.\.\s*(\d+)\s*(?::\s*(\d+)\s*)?$")
_SINGLE = re.compile(r"^\s*(\d+)\s*$")


def parse_lengths(spec: str, points: int = 16) -> np.ndarray:
    """Return the sorted, unique integer answer lengths described by ``spec``.

    ``A..B`` gives ``points`` log-spaced integers in [A, B] (both ends included; duplicates
    after rounding are dropped, so short ranges may give fewer points); ``A..B:STEP`` gives the
    linear range A, A+STEP, ... <= B; a bare integer gives that length. Lengths are >= 1 and
    ``A <= B``; otherwise ``ValueError`` with a one-line message.
    """
    if not isinstance(spec, str):
        raise ValueError(f"lengths must be a string like '10..1000', got {spec!r}")
    single = _SINGLE.match(spec)
    if single:
        value = int(single.group(1))
        if value < 1:
            raise ValueError(f"invalid lengths {spec!r}: lengths must be >= 1")
        return np.array([value], dtype=np.int64)
    match = _RANGE.match(spec)
    if not match:
        raise ValueError(
            f"invalid lengths {spec!r}: expected 'A..B' (log-spaced), 'A..B:STEP' (linear) "
            "or 'N', with positive integers"
        )
    lo, hi = int(match.group(1)), int(match.group(2))
    if lo < 1:
        raise ValueError(f"invalid lengths {spec!r}: lengths must be >= 1")
    if lo > hi:
        raise ValueError(f"invalid lengths {spec!r}: empty range (start {lo} > end {hi})")
    step_txt = match.group(3)
    if step_txt is not None:
        step = int(step_txt)
        if step < 1:
            raise ValueError(f"invalid lengths {spec!r}: STEP must be >= 1")
        return np.arange(lo, hi + 1, step, dtype=np.int64)
    if isinstance(points, bool) or not isinstance(points, int | np.integer) or points < 1:
        raise ValueError(f"invalid --points {points!r}: must be an integer >= 1")
    if lo == hi or points == 1:
        # One point: the lower end (a degenerate range is just that length).
        return np.array([lo], dtype=np.int64)
    grid = np.geomspace(lo, hi, int(points))
    values = np.unique(np.rint(grid).astype(np.int64))
    # Rounding can never leave [lo, hi] but make the ends exact for clarity of output.
    values[0], values[-1] = lo, hi
    return values
