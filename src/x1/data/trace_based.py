"""Trace-based supervision: journeys that keep dead ends and backtracks, and whole search graphs as text."""

from __future__ import annotations

from collections.abc import Iterable

from x1.data.rows import SFTExample
from x1.data.runs import Record, parsed_runs, render_steps
from x1.graph import ROOT_ID, ReasoningGraph
from x1.operators.restructure import BACKTRACK_TEXT, journey_steps, to_journey_chain
from x1.tasks.base import DEFAULT_SYSTEM


# -- trace-based supervision -------------------------------------------------------------
def journey_chains(
    records: Iterable[Record],
    min_score: float = 1.0,
    step_format: bool = True,
    backtrack: str = BACKTRACK_TEXT,
    delimiter: str = "\n\n",
    system: str | None = DEFAULT_SYSTEM,
) -> list[SFTExample]:
    """Journey learning: the search of each verified-correct record flattened into one chain.

    Dead ends stay, each followed by an explicit backtrack line, then the path to the answer
    (``to_journey_chain``); in the step format every chain step is one EOIS-separated step.
    """
    out: list[SFTExample] = []
    for run in parsed_runs(records, system):
        if run.answer_id is None or run.score < min_score - 1e-9:
            continue
        if step_format:
            steps = [s.text for s in journey_steps(run.graph, run.answer_id, backtrack, delimiter)]
            completion = render_steps(steps, True)
        else:
            completion = to_journey_chain(run.graph, run.answer_id, backtrack, delimiter)
        if completion.strip():
            out.append(SFTExample([dict(m) for m in run.messages], completion, run.task_id, "journey"))
    return out


def graph_text(graph: ReasoningGraph, answer_id: int | None = None) -> str:
    """The search as text, thought by thought in creation order, so a model can learn to search.

    One ``<step id parent q visits [terminal] [pruned]>text</step>`` per thought (text stripped,
    q and visits when search set them, text unescaped so it reads as the model wrote it), then
    ``<answer step="id"/>``. True rewards are left out: they are not known at inference time.
    """
    lines = []
    for tid in sorted(graph.thoughts):
        if tid == ROOT_ID:
            continue
        t = graph[tid]
        attrs = [f'id="{tid}"', f'parent="{",".join(str(p) for p in t.parents)}"']
        if t.value is not None:
            attrs.append(f'q="{t.value:+.2f}"')
        if t.visits:
            attrs.append(f'visits="{t.visits}"')
        if t.terminal:
            attrs.append('terminal="true"')
        if t.pruned:
            attrs.append('pruned="true"')
        lines.append(f"<step {' '.join(attrs)}>{t.text.strip()}</step>")
    if answer_id is not None:
        lines.append(f'<answer step="{answer_id}"/>')
    return "\n".join(lines)


def trace_samples(records: Iterable[Record], min_score: float = 1.0, system: str | None = DEFAULT_SYSTEM) -> list[SFTExample]:
    """Trace-based supervision: each verified-correct record's whole graph as one completion."""
    out = []
    for run in parsed_runs(records, system):
        if run.answer_id is None or run.score < min_score - 1e-9 or len(run.graph) < 2:
            continue
        out.append(SFTExample([dict(m) for m in run.messages], graph_text(run.graph, run.answer_id), run.task_id, "trace"))
    return out
