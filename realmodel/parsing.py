"""Parse a model's response into attempts, candidates and decisions (DESIGN.md §4, §5).

Rules (each documented here is a deliberate choice, tested in tests/test_realmodel_parsing.py
and tests/test_parsing_corrections.py):

Numbers. Digits, optionally grouped in threes by ",", "{,}", "\\," or a space: plain,
no-break (U+00A0), narrow no-break (U+202F) or thin (U+2009) ("1,234", "1 234",
"1\\u00a0234"), optionally followed by ".0…". A decimal ("12.5") is not a number here. A
number of more than 4,000 digits (`MAX_INT_DIGITS`; Python refuses to convert more than 4,300
by default, in either direction) is kept as its digit string: it is compared with a * b digit
by digit and written to JSON as a string, so a degenerate run of digits is a wrong answer, not
a crash.

Candidate answers. A candidate is a number the response *claims as the result of a * b*:

1. the content of `\\boxed{N}` (or `\\boxed{... = N}`);
2. a value after an answer phrase: "answer" (with "the", "final", "my", "to <the problem>"),
   "final result", "final product", "####", then optionally "is", ":", "=", "equals",
   "would/will/should be" and formatting (`**`, `$`, `\\(`); the value must be bare ("my
   answer: 1035 / 45 = 23" claims nothing);
3. the value of an equation whose whole left side is the product expression of the two
   operands, in either order ("a * b", "a × b", "a x b", "a \\times b", "a · b", "a times b",
   "a multiplied by b", "the product of a and b"), linked by "=", "is", "equals",
   "is equal to", "gives", "makes" or "yields" right after the expression. "Whole": no binary
   operator before it ("2 + 3 * 4 = 14" is not 3 * 4; a "- " or "* " bullet at a line start
   is no operator) and none after it ("4 times (3 * 3 * 3) is 36" is not 4 * 3). The equation
   may chain through arithmetic
   ("23 * 45 = 20 * 45 + 3 * 45 = 900 + 135 = 1035", also across lines that start with
   "=" or "&="); its candidate is the last right-hand side that is a bare number and not
   inside a bracket opened after the expression ("23 * 45 = 1035 (20 * 45 = 900, ...)" is
   1035; "23 * 45 = (20 + 3) * 45 = 1035" is 1035);
4. a bold number standing alone (`**1035**`), unless it is the right side of an "=" (then
   rule 3 decides: "23 * 5 = **115**" is a partial product, not a candidate);
5. the correction of a negated claim: after "the answer is not X" / "isn't X" / "a * b is not
   X" / "does not equal X", the value of ", it is Y", ", it's Y", "but (rather) Y" or
   "; it is Y" in the same clause ("The answer is not 1034, it is 1035" claims 1035);
6. "it is Y" / "it's Y" / "it should be Y" (optionally "actually Y") right after a revision
   marker, with only punctuation and "no", "oh", "sorry", "hmm", "I mean" between them
   ("No wait, it's 1035", "Actually, it is 1035", "Oops! It's 1035"): "it" is the answer
   being corrected. The value must end its clause (punctuation, a line end, the end, or
   "instead" / "now" / "then" / "not"): "Wait, it's 4 digits long" claims nothing, and
   neither does "it's 4" anywhere else.

A negated value is never a candidate: "the answer is not 1034", "isn't **1034**",
"is not \\boxed{1034}" claim nothing about 1034.

Everything else is working: partial products ("3 x 4 = 12" inside 23 x 45, "120 + 15 = 135"),
sums, numbers in trailing prose. A candidate followed by an operator ("the answer is 20 + 15")
is not a bare number, so it is not a candidate.

Attempts. The response is cut at every revision marker (data: `markers.txt`,
case-insensitive literals that start at a word boundary; extendable with `load_markers(path)`):
the text before the first marker is segment 1, and so on; a marker that ends in a letter
must also end at a word boundary ("Hold on" is not in "hold onto", "Wait" is not in
"Waiting"). A correction in words ("No wait", "No, wait", "Wait, no", "Actually,", "Oops")
is a marker like any other (DESIGN §5: a marker + a new candidate is a RESAMPLE; rule 6 reads
the new candidate). A segment's candidate is its *last* candidate (the value it commits to; a
restated final answer — the same value again with no marker in between — therefore never
creates an attempt, and an unmarked change of mind within a segment counts as one attempt
that ends on the later value). A segment without a candidate (e.g. "Wait, I made a mistake."
followed by a marker, or a verification "Let me verify: 1035 / 45 = 23" that restates
nothing) made no new sample: it is merged into the attempt before it (a leading one into the
next). A response with no candidate at all is one answerless attempt: answer None, correct
False, decision None.

Decisions. RESAMPLE after every attempt that a later attempt follows, STOP after the last.
A truncated response (generation hit its token limit) is wrong, has no final answer and
carries no decisions at all (DESIGN §4: truncations are excluded from the decision counts).
"""

