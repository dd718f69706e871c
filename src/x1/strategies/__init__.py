"""Reasoning strategies by name: how the structure grows."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from x1.strategies.base import Evaluate, Expand, Problem, Reply, Request, Strategy
from x1.strategies.beam import BeamSearch
from x1.strategies.best_of_n import BestOfN, vote
from x1.strategies.chain import ChainOfThought
from x1.strategies.mcts import MCTS

STRATEGIES: dict[str, type[Strategy]] = {
    "cot": ChainOfThought,
    "best_of_n": BestOfN,
    "beam": BeamSearch,
    "mcts": MCTS,
}
DESCRIPTIONS = {
    "cot": "chain-of-thought: one path, greedy (temperature 0) or sampled",
    "best_of_n": "N sampled chains, then majority / weighted / reward-ranked voting",
    "beam": "step-level beam search (width, branch; diverse with max_per_parent)",
    "mcts": "Monte Carlo Tree Search with PUCT as in the x1 paper",
}


def build_strategy(name: str, **params: Any) -> Strategy:
    """A strategy by name with hyper-parameters; unknown names and fields fail with the fix."""
    cls = STRATEGIES.get(name)
    if cls is None:
        raise ValueError(f"unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}")
    allowed = {f.name for f in fields(cls)} - {"name"}  # type: ignore[arg-type]
    unknown = set(params) - allowed
    if unknown:
        raise ValueError(f"strategy {name!r} has no parameter(s) {sorted(unknown)}; it takes: {', '.join(sorted(allowed))}")
    return cls(**params)


__all__ = [
    "BeamSearch", "BestOfN", "ChainOfThought", "Evaluate", "Expand", "MCTS", "Problem", "Reply", "Request",
    "STRATEGIES", "Strategy", "build_strategy", "vote",
]
