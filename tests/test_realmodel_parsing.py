"""Parser rules (realmodel/parsing.py, DESIGN.md §5) on hand-written responses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from realmodel.parsing import (
    RESAMPLE,
    STOP,
    Attempt,
    find_candidates,
    load_markers,
    parse_response,
    reward_correct,
    to_int,
)

ROOT = Path(__file__).resolve().parents[1]


def answers(text: str, a: int = 23, b: int = 45) -> list[int | None]:
    return [att.answer for att in parse_response(text, a, b).attempts]


def decisions(text: str, a: int = 23, b: int = 45) -> list[str | None]:
    return [att.decision for att in parse_response(text, a, b).attempts]


# ---- numbers ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw, value",
    [("1,035", 1035), ("1 035", 1035), ("1{,}035", 1035), ("1\\,035", 1035),
     ("1035.00", 1035), ("12,345,678", 12345678), ("7", 7)],
)
def test_to_int(raw: str, value: int) -> None:
    assert to_int(raw) == value


# ---- single-attempt responses: which number is the candidate -----------------------------
SINGLE = [
    # (text, a, b, expected final answer)
    ("\\boxed{1035}", 23, 45, 1035),
    ("The final answer is $\\boxed{1,035}$.", 23, 45, 1035),
    ("So the answer is 1035.", 23, 45, 1035),
    ("Answer: 1 035", 23, 45, 1035),
    ("**Answer:** 1035", 23, 45, 1035),
    ("The answer is **1035**.", 23, 45, 1035),
    ("#### 1035", 23, 45, 1035),
    ("23 * 45 = 1035", 23, 45, 1035),
    ("45 × 23 = 1,035.", 23, 45, 1035),  # operands in either order
    ("23 x 45 = 1035", 23, 45, 1035),
    ("23x45=1035", 23, 45, 1035),
    ("$23 \\times 45 = 1035$", 23, 45, 1035),
    ("\\[ 23 \\cdot 45 = 1035 \\]", 23, 45, 1035),
    ("23 times 45 is 1035.", 23, 45, 1035),
    ("23 multiplied by 45 equals 1,035.", 23, 45, 1035),
    ("The product of 23 and 45 is 1035.", 23, 45, 1035),
    ("23 * 45 is equal to 1035", 23, 45, 1035),
    ("23*45=1035.0", 23, 45, 1035),
    ("The answer to 23 * 45 is 1035.", 23, 45, 1035),
    # chains through arithmetic: the last bare right-hand side
    ("23 * 45 = 20 * 45 + 3 * 45 = 900 + 135 = 1035.", 23, 45, 1035),
    ("23 × 45\n= 23 × 40 + 23 × 5\n= 920 + 115\n= 1035", 23, 45, 1035),
    ("\\begin{align}23 \\times 45 &= 920 + 115 \\\\\n&= 1035\\end{align}", 23, 45, 1035),
    ("23 * 45 = (20 + 3) * 45 = 1035", 23, 45, 1035),
    # partial products and sums are working, not candidates
    ("23 × 5 = 115\n23 × 40 = 920\n115 + 920 = 1035\nSo the answer is 1035.", 23, 45, 1035),
    ("23 × 5 = 115\n23 × 40 = 920\n115 + 920 = 1035", 23, 45, None),
    ("3 * 45 = 3 * 40 + 3 * 5 = 120 + 15 = 135", 3, 45, 135),
    ("Step 1: 7 * 7 = 49\nStep 2: 7 * 77 = 539", 7, 77, 539),  # 7*7 is not 7*77
    ("23 × 5 = **115**\n23 × 40 = **920**\nTotal: **1035**", 23, 45, 1035),
    ("2 * 0 = 0\n2 * 1 = 2\nSo 2 * 10 = 20.", 2, 10, 20),
    # the product expression must be a whole left side
    ("2 + 3 * 4 = 14. So 3 * 4 = 12.", 3, 4, 12),
    ("20 * 45 + 3 * 45 = 135", 3, 45, None),
    ("- 3 * 4 = 12", 3, 4, 12),  # a bullet, not a minus
    ("* 3 * 4 = 12", 3, 4, 12),
    ("(23 * 45) = 1035", 23, 45, 1035),
    ("23 × (45) = 1035", 23, 45, 1035),
    # a real SmolLM2-135M response: "4 times (3 * 3 * 3 is 36" is not a claim about 3 * 4
    ("3 to the power of 4 is equal to 3^4 = 625. So, the answer is 3 * 4 = 12. You can "
     "calculate 3 * 4 by multiplying 3 by itself 4 times (3 * 3 * 3 is 36 cycles).", 3, 4, 12),
    # trailing prose
    ("The answer is 1035. I hope this helps with your 2 questions!", 23, 45, 1035),
    ("23 * 45 = 1035, and 1035 + 5 = 1040 would be the next number.", 23, 45, 1035),
    ("23 * 45 = 1035 (which is a four-digit number, 4 digits).", 23, 45, 1035),
    # claims that are not bare numbers, or no claim at all
    ("My answer: 1035 / 45 = 23.", 23, 45, None),
    ("We need 23 * 45. Let's think.", 23, 45, None),
    ("23 * 45 =", 23, 45, None),
    ("12.5 * 3 = 37.5", 125, 3, None),
    ("", 23, 45, None),
    ("The answer is correct.", 23, 45, None),
    # a restated final answer is one attempt
    ("23 * 45 = 1035.\n\nSo the answer is \\boxed{1035}. Final answer: 1035", 23, 45, 1035),
    # an unmarked change of mind: the segment commits to its last candidate
    ("23 * 45 = 1000. No: 23 * 45 = 1035. The answer is 1035.", 23, 45, 1035),
]


@pytest.mark.parametrize("text, a, b, expected", SINGLE)
def test_single_attempt(text: str, a: int, b: int, expected: int | None) -> None:
    parsed = parse_response(text, a, b)
    assert len(parsed.attempts) == 1
    att = parsed.attempts[0]
    assert att.answer == expected
    assert parsed.final_answer == expected
    assert parsed.correct == (expected == a * b)
    assert att.correct == parsed.correct
    assert att.decision == (None if expected is None else STOP)


def test_wrong_single_answer() -> None:
    parsed = parse_response("3 * 4 = 13", 3, 4)
    assert parsed.attempts == (Attempt(13, False, STOP),)
    assert not parsed.correct and parsed.final_answer == 13


# ---- multi-attempt responses -------------------------------------------------------------
def test_wrong_then_right() -> None:
    text = ("23 × 5 = 115, 23 × 40 = 820, so 23 * 45 = 935.\n"
            "Wait, let me recompute: 23 × 40 = 920, so 23 * 45 = 1035.\n"
            "The answer is \\boxed{1035}.")
    parsed = parse_response(text, 23, 45)
    assert parsed.attempts == (Attempt(935, False, RESAMPLE), Attempt(1035, True, STOP))
    assert parsed.final_answer == 1035 and parsed.correct
    assert parsed.as_calibration_attempts() == [(False, RESAMPLE), (True, STOP)]


def test_right_then_wrong() -> None:
    text = "The answer is 1035. Actually, I made a mistake: the answer is 1045."
    parsed = parse_response(text, 23, 45)
    assert parsed.attempts == (Attempt(1035, True, RESAMPLE), Attempt(1045, False, STOP))
    assert not parsed.correct


def test_verification_with_restatement_is_a_resample() -> None:
    text = "23 * 45 = 1035. Let me double-check: 45 * 23 = 1035. So the answer is 1035."
    assert answers(text) == [1035, 1035]
    assert decisions(text) == [RESAMPLE, STOP]


def test_verification_without_candidate_is_a_stop() -> None:
    text = "The answer is 1035. Let me verify: 1035 / 45 = 23. Correct!"
    assert answers(text) == [1035]
    assert decisions(text) == [STOP]


def test_answerless_segments_are_merged() -> None:
    text = ("23 * 45 = 1000. Wait, I made a mistake. Hmm, let me think.\n"
            "Let me recompute: 23 * 45 = 1035.")
    assert answers(text) == [1000, 1035]
    # A marker before any candidate joins the first attempt.
    assert answers("Wait, 23 * 45 = 1035.") == [1035]


def test_three_attempts_and_markers_case_insensitive() -> None:
    text = ("So 23*45 = 1025. let me recompute. 23*45 = 1045. "
            "I'LL GO BACK AND CHECK. 23*45 = 1035. The final answer is 1035.")
    assert answers(text) == [1025, 1045, 1035]
    assert decisions(text) == [RESAMPLE, RESAMPLE, STOP]
    counts = parse_response(text, 23, 45).as_calibration_attempts()
    assert counts == [(False, RESAMPLE), (False, RESAMPLE), (True, STOP)]


def test_marker_needs_word_start() -> None:
    # "await," contains "wait," but is not the marker: one segment, ending on 1035.
    assert answers("23 * 45 = 1000. We await, then 23*45 = 1035.") == [1035]
    assert answers("23 * 45 = 1000. Wait, then 23*45 = 1035.") == [1000, 1035]


@pytest.mark.parametrize("text, expected", [
    ("23 * 45 = 1000. I'll hold onto this: 23 * 45 = 1035.", [1035]),  # not "Hold on"
    ("23 * 45 = 1000. Waiting is hard; 23 * 45 = 1035.", [1035]),  # not "Wait"
    ("23 * 45 = 1000. Hold on: 23 * 45 = 1035.", [1000, 1035]),
    ("23 * 45 = 1000. Wait. 23 * 45 = 1035.", [1000, 1035]),
    ("23 * 45 = 1000. Let's recompute: 23 * 45 = 1035.", [1000, 1035]),
    ("23 * 45 = 1000. Let's double-check. 23 * 45 = 1035.", [1000, 1035]),
    ("23 * 45 = 1000. Let me check: 23 * 45 = 1035.", [1000, 1035]),
])
def test_marker_needs_word_end(text: str, expected: list[int]) -> None:
    assert answers(text) == expected


@pytest.mark.parametrize("text, a, b, value", [
    ("23 * 45 = 1035 (20 * 45 = 900, 3 * 45 = 135)", 23, 45, 1035),
    ("12 * 34 = 408 (12 * 30 = 360; 12 * 4 = 48)", 12, 34, 408),
    ("23 * 45 = 1035 [20 * 45 = 900]", 23, 45, 1035),
    ("23 * 45 = (20 + 3) * 45 = 1035", 23, 45, 1035),
    ("(23 * 45 = 1035)", 23, 45, 1035),
])
def test_bracketed_working_note_is_not_the_answer(text: str, a: int, b: int,
                                                  value: int) -> None:
    assert answers(text, a, b) == [value]


def test_repeated_product_expressions_are_linear() -> None:
    import time

    start = time.perf_counter()
    assert answers("23 * 45 = " * 4000 + "1035") == [1035]
    assert time.perf_counter() - start < 1.0  # quadratic: tens of seconds


def test_truncated_response_is_wrong_without_decisions() -> None:
    text = "23 * 45 = 1000. Wait, let me recompute. 23 * 45 = 1035. Let me also check 20"
    parsed = parse_response(text, 23, 45, truncated=True)
    assert [a.answer for a in parsed.attempts] == [1000, 1035]
    assert [a.decision for a in parsed.attempts] == [None, None]
    assert parsed.final_answer is None and not parsed.correct
    assert parsed.as_calibration_attempts() == [(False, None), (True, None)]


def test_answerless_response() -> None:
    parsed = parse_response("I am not sure how to do this.", 23, 45)
    assert parsed.attempts == (Attempt(None, False, None),)
    assert parsed.as_calibration_attempts() == [(None, None)]
    assert parsed.to_dict() == {
        "attempts": [{"answer": None, "correct": False, "decision": None}],
        "final_answer": None,
        "correct": False,
    }


def test_to_dict_shape() -> None:
    d = parse_response("3 * 4 = 12", 3, 4).to_dict()
    assert set(d) == {"attempts", "final_answer", "correct"}
    assert d["attempts"] == [{"answer": 12, "correct": True, "decision": "STOP"}]


def test_custom_markers(tmp_path: Path) -> None:
    path = tmp_path / "markers.txt"
    path.write_text("# extra\nOn reflection\n", encoding="utf-8")
    markers = load_markers(path)
    assert "On reflection" in markers and "Let me recompute" in markers
    assert load_markers(path, extend=False) == ["On reflection"]
    text = "3 * 4 = 11. On reflection, 3 * 4 = 12."
    assert [a.answer for a in parse_response(text, 3, 4).attempts] == [12]
    assert [a.answer for a in parse_response(text, 3, 4, markers).attempts] == [11, 12]
    assert [a.answer for a in parse_response(text, 3, 4, markers=[]).attempts] == [12]


def test_default_markers_cover_the_paper() -> None:
    markers = [m.lower() for m in load_markers()]
    for m in ("I'll go back and check", "Let me recompute", "I made a mistake",
              "Let me double-check", "Wait,", "Let me verify", "Let me re-check", "Actually,",
              "Wait", "Let's recompute", "Let's recalculate", "Let's verify",
              "Let's double-check", "Let's check again", "Let me check"):
        assert m.lower() in markers


def test_candidate_positions_deduplicated() -> None:
    # "answer is \\boxed{1035}" is one candidate, not two.
    assert len(find_candidates("The answer is \\boxed{1035}.", 23, 45)) == 1


def test_reward() -> None:
    assert reward_correct("The answer is 12", 3, 4) == 1.0
    assert reward_correct("The answer is 13", 3, 4) == 0.0
    assert reward_correct("no idea", 3, 4) == 0.0


def test_cli_parse_contract() -> None:
    text = "3 * 4 = 11. Wait, let me recompute. 3 * 4 = 12. The answer is \\boxed{12}."
    out = subprocess.run(
        [sys.executable, "cli.py", "realmodel", "parse", "--a", "3", "--b", "4"],
        input=text, capture_output=True, text=True, cwd=ROOT, check=True,
    ).stdout
    assert json.loads(out) == {
        "attempts": [
            {"answer": 11, "correct": False, "decision": "RESAMPLE"},
            {"answer": 12, "correct": True, "decision": "STOP"},
        ],
        "final_answer": 12,
        "correct": True,
    }
