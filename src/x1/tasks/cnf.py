"""CNF formulas and truth assignments: reading both from text, and scoring an assignment.

Shared by ``synthetic:sat`` (clauses it generates) and ``x1paper:`` (clauses parsed from the
paper's ``(NOT x_2 OR x_1) AND ...`` gold text), so both score by one rule: 1 when every clause
has a true literal, otherwise ``0.5 * satisfied_clauses / clauses``; a variable the answer
leaves out makes its literals false, and a variable given both values scores 0.

An assignment may be spelled ``x_1 = True``, ``x1=T``, ``x_1: false``, ``x_1 = 1``, ``x_1 is
true``, a list of values for x1, x2, ... (``[True, False, 1]``), or a list of literals
(``x_1, NOT x_2, ¬x3``).
"""

from __future__ import annotations

import re

from x1.tasks.answers import all_boxed, extract_marked_answer
from x1.tasks.base import Verification

Clause = tuple[int, ...]  # DIMACS-style literals: +i is x_i, -i is not x_i

_VAR = r"x_?(\d+)"
_NEGATION = r"(?:NOT\s+|not\s+|¬\s*|~\s*|!\s*|-\s*)"
_LITERAL = re.compile(rf"({_NEGATION})?{_VAR}\b", re.IGNORECASE)
_OR = re.compile(r"\bOR\b|∨|\|\|?|\s", re.IGNORECASE)
_ASSIGN = re.compile(rf"\b{_VAR}\s*(?:=|:|\bis\b|->|→)\s*(true|false|t|f|1|0)\b", re.IGNORECASE)
_TRUE_WORDS = {"t", "true", "1"}
_VALUE = r"(?:true|false|t|f|1|0)"
_VALUE_LIST = re.compile(rf"[\[(]\s*({_VALUE}(?:\s*,\s*{_VALUE})+)\s*[\])]", re.IGNORECASE)
_BARE_VALUES = re.compile(rf"\s*{_VALUE}(?:\s*,\s*{_VALUE})+\s*\.?\s*", re.IGNORECASE)
_LITERAL_LIST = re.compile(rf"\s*{_NEGATION}?x_?\d+(?:\s*(?:,|\band\b|∧|;)?\s*{_NEGATION}?x_?\d+)*\s*\.?\s*", re.IGNORECASE)
_MARKUP = re.compile(r"\\(?:text|mathrm|texttt|textbf|mathbf)\b|\\[,;! ]|[{}$*`]")
_ANSWER_IS = re.compile(r"answer is\s*:?", re.IGNORECASE)


def parse_formula(text: str) -> tuple[Clause, ...]:
    """Clauses of a CNF such as ``(NOT x_2 OR x_1) AND (x_3)``; ¬/∨/∧ spellings are read too.

    Raises ValueError when the text holds no clause, or a clause with no variable.
    """
    text = text.strip()
    if text.startswith("(") and text.endswith(")"):
        text = text[1:-1]
    parts = re.split(r"\)\s*(?:AND|∧|&&?)\s*\(", text, flags=re.IGNORECASE) if text else []
    if not parts:
        raise ValueError("no clause found; expected '(x_1 OR NOT x_2) AND (...)'")
    clauses = []
    for part in parts:
        literals = [(-1 if neg else 1) * int(var) for neg, var in _LITERAL.findall(part)]
        if not literals or _OR.sub("", _LITERAL.sub("", part)):
            raise ValueError(f"clause {part.strip()!r} is not an OR of literals such as 'x_1' or 'NOT x_2'")
        clauses.append(tuple(literals))
    return tuple(clauses)


def _plain(text: str) -> str:
    """The answer without LaTeX and Markdown dressing: ``$x_{1} = \\text{True}$`` -> ``x_1 = True``."""
    return _MARKUP.sub("", text)


def parse_assignment(answer: str) -> tuple[dict[int, bool], list[int]]:
    """Variable values named in ``answer`` and the variables given conflicting values.

    Named assignments (``x_1 = True``) win; otherwise a whole answer that is a list of values
    assigns x1, x2, ... in order, and one that is a list of literals sets each literal true.
    """
    text = _plain(answer)
    pairs = [(int(var), val.lower() in _TRUE_WORDS) for var, val in _ASSIGN.findall(text)]
    if not pairs:
        listed = _VALUE_LIST.search(text)
        bare = listed.group(1) if listed else text if _BARE_VALUES.fullmatch(text) else None
        if bare is not None:
            pairs = [(i, v.strip().lower() in _TRUE_WORDS) for i, v in enumerate(bare.strip().rstrip(".").split(","), 1)]
        elif _LITERAL_LIST.fullmatch(text):
            pairs = [(int(var), not neg) for neg, var in _LITERAL.findall(text)]
    values: dict[int, bool] = {}
    conflicts: list[int] = []
    for var, value in pairs:
        if var in values and values[var] != value:
            conflicts.append(var)
        values[var] = value
    return values, conflicts


def score_assignment(clauses: tuple[Clause, ...], answer: str | None) -> Verification:
    """Score an assignment against ``clauses`` by the rule in the module docstring."""
    if answer is None:
        return Verification(0.0, "no answer could be extracted")
    values, conflicts = parse_assignment(answer)
    if not values:
        return Verification(0.0, "no assignment such as 'x_1 = True' found")
    if conflicts:
        return Verification(0.0, f"x{conflicts[0]} is given both values")
    satisfied = sum(any(values.get(abs(lit)) == (lit > 0) for lit in clause) for clause in clauses)
    total = len(clauses)
    if satisfied == total:
        return Verification(1.0, f"all {total} clauses satisfied")
    return Verification(0.5 * satisfied / total, f"{satisfied}/{total} clauses satisfied")


def _assigns(text: str) -> bool:
    return bool(parse_assignment(text)[0])


def extract_assignment(text: str) -> str | None:
    """The assignment a solution ends with: in boxes, after the last "answer is", else the last paragraph assigning variables.

    Reads the raw text rather than :func:`extract_marked_answer`, whose clean-up keeps only what
    follows the last "=" and would shrink "x1=T, x2=F" to "F"; an answer listed one variable per
    line after "The answer is:" is kept whole, up to the next blank line.
    """
    boxed = [box for box in all_boxed(text) if _assigns(box)]
    if boxed:
        return ", ".join(boxed)  # one box for the whole assignment, or one per variable
    markers = list(_ANSWER_IS.finditer(text))
    for marker in reversed(markers):
        tail = text[marker.end() :].strip()
        block = tail.split("\n\n", 1)[0].strip()
        if _assigns(block):
            return block
    for block in reversed(re.split(r"\n\s*\n", text)):
        lines = [line for line in block.splitlines() if _assigns(line)]
        if lines:
            return "\n".join(line.strip() for line in lines)
    return extract_marked_answer(text)
