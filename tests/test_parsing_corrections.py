"""Corrections in words, grouped digits and over-long numbers (realmodel/parsing.py;
DESIGN.md §4: q2 is counted from the decisions the parser reads, §5: attempts and markers)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from realmodel.parsing import RESAMPLE, STOP, Attempt, load_markers, parse_response, to_int

ROOT = Path(__file__).resolve().parents[1]


def attempts(text: str, a: int = 45, b: int = 23) -> tuple[Attempt, ...]:
    return parse_response(text, a, b).attempts


# ---- 1. a negated claim is not a candidate; its correction is -------------------------------
@pytest.mark.parametrize("text", [
    "The answer is not 1034, it is 1035.",
    "The answer isn't 1034, it's 1035.",
    "The answer is not 1034 but 1035.",
    "The final answer is not 1034; it is 1035.",
    "45 * 23 is not 1034, it is 1035.",
    "23 × 45 isn't 1034 but rather 1035.",
    "The answer is not **1034**, it is **1035**.",
])
def test_negated_claim_then_its_correction(text: str) -> None:
    parsed = parse_response(text, 45, 23)
    assert parsed.attempts == (Attempt(1035, True, STOP),)
    assert parsed.final_answer == 1035 and parsed.correct


@pytest.mark.parametrize("text", [
    "The answer is not 1034.",
    "The answer isn't 1034.",
    "The answer is not **1034**.",
    "The answer is not \\boxed{1034}.",
    "45 * 23 is not 1034.",
])
def test_negated_claim_alone_is_no_candidate(text: str) -> None:
    assert attempts(text) == (Attempt(None, False, None),)


def test_negated_claim_does_not_hide_a_later_one() -> None:
    text = "The answer is not 1034. Let me recompute: 45 * 23 = 1035."
    assert attempts(text) == (Attempt(1035, True, STOP),)


# ---- 2. a correction in words is a revision marker, and "it's N" after it a candidate -----
@pytest.mark.parametrize("text", [
    "The answer is 1034. No wait, it's 1035.",
    "The answer is 1034. No, wait, it is 1035.",
    "The answer is 1034. Wait, no, it's 1035.",
    "The answer is 1034. Actually, it's 1035.",
    "The answer is 1034. Oops, it is 1035.",
    "The answer is 1034. Oops! It's actually 1035.",
    "45 * 23 = 1034. No wait — it's **1035**.",
])
def test_correction_in_words_is_a_resample(text: str) -> None:
    parsed = parse_response(text, 45, 23)
    assert parsed.attempts == (Attempt(1034, False, RESAMPLE), Attempt(1035, True, STOP))
    assert parsed.final_answer == 1035 and parsed.correct


def test_correction_markers_are_data() -> None:
    markers = [m.lower() for m in load_markers()]
    for m in ("No wait", "No, wait", "Wait, no", "Actually,", "Oops"):
        assert m.lower() in markers
    # Without markers nothing is a correction: "it's 1035" refers to nothing.
    text = "The answer is 1034. No wait, it's 1035."
    assert parse_response(text, 45, 23, markers=[]).attempts == (Attempt(1034, False, STOP),)


@pytest.mark.parametrize("text", [
    "45 * 23 = 1035, and it's 4 digits long.",  # no marker, no negated claim
    "45 * 23 = 1035. Let me check: it's 4 digits long, as expected.",
    "45 * 23 = 1035. Wait, it is 2 more than 1033.",
])
def test_it_is_that_does_not_end_a_correction_is_working(text: str) -> None:
    assert attempts(text) == (Attempt(1035, True, STOP),)
    assert attempts("Hmm, it's 1035.") == (Attempt(None, False, None),)


@pytest.mark.parametrize("text", [
    "45 * 23 = 1034. No wait, it's 1035 instead.",
    "The answer is 1034. Actually, it should be: **1035**",
    "The answer is 1034.\nWait, no: it's $1035$\n",
])
def test_it_is_that_ends_a_correction_is_a_candidate(text: str) -> None:
    assert attempts(text) == (Attempt(1034, False, RESAMPLE), Attempt(1035, True, STOP))


def test_a_negated_bold_value_after_the_answer_is_working() -> None:
    assert attempts("The answer is 1035, not **1034**.") == (Attempt(1035, True, STOP),)


# ---- 3. digits grouped by a no-break, narrow no-break or thin space -------------------------
@pytest.mark.parametrize("sep", ["\u00a0", "\u202f", "\u2009", " "])
def test_grouped_digits(sep: str) -> None:
    assert to_int(f"10{sep}035") == 10035
    parsed = parse_response(f"The answer is 10{sep}035.", 5, 2007)
    assert parsed.final_answer == 10035 and parsed.correct
    parsed = parse_response(f"2007 * 5 = 10{sep}035", 5, 2007)
    assert parsed.final_answer == 10035 and parsed.correct
    assert parse_response(f"**1{sep}234{sep}567**", 1, 1234567).final_answer == 1234567


@pytest.mark.parametrize("sep", ["\u00a0", "\u202f", "\u2009"])
def test_a_space_before_an_ungrouped_digit_behaves_as_a_plain_space(sep: str) -> None:
    # "10 3" is not a group of three, and a number follows 10: no bare claim either way.
    for text in ("The answer is 10{}3.", "2 * 5 = 10{}3", "The answer is 10{}0035."):
        plain = parse_response(text.format(" "), 2, 5).attempts
        assert parse_response(text.format(sep), 2, 5).attempts == plain


# ---- 4. numbers beyond Python's int-conversion limit -----------------------------------------
LONG = "7" * 5000


@pytest.mark.parametrize("text", [
    f"The answer is {LONG}.",
    f"45 * 23 = {LONG}",
    f"\\boxed{{{LONG}}}",
    f"**{LONG}**",
    f"{LONG} * 23 = 1035. The answer is {LONG}.",
], ids=["answer-phrase", "equation", "boxed", "bold", "long-operand"])
def test_over_long_number_is_a_wrong_answer(text: str) -> None:
    parsed = parse_response(text, 45, 23)
    assert len(parsed.attempts) == 1
    att = parsed.attempts[0]
    assert att.answer == LONG and not att.correct and att.decision == STOP
    assert parsed.final_answer == LONG and not parsed.correct
    assert json.loads(json.dumps(parsed.to_dict()))["final_answer"] == LONG
    assert parsed.as_calibration_attempts() == [(False, STOP)]


def test_over_long_number_then_a_correction() -> None:
    text = f"45 * 23 = {LONG}. Wait, let me recompute: 45 * 23 = 1035."
    assert attempts(text) == (Attempt(LONG, False, RESAMPLE), Attempt(1035, True, STOP))
    # an over-long operand is not one of the operands
    assert attempts(f"1{LONG} * 23 = 1035") == (Attempt(None, False, None),)


def test_over_long_correct_answer_compares_exactly() -> None:
    a = b = 10**2600  # a * b has 5,201 digits
    digits = "1" + "0" * 5200
    parsed = parse_response(f"The answer is {digits}.", a, b)
    assert parsed.correct and parsed.final_answer == digits
    assert not parse_response(f"The answer is {digits}1.", a, b).correct


def test_over_long_number_through_the_cli() -> None:
    out = subprocess.run(
        [sys.executable, "cli.py", "realmodel", "parse", "--a", "45", "--b", "23"],
        input=f"45 * 23 = {LONG}. Wait, 45 * 23 = 1035.", capture_output=True, text=True,
        cwd=ROOT, check=True,
    ).stdout
    assert json.loads(out) == {
        "attempts": [{"answer": LONG, "correct": False, "decision": "RESAMPLE"},
                     {"answer": 1035, "correct": True, "decision": "STOP"}],
        "final_answer": 1035,
        "correct": True,
    }


# ---- synthesis still round-trips with the new rules ------------------------------------------
def test_synthesis_round_trip_with_the_new_rules() -> None:
    from realmodel.synthesis import no_reflection_example, reflection_example

    rng = np.random.default_rng(7)
    for _ in range(300):
        a, b = int(rng.integers(2, 10**4)), int(rng.integers(2, 10**4))
        ft = bool(rng.random() < 0.5)
        text, built = reflection_example(a, b, rng, ft=ft, n_reflections=int(rng.integers(
            1 if ft else 0, 4)))
        assert parse_response(text, a, b).attempts == tuple(built)
        assert parse_response(no_reflection_example(a, b, rng), a, b).attempts == (
            Attempt(a * b, True, STOP),)
