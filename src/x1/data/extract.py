"""Extractors: what each kind of training needs, read off the reasoning graphs in traces.

* ``sft_examples``      rejection sampling: verified-correct paths, in the step format.
* ``preference_pairs``  DPO pairs: sibling steps whose q differs (step level), correct vs wrong
                        solutions of one task (outcome level).
* ``process_labels``    Math-Shepherd style per-step labels from the rollouts below each step.
* ``value_targets``     regression targets for the value model: backed-up MCTS q, or the
                        Monte-Carlo return γ^(T−t)·(2r−1) averaged over terminal descendants.
* ``journey_chains``    trace-based SFT that keeps dead ends and backtracks (journey learning).
* ``trace_samples``     the whole search graph as one text (trace-based supervision).

Which outcomes are known: a thought's own ``reward`` (set by a verifier in training mode), the
record's verdict for its answer thought, and that verdict again for any other terminal that gave
the very same answer string. Terminals with no known outcome are left out of every label.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar

from x1.graph import ROOT_ID, ReasoningGraph, Thought
from x1.markers import EOIS
from x1.models._sampling import render_chatml
from x1.operators.restructure import BACKTRACK_TEXT, journey_steps, to_journey_chain
from x1.tasks.base import DEFAULT_SYSTEM
from x1.trace import read_traces

CORRECT = 1.0 - 1e-9  # a reward at or above this is "correct" (rewards are floats in [0, 1])

Record = dict[str, Any]


# -- the records ------------------------------------------------------------------------------
@dataclass
class JsonRow:
    """Plain JSON-able row: ``to_dict`` for writing, ``from_dict`` for reading back."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{cls.__name__} has no fields {sorted(unknown)}; is this file of another kind of record?")
        return cls(**data)


@dataclass
class SFTExample(JsonRow):
    """A chat prompt and the assistant's completion to imitate (rejection sampling, journeys, traces)."""

    prompt_messages: list[dict[str, str]]
    completion: str
    task_id: str
    source: str  # answer_path, correct_path, journey, trace


@dataclass
class PreferencePair(JsonRow):
    """Two continuations of one prompt text (chat prefix + path so far): chosen has the higher q.

    ``*_final``: whether that continuation ends the solution (a terminal step, or a whole solution).
    Only a final one is ended with EOS in training; an intermediate step ending with EOS would teach
    the policy to stop after it. Rows written before these fields existed read back as final.
    """

    prompt: str
    chosen: str
    rejected: str
    q_chosen: float
    q_rejected: float
    task_id: str
    chosen_final: bool = True
    rejected_final: bool = True


@dataclass
class ProcessLabel(JsonRow):
    """A path's steps (raw thought texts) with a label in [0, 1] per step: how likely it leads to success."""

    prompt: str
    steps: list[str]
    labels: list[float]
    task_id: str


@dataclass
class ValueTarget(JsonRow):
    """A partial solution and its value target in [−1, 1]; the value model reads prompt + partial_solution."""

    prompt: str
    partial_solution: str
    target: float
    task_id: str


@dataclass
class RewardedPath(JsonRow):
    """A whole solution the search produced and its true outcome reward in [−1, 1]: a PPO rollout from the replay buffer."""

    prompt: str
    completion: str
    reward: float
    task_id: str


# -- reading traces --------------------------------------------------------------------------
def load_records(paths: str | Path | Iterable[str | Path]) -> list[Record]:
    """All records of one or more trace files, in order."""
    if isinstance(paths, str | Path):
        paths = [paths]
    return [record for path in paths for record in read_traces(path)]


_CHATML_TURN = re.compile(r"<\|im_start\|>(\w+)\n(.*?)<\|im_end\|>\n", re.DOTALL)


def _messages_from_chatml(prefix: str) -> list[dict[str, str]] | None:
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
class _Run:
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


def _topological(graph: ReasoningGraph) -> list[int]:
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


