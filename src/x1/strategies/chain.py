"""Chain-of-thought: one path, step by step (greedy at temperature 0, or sampled)."""

from __future__ import annotations

from dataclasses import dataclass

from x1.graph import ROOT_ID, Thought
from x1.strategies.base import Expand, Problem, Reply, Request, Strategy


@dataclass
class ChainOfThought(Strategy):
    temperature: float = 0.0
    name: str = "cot"

    def start(self, problem: Problem) -> None:
        problem.meta["tip"] = ROOT_ID

    def ask(self, problem: Problem) -> list[Request]:
        tip = problem.graph[problem.meta["tip"]]
        if tip.terminal:
            return []
        return [Expand(tip.id, n=1, temperature=self.temperature)]

    def tell(self, problem: Problem, replies: list[Reply]) -> None:
        for reply in replies:
            problem.meta["tip"] = reply.thought_ids[0]

    def answer(self, problem: Problem) -> Thought | None:
        return problem.graph[problem.meta["tip"]] if problem.meta["tip"] != ROOT_ID else None
