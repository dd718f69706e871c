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


def _boxed_at(text: str, start: int) -> str | None:
    """Content of the ``\\boxed{...}`` that starts at ``start``, with balanced braces."""
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


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` with balanced braces."""
    start = text.rfind("\\boxed{")
    return _boxed_at(text, start) if start >= 0 else None


def all_boxed(text: str) -> list[str]:
    """Contents of every closed ``\\boxed{...}``, in order (some answers box each part)."""
    starts = [m.start() for m in re.finditer(r"\\boxed\{", text)]
    return [box for box in (_boxed_at(text, s) for s in starts) if box is not None]


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


_TRUTH = re.compile(r"(\bnot\s+|n't\s+)?\b(true|false|yes|no|t|f)\b", re.IGNORECASE)
_TRUTH_WORDS = {"true": True, "false": False, "yes": True, "no": False, "t": True, "f": False}


def read_truth(answer: str, yes_no: bool = False) -> bool | None:
    """The truth value an answer states ("False.", "**True**", "the statement is false", "not
    true"), or None when it states none. The last such word counts; "yes"/"no" only with
    ``yes_no``, and a lone T/F only as the whole answer."""
    text = answer.replace("*", "").replace("`", "").strip()
    if text.rstrip(".").lower() in ("t", "f"):
        return text.rstrip(".").lower() == "t"
    for negated, word in reversed(_TRUTH.findall(text)):
        word = word.lower()
        if word in ("t", "f") or (word in ("yes", "no") and not yes_no):
            continue
        return _TRUTH_WORDS[word] != bool(negated)
    return None


def extract_truth(text: str, yes_no: bool = False) -> str | None:
    """"True"/"False" for a solution: from its box or marked answer, else its last truth word.

    Canonical words, so traces show what was read; None when the text states no truth value.
    """
    marked = extract_boxed(text) or extract_marked_answer(text)
    value = read_truth(marked, yes_no) if marked else None
    if value is None:
        value = read_truth(text, yes_no)
    return None if value is None else str(value)
