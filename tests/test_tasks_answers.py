"""Answer extraction and number comparison: the parts every verifier builds on."""

from __future__ import annotations

import pytest

from x1.tasks import extract_answer
from x1.tasks.answers import extract_boxed, extract_marked_answer, last_number, numbers_equal, parse_number


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so x = \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
        ("\\boxed{\\left\\{ 1, \\{2\\} \\right\\}}", "\\left\\{ 1, \\{2\\} \\right\\}"),
        ("first \\boxed{3} then \\boxed{{4}}", "{4}"),
        ("Step 1: 3 + 4 = 7.\n\nThe answer is: 42.", "42"),
        ("The answer is **$1,234$**.", "$1,234"),
        ("The answer is: \\$8", "8"),
        ("the answer is 5\nsome trailing chatter 99", "5"),
        ("The answer is: \\boxed{17}", "17"),
        ("Natalia sold 48/2 = 24 clips.\n#### 72", "72"),
        ("3 apples and then 7 pears", "7"),
        ("It costs $1,250.50 in total", "1250.50"),
        ("no numbers here", None),
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    got = extract_answer(text)
    assert (got.strip("$") if got else got) == (expected.strip("$") if expected else expected)


def test_unbalanced_boxed_is_ignored() -> None:
    assert extract_boxed("\\boxed{1 + {2}") is None
    assert extract_answer("\\boxed{1 + {2} and 9") == "9"


def test_marked_answer_has_no_number_fallback() -> None:
    assert extract_marked_answer("3 apples and 7 pears") is None
    assert extract_marked_answer("The answer is: True") == "True"
    assert last_number("-3.5 and -7") == "-7"


@pytest.mark.parametrize(
    ("answer", "gold", "equal"),
    [
        ("1,234", "1234", True),
        ("$5.50", "5.5", True),
        ("3/4", "0.75", True),
        ("12 apples", "12", True),
        ("13", "12", False),
        (None, "12", False),
        ("twelve", "12", False),
    ],
)
def test_numbers_equal(answer: str | None, gold: str, equal: bool) -> None:
    assert numbers_equal(answer, gold) is equal


def test_parse_number_is_exact() -> None:
    assert parse_number("1/3") is not None and parse_number("1/3") * 3 == 1
