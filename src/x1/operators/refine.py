"""The *refine* operator: ask the policy to rewrite a step given feedback (self-correction).

The blueprint notes that untrained self-critique is unreliable; refine is still the operator a
trained refiner (or a verifier's feedback) plugs into. The refined step is a *sibling* of the
original (same parents), so both stay in the graph and a later select/keep_best compares them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from x1.graph import ReasoningGraph, Thought
from x1.models.base import Completion
from x1.operators.generate import attach_children
from x1.tasks.base import Task

if TYPE_CHECKING:
    from x1.strategies.base import Expand

DEFAULT_FEEDBACK = "Check it for mistakes and fix any you find."
REFINE_TEMPLATE = (
    "Here is a draft:\n{step}\n\n"
    "Feedback on the draft: {feedback}\n\n"
    "Rewrite the draft so that it is correct. Rewritten version:\n"
)


def refine_prompt(
    graph: ReasoningGraph,
    thought_id: int,
    feedback: str = DEFAULT_FEEDBACK,
    context: str | None = None,
    template: str = REFINE_TEMPLATE,
) -> str:
    """The chat prefix, the path before the step (``context``), then the rewrite instruction.

    ``context`` defaults to the path up to the step's first parent; pass ``""`` when the step is
    a whole solution (graph of operations), so no other solution leaks into the prompt.
    """
    thought = graph[thought_id]
    if context is None:
        context = graph.path_text(thought.parents[0]) if thought.parents else ""
    body = template.format(step=thought.text.strip(), feedback=feedback.strip())
    return graph.meta.get("prefix", "") + context + body


def refine_request(
    graph: ReasoningGraph,
    thought_id: int,
    feedback: str = DEFAULT_FEEDBACK,
    *,
    n: int = 1,
    temperature: float | None = None,
    max_tokens: int | None = None,
    stop: list[str] | None = None,
    context: str | None = None,
    template: str = REFINE_TEMPLATE,
) -> Expand:
    """An Expand on the step itself with an explicit prompt; attach the answer with :func:`attach_refined`."""
    from x1.strategies.base import Expand  # here, not at the top: strategies import operators

    return Expand(
        thought_id,
        n=n,
        temperature=temperature,
        max_tokens=max_tokens,
        stop=stop,
        attach=False,
        prompt=refine_prompt(graph, thought_id, feedback, context, template),
        tag="refine",
    )


def attach_refined(
    graph: ReasoningGraph, task: Task, thought_id: int, completions: list[Completion], replace: bool = False
) -> list[Thought]:
    """Add each rewrite beside the original (same parents, meta ``refines``); ``replace`` prunes the original."""
    original = graph[thought_id]
    if not original.parents:
        raise ValueError("the root (problem statement) cannot be refined; refine one of its descendants")
    refined = attach_children(graph, task, original.parents, completions, "refine", {"refines": thought_id}, charged=False)
    if replace and refined:
        original.pruned = True
    return refined
