"""The end of one problem, and the trace record it becomes (``x1.trace`` reads and writes those)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from x1.graph import ReasoningGraph, Thought
from x1.tasks.base import GROUP_KEYS, Task


@dataclass
class Outcome:
    """The end of one problem: answer, verdict, compute, and the whole graph."""

    task: Task
    graph: ReasoningGraph
    answer_thought: Thought | None
    answer: str | None
    score: float
    reason: str
    stop_reason: str
    wall_s: float

    @property
    def correct(self) -> bool:
        return self.score >= 1.0 - 1e-9

    def to_record(self) -> dict[str, Any]:
        compute = self.graph.total_compute()
        return {
            "task_id": self.task.id,
            "source": self.task.source,
            "question": self.task.question,
            "gold": self.task.gold if isinstance(self.task.gold, str | int | float) else str(self.task.gold),
            "answer": self.answer,
            "answer_thought": self.answer_thought.id if self.answer_thought else None,
            "score": self.score,
            "correct": self.correct,
            "reason": self.reason,
            "stop_reason": self.stop_reason,
            "wall_s": round(self.wall_s, 3),
            "compute": {
                "prompt_tokens": compute.prompt_tokens,
                "generated_tokens": compute.generated_tokens,
                "policy_calls": compute.policy_calls,
                "evaluator_calls": compute.evaluator_calls,
                # None: an evaluator whose model's work is not counted here (a remote server, the policy as judge) was called
                "evaluator_tokens": None if self.graph.meta.get("uncounted_evaluators") else compute.evaluator_tokens,
            },
            "graph": self.graph.to_dict(),
            **{key: self.task.meta[key] for key in GROUP_KEYS if key in self.task.meta},
        }
