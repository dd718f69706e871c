"""Attach completions under chosen parents: what refine (siblings) and aggregate (merges) share.

The engine's own ``attach=True`` always hangs new thoughts below the request's ``thought_id``;
a refined step belongs *beside* the step it rewrites and a merged step *below every* path it
merges, so those operators ask with ``attach=False`` and attach here. The engine has already
charged the call to the request's thought, so the new thoughts carry no compute of their own
(nothing is counted twice in ``total_compute``).
"""

from __future__ import annotations

from typing import Any

from x1.graph import ReasoningGraph, Thought
from x1.metrics import summarize, token_series
from x1.models.base import Completion
from x1.operators.generate import is_final_step
from x1.tasks.base import Task


def attach_under(
    graph: ReasoningGraph,
    task: Task,
    parents: list[int],
    completions: list[Completion],
    tag: str,
    meta: dict[str, Any] | None = None,
) -> list[Thought]:
    """One thought per completion below all ``parents``; terminality as in *generate*."""
    children = []
    for c in completions:
        child = graph.add(
            list(parents),
            c.text + (c.stop or ""),
            token_ids=list(c.token_ids),
            logprobs=list(c.logprobs),
            signals=summarize(c.signals),
            meta={"finish_reason": c.finish_reason, "tag": tag, **({"token_signals": token_series(c.signals)} if c.signals else {}),
                  **(meta or {})},
        )
        depth = graph.depth(child.id)
        child.terminal = c.finish_reason == "eos" or is_final_step(c.text) or depth >= task.step_format.max_steps
        if child.terminal:
            child.answer = task.extract_answer(graph.path_text(child.id))
        children.append(child)
    return children
