"""Chain-of-thought: one path, step by step (greedy at temperature 0, or sampled)."""

from __future__ import annotations

from dataclasses import dataclass

from x1.graph import ROOT_ID, Thought
from x1.strategies.base import Expand, Problem, Reply, Request, Strategy, read_state, save_state


@dataclass
class ChainState:
    tip: int = ROOT_ID  # the end of the chain so far


@dataclass
class ChainOfThought(Strategy):
    temperature: float = 0.0
    name: str = "cot"

    def start(self, problem: Problem) -> None:
        save_state(problem, ChainState())

    def ask(self, problem: Problem) -> list[Request]:
        tip = problem.graph[read_state(problem, ChainState).tip]
        if tip.terminal:
            return []
        return [Expand(tip.id, n=1, temperature=self.temperature)]

    def tell(self, problem: Problem, replies: list[Reply]) -> None:
        state = read_state(problem, ChainState)
        for reply in replies:
            state.tip = reply.thought_ids[0]
        save_state(problem, state)

    def answer(self, problem: Problem) -> Thought | None:
        tip = read_state(problem, ChainState).tip
        return problem.graph[tip] if tip != ROOT_ID else None
