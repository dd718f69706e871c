"""What the viewer draws: a trace record (or a bare graph) turned into laid-out nodes and edges.

The layout is computed here, not in the browser, so it is tested in Python and the page only
scales and paints. Layers are the longest path from the root (an aggregate sits below all its
parents); horizontal slots come from the first-parent spanning tree (leaves get consecutive
slots, a parent is centred over its children), so sibling subtrees never overlap.
"""

from __future__ import annotations

from typing import Any

from x1.graph import ROOT_ID, ReasoningGraph, Thought
from x1.tasks.answers import numbers_equal

TEXT_LIMIT = 4000  # characters of a thought's text kept in the page; the trace keeps all


def layout(graph: ReasoningGraph) -> dict[int, tuple[float, int]]:
    """Thought id → (slot, layer): slot is the horizontal position in leaf widths, layer the depth."""
    layer: dict[int, int] = {}
    for t in sorted(graph, key=lambda t: t.id):  # a parent always has a smaller id than its children
        layer[t.id] = 1 + max((layer[p] for p in t.parents), default=-1)
    tree_children: dict[int, list[int]] = {t.id: [] for t in graph}
    for t in graph:
        if t.parents:
            tree_children[t.parents[0]].append(t.id)
    slot: dict[int, float] = {}
    next_leaf = 0
    stack: list[tuple[int, bool]] = [(ROOT_ID, False)]
    while stack:  # post-order without recursion: graphs can be thousands of thoughts deep in a chain
        tid, expanded = stack.pop()
        kids = sorted(tree_children[tid])
        if not kids:
            slot[tid] = float(next_leaf)
            next_leaf += 1
        elif expanded:
            slot[tid] = (slot[kids[0]] + slot[kids[-1]]) / 2
        else:
            stack.append((tid, True))
            stack.extend((k, False) for k in reversed(kids))
    return {tid: (slot[tid], layer[tid]) for tid in graph.thoughts}


def ancestors(graph: ReasoningGraph, thought_id: int) -> set[int]:
    """The thought and everything it was built from (all parents, so an aggregate's sources count)."""
    seen = {thought_id}
    todo = [thought_id]
    while todo:
        for p in graph[todo.pop()].parents:
            if p not in seen:
                seen.add(p)
                todo.append(p)
    return seen


def _same_answer(a: str | None, b: object) -> bool:
    if a is None or b is None:
        return False
    return numbers_equal(a, str(b)) or a.strip().lower() == str(b).strip().lower()


def verdict(thought: Thought, gold: object, chosen_answer: str | None, chosen_correct: bool | None) -> str | None:
    """right / wrong for a terminal: its true reward if search consulted the verifier, else its answer
    against the chosen answer's verdict, else against the gold answer; None when nothing tells."""
    if not thought.terminal:
        return None
    if thought.reward is not None:
        return "right" if thought.reward > 0 else "wrong"
    if chosen_correct is not None and thought.answer is not None and _same_answer(thought.answer, chosen_answer):
        return "right" if chosen_correct else "wrong"
    if gold is None or gold == "":
        return None
    return "right" if _same_answer(thought.answer, gold) else "wrong"


def _rounded(values: list[float], digits: int = 3) -> list[float]:
    return [round(v, digits) for v in values]


def node_data(t: Thought, pos: tuple[float, int], on_path: bool, status: str | None, inner: dict[str, Any] | None) -> dict[str, Any]:
    meta = {k: v for k, v in t.meta.items() if k != "token_signals"}
    return {
        "id": t.id,
        "x": pos[0],
        "y": pos[1],
        "text": t.text[:TEXT_LIMIT],
        "cut": max(0, len(t.text) - TEXT_LIMIT),
        "parents": t.parents,
        "children": t.children,
        "terminal": t.terminal,
        "answer": t.answer,
        "q": t.value,
        "n": t.visits,
        "reward": t.reward,
        "scores": t.scores,
        "signals": t.signals,
        "compute": {
            "prompt_tokens": t.compute.prompt_tokens,
            "generated_tokens": t.compute.generated_tokens,
            "policy_calls": t.compute.policy_calls,
            "evaluator_calls": t.compute.evaluator_calls,
            "evaluator_tokens": t.compute.evaluator_tokens,
        },
        "pruned": t.pruned,
        "path": on_path,
        "status": status,
        "tag": t.meta.get("tag"),
        "meta": meta,
        # per token: entropy/varentropy when the backend returned them, else surprisal from logprobs
        "tokens": {k: _rounded(v) for k, v in t.meta.get("token_signals", {}).items()},
        "surprisal": _rounded([-lp for lp in t.logprobs]),
        "nested": inner,
    }


def inner_answer(step: Thought, outer: ReasoningGraph) -> int | None:
    """The inner thought whose path became the outer step's result (nested strategy), if it can be told."""
    if step.nested is None:
        return None
    results = [outer[c] for c in step.children if outer[c].meta.get("tag") == "nested_result"]
    if not results:
        return None
    text = results[0].text
    best, best_len = None, 0
    for t in step.nested:  # the result is the answer's path text (plus a step delimiter): longest matching prefix
        path_text = step.nested.path_text(t.id)
        if len(path_text) > best_len and text.startswith(path_text):
            best, best_len = t.id, len(path_text)
    return best


def graph_data(
    graph: ReasoningGraph, answer_id: int | None, gold: object = None, correct: bool | None = None
) -> dict[str, Any]:
    """The drawable form of one graph (recursively for nested graphs)."""
    pos = layout(graph)
    path = ancestors(graph, answer_id) if answer_id is not None and answer_id in graph.thoughts else set()
    chosen = graph[answer_id].answer if answer_id is not None and answer_id in graph.thoughts else None
    nodes = []
    for t in graph:
        inner = None
        if t.nested is not None:
            inner = graph_data(t.nested, inner_answer(t, graph), gold, None)
        status = verdict(t, gold, chosen, correct)
        if t.id == answer_id and correct is not None:  # the chosen answer carries the run's verdict, terminal or not
            status = "right" if correct else "wrong"
        nodes.append(node_data(t, pos[t.id], t.id in path, status, inner))
    scores = sorted({name for t in graph for name in t.scores})
    return {
        "problem": graph.problem,
        "answer_thought": answer_id,
        "score_names": scores,
        "width": max((p[0] for p in pos.values()), default=0) + 1,
        "depth": max((p[1] for p in pos.values()), default=0) + 1,
        "nodes": nodes,
    }


def problem_data(record: dict[str, Any]) -> dict[str, Any]:
    """One trace record (or a bare graph wrapped as one) as the page's problem entry."""
    graph = ReasoningGraph.from_dict(record["graph"])
    return {
        "task_id": record.get("task_id", "graph"),
        "question": record.get("question", graph.problem),
        "gold": record.get("gold"),
        "answer": record.get("answer"),
        "correct": record.get("correct"),
        "strategy": record.get("strategy"),
        "model": record.get("model"),
        "stop_reason": record.get("stop_reason"),
        "wall_s": record.get("wall_s"),
        "compute": record.get("compute") or _compute_dict(graph),
        "graph": graph_data(graph, record.get("answer_thought"), record.get("gold"), record.get("correct")),
    }


def _compute_dict(graph: ReasoningGraph) -> dict[str, int]:
    c = graph.total_compute()
    return {"prompt_tokens": c.prompt_tokens, "generated_tokens": c.generated_tokens, "policy_calls": c.policy_calls,
            "evaluator_calls": c.evaluator_calls, "evaluator_tokens": c.evaluator_tokens}
