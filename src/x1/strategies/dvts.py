"""DVTS, diverse verifier tree search (Beeching, Tunstall & Rush 2024, "Scaling test-time compute").

A beam of N shares one verifier, which tends to fill it with near-copies of one good-looking
prefix. DVTS splits N into ``n // width`` independent subtrees instead: each subtree expands its
single tip into ``width`` children, keeps the best one by the evaluator (a greedy beam of width
1) and never competes with the others. The subtrees' results then vote (weighted by the
evaluator's scores by default). Each request is tagged ``dvts:<k>``, so every thought records
its subtree in ``meta["tag"]`` and ``meta["subtree"]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from x1.graph import ROOT_ID, Thought
from x1.operators.prune import keep_best
from x1.strategies.base import Expand, Problem, Reply, Request, Strategy, read_state, save_state, scored_by
from x1.strategies.best_of_n import vote


@dataclass
class DVTSState:
    tips: list[int] = field(default_factory=list)  # each subtree's current thought
    closed: list[int] = field(default_factory=list)  # subtrees whose expansion returned nothing


@dataclass
class DVTS(Strategy):
    n: int = 16
    width: int = 4
    temperature: float = 0.8
    evaluator: str = "confidence"
    max_depth: int = 12
    voting: str = "weighted"  # majority, weighted or reward (see best_of_n.vote)
    name: str = "dvts"

    def __post_init__(self) -> None:
        if self.width < 1 or self.n < self.width:
            raise ValueError(f"dvts needs 1 <= width <= n, got n={self.n}, width={self.width}")

    @property
    def subtrees(self) -> int:
        return self.n // self.width

    def start(self, problem: Problem) -> None:
        save_state(problem, DVTSState(tips=[ROOT_ID] * self.subtrees))

    def _open(self, problem: Problem, tip: int) -> bool:
        t = problem.graph[tip]
        return tip == ROOT_ID or not (t.terminal or problem.graph.depth(tip) >= self.max_depth)

    def ask(self, problem: Problem) -> list[Request]:
        state = read_state(problem, DVTSState)
        return [
            Expand(tip, n=self.width, temperature=self.temperature, evaluator=self.evaluator, tag=f"dvts:{k}")
            for k, tip in enumerate(state.tips)
            if k not in state.closed and self._open(problem, tip)
        ]

    def tell(self, problem: Problem, replies: list[Reply]) -> None:
        graph, state = problem.graph, read_state(problem, DVTSState)
        for reply in replies:
            assert isinstance(reply.request, Expand)
            k = int(reply.request.tag.split(":", 1)[1])
            children = [graph[c] for c in reply.thought_ids]
            for child in children:
                child.meta["subtree"] = k
            kept = keep_best(graph, children, 1, scored_by(self.evaluator))
            if kept:
                state.tips[k] = kept[0].id
            else:
                state.closed.append(k)
        save_state(problem, state)

    def answer(self, problem: Problem) -> Thought | None:
        results = [problem.graph[t] for t in read_state(problem, DVTSState).tips if t != ROOT_ID]
        return vote(results, self.voting, self.evaluator)
