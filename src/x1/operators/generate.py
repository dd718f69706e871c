"""The *generate* operator: turn a policy's continuations into child thoughts."""

from __future__ import annotations

import re
from typing import Any

from x1.graph import Compute, ReasoningGraph, Thought
from x1.models.base import Completion
from x1.signals import summarize, token_series
from x1.tasks.base import Task

_FINAL = re.compile(r"answer is|\\boxed\{", re.IGNORECASE)


def is_final_step(text: str) -> bool:
    """A step that states the final answer ends the solution even if the model kept going."""
    return bool(_FINAL.search(text))


def attach_children(
    graph: ReasoningGraph,
    task: Task,
    parents: int | list[int],
    completions: list[Completion],
    tag: str = "expand",
    meta: dict[str, Any] | None = None,
    charged: bool = True,
) -> list[Thought]:
    """Add one thought per completion below ``parents``; decide terminality and extract answers.

    One parent is the engine's own expansion; several are a merge (aggregate), and a refined
    step goes beside the one it rewrites (below that one's parents). ``charged``: the new
    thoughts carry the call's compute; refine, aggregate and nested inner steps pass False,
    because the engine already charged the call to the request's thought (nothing counts twice).
    The stop string that ended a step is kept in the thought's text, so the path text is
    exactly what the model produced and a backend can reuse the cached prefix token for token.
    """
    parent_ids = [parents] if isinstance(parents, int) else list(parents)
    children = []
    depth = graph.depth(parent_ids[0]) + 1  # depth follows first parents
    for i, c in enumerate(completions):
        text = c.text + (c.stop or "")
        terminal = c.finish_reason == "eos" or is_final_step(c.text) or depth >= task.step_format.max_steps
        compute = Compute(c.prompt_tokens, c.generated_tokens, 1 if i == 0 else 0) if charged else Compute()
        child = graph.add(
            parent_ids,
            text,
            token_ids=list(c.token_ids),
            logprobs=list(c.logprobs),
            terminal=terminal,
            signals=summarize(c.signals),
            compute=compute,
            meta={"finish_reason": c.finish_reason, "tag": tag, **({"token_signals": token_series(c.signals)} if c.signals else {}),
                  **(meta or {})},
        )
        if terminal:
            child.answer = task.extract_answer(graph.path_text(child.id))
        children.append(child)
    return children
