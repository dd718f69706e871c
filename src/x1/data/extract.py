"""Extractors: what each kind of training needs, read off the reasoning graphs in traces.

* ``sft_examples``      rejection sampling: verified-correct paths, in the step format.
* ``preference_pairs``  DPO pairs: sibling steps whose q differs (step level), correct vs wrong
                        solutions of one task (outcome level).
* ``process_labels``    Math-Shepherd style per-step labels from the rollouts below each step.
* ``value_targets``     regression targets for the value model: backed-up MCTS q, or the
                        Monte-Carlo return γ^(T−t)·(2r−1) averaged over terminal descendants.

The trace-based extractors (journeys, whole traces) are in ``trace_based``; how a record is read, in ``runs``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from x1.data.rows import PreferencePair, ProcessLabel, RewardedPath, SFTExample, ValueTarget
from x1.data.runs import CORRECT, Record, Run, depths, outcomes_below, parsed_runs, q_value, render_steps
from x1.graph import ROOT_ID, Thought
from x1.tasks.base import DEFAULT_SYSTEM


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
    for run in parsed_runs(records, system):
        wanted: list[tuple[int, str]] = []
        if run.answer_id is not None and run.score >= min_score - 1e-9:
            wanted.append((run.answer_id, "answer_path"))
        if all_correct_paths:
            wanted += [(tid, "correct_path") for tid, r in sorted(run.rewards.items()) if r >= min_score - 1e-9 and tid != run.answer_id]
        for tid, source in wanted:
            completion = render_steps(run.steps(tid), step_format)
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
    for run in parsed_runs(records, system):
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
    for run in parsed_runs(records):
        graph = run.graph
        for parent in (graph[tid] for tid in sorted(run.order) if step):
            kids = [graph[c] for c in parent.children if graph[c].parents[0] == parent.id]
            scored = sorted(((q, t.id, t) for t in kids if (q := q_value(t, run.rewards)) is not None), key=lambda x: (-x[0], x[1]))
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
    for run in parsed_runs(records):
        below = outcomes_below(run)

        def label(t: Thought, run: Run = run, below: dict[int, set[int]] = below) -> float:
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
    for run in parsed_runs(records):
        below = outcomes_below(run) if source == "mc" else {}
        depth = depths(run) if source == "mc" else {}
        for tid in sorted(run.order):
            if tid == ROOT_ID and not include_root:
                continue
            t = run.graph[tid]
            target: float | None
            if source == "mcts":
                target = q_value(t, run.rewards)
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
