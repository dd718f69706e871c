"""One batched interface for everything that scores reasoning: verifiers, judges, value models.

An evaluator returns a score in [0, 1] per thought (1 = the path is right / will succeed), the
same contract as a task's verifier. Search code that wants q in [-1, 1] maps it with 2·s − 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from x1.graph import ReasoningGraph, Thought
from x1.tasks.base import Task


@dataclass
class EvalItem:
    """A thought to score, with what is needed to render its prompt and path."""

    task: Task
    graph: ReasoningGraph
    thought_id: int
    prefix: str = ""  # the chat-formatted prompt the path continues

    @property
    def thought(self) -> Thought:
        return self.graph[self.thought_id]

    @property
    def path_text(self) -> str:
        return self.graph.path_text(self.thought_id)

    @property
    def steps(self) -> list[str]:
        """The path's thought texts, one per step (what a process reward model scores)."""
        return [t.text for t in self.graph.path(self.thought_id)]


@runtime_checkable
class Evaluator(Protocol):
    name: str
    model_calls: int  # how many model forward calls it has made (0 for verifiers)
    # A trained evaluator also has ``model_tokens``: the positions its model has run (the engine reads it
    # where it is there, and charges the difference to the problems a call scored).

    def evaluate(self, items: list[EvalItem]) -> list[float]:
        """Scores in [0, 1], one per item, in order."""
        ...