from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

STOP = "STOP"
RESAMPLE = "RESAMPLE"
Decision = Literal["STOP", "RESAMPLE"]

# ---- numbers -------------------------------------------------------------------------------
_SPACES = "\u00a0\u2009\u202f"  # no-break, thin, narrow no-break: digit-group separators
_GROUP_SEP = rf"(?:,|\{{,\}}|\\,|[ {_SPACES}])"
NUM = rf"(?<![\d.,])(?:\d{{1,3}}(?:{_GROUP_SEP}\d{{3}})+|\d+)(?:\.0+)?(?!\d|[.,]\d)"
_NUM_RE = re.compile(NUM)


MAX_INT_DIGITS = 4000


def _digits(text: str) -> str:
    """The digits of a matched number, without group separators, ".0…" or leading zeros."""
    text = re.sub(r"\.0+$", "", text.strip())
    return re.sub(r"\D", "", text).lstrip("0") or "0"


def to_int(text: str) -> int:
    """'1,234' / '1 234' / '1{,}234' / '1234.00' -> 1234 (ValueError beyond Python's
    int-conversion limit; the parser itself uses `to_number`)."""
    return int(_digits(text))


def to_number(text: str) -> int | str:
    """`to_int`, or the digit string of a number with more than `MAX_INT_DIGITS` digits."""
    digits = _digits(text)
    return digits if len(digits) > MAX_INT_DIGITS else int(digits)


def _decimal(n: int) -> str:
    """str(n) for a non-negative int of any size (int -> str is limited like str -> int)."""
    if n < 10**MAX_INT_DIGITS:
        return str(n)
    half = int(n.bit_length() * 0.30103) // 2  # about half of its decimal digits
    high, low = divmod(n, 10**half)
    return _decimal(high) + _decimal(low).zfill(half)


def same_number(value: int | str, n: int) -> bool:
    """`value` (an int, or the digit string of an over-long number) equals the int `n`."""
    if isinstance(value, int):
        return value == n
    return n >= 0 and _decimal(n) == value


