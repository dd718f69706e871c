"""The *restructure* operator: change a structure's topology, here a search tree → one chain.

Journey learning (trace-based supervision) trains on the *search*, not only its result: the
chain visits the dead ends the search explored, says so ("Wait, this path fails. Let me go
back."), and then continues along the path to the answer. Order: at each thought on the
answer path, first every explored off-path child's subtree (depth first, a backtrack line
after each leaf), then the next step of the answer path. The tree is read along first parents,
so a merged thought is visited once.
"""

from __future__ import annotations

from dataclasses import dataclass

from x1.graph import ROOT_ID, ReasoningGraph, Thought

BACKTRACK_TEXT = "Wait, this path fails. Let me go back."


@dataclass
class JourneyStep:
    """One step of the flattened chain: a copy of ``source``'s text, or a backtrack line (source None)."""

    text: str
    source: Thought | None = None
    dead_end: bool = False


def _tree_children(graph: ReasoningGraph, thought: Thought) -> list[Thought]:
    return [graph[c] for c in sorted(thought.children) if graph[c].parents[0] == thought.id]


def journey_steps(
    graph: ReasoningGraph,
    answer_id: int,
    backtrack: str = BACKTRACK_TEXT,
    delimiter: str = "\n\n",
    journey: bool = True,
) -> list[JourneyStep]:
    """The chain's steps; with ``journey=False`` only the direct path (a plain CoT chain)."""
    steps: list[JourneyStep] = []

    def backtrack_step() -> JourneyStep:
        lead = "" if not steps or steps[-1].text.endswith(delimiter) else delimiter
        return JourneyStep(lead + backtrack + delimiter)

    def dead_end(thought: Thought) -> None:
        steps.append(JourneyStep(thought.text, thought, dead_end=True))
        kids = _tree_children(graph, thought)
        if not kids:
            steps.append(backtrack_step())
        for kid in kids:
            dead_end(kid)

    path = graph.path(answer_id)
    node = graph[ROOT_ID]
    for step in path:
        if journey:
            for kid in _tree_children(graph, node):
                if kid.id != step.id:
                    dead_end(kid)
        steps.append(JourneyStep(step.text, step))
        node = step
    return steps


def to_journey_chain(
    graph: ReasoningGraph, answer_id: int, backtrack: str = BACKTRACK_TEXT, delimiter: str = "\n\n"
) -> str:
    """The journey-learning text: dead ends with explicit backtracking, then the path to the answer."""
    return "".join(s.text for s in journey_steps(graph, answer_id, backtrack, delimiter))


def to_chain_graph(
    graph: ReasoningGraph,
    answer_id: int,
    journey: bool = True,
    backtrack: str = BACKTRACK_TEXT,
    delimiter: str = "\n\n",
) -> ReasoningGraph:
    """A new graph that is one chain (each thought one child); its last thought's path text is the chain.

    Copies keep text, tokens, scores, signals and value, plus ``meta["source"]`` (the original id)
    and ``meta["dead_end"]``; backtrack lines have ``meta["backtrack"] = True``. Only the last
    thought is terminal; compute is not copied (the chain is data, not new work).
    """
    chain = ReasoningGraph(problem=graph.problem, meta={"prefix": graph.meta.get("prefix", ""), "restructured_from": answer_id})
    steps = journey_steps(graph, answer_id, backtrack, delimiter, journey)
    tip = ROOT_ID
    for i, step in enumerate(steps):
        last = i == len(steps) - 1
        if step.source is None:
            thought = chain.add(tip, step.text, meta={"backtrack": True})
        else:
            src = step.source
            thought = chain.add(
                tip,
                step.text,
                token_ids=list(src.token_ids),
                logprobs=list(src.logprobs),
                value=src.value,
                visits=src.visits,
                reward=src.reward,
                scores=dict(src.scores),
                signals=dict(src.signals),
                terminal=last and src.terminal,
                answer=src.answer if last else None,
                meta={"source": src.id, "dead_end": step.dead_end},
            )
        tip = thought.id
    return chain
