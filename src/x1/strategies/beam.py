"""Step-level beam search: keep the ``width`` best partial solutions, expand each by ``branch``.

Finished (terminal) candidates leave the beam and wait in ``completed``; the search ends when
the beam is empty or ``max_depth`` is reached. ``max_per_parent`` < branch gives a diverse beam
(no parent may fill the beam with its own children). Width 1, branch 1, temperature 0 is greedy.
"""

from __future__ import annotations

from dataclasses import dataclass

from x1.graph import ROOT_ID, Thought
from x1.operators.prune import keep_best
from x1.strategies.base import Expand, Problem, Reply, Request, Strategy


@dataclass
class BeamSearch(Strategy):
    width: int = 4
    branch: int = 4
    temperature: float = 0.8
    evaluator: str = "confidence"
    max_depth: int = 12
    max_per_parent: int | None = None  # diverse beam when set below branch
    name: str = "beam"

    def start(self, problem: Problem) -> None:
        problem.meta["beam"] = [ROOT_ID]
        problem.meta["completed"] = []

    def ask(self, problem: Problem) -> list[Request]:
        beam = problem.meta["beam"]
        if not beam:
            return []
        n_root = self.width * self.branch if beam == [ROOT_ID] else self.branch
        return [Expand(t, n=n_root if t == ROOT_ID else self.branch, temperature=self.temperature, evaluator=self.evaluator) for t in beam]

    def _score(self, t: Thought) -> float:
        return t.scores.get(self.evaluator, 0.0)

    def tell(self, problem: Problem, replies: list[Reply]) -> None:
        graph = problem.graph
        candidates: list[Thought] = []
        for reply in replies:
            children = [graph[c] for c in reply.thought_ids]
            if self.max_per_parent is not None:
                children = keep_best(graph, children, self.max_per_parent, self._score)
            candidates.extend(children)
        slots = self.width - len(problem.meta["completed"])
        kept = keep_best(graph, candidates, max(slots, 0), self._score)
        beam = []
        for t in kept:
            if t.terminal or graph.depth(t.id) >= self.max_depth:
                problem.meta["completed"].append(t.id)
            else:
                beam.append(t.id)
        problem.meta["beam"] = beam if len(problem.meta["completed"]) < self.width else []

    def answer(self, problem: Problem) -> Thought | None:
        completed = [problem.graph[t] for t in problem.meta["completed"]]
        if not completed:
            return None
        return min(completed, key=lambda t: (-self._score(t), t.id))