# ---- candidate patterns --------------------------------------------------------------------
_DECOR = r"(?:\*\*|\$|\\boxed\{|\\\(|\\\[|\\text\{|\\mathbf\{|[ \t])*"
_TIMES = (
    r"(?:\*(?!\*)|×|✕|✖|∗|·|⋅|\\times|\\cdot|(?<![A-Za-z])[xX](?![A-Za-z])"
    r"|times|multiplied\s+by)"
)
_EXPR_RE = re.compile(
    rf"(?P<l>{NUM})[ \t$)]*{_TIMES}[ \t$(]*(?P<r>{NUM})"
    rf"|product\s+of\s+(?P<l2>{NUM})\s+and\s+(?P<r2>{NUM})",
    re.IGNORECASE,
)
_REL = r"(?:=|\bis\s+equal\s+to\b|\bequals\b|\bis\b|\bgives\b|\bmakes\b|\byields\b)"
_REL_VALUE_RE = re.compile(rf"{_REL}[ \t]*{_DECOR}(?P<n>{NUM})", re.IGNORECASE)
# The arithmetic run that may follow a product expression or an answer phrase.
_ARITH_TOKEN = (
    r"\d|[ \t]|\n(?=[ \t]*&?[ \t]*=)|\\\\(?=\s*&?[ \t]*=)|[+\-−*×✕·⋅/÷^()\[\]{}=&$]"
    r"|\\times|\\cdot|\\left|\\right"
    r"|\\,|\\!|\\\[|\\\]|\\\(|\\\)|\\boxed|\\text|\\mathbf|(?<=[\d\s])[xX](?=[\s\d])"
    r"|[.,](?=\d)|\bis\s+equal\s+to\b|\bequals\b|\bis\b|\bgives\b|\bmakes\b|\byields\b"
    rf"|[{_SPACES}](?=\d)"
)
_ARITH_RUN_RE = re.compile(rf"(?:{_ARITH_TOKEN})*", re.IGNORECASE)
# What may follow a bare value: anything but an operator or a digit.
_OPERATOR_AFTER_RE = re.compile(
    rf"(?:\*\*|\}}|\$|[ \t{_SPACES}])*"
    r"(?:[+\-−×✕·⋅/÷^]|\*(?!\*)|\\times|\\cdot|[xX][ \t]*\d|\d)"
)
# A binary operator needs an operand before it; "- 3 * 4 = 12" at a line start is a bullet.
_OPERATOR_BEFORE_RE = re.compile(
    r"[\d)\]}][ \t]*(?:[+\-−*×✕∗·⋅/÷^]|\\times|\\cdot)[ \t$(]*$"
)
_RELATION_NEXT_RE = re.compile(
    rf"(?:[ \t$)]|\\\)|\\\])*(?:\n[ \t]*&?)?[ \t&]*{_REL}", re.IGNORECASE
)
_ANSWER_RE = re.compile(
    r"(?:\b(?:final\s+)?answer\b(?:[ \t]+to[ \t]+[^.\n=:]{0,60}?)?"
    r"|\bfinal\s+(?:result|product)\b|####)"
    r"[ \t]*(?:\*\*)?[ \t]*(?:is\s+equal\s+to|is|:|=|equals|would\s+be|will\s+be|should\s+be)?"
    r"[ \t]*:?[ \t]*(?:therefore|thus|then)?",
    re.IGNORECASE,
)
_ANSWER_VALUE_RE = re.compile(rf"[ \t]*{_DECOR}(?P<n>{NUM})")
_BOXED_RE = re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}")
_BOLD_RE = re.compile(rf"\*\*[ \t]*(?P<n>{NUM})[ \t]*\*\*")
_BOLD_RHS_RE = re.compile(rf"(?:{_REL})[ \t$]*$", re.IGNORECASE)
# Negations (rule 5) and what "it" may claim after a negated claim or a marker (rules 5, 6).
_NEG = (r"(?:is[ \t]+not|isn['’]t|is[ \t]+n['’]t|does[ \t]+not[ \t]+equal"
        r"|doesn['’]t[ \t]+equal|≠|!=|\\neq?(?![A-Za-z]))(?:[ \t]+equal[ \t]+to)?")
_IT_CLAIM = (r"\bit(?:['’]s|[ \t]+is|[ \t]+should[ \t]+be|[ \t]+must[ \t]+be|[ \t]+equals)"
             r"(?:[ \t]+(?:actually|really|in[ \t]+fact))?[ \t]*:?")
