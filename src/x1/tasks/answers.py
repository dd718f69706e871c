"""Pulling a final answer out of free-form solution text, and comparing numbers.

The order of preference follows what models are prompted to write: ``\\boxed{}``, then
"The answer is ...", then GSM8K's ``#### n``, then the last number in the text.
"""

from __future__ import annotations

import re
from fractions import Fraction

_ANSWER_IS = re.compile(r"answer is\s*:?\s*(.+)", re.IGNORECASE)
_HASHES = re.compile(r"####\s*(.+)")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` with balanced braces."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i = start + len("\\boxed{")
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j].strip()
    return None


def _clean(answer: str) -> str:
    answer = answer.strip().splitlines()[0].strip() if answer.strip() else ""
    # "The answer is: The answer is: 15 + 5 = 20." — models repeat the marker and show work.
    while (m := _ANSWER_IS.search(answer)) is not None:
        answer = m.group(1).strip()
    if "=" in answer:
        answer = answer.rsplit("=", 1)[1].strip()
    answer = answer.replace("\\$", "$")  # a LaTeX-escaped dollar: "\$8" -> "$8"
    answer = answer.strip(" *`$").rstrip(".").strip(" *`$")  # "**$1,234$**." -> "1,234"
    return answer.rstrip(".").strip()


def extract_answer(text: str) -> str | None:
    """The final answer in ``text``, or None when there is nothing answer-like."""
    marked = extract_marked_answer(text)
    return marked if marked is not None else last_number(text)


def extract_marked_answer(text: str) -> str | None:
    """An answer the solution marks as final (boxed, "The answer is", ``####``), else None.

    Separate from :func:`extract_answer` so that tasks whose answers are not numbers can
    supply their own fallback instead of "the last number in the text".
    """
    boxed = extract_boxed(text)
    if boxed:
        return boxed
    matches = _ANSWER_IS.findall(text)
    if matches:
        inner = extract_boxed(matches[-1])
        cleaned = _clean(inner or matches[-1])
        if cleaned:
            return cleaned
    matches = _HASHES.findall(text)
    if matches:
        return _clean(matches[-1])
    return None


def last_number(text: str) -> str | None:
    numbers = _NUMBER.findall(text)
    return numbers[-1].replace(",", "") if numbers else None


def parse_number(text: str | None) -> Fraction | None:
    """A number from an answer string ("1,234", "$5.50", "3/4", "12 apples"), exactly."""
    if text is None:
        return None
    match = _NUMBER.search(text.replace("\\!", "").replace("{,}", ""))
    if not match:
        return None
    raw = match.group(0).replace(",", "")
    try:
        return Fraction(raw)
    except (ValueError, ZeroDivisionError):
        return None


def numbers_equal(answer: str | None, gold: str | float | int, rel_tol: float = 1e-6) -> bool:
    a = parse_number(answer)
    g = parse_number(str(gold))
    if a is None or g is None:
        return False
    if a == g:
        return True
    return abs(float(a) - float(g)) <= rel_tol * max(1.0, abs(float(g)))
