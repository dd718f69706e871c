"""Math-equivalence checking of a final answer against a gold answer.

``1/2`` and ``\\frac{1}{2}`` and ``0.5`` are the same answer; string comparison cannot tell, so
this leans on the ``math-verify`` package (sympy underneath) and falls back to exact number and
then normalised string comparison when it cannot parse either side. Every
:class:`~x1.tasks.base.Verification` says which path decided, so a surprising score can be traced.
Word answers ("No", "Exactly one") are compared as strings first, because sympy would read "No"
as the product n*o and accept "on"; a Yes/No gold also accepts an answer that starts with it.

math-verify bounds its parsing time with ``signal.alarm``, which only works in the main thread;
elsewhere (a thread pool, a server worker) the timeout is switched off rather than failing.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

from x1.tasks.answers import numbers_equal, parse_number
from x1.tasks.base import Verification

TIMEOUT_S = 5

# Words that may appear in a mathematical answer without making it prose.
_MATH_WORDS = {
    "sqrt", "sin", "cos", "tan", "log", "ln", "exp", "pi", "inf", "infty", "frac", "cdot",
    "mod", "gcd", "lcm", "max", "min", "floor", "ceil", "and", "or",
}  # fmt: skip
_PROSE = re.compile(r"[A-Za-z][A-Za-z\s,.;:'()!?-]*")
_WORD = re.compile(r"[A-Za-z]{2,}")
_TEXT_CMD = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")


def normalise_text(text: str) -> str:
    """Case-, space- and decoration-insensitive form of an answer, for string comparison."""
    text = _TEXT_CMD.sub(r"\1", text)
    text = text.replace("\\boxed", "").replace("\\left", "").replace("\\right", "").replace("\\!", "")
    text = text.strip().strip("$").strip().rstrip(".").strip()
    text = re.sub(r"^(?:the|a|an)\s+", "", text, flags=re.IGNORECASE)
    text = text.replace("{", "").replace("}", "")
    return re.sub(r"\s+", "", text).lower()


def is_prose(text: str) -> bool:
    """True for word answers such as "No" or "Exactly one", which sympy would read as products."""
    text = text.strip().rstrip(".")
    if not _PROSE.fullmatch(text):
        return False
    return any(w.lower() not in _MATH_WORDS for w in _WORD.findall(text))


def _wrap(text: str) -> str:
    """The form math-verify's LaTeX extractor looks for: a ``\\boxed{}`` or ``$...$`` expression."""
    text = text.strip()
    if "\\boxed" in text or (text.startswith("$") and text.endswith("$") and len(text) > 1):
        return text
    return "\\boxed{" + text + "}"


def _mv_parse(text: str) -> list[Any]:
    from math_verify import parse

    timeout = TIMEOUT_S if threading.current_thread() is threading.main_thread() else None
    try:
        return list(parse(_wrap(text), parsing_timeout=timeout))  # type: ignore[arg-type]
    except Exception:  # math-verify raises on odd input despite raise_on_error=False
        return []


def _mv_verify(gold: list[Any], answer: list[Any]) -> bool:
    from math_verify import verify

    timeout = TIMEOUT_S if threading.current_thread() is threading.main_thread() else None
    try:
        return bool(verify(gold, answer, timeout_seconds=timeout))  # type: ignore[arg-type]
    except Exception:
        return False


# math-verify logs a warning each time a timeout is disabled; once is enough for us (none).
logging.getLogger("math_verify").setLevel(logging.ERROR)


def math_equal(answer: str | None, gold: Any) -> Verification:
    """Score 1 when ``answer`` equals ``gold`` mathematically, else 0; the reason names the path."""
    if answer is None:
        return Verification(0.0, "no answer could be extracted")
    answer, gold_s = str(answer).strip(), str(gold).strip()
    if not answer:
        return Verification(0.0, "empty answer")
    if normalise_text(answer) == normalise_text(gold_s):
        return Verification(1.0, "string: same as gold after normalising")
    if is_prose(gold_s):
        first = re.match(r"[A-Za-z]+", answer)
        if gold_s.lower().rstrip(".") in ("yes", "no") and first and first.group(0).lower() == gold_s.lower().rstrip("."):
            return Verification(1.0, f"string: answer starts with {gold_s!r}")
        return Verification(0.0, f"string: gold {gold_s!r} is a word answer and {answer!r} differs")
    parsed_gold, parsed_answer = _mv_parse(gold_s), _mv_parse(answer)
    if parsed_gold and parsed_answer:
        if _mv_verify(parsed_gold, parsed_answer):
            return Verification(1.0, "math-verify: equivalent to gold")
        return Verification(0.0, f"math-verify: {answer!r} is not equivalent to gold {gold_s!r}")
    side = "gold" if not parsed_gold else "answer"
    if parse_number(answer) is not None and parse_number(gold_s) is not None:
        ok = numbers_equal(answer, gold_s)
        verdict = "equals" if ok else "differs from"
        return Verification(float(ok), f"number (math-verify could not parse the {side}): {verdict} gold")
    return Verification(0.0, f"string (math-verify could not parse the {side}): differs from gold {gold_s!r}")


def math_equal_any(answer: str | None, golds: list[str]) -> Verification:
    """Like :func:`math_equal` against several acceptable forms of one gold answer."""
    best = Verification(0.0, "no gold answer")
    for gold in golds:
        result = math_equal(answer, gold)
        if result.correct:
            return result
        best = result if best.reason == "no gold answer" else best
    return best
