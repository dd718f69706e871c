"""What the recipe measures after each phase: accuracy with an interval, the value model's AUC, the table."""

from __future__ import annotations

import gc
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from x1.data import value_targets
from x1.graph import ReasoningGraph
from x1.pipelines.evaluate import bootstrap_ci
from x1.tasks.base import Task


def auc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties counting ½.

    Mann–Whitney U from average ranks; None when either class is empty.
    """
    if len(scores) != len(labels):
        raise ValueError(f"auc got {len(scores)} scores and {len(labels)} labels")
    n_pos = sum(1 for label in labels if label)
    n_neg = len(labels) - n_pos
    if not n_pos or not n_neg:
        return None
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1  # the average of ranks i+1 … j+1
        i = j + 1
    rank_sum = sum(r for r, label in zip(ranks, labels, strict=True) if label)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def label_outcomes(records: Iterable[dict[str, Any]], tasks: dict[str, Task]) -> list[dict[str, Any]]:
    """Give every terminal thought of tasks we know its verifier's reward (training mode after the fact).

    Best-of-N and evaluation runs verify only the chosen answer; labelling every finished chain
    is what turns them into rejection-sampling data and Monte-Carlo value labels.
    """
    out = []
    for record in records:
        task = tasks.get(str(record.get("task_id")))
        if task is None or not record.get("graph"):
            out.append(record)
            continue
        graph = ReasoningGraph.from_dict(record["graph"])
        for thought in graph.terminals():
            if thought.reward is None:
                answer = thought.answer if thought.answer is not None else task.extract_answer(graph.path_text(thought.id))
                thought.reward = task.verify(answer).score
        out.append({**record, "graph": graph.to_dict()})
    return out


def value_auc_items(records: Iterable[dict[str, Any]]) -> list[tuple[str, bool]]:
    """(prompt + partial solution, leads to a correct answer?) for every labelled non-root state.

    A state is positive when most known outcomes below it are correct (mean of 2r − 1 > 0),
    negative when most are wrong; states with a tie are left out. Complete paths count too.
    """
    return [(t.prompt + t.partial_solution, t.target > 0) for t in value_targets(records, gamma=1.0, source="mc") if t.target != 0]


def metrics_table(rows: Sequence[dict[str, Any]]) -> Any:
    """The summary as a rich table: one row per phase."""
    from rich.table import Table

    def pct(row: dict[str, Any], key: str) -> str:
        value = row.get(key)
        if value is None:
            return "—"
        lo, hi = row.get(key.replace("accuracy", "ci")) or (value, value)
        return f"{value:.1%} [{lo:.0%}, {hi:.0%}]"

    table = Table("phase", "greedy accuracy", "MCTS+value accuracy", "value AUC", "wall time", title="x1 training recipe")
    for row in rows:
        value_auc = row.get("value_auc")
        table.add_row(
            row["phase"],
            pct(row, "greedy_accuracy"),
            pct(row, "mcts_accuracy"),
            "—" if value_auc is None else f"{value_auc:.3f} (n={row.get('auc_items', 0)})",
            f"{row.get('wall_s', 0.0):.0f}s",
        )
    return table


def accuracy_with_ci(records: Sequence[dict[str, Any]]) -> tuple[float, tuple[float, float]]:
    correct = [1.0 if r.get("correct") else 0.0 for r in records]
    return (sum(correct) / len(correct) if correct else 0.0), bootstrap_ci(correct)


def value_scores(value: Path | None, texts: list[str], device: str | None) -> list[float]:
    from x1.evaluators.value_model import ValueModel

    assert value is not None
    model = ValueModel.load(value, device=device)
    try:
        return model.predict(texts)
    finally:
        del model
        gc.collect()
