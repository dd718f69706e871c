"""The *aggregate* operator: merge several paths into one thought with several parents.

This is what turns a tree into a graph (Graph of Thoughts): the policy sees the candidate
paths side by side and writes one combined solution; the result is attached below *every*
merged thought, so the trace records what it was built from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from x1.graph import ReasoningGraph, Thought
from x1.models.base import Completion
from x1.operators.generate import attach_children
from x1.tasks.base import Task

if TYPE_CHECKING:
    from x1.strategies.base import Expand

AGGREGATE_HEADER = "Here are {k} attempts at this problem.\n\n"
AGGREGATE_ITEM = "Attempt {i}:\n{text}\n\n"
AGGREGATE_FOOTER = "Combine their strengths into one correct solution. Combined solution:\n"


def aggregate_prompt(graph: ReasoningGraph, thought_ids: list[int], context: str = "") -> str:
    """The chat prefix, an optional shared ``context``, each path's text, then the merge instruction."""
    parts = [graph.meta.get("prefix", ""), context, AGGREGATE_HEADER.format(k=len(thought_ids))]
    for i, tid in enumerate(thought_ids, start=1):
        parts.append(AGGREGATE_ITEM.format(i=i, text=graph.path_text(tid).strip()))
    parts.append(AGGREGATE_FOOTER)
    return "".join(parts)


def aggregate_request(
    graph: ReasoningGraph,
    thought_ids: list[int],
    *,
    n: int = 1,
    temperature: float | None = None,
    max_tokens: int | None = None,
    stop: list[str] | None = None,
    context: str = "",
) -> Expand:
    """An Expand anchored on the first merged thought; the caller keeps ``thought_ids`` for the attach."""
    if len(thought_ids) < 2:
        raise ValueError(f"aggregate merges at least two thoughts, got {len(thought_ids)}")
    from x1.strategies.base import Expand  # here, not at the top: strategies import operators

    return Expand(
        thought_ids[0],
        n=n,
        temperature=temperature,
        max_tokens=max_tokens,
        stop=stop,
        attach=False,
        prompt=aggregate_prompt(graph, thought_ids, context),
        tag="aggregate",
    )


def attach_aggregate(
    graph: ReasoningGraph, task: Task, thought_ids: list[int], completions: list[Completion]
) -> list[Thought]:
    """``graph.add([id1, id2, ...], text)`` for each completion: one merged thought, several parents."""
    return attach_children(graph, task, thought_ids, completions, "aggregate", {"aggregates": list(thought_ids)}, charged=False)