_NEG_ANSWER_RE = re.compile(
    r"(?:\b(?:final\s+)?answer\b(?:[ \t]+to[ \t]+[^.\n=:]{0,60}?)?"
    rf"|\bfinal\s+(?:result|product)\b)[ \t]*(?:\*\*)?[ \t]*{_NEG}",
    re.IGNORECASE,
)
_NEG_AFTER_EXPR_RE = re.compile(rf"(?:[ \t$)]|\\\))*{_NEG}", re.IGNORECASE)
_CONTRAST_RE = re.compile(  # "<negated value>, it is Y" / "... but (rather) Y"
    rf"{_DECOR}{NUM}(?:\*\*|\}}|\$|\\\)|[ \t])*[,;:—–-]*[ \t]*"
    rf"(?:(?:but|rather|instead)[ \t,]+(?:rather[ \t,]+)?(?:{_IT_CLAIM})?|{_IT_CLAIM})"
    rf"{_DECOR}(?P<n>{NUM})",
    re.IGNORECASE,
)
_AFTER_MARKER_RE = re.compile(  # "No wait, it's Y" (matched at a marker's end)
    r"(?:[\s,.:;!?—–-]|\b(?:no|nope|oh|sorry|hmm|I[ \t]+mean)\b)*"
    rf"{_IT_CLAIM}{_DECOR}(?P<n>{NUM})",
    re.IGNORECASE,
)
# Rule 6 needs the value to end its clause ("it's 4 digits long" claims nothing).
_CLAUSE_END_RE = re.compile(
    r"(?:\*\*|\}|\$|\\\)|\\\]|[ \t])*(?:[.,;:!?)\n]|$|(?:instead|now|then|not)\b)",
    re.IGNORECASE,
)
_NEGATED_BEFORE_RE = re.compile(
    rf"(?:\bnot|n['’]t|≠|!=|\\neq?(?![A-Za-z]))(?:[ \t]+equal[ \t]+to)?{_DECOR}$",
    re.IGNORECASE,
)


def _bare(text: str, end: int) -> bool:
    """True if the number ending at `end` is a whole value (no operator follows it)."""
    return _OPERATOR_AFTER_RE.match(text, end) is None


def _operator_before(text: str, start: int) -> bool:
    """A binary operator ends right before `start` ("2 + |3 * 4"; not a line-start bullet)."""
    return _OPERATOR_BEFORE_RE.search(text[max(0, start - 24) : start]) is not None


def _is_whole_side(text: str, start: int, end: int) -> bool:
    """The product expression text[start:end] is a whole left side: no binary operator
    before it ("2 + 3 * 4") and a relation right after it (not "4 times (3 * 3 ...")."""
    return not _operator_before(text, start) and _RELATION_NEXT_RE.match(text, end) is not None


