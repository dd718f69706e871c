"""One strategy over the recipe's tasks with its current policy folder: resumable, like ``x1 eval --resume``."""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from x1.config import BudgetConfig, RunConfig
from x1.pipelines.recipe.config import RecipeError
from x1.pipelines.solve import run_tasks
from x1.tasks.base import Task
from x1.trace import read_traces


def run_search(
    folder: Path,
    tasks: list[Task],
    policy: Path,
    strategy_name: str,
    params: dict[str, Any],
    budget: BudgetConfig,
    seed: int,
    value: Path | None = None,
    device: str | None = None,
    on_problem: Callable[[int, int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """One strategy over ``tasks`` with the policy folder's TransformersBackend, through ``run_tasks``.

    ``evaluator: value`` means the recipe's current value model (``value:FOLDER``). Records go to
    ``folder/traces.jsonl`` as problems finish and in-flight graphs to ``checkpoint.jsonl``, so an
    interrupted call picks up where it stopped. ``on_problem(finished, total, right)`` follows each
    finished problem, counting those an earlier run finished.
    """
    from x1.models.hf import TransformersBackend

    folder.mkdir(parents=True, exist_ok=True)
    trace, checkpoint = folder / "traces.jsonl", folder / "checkpoint.jsonl"
    ids = {t.id for t in tasks}
    earlier = [r for r in read_traces(trace) if r["task_id"] in ids] if trace.exists() else []
    finished = {r["task_id"] for r in earlier}
    todo = [t for t in tasks if t.id not in finished]
    count = [len(finished), sum(bool(r["correct"]) for r in earlier)]
    if todo:
        if params.get("evaluator") == "value":
            if value is None:
                raise RecipeError("the search asks for evaluator 'value' but no value model is trained yet")
            params = {**params, "evaluator": f"value:{value}"}
        config = RunConfig(
            model={"name": str(policy)},
            search={"strategy": strategy_name, "params": params, "seed": seed, "budget": budget.model_dump()},
        )

        def done(outcome: Any) -> None:
            count[0] += 1
            count[1] += outcome.correct
            if on_problem:
                on_problem(count[0], len(ids), count[1])

        backend = TransformersBackend(policy, name=str(policy), device=device)
        try:
            run_tasks(todo, config, policy=backend, trace_path=trace, checkpoint_path=checkpoint, device=device, on_done=done)
        finally:
            backend.close()
            gc.collect()
    checkpoint.unlink(missing_ok=True)
    return [r for r in read_traces(trace) if r["task_id"] in ids] if trace.exists() else []
