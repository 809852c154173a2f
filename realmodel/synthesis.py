"""The paper's two SFT sets, synthesised from the tasks (DESIGN.md §2 "SFT-like", §5).

* no reflection: step-by-step long multiplication (partial products, their sum), straight to
  the answer: one correct attempt, STOP.
* reflection: chains of attempts separated by a revision marker. With `ft=True` (an F→T
  example) the first attempt carries an injected arithmetic slip (a wrong partial product or a
  wrong sum), a marker follows, then a corrected attempt; with `ft=False` (T→T) the first
  attempt is correct and is verified. `n_reflections` = the number of attempts after the first
  (Kang et al.'s "cut-at-k"): an F→T example is W, C, then `n_reflections - 1` verifications
  (C); a T→T example is C followed by `n_reflections` verifications. Every verification
  restates the answer after a marker, so by the parser's rules (realmodel/parsing.py) it is a
  RESAMPLE after a correct candidate; the chain always ends in a verified-correct STOP.

Every text re-parses to exactly the attempts it was built from (tested over thousands of
samples); the working never states the full product except as the attempt's claim.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from realmodel.parsing import RESAMPLE, STOP, Attempt
from realmodel.tasks import build_prompt

KINDS = ("reflection", "no-reflection")

_OPENERS = (
    "Let's compute {a} * {b} step by step.",
    "We need to multiply {a} by {b}.",
    "To calculate {a} * {b}, we use long multiplication.",
    "Let's break this multiplication into steps.",
)
_CLOSERS = (
    "So {a} * {b} = {v}.\n\nThe answer is \\boxed{{{v}}}.",
    "Therefore, {a} × {b} = {v}.\n\nThe answer is {v}.",
    "So the final answer is \\boxed{{{v}}}.",
    "Answer: **{v}**",
)
_WRONG_CLOSERS = (
    "So {a} * {b} = {v}.",
    "So the answer is {v}.",
    "This gives {a} × {b} = {v}.",
)
_FIX_MARKERS = (
    "Wait, let me double-check that.",
    "Let me recompute.",
    "I made a mistake. Let me redo the calculation.",
    "Wait, that doesn't look right. Let me recompute.",
    "Let me re-check the partial products.",
    "I'll go back and check.",
)
_VERIFY_MARKERS = (
    "Let me double-check this.",
    "Let me verify.",
    "I'll go back and check.",
    "Let me re-check the steps.",
)
_VERIFY_CLOSERS = (
    "The check agrees: {a} * {b} = {v}.\n\nThe answer is \\boxed{{{v}}}.",
    "Confirmed. The final answer is \\boxed{{{v}}}.",
    "Both calculations agree, so the answer is {v}.",
)


def _choice(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _partials(a: int, b: int) -> list[tuple[int, int]]:
    """(multiplier, partial product) for each nonzero digit of b, units first."""
    out = []
    for k, digit in enumerate(reversed(str(b))):
        if digit != "0":
            m = int(digit) * 10**k
            out.append((m, a * m))
    return out


def _working(a: int, b: int, rng: np.random.Generator, slip: int = 0,
             slip_in_sum: bool = False, slip_index: int = 0) -> tuple[str, int]:
    """Long-multiplication working; `slip` is added to one partial product (or to the sum).

    Returns (text, the value the working arrives at).
    """
    parts = _partials(a, b)
    values = [p for _, p in parts]
    if slip and not slip_in_sum:
        values[slip_index] += slip
    total = sum(values) + (slip if slip_in_sum else 0)
    lines = [_choice(rng, _OPENERS).format(a=a, b=b)]
    if len(parts) == 1 and parts[0][0] == b:
        # A one-(nonzero-)digit multiplier: the only partial product is the product itself.
        lines.append(f"{a} × {b} = {total}")
        return "\n".join(lines), total
    sym = _choice(rng, ("*", "×"))
    decomposition = " + ".join(str(m) for m, _ in reversed(parts))
    lines.append(f"Split {b} into {decomposition} and multiply {a} by each part:")
    bullet = _choice(rng, ("- ", "", "* "))
    for (m, _), v in zip(parts, values, strict=True):
        lines.append(f"{bullet}{a} {sym} {m} = {v}")
    if len(values) > 1:
        lines.append("Now add the partial products:")
        lines.append(f"{' + '.join(str(v) for v in values)} = {total}")
    return "\n".join(lines), total


def _slipped_working(a: int, b: int, rng: np.random.Generator) -> tuple[str, int]:
    """A working with one arithmetic slip: a wrong partial product or a wrong sum."""
    target = a * b
    n_parts = len(_partials(a, b))
    for _ in range(100):
        magnitude = int(rng.choice([1, 2, 3, 5, 9, 10, 20, 100]))
        slip = magnitude * (1 if rng.random() < 0.5 else -1)
        slip_in_sum = n_parts > 1 and rng.random() < 0.3
        slip_index = int(rng.integers(n_parts))
        partial_ok = slip_in_sum or _partials(a, b)[slip_index][1] + slip > 0
        if target + slip > 0 and partial_ok:
            return _working(a, b, rng, slip, slip_in_sum, slip_index)
    raise RuntimeError(f"could not inject a slip into {a} * {b}")  # pragma: no cover


def no_reflection_example(a: int, b: int, rng: np.random.Generator) -> str:
    """Step-by-step long multiplication straight to the (restated) answer: C, STOP."""
    text, value = _working(a, b, rng)
    return f"{text}\n{_choice(rng, _CLOSERS).format(a=a, b=b, v=value)}"


def reflection_example(
    a: int, b: int, rng: np.random.Generator, ft: bool = True, n_reflections: int = 1
) -> tuple[str, list[Attempt]]:
    """A reflection trajectory and the attempts it was built from (module docstring)."""
    if n_reflections < 0:
        raise ValueError(f"n_reflections must be >= 0, got {n_reflections}")
    if ft and n_reflections < 1:
        raise ValueError("an F->T example needs n_reflections >= 1")
    target = a * b
    pieces: list[str] = []
    answers: list[int] = []
    if ft:
        text, wrong = _slipped_working(a, b, rng)
        pieces.append(f"{text}\n{_choice(rng, _WRONG_CLOSERS).format(a=a, b=b, v=wrong)}")
        answers.append(wrong)
        text, value = _working(a, b, rng)
        marker = _choice(rng, _FIX_MARKERS)
        closer = _choice(rng, _CLOSERS if n_reflections == 1 else _WRONG_CLOSERS)
        pieces.append(f"{marker}\n{text}\n{closer.format(a=a, b=b, v=value)}")
        answers.append(value)
        n_verify = n_reflections - 1
    else:
        text, value = _working(a, b, rng)
        closer = _choice(rng, _CLOSERS if n_reflections == 0 else _WRONG_CLOSERS)
        pieces.append(f"{text}\n{closer.format(a=a, b=b, v=value)}")
        answers.append(value)
        n_verify = n_reflections
    for k in range(n_verify):
        text, value = _working(a, b, rng)
        last = k == n_verify - 1
        closer = _choice(rng, _VERIFY_CLOSERS if last else _WRONG_CLOSERS)
        pieces.append(f"{_choice(rng, _VERIFY_MARKERS)}\n{text}\n"
                      f"{closer.format(a=a, b=b, v=value)}")
        answers.append(value)
    attempts = [
        Attempt(v, v == target, STOP if k == len(answers) - 1 else RESAMPLE)
        for k, v in enumerate(answers)
    ]
    return "\n\n".join(pieces), attempts


def build_sft_dataset(
    records: Sequence[dict[str, Any]],
    kind: str,
    ft_share: float = 0.5,
    n_reflections: int = 1,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One SFT example per record: {"prompt", "completion", "task", "a", "b"}.

    `kind` is "reflection" (a share `ft_share` of F→T examples, the rest T→T) or
    "no-reflection". `prompt` is the paper's user prompt (the SFT trainer applies the chat
    template).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if not 0.0 <= ft_share <= 1.0:
        raise ValueError(f"ft_share must be in [0, 1], got {ft_share}")
    rng = np.random.default_rng(seed)
    out = []
    for rec in records:
        a, b = int(rec["a"]), int(rec["b"])
        if kind == "no-reflection":
            completion = no_reflection_example(a, b, rng)
        else:
            ft = n_reflections >= 1 and bool(rng.random() < ft_share)
            completion, _ = reflection_example(a, b, rng, ft=ft, n_reflections=n_reflections)
        out.append({"prompt": build_prompt(a, b), "completion": completion, "task": rec["task"],
                    "a": a, "b": b})
    return out