class _ChainScanner:
    """Chain values of the product expressions of one text, in order of position.

    The arithmetic run after an expression ends after a digit, and every digit is a token of
    `_ARITH_TOKEN`, so an expression that starts inside the previous expression's run shares
    that run: its end, its relation values and their bracket depths are computed once per run,
    which keeps a text with thousands of chained expressions linear.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.start = self.end = -1
        # (relation start, value start, value)
        self.values: list[tuple[int, int, int | str]] = []
        self.depth: list[int] = []  # open minus closed brackets before each offset of the run

    def _scan(self, pos: int) -> None:
        run = _ARITH_RUN_RE.match(self.text, pos)
        self.start, self.end = pos, run.end() if run else pos
        self.values = [
            (m.start(), m.start("n"), to_number(m.group("n")))
            for m in _REL_VALUE_RE.finditer(self.text, self.start, self.end)
            if _bare(self.text, m.end("n"))
        ]
        depth = [0]
        for ch in self.text[self.start : self.end]:
            depth.append(depth[-1] + (ch in "([") - (ch in ")]"))
        self.depth = depth

    def value(self, pos: int) -> tuple[int, int | str] | None:
        """Last bare right-hand side of a relation ("=", "is", ...) in the arithmetic run
        that starts at `pos` (just after a product expression), outside any bracket opened
        after `pos` ("23 * 45 = 1035 (20 * 45 = 900, ...)" is 1035): (position, value)."""
        if not self.start <= pos <= self.end:
            self._scan(pos)
        base = self.depth[pos - self.start]
        for rel_start, value_start, value in reversed(self.values):
            if rel_start < pos:
                break
            if self.depth[rel_start - self.start] <= base:  # not inside a working note
                return value_start, value
        return None


def find_candidates(
    text: str, a: int, b: int, markers: Sequence[str] | None = None
) -> list[tuple[int, int | str]]:
    """All candidate answers (position, value) in order of position (rules 1-6 above;
    `markers` for rule 6, None: the default list). A value is an int, or the digit string
    of a number longer than `MAX_INT_DIGITS`."""
    return _candidates(text, a, b, marker_spans(text, markers))


def _is_operands(left: str, right: str, a: int, b: int) -> bool:
    x, y = to_number(left), to_number(right)
    return (same_number(x, a) and same_number(y, b)) or (same_number(x, b)
                                                          and same_number(y, a))


def _candidates(text: str, a: int, b: int,
                spans: Sequence[tuple[int, int]]) -> list[tuple[int, int | str]]:
    found: dict[int, int | str] = {}

    def claim(m: re.Match[str] | None) -> None:
        if m is not None and _bare(text, m.end("n")):
            found.setdefault(m.start("n"), to_number(m.group("n")))

    chains = _ChainScanner(text)
    for m in _EXPR_RE.finditer(text):
        left, right = (m.group("l"), m.group("r")) if m.group("l") else (m.group("l2"),
                                                                          m.group("r2"))
        if not _is_operands(left, right, a, b):
            continue
        if _is_whole_side(text, m.start(), m.end()):
            hit = chains.value(m.end())
            if hit:
                found.setdefault(*hit)
        if not _operator_before(text, m.start()):  # rule 5: "a * b is not X, it is Y"
            neg = _NEG_AFTER_EXPR_RE.match(text, m.end())
            if neg:
                claim(_CONTRAST_RE.match(text, neg.end()))
    for m in _ANSWER_RE.finditer(text):
        claim(_ANSWER_VALUE_RE.match(text, m.end()))
    for m in _NEG_ANSWER_RE.finditer(text):  # rule 5: "the answer is not X, it is Y"
        claim(_CONTRAST_RE.match(text, m.end()))
    for _, marker_end in spans:  # rule 6: "No wait, it's Y"
        m = _AFTER_MARKER_RE.match(text, marker_end)
        if m and _CLAUSE_END_RE.match(text, m.end("n")):
            claim(m)
    for m in _BOXED_RE.finditer(text):
        content = m.group(1)
        inner = re.fullmatch(rf"[\s$]*(?:\\text\{{|\\mathbf\{{)?({NUM})\}}?[\s$.]*", content)
        if inner is None:
            inner = re.search(rf"=\s*({NUM})[\s$]*$", content)
        if inner:
            found.setdefault(m.start(1) + inner.start(1), to_number(inner.group(1)))
    for m in _BOLD_RE.finditer(text):
        before = text[max(0, m.start() - 40) : m.start()]
        if _BOLD_RHS_RE.search(before) is None and _bare(text, m.end()):
            found.setdefault(m.start("n"), to_number(m.group("n")))
    # A negated value ("is not **1034**", "isn't \\boxed{1034}") claims nothing.
    return sorted((pos, value) for pos, value in found.items()
                  if not _NEGATED_BEFORE_RE.search(text, max(0, pos - 40), pos))


# ---- markers -------------------------------------------------------------------------------
def _read_marker_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()
            and not line.lstrip().startswith("#")]


def load_markers(path: str | Path | None = None, extend: bool = True) -> list[str]:
    """The default marker list (package data `markers.txt`), plus the markers in `path`.

    `extend=False` replaces the defaults by the file's markers. The file format is one
    marker a line, '#' comments (DESIGN §5: the marker list is data).
    """
    default = _read_marker_lines(
        resources.files("realmodel").joinpath("markers.txt").read_text(encoding="utf-8")
    )
    if path is None:
        return default
    extra = _read_marker_lines(Path(path).read_text(encoding="utf-8"))
    merged = (default if extend else []) + extra
    return list(dict.fromkeys(merged))


@functools.lru_cache(maxsize=16)
def _marker_re(markers: tuple[str, ...]) -> re.Pattern[str] | None:
    if not markers:
        return None
    alternatives = sorted(
        (re.escape(m) + ("(?![A-Za-z])" if m[-1:].isalpha() else "") for m in markers),
        key=len, reverse=True,
    )
    return re.compile(rf"(?<![A-Za-z])(?:{'|'.join(alternatives)})", re.IGNORECASE)


def marker_spans(text: str, markers: Sequence[str] | None = None) -> list[tuple[int, int]]:
    """(start, end) of each revision marker in `text` (None: the default markers)."""
    pattern = _marker_re(tuple(load_markers() if markers is None else markers))
    return [] if pattern is None else [m.span() for m in pattern.finditer(text)]


def marker_positions(text: str, markers: Sequence[str] | None = None) -> list[int]:
    """Start offsets of the revision markers in `text`."""
    return [start for start, _ in marker_spans(text, markers)]


# ---- the parse -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Attempt:
    answer: int | str | None  # str: the digits of a number over MAX_INT_DIGITS long
    correct: bool
    decision: Decision | None

    def to_dict(self) -> dict[str, Any]:
        return {"answer": self.answer, "correct": self.correct, "decision": self.decision}


@dataclass(frozen=True)
class ParsedResponse:
    attempts: tuple[Attempt, ...]
    final_answer: int | str | None
    correct: bool
    truncated: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The CLI contract: {"attempts": [...], "final_answer": ..., "correct": ...}."""
        return {
            "attempts": [a.to_dict() for a in self.attempts],
            "final_answer": self.final_answer,
            "correct": self.correct,
        }

    def as_calibration_attempts(self) -> list[tuple[bool | None, str | None]]:
        """(candidate correct, or None if answerless; decision) for
        `core.calibration.TrajectoryCounts.from_attempts` (DESIGN §4)."""
        return calibration_attempts(self.to_dict()["attempts"])