def _parse(record: Record, system: str | None) -> _Run:
    graph = ReasoningGraph.from_dict(record["graph"])
    question = record.get("question") or graph.problem
    messages = record.get("messages")
    prefix = graph.meta.get("prefix")
    if messages is None and prefix:
        messages = _messages_from_chatml(prefix)
    if messages is None:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
    if not prefix:
        prefix = render_chatml(messages)
    return _Run(record, graph, str(record.get("task_id", "")), prefix, messages, outcome_rewards(record, graph), _topological(graph))


def _runs(records: Iterable[Record], system: str | None = DEFAULT_SYSTEM) -> Iterator[_Run]:
    for record in records:
        if record.get("graph"):
            yield _parse(record, system)


def _outcomes_below(run: _Run) -> dict[int, set[int]]:
    """Thought id → the known-outcome thoughts at or below it (its rollouts), over all children."""
    below: dict[int, set[int]] = {}
    for tid in reversed(run.order):
        found = {tid} if tid in run.rewards else set()
        for cid in run.graph[tid].children:
            found |= below[cid]
        below[tid] = found
    return below


def _depths(run: _Run) -> dict[int, int]:
    """Steps from the root along first parents (the depth ``graph.path`` uses)."""
    depth = {ROOT_ID: 0}
    for tid in run.order[1:]:
        depth[tid] = depth[run.graph[tid].parents[0]] + 1
    return depth


def _render(steps: list[str], step_format: bool) -> str:
    """Step format: stripped steps joined by EOIS (EOS is the trainer's); else the raw text."""
    if not step_format:
        return "".join(steps)
    return EOIS.join(s.strip() for s in steps if s.strip())


def _q(thought: Thought, rewards: dict[int, float]) -> float | None:
    """A thought's q: the true reward at a terminal with a known outcome, else the search's value."""
    if thought.terminal and thought.id in rewards:
        return 2.0 * rewards[thought.id] - 1.0
    return thought.value


# -- outcome-based supervision ------------------------------------------------------------
def sft_examples(
    records: Iterable[Record],
    min_score: float = 1.0,
    all_correct_paths: bool = False,
    step_format: bool = True,
    system: str | None = DEFAULT_SYSTEM,
) -> list[SFTExample]:
    """Rejection sampling: the answer path of every record whose verdict reaches ``min_score``.

    ``all_correct_paths`` adds every other thought with a known reward ≥ ``min_score`` (also in
    records whose chosen answer was wrong: training-mode search often finds a right path it did
    not pick). Duplicates (same task, same completion) are kept once. ``system`` is used only
    when a record's prompt cannot be recovered from its ChatML prefix.
    """
    out: list[SFTExample] = []
    seen: set[tuple[str, str]] = set()
    for run in _runs(records, system):
        wanted: list[tuple[int, str]] = []
        if run.answer_id is not None and run.score >= min_score - 1e-9:
            wanted.append((run.answer_id, "answer_path"))
        if all_correct_paths:
            wanted += [(tid, "correct_path") for tid, r in sorted(run.rewards.items()) if r >= min_score - 1e-9 and tid != run.answer_id]
        for tid, source in wanted:
            completion = _render(run.steps(tid), step_format)
            if not completion.strip() or (run.task_id, completion) in seen:
                continue
            seen.add((run.task_id, completion))
            out.append(SFTExample([dict(m) for m in run.messages], completion, run.task_id, source))
    return out


def rewarded_paths(records: Iterable[Record], system: str | None = DEFAULT_SYSTEM) -> list[RewardedPath]:
    """Every path whose outcome is known (verifier rewards of training-mode search, the record's
    verdict on its answer) as prompt text + raw path text, reward mapped to ±1; each (task,
    completion) once. The prompt is the search's own chat prefix, so the tokens are the ones it sampled."""
    out: list[RewardedPath] = []
    seen: set[tuple[str, str]] = set()
    for run in _runs(records, system):
        for tid, reward in sorted(run.rewards.items()):
            completion = "".join(run.steps(tid))
            if not completion.strip() or (run.task_id, completion) in seen:
                continue
            seen.add((run.task_id, completion))
            out.append(RewardedPath(run.prefix, completion, 2.0 * reward - 1.0, run.task_id))
    return out


