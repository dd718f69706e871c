"""Best-of-N: N independent chains (a "forest"), then a vote over their answers.

Voting: ``majority`` (most frequent answer), ``weighted`` (sum of evaluator scores per answer),
``reward`` (the single best-scored chain). Ties resolve to the answer reached first (lowest
thought id), so results never depend on dict order.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from x1.graph import ROOT_ID, Thought
from x1.strategies.base import Evaluate, Expand, Problem, Reply, Request, Strategy, read_state, save_state
from x1.tasks.answers import parse_number


def answer_key(answer: str | None) -> str | None:
    """Answers that are the same number vote together ("1,000" and "1000.0")."""
    if answer is None:
        return None
    number = parse_number(answer)
    if number is not None and answer.strip().lstrip("-$").replace(",", "").replace(".", "", 1).isdigit():
        return str(number)
    return " ".join(answer.lower().split())


def vote(terminals: list[Thought], method: str = "majority", evaluator: str | None = None) -> Thought | None:
    """Pick the representative thought of the winning answer."""
    candidates = [t for t in terminals if t.answer is not None]
    if not candidates:
        return min(terminals, key=lambda t: t.id) if terminals else None
    if method == "reward":
        if evaluator is None:
            raise ValueError("reward-ranked voting needs an evaluator")
        return min(candidates, key=lambda t: (-t.scores.get(evaluator, 0.0), t.id))
    tally: dict[str, float] = defaultdict(float)
    first: dict[str, Thought] = {}
    for t in sorted(candidates, key=lambda t: t.id):
        key = answer_key(t.answer) or ""
        if method == "majority":
            tally[key] += 1.0
        elif method == "weighted":
            if evaluator is None:
                raise ValueError("weighted voting needs an evaluator")
            tally[key] += t.scores.get(evaluator, 0.0)
        else:
            raise ValueError(f"unknown voting method {method!r}; use majority, weighted or reward")
        first.setdefault(key, t)
        # within an answer, weighted voting represents it by its best-scored chain
        if method == "weighted" and t.scores.get(evaluator or "", 0.0) > first[key].scores.get(evaluator or "", 0.0):
            first[key] = t
    best_key = max(tally, key=lambda k: (tally[k], -first[k].id))
    return first[best_key]


@dataclass
class BestOfNState:
    tips: list[int] = field(default_factory=list)  # the end of each chain
    scored: bool = False  # the evaluator has scored the finished chains


@dataclass
class BestOfN(Strategy):
    n: int = 8
    temperature: float = 0.8
    voting: str = "majority"
    evaluator: str | None = None  # needed for weighted / reward voting
    name: str = "best_of_n"

    def start(self, problem: Problem) -> None:
        save_state(problem, BestOfNState())

    def ask(self, problem: Problem) -> list[Request]:
        graph, state = problem.graph, read_state(problem, BestOfNState)
        if not state.tips:
            return [Expand(ROOT_ID, n=self.n, temperature=self.temperature)]
        open_tips = [t for t in state.tips if not graph[t].terminal]
        if open_tips:
            return [Expand(t, n=1, temperature=self.temperature) for t in open_tips]
        if self.evaluator and not state.scored:
            return [Evaluate(list(state.tips), self.evaluator)]
        return []

    def tell(self, problem: Problem, replies: list[Reply]) -> None:
        state = read_state(problem, BestOfNState)
        tips = state.tips
        for reply in replies:
            if isinstance(reply.request, Evaluate):
                state.scored = True
            elif reply.request.thought_id == ROOT_ID and not tips:
                tips.extend(reply.thought_ids)
            else:
                tips[tips.index(reply.request.thought_id)] = reply.thought_ids[0]
        save_state(problem, state)

    def answer(self, problem: Problem) -> Thought | None:
        terminals = [problem.graph[t] for t in read_state(problem, BestOfNState).tips]
        return vote(terminals, self.voting, self.evaluator)
