"""The *generate* operator: turn a policy's continuations into child thoughts."""

from __future__ import annotations

import re

from x1.graph import Compute, ReasoningGraph, Thought
from x1.metrics import summarize, token_series
from x1.models.base import Completion
from x1.tasks.base import Task

_FINAL = re.compile(r"answer is|\\boxed\{", re.IGNORECASE)


def is_final_step(text: str) -> bool:
    """A step that states the final answer ends the solution even if the model kept going."""
    return bool(_FINAL.search(text))


def attach_children(
    graph: ReasoningGraph, task: Task, parent_id: int, completions: list[Completion], tag: str = "expand"
) -> list[Thought]:
    """Add one child per completion; decide terminality and extract answers.

    The stop string that ended a step is kept in the thought's text, so the path text is
    exactly what the model produced and a backend can reuse the cached prefix token for token.
    """
    children = []
    depth = graph.depth(parent_id) + 1
    for i, c in enumerate(completions):
        text = c.text + (c.stop or "")
        terminal = c.finish_reason == "eos" or is_final_step(c.text) or depth >= task.step_format.max_steps
        child = graph.add(
            parent_id,
            text,
            token_ids=list(c.token_ids),
            logprobs=list(c.logprobs),
            terminal=terminal,
            signals=summarize(c.signals),
            compute=Compute(
                prompt_tokens=c.prompt_tokens,
                generated_tokens=c.generated_tokens,
                policy_calls=1 if i == 0 else 0,
            ),
            meta={"finish_reason": c.finish_reason, "tag": tag, **({"token_signals": token_series(c.signals)} if c.signals else {})},
        )
        if terminal:
            child.answer = task.extract_answer(graph.path_text(child.id))
        children.append(child)
    return children
