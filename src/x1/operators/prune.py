"""The *prune* operator: drop weak branches (they stay in the graph, marked, for the trace)."""

from __future__ import annotations

from collections.abc import Callable

from x1.graph import ReasoningGraph, Thought


def prune_below(graph: ReasoningGraph, thoughts: list[Thought], key: Callable[[Thought], float], threshold: float) -> list[Thought]:
    """Mark thoughts whose key is under ``threshold`` as pruned; return the survivors."""
    kept = []
    for t in thoughts:
        if key(t) < threshold:
            t.pruned = True
        else:
            kept.append(t)
    return kept


def keep_best(graph: ReasoningGraph, thoughts: list[Thought], k: int, key: Callable[[Thought], float]) -> list[Thought]:
    """Keep the k best by key (ties by id); mark the rest pruned."""
    ranked = sorted(thoughts, key=lambda t: (-key(t), t.id))
    for t in ranked[k:]:
        t.pruned = True
    return ranked[:k]