def preference_pairs(
    records: Iterable[Record],
    min_gap: float = 0.2,
    outcome: bool = True,
    max_per_parent: int | None = None,
    max_outcome_pairs: int = 4,
    step: bool = True,
) -> list[PreferencePair]:
    """Step-level pairs (siblings whose q differs by ≥ ``min_gap``), then outcome-level pairs.

    Step level: the prompt is the chat prefix plus the path to the shared parent; chosen and
    rejected are the two sibling steps' raw texts. Siblings are ranked by q (ties by id) and
    every ordered pair with a big enough gap is kept, at most ``max_per_parent`` per parent.
    Outcome level: per task (and prompt), a correct and an incorrect whole solution, paired
    along diagonals of the (correct × incorrect) grid so each path is used before any repeats,
    at most ``max_outcome_pairs``.
    """
    out: list[PreferencePair] = []
    seen: set[tuple[str, str, str]] = set()

    def keep(pair: PreferencePair) -> None:
        key = (pair.prompt, pair.chosen, pair.rejected)
        if pair.chosen.strip() != pair.rejected.strip() and key not in seen:
            seen.add(key)
            out.append(pair)

    groups: dict[tuple[str, str], tuple[dict[str, float], dict[str, float]]] = {}
    for run in _runs(records):
        graph = run.graph
        for parent in (graph[tid] for tid in sorted(run.order) if step):
            kids = [graph[c] for c in parent.children if graph[c].parents[0] == parent.id]
            scored = sorted(((q, t.id, t) for t in kids if (q := _q(t, run.rewards)) is not None), key=lambda x: (-x[0], x[1]))
            if len(scored) < 2:
                continue
            prompt = run.prefix + graph.path_text(parent.id)
            made = 0
            for i, (qa, _, a) in enumerate(scored):
                for qb, _, b in scored[i + 1 :]:
                    if qa - qb >= min_gap - 1e-12 and (max_per_parent is None or made < max_per_parent):
                        before = len(out)
                        keep(PreferencePair(prompt, a.text, b.text, float(qa), float(qb), run.task_id, a.terminal, b.terminal))
                        made += len(out) - before
        if outcome:
            good, bad = groups.setdefault((run.task_id, run.prefix), ({}, {}))
            for tid, r in sorted(run.rewards.items()):
                text = graph.path_text(tid)
                if text.strip():
                    (good if r >= CORRECT else bad).setdefault(text, r)
    for (task_id, prefix), (good, bad) in groups.items():
        grid = sorted(((i, j) for i in range(len(good)) for j in range(len(bad))), key=lambda ij: (ij[0] + ij[1], ij[0]))
        goods, bads = list(good.items()), list(bad.items())
        made = 0
        for i, j in grid:
            (chosen, rc), (rejected, rr) = goods[i], bads[j]
            qc, qr = 2.0 * rc - 1.0, 2.0 * rr - 1.0
            if made >= max_outcome_pairs:
                break
            if qc - qr >= min_gap - 1e-12:
                before = len(out)
                keep(PreferencePair(prefix, chosen, rejected, qc, qr, task_id))
                made += len(out) - before
    return out