def calibration_attempts(
    attempts: Sequence[dict[str, Any]],
) -> list[tuple[bool | None, str | None]]:
    """`ParsedResponse.as_calibration_attempts` from stored attempts (`to_dict()["attempts"]`):
    (candidate correct, or None if answerless; decision) per attempt."""
    return [(a["correct"] if a["answer"] is not None else None, a["decision"])
            for a in attempts]


def parse_response(
    text: str,
    a: int,
    b: int,
    markers: Sequence[str] | None = None,
    truncated: bool = False,
) -> ParsedResponse:
    """Attempts, decisions and the final answer of a response to `a * b` (rules above)."""
    target = int(a) * int(b)
    spans = marker_spans(text, markers)
    candidates = _candidates(text, a, b, spans)
    bounds = [start for start, _ in spans]
    segments: dict[int, int | str] = {}  # segment index -> its last candidate value
    for pos, value in candidates:
        seg = bisect.bisect_right(bounds, pos)
        segments[seg] = value
    answers = [segments[k] for k in sorted(segments)]
    if not answers:
        return ParsedResponse((Attempt(None, False, None),), None, False, truncated)
    attempts = []
    for k, value in enumerate(answers):
        if truncated:
            decision = None
        else:
            decision = STOP if k == len(answers) - 1 else RESAMPLE
        attempts.append(Attempt(value, same_number(value, target), decision))
    final = None if truncated else answers[-1]
    correct = final is not None and same_number(final, target)
    return ParsedResponse(tuple(attempts), final, correct, truncated)


def reward_correct(text: str, a: int, b: int) -> float:
    """1.0 if the response's final answer is a * b, else 0.0 (the GRPO reward, DESIGN §5)."""
    return 1.0 if parse_response(text, a, b).correct else 0.0
