"""Math equivalence: math-verify first, then number, then string comparison, each named in the reason."""

from __future__ import annotations

import threading

import pytest

pytest.importorskip("math_verify")

from x1.tasks import math_verify as mv  # noqa: E402
from x1.tasks.math_verify import is_prose, math_equal, math_equal_any  # noqa: E402


@pytest.mark.parametrize(
    ("answer", "gold"),
    [
        ("1/2", "0.5"),
        ("\\frac{1}{2}", "1/2"),
        ("\\sqrt{2}/2", "1/\\sqrt{2}"),
        ("2^(n-1)", "2^{n-1}"),
        ("1,234", "1234"),
        ("$5.50$", "5.5"),
        ("y=1, x=2", "x=2, y=1"),
        ("no", "No"),
        ("No, no such n exists.", "No"),
        ("The sequence is not periodic.", "The sequence is not periodic"),
    ],
)
def test_equivalent_answers_pass(answer: str, gold: str) -> None:
    result = math_equal(answer, gold)
    assert result.correct, result.reason


@pytest.mark.parametrize(
    ("answer", "gold"),
    [("16", "15"), ("1/3", "0.5"), ("2^n", "2^{n-1}"), ("on", "No"), ("Yes", "No"), ("Nope", "No"), ("", "3")],
)
def test_different_answers_fail(answer: str, gold: str) -> None:
    assert math_equal(answer, gold).score == 0.0


def test_reason_names_the_deciding_path() -> None:
    assert math_equal("0.5", "1/2").reason.startswith("math-verify")
    assert math_equal(" 7 ", "7").reason.startswith("string")
    assert math_equal("Maybe", "Exactly one").reason.startswith("string")
    assert math_equal(None, "1").reason == "no answer could be extracted"


def test_falls_back_to_numbers_then_strings_when_parsing_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mv, "_mv_parse", lambda text: [])
    ok = math_equal("12 apples", "12.0")
    assert ok.correct and ok.reason.startswith("number")
    assert not math_equal("13", "12").correct
    text = math_equal("x+y", "a+b")
    assert text.score == 0.0 and text.reason.startswith("string")


def test_works_outside_the_main_thread() -> None:
    results = []
    worker = threading.Thread(target=lambda: results.append(math_equal("\\frac{3}{4}", "0.75")))
    worker.start()
    worker.join(timeout=60)
    assert results and results[0].correct


def test_any_of_several_golds() -> None:
    assert math_equal_any("504", ["2*C(10, 5), or equivalently 504", "2*C(10, 5)", "504"]).correct
    assert not math_equal_any("503", ["504", "2*C(10,5)"]).correct


def test_prose_detection() -> None:
    assert is_prose("No") and is_prose("Exactly one sequence")
    assert not is_prose("n") and not is_prose("x=2, y=1") and not is_prose("sqrt(2)")
