"""A task is a prompt plus a verifier: the one contract between problems and the rest of x1.

Every verifier returns a score in [0, 1] (1 = correct) with a reason, whether it compares
numbers, checks a SAT assignment, or calls a reasoning-gym checker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from x1.tasks.answers import extract_answer

DEFAULT_SYSTEM = (
    "Solve the problem. Reason step by step, one short step per paragraph, separating steps "
    "with a blank line and showing each calculation. Only after the reasoning, write a final "
    "line of the form 'The answer is: <answer>'."
)


@dataclass(frozen=True)
class Verification:
    score: float  # in [0, 1]; 1 means correct
    reason: str = ""

    def __post_init__(self) -> None:
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"a verifier score must lie in [0, 1], got {self.score}")

    @property
    def correct(self) -> bool:
        return self.score >= 1.0 - 1e-9


GROUP_KEYS = ("type", "level")  # task meta keys that trace records copy and results are broken down by

Verifier = Callable[[str | None, Any], Verification]
AnswerExtractor = Callable[[str], str | None]


@dataclass(frozen=True)
class StepFormat:
    """How a solution to this task is split into steps (the blueprint's step granularity)."""

    delimiter: str = "\n\n"  # a step ends here; "" means the whole solution is one step
    max_step_tokens: int = 160
    max_steps: int = 12


@dataclass
class Task:
    """One problem: chat prompt, gold answer, and how to check an answer to it."""

    id: str
    question: str
    gold: Any
    verifier: Verifier
    system: str | None = DEFAULT_SYSTEM
    extractor: AnswerExtractor = extract_answer
    step_format: StepFormat = field(default_factory=StepFormat)
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def messages(self) -> list[dict[str, str]]:
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        msgs.append({"role": "user", "content": self.question})
        return msgs

    def extract_answer(self, solution: str) -> str | None:
        return self.extractor(solution)

    def verify(self, answer: str | None) -> Verification:
        if answer is None:
            return Verification(0.0, "no answer could be extracted")
        return self.verifier(answer, self.gold)

    def check_solution(self, solution: str) -> tuple[str | None, Verification]:
        answer = self.extract_answer(solution)
        return answer, self.verify(answer)


class TaskError(ValueError):
    """A task source could not be loaded; the message says what was wrong and how to fix it."""
