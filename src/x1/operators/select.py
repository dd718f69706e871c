"""The *select* operator: which thought to expand next (PUCT, UCT, greedy, top-k)."""

from __future__ import annotations

import math
from collections.abc import Iterable

from x1.graph import Thought


def to_unit(q: float | None) -> float:
    """q in [-1, 1] → [0, 1]; an unvalued thought counts as 0.5 (no information)."""
    return 0.5 if q is None else (q + 1.0) / 2.0


def puct_score(
    child: Thought,
    parent_visits: int,
    c1: float = 1.25,
    c2: float = 19652.0,
    form: str = "muzero",
    prior: float = 1.0,
) -> float:
    """Node-based PUCT of BLUEPRINT.md.

    muzero: q̄ + prior·√N(s)/(1+N(c))·(c1 + log((N(s)+c2+1)/c2))
    paper:  q̄ + prior·√(N(s)−1)/(1+N(c))·(c1 + log((N(s)+c2)/c2))   (the x1 appendix/prototype)
    """
    if form == "muzero":
        explore = math.sqrt(parent_visits) / (1 + child.visits) * (c1 + math.log((parent_visits + c2 + 1) / c2))
    elif form == "paper":
        explore = (
            math.sqrt(max(parent_visits - 1, 0)) / (1 + child.visits) * (c1 + math.log((parent_visits + c2) / c2))
        )
    else:
        raise ValueError(f"unknown PUCT form {form!r}; use 'muzero' or 'paper'")
    return to_unit(child.value) + prior * explore


def uct_score(child: Thought, parent_visits: int, c: float = math.sqrt(2)) -> float:
    if child.visits == 0:
        return math.inf
    return to_unit(child.value) + c * math.sqrt(math.log(max(parent_visits, 1)) / child.visits)


def argmax(items: Iterable[Thought], key) -> Thought:  # type: ignore[no-untyped-def]
    """Highest key; ties go to the lowest id, so selection is deterministic."""
    best: Thought | None = None
    best_key = -math.inf
    for t in items:
        k = key(t)
        if best is None or k > best_key or (k == best_key and t.id < best.id):
            best, best_key = t, k
    if best is None:
        raise ValueError("nothing to select from")
    return best


def top_k(items: Iterable[Thought], k: int, key) -> list[Thought]:  # type: ignore[no-untyped-def]
    """The k best by key, ties broken by id (deterministic)."""
    return sorted(items, key=lambda t: (-key(t), t.id))[:k]
