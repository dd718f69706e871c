"""The *backpropagate* operator: the x1 value update from an expanded thought up to the root."""

from __future__ import annotations

from x1.graph import ReasoningGraph


def backpropagate(graph: ReasoningGraph, thought_id: int, gamma: float = 0.96, lam: float = 1.0) -> None:
    """For the thought and each ancestor on its first-parent path, bottom-up:

    q(s) ← (1−λ)·q(s) + λ·γ·Σ N(c)·q(c) / Σ N(c), then N(s) += 1.

    Children without a value, without visits, or pruned do not count; a thought with no such
    child (a terminal, or an expansion that yielded nothing) keeps its q: no 0/0.
    """
    thoughts = graph.thoughts
    node = thoughts[thought_id]
    while True:
        weighted, total = 0.0, 0
        for cid in node.children:
            child = thoughts[cid]
            if child.value is None or child.visits == 0 or child.pruned:
                continue
            weighted += child.visits * child.value
            total += child.visits
        if total > 0:
            old = node.value if node.value is not None else 0.0
            node.value = (1.0 - lam) * old + lam * gamma * weighted / total
        node.visits += 1
        if not node.parents:
            return
        node = thoughts[node.parents[0]]
