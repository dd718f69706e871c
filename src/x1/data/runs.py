"""Trace records parsed for the extractors: the graph, the prompt both ways, and which outcomes are known.

Which outcomes are known: a thought's own ``reward`` (set by a verifier in training mode), the
record's verdict for its answer thought, and that verdict again for any other terminal that gave
the very same answer string. Terminals with no known outcome are left out of every label.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from x1.graph import ROOT_ID, ReasoningGraph, Thought
from x1.markers import EOIS
from x1.models._sampling import render_chatml
from x1.tasks.base import DEFAULT_SYSTEM
from x1.trace import read_traces

CORRECT = 1.0 - 1e-9  # a reward at or above this is "correct" (rewards are floats in [0, 1])

Record = dict[str, Any]


# -- reading traces --------------------------------------------------------------------------
def load_records(paths: str | Path | Iterable[str | Path]) -> list[Record]:
    """All records of one or more trace files, in order."""
    if isinstance(paths, str | Path):
        paths = [paths]
    return [record for path in paths for record in read_traces(path)]


_CHATML_TURN = re.compile(r"<\|im_start\|>(\w+)\n(.*?)<\|im_end\|>\n", re.DOTALL)


def messages_from_chatml(prefix: str) -> list[dict[str, str]] | None:
    """Recover the messages from a ChatML prefix (Qwen, SmolLM2), so SFT sees the exact prompt."""
    tail = "<|im_start|>assistant\n"
    if not prefix.endswith(tail):
        return None
    body = prefix[: -len(tail)]
    turns = list(_CHATML_TURN.finditer(body))
    if not turns or "".join(m.group(0) for m in turns) != body:
        return None
    return [{"role": m.group(1), "content": m.group(2)} for m in turns]


@dataclass
class Run:
    """One trace record, parsed: graph, prompt both ways, and the outcomes known in it."""

    record: Record
    graph: ReasoningGraph
    task_id: str
    prefix: str
    messages: list[dict[str, str]]
    rewards: dict[int, float]
    order: list[int] = field(default_factory=list)  # thought ids, parents before children

    @property
    def answer_id(self) -> int | None:
        tid = self.record.get("answer_thought")
        return tid if tid is not None and tid in self.graph.thoughts else None

    @property
    def score(self) -> float:
        return float(self.record.get("score") or 0.0)

    def steps(self, thought_id: int) -> list[str]:
        return [t.text for t in self.graph.path(thought_id)]


def outcome_rewards(record: Record, graph: ReasoningGraph | None = None) -> dict[int, float]:
    """Thought id → known outcome reward in [0, 1] (see the module note for the three sources)."""
    graph = graph if graph is not None else ReasoningGraph.from_dict(record["graph"])
    out = {t.id: float(t.reward) for t in graph if t.reward is not None}
    score = record.get("score")
    answer_id = record.get("answer_thought")
    if score is None:
        return out
    if answer_id is not None and answer_id in graph.thoughts:
        out.setdefault(answer_id, float(score))
    answer = record.get("answer")
    if answer is not None:
        for t in graph.terminals():
            if t.id not in out and t.answer is not None and t.answer.strip() == str(answer).strip():
                out[t.id] = float(score)
    return out


def topological(graph: ReasoningGraph) -> list[int]:
    """Kahn's order (parents first); iterative, so token-level graphs thousands deep are fine."""
    indegree = {tid: len(t.parents) for tid, t in graph.thoughts.items()}
    ready = [ROOT_ID]
    order: list[int] = []
    while ready:
        tid = ready.pop()
        order.append(tid)
        for cid in graph[tid].children:
            indegree[cid] -= 1
            if indegree[cid] == 0:
                ready.append(cid)
    return order


def parse_run(record: Record, system: str | None) -> Run:
    graph = ReasoningGraph.from_dict(record["graph"])
    question = record.get("question") or graph.problem
    messages = record.get("messages")
    prefix = graph.meta.get("prefix")
    if messages is None and prefix:
        messages = messages_from_chatml(prefix)
    if messages is None:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
    if not prefix:
        prefix = render_chatml(messages)
    return Run(record, graph, str(record.get("task_id", "")), prefix, messages, outcome_rewards(record, graph), topological(graph))


def parsed_runs(records: Iterable[Record], system: str | None = DEFAULT_SYSTEM) -> Iterator[Run]:
    for record in records:
        if record.get("graph"):
            yield parse_run(record, system)


def outcomes_below(run: Run) -> dict[int, set[int]]:
    """Thought id → the known-outcome thoughts at or below it (its rollouts), over all children."""
    below: dict[int, set[int]] = {}
    for tid in reversed(run.order):
        found = {tid} if tid in run.rewards else set()
        for cid in run.graph[tid].children:
            found |= below[cid]
        below[tid] = found
    return below


def depths(run: Run) -> dict[int, int]:
    """Steps from the root along first parents (the depth ``graph.path`` uses)."""
    depth = {ROOT_ID: 0}
    for tid in run.order[1:]:
        depth[tid] = depth[run.graph[tid].parents[0]] + 1
    return depth


def render_steps(steps: list[str], step_format: bool) -> str:
    """Step format: stripped steps joined by EOIS (EOS is the trainer's); else the raw text."""
    if not step_format:
        return "".join(steps)
    return EOIS.join(s.strip() for s in steps if s.strip())


def q_value(thought: Thought, rewards: dict[int, float]) -> float | None:
    """A thought's q: the true reward at a terminal with a known outcome, else the search's value."""
    if thought.terminal and thought.id in rewards:
        return 2.0 * rewards[thought.id] - 1.0
    return thought.value
