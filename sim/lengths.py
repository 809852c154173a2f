"""Parse answer-length ranges for sweeps and attribution curves (DESIGN.md §2-§3).

The per-token KL model weights each sampling action by ``w(L) = L`` (DESIGN.md §2), so the
attribution ratio is studied as a function of the answer length L. Users give L as a range:

- ``A..B``       inclusive, ``points`` values log-spaced between A and B (default 16),
                 rounded to integers and de-duplicated (a short range yields fewer points);
- ``A..B:STEP``  inclusive linear range A, A+STEP, ... up to B;
- ``A``          a single length.

Bounds: 1 <= L <= ``MAX_LENGTH`` (10^6 tokens) and at most ``MAX_POINTS`` (10^4) lengths per
spec. A million tokens is far beyond any answer a language model writes (the paper's longest
runs allow 8192 new tokens), and past it the simulator stops measuring anything: with the
token weight w(L) = L (DESIGN §2) one training step at the sweep's learning rates saturates
the policy, the decision gradients g_1, g_2 underflow below the ratio's zero threshold and
ratios become inf or 0/0 (DESIGN §3) -- in the default sweep from L ~ 10^4 for NSR and
L ~ 10^6 for GRPO; further out L no longer fits the int64 length column (9.2e18) and float
math overflows (parameters become inf/NaN near 1e308). Written numbers only: ``1e11`` is
malformed.

Anything malformed or out of bounds raises ``ValueError`` with a one-line message that the
CLI shows verbatim.
"""

from __future__ import annotations

import re

import numpy as np

__all__ = ["MAX_LENGTH", "MAX_POINTS", "check_length", "parse_lengths"]

MAX_LENGTH = 10**6
MAX_POINTS = 10_000

_NUM = r"\s*([0-9]+)\s*"
_RANGE = re.compile(rf"^{_NUM}\.\.{_NUM}(?::{_NUM})?$")
_SINGLE = re.compile(rf"^{_NUM}$")


def check_length(value: int | float, what: str = "length") -> None:
    """Refuse an answer length outside [1, MAX_LENGTH] (or not a finite number)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{what} must be a number, got {value!r}")
    if not (1 <= value <= MAX_LENGTH):  # NaN fails here too
        raise ValueError(f"{what} must be in [1, {MAX_LENGTH}] tokens, got {value!r}")


def _int(text: str, spec: str, what: str, option: str) -> int:
    digits = text.lstrip("0") or "0"
    if len(digits) > len(str(MAX_LENGTH)) or int(digits) > MAX_LENGTH:
        shown = text if len(text) <= 20 else f"{text[:8]}...({len(text)} digits)"
        raise ValueError(f"invalid lengths {_short(spec)}: {what} {shown} is above "
                         f"{MAX_LENGTH}, the largest answer length {option} accepts")
    return int(digits)


def _short(spec: str) -> str:
    return repr(spec) if len(spec) <= 40 else repr(spec[:20] + "...") + f" ({len(spec)} chars)"


def parse_lengths(spec: str, points: int = 16, option: str = "--lengths") -> np.ndarray:
    """Return the sorted, unique integer answer lengths described by ``spec``.

    ``A..B`` gives ``points`` log-spaced integers in [A, B] (both ends included; duplicates
    after rounding are dropped, so short ranges may give fewer points); ``A..B:STEP`` gives the
    linear range A, A+STEP, ... <= B; a bare integer gives that length. Lengths are in
    [1, MAX_LENGTH], ``A <= B``, ``points`` in [1, MAX_POINTS] and a spec gives at most
    MAX_POINTS lengths; otherwise ``ValueError`` with a one-line message (naming ``option``,
    where the spec came from, when a bound is passed).
    """
    if not isinstance(spec, str):
        raise ValueError(f"lengths must be a string like '10..1000', got {spec!r}")
    single = _SINGLE.match(spec)
    if single:
        value = _int(single.group(1), spec, "length", option)
        if value < 1:
            raise ValueError(f"invalid lengths {_short(spec)}: lengths must be >= 1")
        return np.array([value], dtype=np.int64)
    match = _RANGE.match(spec)
    if not match:
        raise ValueError(
            f"invalid lengths {_short(spec)}: expected 'A..B' (log-spaced), 'A..B:STEP' "
            "(linear) or 'N', with positive integers written out in digits"
        )
    lo = _int(match.group(1), spec, "start", option)
    hi = _int(match.group(2), spec, "end", option)
    if lo < 1:
        raise ValueError(f"invalid lengths {_short(spec)}: lengths must be >= 1")
    if lo > hi:
        raise ValueError(f"invalid lengths {_short(spec)}: empty range (start {lo} > end {hi})")
    step_txt = match.group(3)
    if step_txt is not None:
        step = _int(step_txt, spec, "STEP", option)
        if step < 1:
            raise ValueError(f"invalid lengths {_short(spec)}: STEP must be >= 1")
        count = (hi - lo) // step + 1
        if count > MAX_POINTS:
            raise ValueError(f"invalid lengths {_short(spec)}: {count} lengths, more than the "
                             f"{MAX_POINTS} {option} accepts; use a larger STEP")
        return np.arange(lo, hi + 1, step, dtype=np.int64)
    if (isinstance(points, bool) or not isinstance(points, int | np.integer)
            or not 1 <= points <= MAX_POINTS):
        raise ValueError(f"invalid --points {points!r}: must be an integer in 1..{MAX_POINTS}")
    if lo == hi or points == 1:
        # One point: the lower end (a degenerate range is just that length).
        return np.array([lo], dtype=np.int64)
    grid = np.geomspace(lo, hi, int(points))
    values = np.unique(np.rint(grid).astype(np.int64))
    # Rounding can never leave [lo, hi] but make the ends exact for clarity of output.
    values[0], values[-1] = lo, hi
    return values
