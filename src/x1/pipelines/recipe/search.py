"""One strategy over the recipe's tasks with its current policy folder, through ``x1 eval``'s own path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from x1.config import BudgetConfig, RunConfig
from x1.pipelines.evaluate import evaluate
from x1.pipelines.recipe.config import RecipeError
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
    task_spec: str = "recipe",
) -> list[dict[str, Any]]:
    """One strategy over ``tasks`` with the policy folder, resumable like ``x1 eval --resume``.

    ``evaluator: value`` means the recipe's current value model (``value:FOLDER``). Records go to
    ``folder/traces.jsonl`` as problems finish and in-flight graphs to ``checkpoint.jsonl``, so an
    interrupted call picks up where it stopped. ``on_problem(finished, total, right)`` follows each
    finished problem, counting those an earlier run finished.
    """
    trace = folder / "traces.jsonl"
    ids = {t.id for t in tasks}
    earlier = [r for r in read_traces(trace) if r["task_id"] in ids] if trace.exists() else []
    count = [len({r["task_id"] for r in earlier}), sum(bool(r["correct"]) for r in earlier)]
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

    folder.mkdir(parents=True, exist_ok=True)
    evaluate(tasks, config, folder, task_spec, resume=True, on_done=done, device=device, bind_identity=False)
    return [r for r in read_traces(trace) if r["task_id"] in ids]
