"""Small builders shared by the tests."""

from __future__ import annotations

from dataclasses import dataclass

from x1.evaluators.base import EvalItem
from x1.tasks.answers import numbers_equal
from x1.tasks.base import StepFormat, Task, Verification


def number_task(task_id: str = "t0", gold: str = "2", question: str = "q", delimiter: str = "\n\n", max_steps: int = 12) -> Task:
    return Task(
        id=task_id,
        question=question,
        gold=gold,
        verifier=lambda a, g: Verification(1.0 if numbers_equal(a, g) else 0.0, ""),
        step_format=StepFormat(delimiter=delimiter, max_steps=max_steps),
    )


@dataclass
class ScriptedEvaluator:
    """Scores a thought by its stripped text; unknown texts get ``default``."""

    scores: dict[str, float]
    name: str = "scripted"
    default: float = 0.5
    model_calls: int = 0

    def evaluate(self, items: list[EvalItem]) -> list[float]:
        self.model_calls += 1
        return [self.scores.get(item.thought.text.strip(), self.default) for item in items]
