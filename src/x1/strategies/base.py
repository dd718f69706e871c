"""The strategy contract: ``ask`` for model work given a graph, ``tell`` the results back.

A strategy holds only its configuration; everything it knows about one problem lives in that
problem's ``ReasoningGraph`` (thoughts plus ``graph.meta``). So the engine can batch the
requests of many problems into one model call, and a checkpointed graph resumes a search.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from x1.graph import ReasoningGraph, Thought
from x1.models.base import Completion
from x1.tasks.base import Task


@dataclass
class Expand:
    """Generate ``n`` continuations after ``thought_id``'s path (the *generate* operator).

    With ``attach`` the engine adds each continuation as a child thought; otherwise (rollouts)
    the raw completions come back. ``evaluator`` names an evaluator to score new children in
    the same tick. ``prompt`` replaces the path-derived prompt (refine and aggregate use it).
    """

    thought_id: int
    n: int = 1
    temperature: float | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None  # None: the task's step delimiter
    attach: bool = True
    evaluator: str | None = None
    prompt: str | None = None
    signals: bool = False
    tag: str = "expand"


@dataclass
class Evaluate:
    """Score thoughts with a named evaluator (the *evaluate* operator)."""

    thought_ids: list[int]
    evaluator: str = "value"


Request = Expand | Evaluate


@dataclass
class Reply:
    """What came back for one request."""

    request: Request
    thought_ids: list[int] = field(default_factory=list)  # attached children (Expand, attach=True)
    completions: list[Completion] = field(default_factory=list)  # raw (Expand, attach=False)
    scores: list[float] = field(default_factory=list)  # Evaluate, in thought_ids order


@dataclass
class Problem:
    """One task under search: the engine's unit of work."""

    task: Task
    graph: ReasoningGraph
    seed: int = 0
    done: bool = False
    stop_reason: str = ""

    @property
    def meta(self) -> dict[str, Any]:
        return self.graph.meta


class Strategy(ABC):
    """Grows a reasoning structure. Subclasses are dataclasses of their hyper-parameters."""

    name: str = "strategy"

    def start(self, problem: Problem) -> None:  # noqa: B027 - optional hook
        """Initialise ``problem.graph.meta`` before the first ``ask``."""

    @abstractmethod
    def ask(self, problem: Problem) -> list[Request]:
        """The model work needed next; an empty list means the strategy is finished."""

    @abstractmethod
    def tell(self, problem: Problem, replies: list[Reply]) -> None:
        """Fold results into the graph (operators: backpropagate, prune, select...)."""

    @abstractmethod
    def answer(self, problem: Problem) -> Thought | None:
        """The terminal thought whose path is the final solution (None if none was found)."""

    def config(self) -> dict[str, Any]:
        from dataclasses import asdict, is_dataclass

        return asdict(self) if is_dataclass(self) else {}