# -- process-based supervision -----------------------------------------------------------
def process_labels(records: Iterable[Record], hard: bool = False) -> list[ProcessLabel]:
    """One labelled path per thought with a known outcome: Monte-Carlo labels for each step.

    A step's soft label is the mean reward of the known outcomes at or below it (for 0/1
    rewards: the fraction of its rollouts that are correct); ``hard`` gives 1.0 if any is
    correct. A terminal step gets its own true reward. Steps are the raw thought texts, so a
    process reward model sees exactly what the policy wrote (``PRMEvaluator`` does the same).
    """
    out: list[ProcessLabel] = []
    seen: set[tuple[str, tuple[str, ...]]] = set()
    for run in _runs(records):
        below = _outcomes_below(run)

        def label(t: Thought, run: _Run = run, below: dict[int, set[int]] = below) -> float:
            rewards = [run.rewards[t.id]] if t.terminal and t.id in run.rewards else [run.rewards[o] for o in sorted(below[t.id])]
            if hard:
                return 1.0 if any(r >= CORRECT for r in rewards) else 0.0
            return sum(rewards) / len(rewards)

        for tid in sorted(run.rewards):
            path = run.graph.path(tid)
            steps = [t.text for t in path]
            if not steps or (run.prefix, tuple(steps)) in seen:
                continue
            seen.add((run.prefix, tuple(steps)))
            out.append(ProcessLabel(run.prefix, steps, [float(label(t)) for t in path], run.task_id))
    return out


def value_targets(
    records: Iterable[Record],
    gamma: float = 0.96,
    source: Literal["mcts", "mc"] = "mcts",
    min_visits: int = 1,
    include_root: bool = False,
) -> list[ValueTarget]:
    """A value target in [−1, 1] for every state (prefix + path so far) the trace can label.

    ``mcts``: the backed-up q of thoughts visited at least ``min_visits`` times (terminals with a
    known outcome: 2r − 1). ``mc``: the mean over known outcomes at or below the thought of
    γ^(T−t)·(2r − 1), T − t the number of steps between them; a terminal gets 2r − 1 itself.
    """
    if source not in ("mcts", "mc"):
        raise ValueError(f"value target source {source!r} is not one of 'mcts', 'mc'")
    out: list[ValueTarget] = []
    for run in _runs(records):
        below = _outcomes_below(run) if source == "mc" else {}
        depth = _depths(run) if source == "mc" else {}
        for tid in sorted(run.order):
            if tid == ROOT_ID and not include_root:
                continue
            t = run.graph[tid]
            target: float | None
            if source == "mcts":
                target = _q(t, run.rewards)
                if not (t.terminal and tid in run.rewards) and t.visits < min_visits:
                    target = None
            elif t.terminal and tid in run.rewards:
                target = 2.0 * run.rewards[tid] - 1.0
            else:
                returns = [gamma ** max(0, depth[o] - depth[tid]) * (2.0 * run.rewards[o] - 1.0) for o in sorted(below[tid])]
                target = sum(returns) / len(returns) if returns else None
            if target is not None:
                out.append(ValueTarget(run.prefix, run.graph.path_text(tid), float(min(1.0, max(-1.0, target))), run.task_id))
    return out


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
    for run in _runs(records, system):
        if run.answer_id is None or run.score < min_score - 1e-9:
            continue
        if step_format:
            steps = [s.text for s in journey_steps(run.graph, run.answer_id, backtrack, delimiter)]
            completion = _render(steps, True)
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
    for run in _runs(records, system):
        if run.answer_id is None or run.score < min_score - 1e-9 or len(run.graph) < 2:
            continue
        out.append(SFTExample([dict(m) for m in run.messages], graph_text(run.graph, run.answer_id), run.task_id, "trace"))
    return out


# -- files -------------------------------------------------------------------------------
Row = TypeVar("Row", bound=JsonRow)


def write_jsonl(path: str | Path, items: Iterable[Any]) -> int:
    """Write one JSON object per line (records via ``to_dict``); returns how many were written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w") as fh:
        for item in items:
            data = item if isinstance(item, dict) else item.to_dict()
            fh.write(json.dumps(data, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl(path: str | Path, cls: type[Row]) -> list[Row]:
    """Records of one kind back from a JSONL file written by ``write_jsonl``."""
    out = []
    with Path(path).open() as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                out.append(cls.from_dict(json.loads(line)))
            except (json.JSONDecodeError, ValueError, TypeError) as err:
                raise ValueError(f"{path}:{lineno}: not a {cls.__name__} ({err})") from err
    return out
