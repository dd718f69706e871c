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


def evaluator_auc(spec: str, cell: str, records: list[dict], tasks: list[Task], batch: int = 16) -> EvaluatorAUC:
    """Score every labelled chain of ``records`` with the evaluator ``spec`` names; AUC and its interval."""
    from x1.evaluators.spec import build_evaluator, parse_evaluator

    evaluator = build_evaluator(parse_evaluator(spec), policy=None)
    chains = labelled_chains(records, {t.id: t for t in tasks})
    scores: list[float] = []
    for start in range(0, len(chains), batch):
        scores += evaluator.evaluate([item for _, item, _ in chains[start : start + batch]])
    groups: dict[str, list[tuple[float, bool]]] = {}
    for (task_id, _, label), score in zip(chains, scores, strict=True):
        groups.setdefault(task_id, []).append((score, label))
    value = auc(scores, [label for _, _, label in chains])
    lo, hi = bootstrap_auc(groups) if value is not None else (None, None)
    return EvaluatorAUC(spec, cell, len(groups), len(chains), sum(label for _, _, label in chains), value, lo, hi)


def cached_auc(out_dir: Path, spec: str, cell: str, records: list[dict], tasks: list[Task]) -> EvaluatorAUC:
    """The AUC, recomputed only when the cell has more problems than when it was last measured."""
    path = out_dir / "auc.json"
    cache = json.loads(path.read_text()) if path.exists() else {}
    key = f"{spec} @ {cell}"
    if key in cache and cache[key]["records"] == len(records):
        return EvaluatorAUC(**cache[key]["result"])
    result = evaluator_auc(spec, cell, records, tasks)
    cache[key] = {"records": len(records), "result": asdict(result)}
    path.write_text(json.dumps(cache, indent=2))
    return result
