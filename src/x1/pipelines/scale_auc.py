"""How well a trained evaluator ranks held-out solutions: AUC with a problem-level bootstrap interval.

An arm that reranks or guides search with an evaluator can only beat majority voting if the
evaluator tells right solutions from wrong ones on problems it never saw. The study's own
sampled chains (a best-of-N cell on the evaluation problems) are the held-out set: every finished
chain is labelled by the task's verifier and scored by the evaluator. The interval resamples
problems, since chains of one problem are not independent.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from x1.evaluators.base import EvalItem
from x1.graph import ReasoningGraph
from x1.pipelines.recipe.metrics import auc
from x1.tasks.base import Task


@dataclass
class EvaluatorAUC:
    evaluator: str
    cell: str  # the run whose chains were scored, e.g. majority-N16
    problems: int
    chains: int
    positives: int
    auc: float | None
    ci_low: float | None
    ci_high: float | None
    # Within a problem: P(a right chain outscores a wrong one of the same problem), over the problems
    # that have both. Reranking and search choose within a problem, so this is the AUC that decides
    # them; the pooled one above also rewards telling easy problems from hard ones.
    mixed_problems: int = 0
    within_auc: float | None = None
    within_ci_low: float | None = None
    within_ci_high: float | None = None


def labelled_chains(records: list[dict], tasks: dict[str, Task]) -> list[tuple[str, EvalItem, bool]]:
    """(task id, item, correct?) for every finished chain of every record whose task is known."""
    out = []
    for record in records:
        task = tasks.get(record["task_id"])
        if task is None:
            continue
        graph = ReasoningGraph.from_dict(record["graph"])
        prefix = str(graph.meta.get("prefix", ""))
        for thought in graph.terminals():
            answer = thought.answer if thought.answer is not None else task.extract_answer(graph.path_text(thought.id))
            out.append((task.id, EvalItem(task, graph, thought.id, prefix), task.verify(answer).score >= 1.0 - 1e-9))
    return out


def within_problem_auc(groups: dict[str, list[tuple[float, bool]]], keys: list[str]) -> float | None:
    """P(right chain's score > wrong chain's score) over every (right, wrong) pair of one problem, ties ½."""
    wins = pairs = 0.0
    for key in keys:
        right = [score for score, label in groups[key] if label]
        wrong = [score for score, label in groups[key] if not label]
        for r in right:
            for w in wrong:
                wins += 1.0 if r > w else 0.5 if r == w else 0.0
        pairs += len(right) * len(wrong)
    return wins / pairs if pairs else None


def bootstrap_within_auc(groups: dict[str, list[tuple[float, bool]]], resamples: int = 1000,
                         seed: int = 0) -> tuple[float | None, float | None, float | None, int]:
    """(within-problem AUC, its percentile interval over resampled problems, how many problems have both labels)."""
    keys = sorted(k for k, pairs in groups.items() if any(label for _, label in pairs) and not all(label for _, label in pairs))
    value = within_problem_auc(groups, keys)
    if value is None:
        return None, None, None, 0
    rng = random.Random(seed)
    values = sorted(v for v in (within_problem_auc(groups, rng.choices(keys, k=len(keys))) for _ in range(resamples)) if v is not None)
    return value, values[int(0.025 * len(values))], values[min(len(values) - 1, int(0.975 * len(values)))], len(keys)


def bootstrap_auc(groups: dict[str, list[tuple[float, bool]]], resamples: int = 1000, seed: int = 0) -> tuple[float | None, float | None]:
    """Percentile interval of the AUC when whole problems are resampled."""
    keys = sorted(groups)
    rng = random.Random(seed)
    values = []
    for _ in range(resamples):
        pick = [pair for key in rng.choices(keys, k=len(keys)) for pair in groups[key]]
        value = auc([s for s, _ in pick], [label for _, label in pick])
        if value is not None:
            values.append(value)
    if len(values) < resamples // 2:
        return None, None
    values.sort()
    return values[int(0.025 * len(values))], values[min(len(values) - 1, int(0.975 * len(values)))]


def evaluator_auc(spec: str, cell: str, records: list[dict], tasks: list[Task], batch: int = 16,
                  known: dict[tuple[str, int], float] | None = None,
                  on_scoring: Callable[[str, str, int], None] | None = None) -> EvaluatorAUC:
    """Score every labelled chain of ``records`` with the evaluator ``spec`` names; AUC and its interval.

    ``known`` maps (task id, thought id) to the score this evaluator already gave that chain (a
    re-vote of the same chains wrote it); only the chains it lacks are scored, after
    ``on_scoring(spec, cell, how many)`` announces them (thousands of chains take a while on a CPU).
    """
    from x1.evaluators.spec import build_evaluator, parse_evaluator

    chains = labelled_chains(records, {t.id: t for t in tasks})
    known = known or {}
    scores = [known.get((task_id, item.thought_id)) for task_id, item, _ in chains]
    missing = [i for i, score in enumerate(scores) if score is None]
    if missing:
        if on_scoring:
            on_scoring(spec, cell, len(missing))
        evaluator = build_evaluator(parse_evaluator(spec), policy=None)
        for start in range(0, len(missing), batch):
            part = missing[start : start + batch]
            for i, score in zip(part, evaluator.evaluate([chains[i][1] for i in part]), strict=True):
                scores[i] = score
    groups: dict[str, list[tuple[float, bool]]] = {}
    final = [float(score) for score in scores if score is not None]
    for (task_id, _, label), score in zip(chains, final, strict=True):
        groups.setdefault(task_id, []).append((score, label))
    value = auc(final, [label for _, _, label in chains])
    lo, hi = bootstrap_auc(groups) if value is not None else (None, None)
    within, within_lo, within_hi, mixed = bootstrap_within_auc(groups)
    return EvaluatorAUC(spec, cell, len(groups), len(chains), sum(label for _, _, label in chains), value, lo, hi,
                        mixed, within, within_lo, within_hi)


def scores_given(spec: str, records: list[dict]) -> dict[tuple[str, int], float]:
    """(task id, thought id) → score, for every thought in ``records`` scored by an evaluator that scores as ``spec`` does,
    or, for a PRM, whose step scores that model wrote under any aggregation (aggregated as ``spec`` says)."""
    from x1.evaluators.aggregate import aggregate_steps
    from x1.evaluators.spec import parse_evaluator
    from x1.pipelines.scale_revote import STEP_SCORES

    wanted = parse_evaluator(spec)
    key, step_key = wanted.scoring_key(), wanted.step_key()
    same: dict[str, bool] = {}
    same_steps: dict[str, bool] = {}
    out = {}
    for record in records:
        for node in record["graph"]["thoughts"]:
            at = (record["task_id"], node["id"])
            for name, score in (node.get("scores") or {}).items():
                if name not in same:
                    same[name] = _keys(name)[0] == key
                if same[name]:
                    out[at] = float(score)
            if step_key is None or at in out:
                continue
            for name, steps in ((node.get("meta") or {}).get(STEP_SCORES) or {}).items():
                if name not in same_steps:
                    same_steps[name] = _keys(name)[1] == step_key
                if same_steps[name]:
                    out[at] = aggregate_steps(steps, wanted.aggregate)
                    break
    return out


def _keys(spec: str) -> tuple[tuple | None, tuple | None]:
    """The spec's scoring key and step key; (None, None) for a name that is no spec now (a model folder since removed)."""
    from x1.config import ConfigError
    from x1.evaluators.spec import parse_evaluator

    try:
        parsed = parse_evaluator(spec)
    except ConfigError:
        return None, None
    return parsed.scoring_key(), parsed.step_key()


def cached_auc(out_dir: Path, spec: str, cell: str, records: list[dict], tasks: list[Task],
               known: dict[tuple[str, int], float] | None = None,
               on_scoring: Callable[[str, str, int], None] | None = None) -> EvaluatorAUC:
    """The AUC, recomputed only when the cell has more problems than when it was last measured."""
    path = out_dir / "auc.json"
    cache = json.loads(path.read_text()) if path.exists() else {}
    key = f"{spec} @ {cell}"
    if key in cache and cache[key]["records"] == len(records) and "within_auc" in cache[key]["result"]:
        return EvaluatorAUC(**cache[key]["result"])
    result = evaluator_auc(spec, cell, records, tasks, known=known, on_scoring=on_scoring)
    cache[key] = {"records": len(records), "result": asdict(result)}
    path.write_text(json.dumps(cache, indent=2))
    return result
