"""Reasoning strategies by name: how the structure grows."""

from __future__ import annotations

from typing import Any

from x1.strategies.adaptive import AdaptiveBranching
from x1.strategies.base import Evaluate, Expand, Problem, Reply, Request, Strategy
from x1.strategies.beam import BeamSearch
from x1.strategies.best_of_n import BestOfN, vote
from x1.strategies.chain import ChainOfThought
from x1.strategies.dvts import DVTS
from x1.strategies.graph_of_operations import GraphOfOperations
from x1.strategies.mcts import MCTS
from x1.strategies.nested import Nested
from x1.strategies.params import check_params
from x1.strategies.tot import TreeOfThoughtsBFS, TreeOfThoughtsDFS

STRATEGIES: dict[str, type[Strategy]] = {
    "cot": ChainOfThought,
    "best_of_n": BestOfN,
    "beam": BeamSearch,
    "mcts": MCTS,
    "dvts": DVTS,
    "tot_bfs": TreeOfThoughtsBFS,
    "tot_dfs": TreeOfThoughtsDFS,
    "graph_of_operations": GraphOfOperations,
    "nested": Nested,
    "adaptive": AdaptiveBranching,
}
DESCRIPTIONS = {
    "cot": "chain-of-thought: one path, greedy (temperature 0) or sampled",
    "best_of_n": "N sampled chains, then majority / weighted / reward-ranked voting",
    "beam": "step-level beam search (width, branch; diverse beam with groups and diversity_penalty)",
    "mcts": "Monte Carlo Tree Search with PUCT as in the x1 paper",
    "dvts": "diverse verifier tree search: n/width independent greedy subtrees, then a vote",
    "tot_bfs": "Tree of Thoughts, breadth-first: keep the best `breadth` thoughts per level",
    "tot_dfs": "Tree of Thoughts, depth-first: follow the best child above `threshold`, backtrack on dead ends",
    "graph_of_operations": "a user-composed schedule of operators (generate, score, keep_best, aggregate, refine)",
    "nested": "each outer step solved by an inner strategy on its own graph (thought.nested)",
    "adaptive": "greedy decoding that forks into `branch` samples where token entropy/varentropy is high",
}


def build_strategy(name: str, **params: Any) -> Strategy:
    """A strategy by name with hyper-parameters; unknown names, wrong types and values out of range fail with the fix."""
    cls = STRATEGIES.get(name)
    if cls is None:
        raise ValueError(f"unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}")
    return cls(**check_params(name, cls, params))


__all__ = [
    "AdaptiveBranching", "BeamSearch", "BestOfN", "ChainOfThought", "DVTS", "Evaluate", "Expand",
    "GraphOfOperations", "MCTS", "Nested", "Problem", "Reply", "Request", "STRATEGIES", "Strategy",
    "TreeOfThoughtsBFS", "TreeOfThoughtsDFS", "build_strategy", "vote",
]
