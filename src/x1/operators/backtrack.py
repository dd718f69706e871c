"""The *backtrack* operator: return to the nearest earlier state that still has an untried option.

Depth-first search marks failed branches pruned and expanded thoughts have children, so an
"untried alternative" is a child that is neither pruned, expanded, nor terminal.
"""

from __future__ import annotations

from collections.abc import Callable

from x1.graph import ReasoningGraph, Thought


def is_untried(thought: Thought) -> bool:
    """Not pruned, not expanded yet, and not a terminal (a terminal has nothing left to try)."""
    return not thought.pruned and not thought.children and not thought.terminal


def untried_children(
    graph: ReasoningGraph, thought_id: int, is_open: Callable[[Thought], bool] = is_untried
) -> list[Thought]:
    """The open alternatives below a thought, in id (generation) order."""
    return [graph[c] for c in graph[thought_id].children if is_open(graph[c])]


def backtrack(
    graph: ReasoningGraph, thought_id: int, is_open: Callable[[Thought], bool] = is_untried
) -> Thought | None:
    """The nearest strict ancestor (along first parents) with an open child other than where we came from.

    None means the whole tree above ``thought_id`` is exhausted.
    """
    came_from = graph[thought_id]
    while came_from.parents:
        ancestor = graph[came_from.parents[0]]
        if any(t.id != thought_id for t in untried_children(graph, ancestor.id, is_open)):
            return ancestor
        came_from = ancestor
    return None
