"""The strategy contract: ``ask`` for model work given a graph, ``tell`` the results back.

A strategy holds only its configuration; everything it knows about one problem lives in that
problem's ``ReasoningGraph``: the thoughts, and the strategy's typed state (a dataclass of its
own, stored field by field in ``graph.meta``). So the engine can batch the requests of many
problems into one model call, and a checkpointed graph resumes a search.

``ask`` only reads: it returns the requests for the state as it is. Every change, to the graph
or to the state, happens in ``start`` and ``tell``; work that needs no model (pruning, backing
up a terminal's value, a local operator) is done in ``tell`` right after the replies are folded
in, so that the next ``ask`` has only to read. ``read_state`` hands out a copy, so an ``ask``
that changed its copy would change nothing.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

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


def scored_by(evaluator: str) -> Callable[[Thought], float]:
    """A thought's score from ``evaluator`` (0 when it has none): the ranking key of beam, ToT and DVTS."""
    return lambda t: t.scores.get(evaluator, 0.0)


StateT = TypeVar("StateT")


@functools.cache
def _state_fields(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


def _plain_copy(value: Any) -> Any:
    """A copy of JSON-shaped state (lists, dicts, scalars): what deepcopy does here, at half its cost on the hot path."""
    if isinstance(value, list):
        return [_plain_copy(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain_copy(v) for k, v in value.items()}
    return value


def read_state(problem: Problem, cls: type[StateT]) -> StateT:
    """The strategy's state as a fresh ``cls`` (a dataclass): changing it changes nothing until ``save_state``."""
    meta = problem.graph.meta
    return cls(**{name: _plain_copy(meta[name]) for name in _state_fields(cls) if name in meta})


def save_state(problem: Problem, state: Any) -> None:
    """Store the state in ``graph.meta``, one key per field, so checkpoints and traces carry it as JSON."""
    # JSON-shaped fields only (every strategy's state is), so a plain copy is what asdict would give, cheaper
    problem.graph.meta.update({name: _plain_copy(getattr(state, name)) for name in _state_fields(type(state))})


class Strategy(ABC):
    """Grows a reasoning structure. Subclasses are dataclasses of their hyper-parameters."""

    name: str = "strategy"

    def start(self, problem: Problem) -> None:  # noqa: B027 - optional hook
        """Initialise ``problem.graph.meta`` before the first ``ask``."""

    @abstractmethod
    def ask(self, problem: Problem) -> list[Request]:
        """The model work needed next, read off the graph and state without changing them; [] means finished."""

    @abstractmethod
    def tell(self, problem: Problem, replies: list[Reply]) -> None:
        """Fold results into the graph and state (backpropagate, prune, select...), then do any model-free work."""

    @abstractmethod
    def answer(self, problem: Problem) -> Thought | None:
        """The terminal thought whose path is the final solution (None if none was found)."""

    def config(self) -> dict[str, Any]:
        from dataclasses import asdict, is_dataclass

        return asdict(self) if is_dataclass(self) else {}
