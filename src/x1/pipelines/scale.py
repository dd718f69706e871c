"""The test-time-compute scaling study: a grid of strategies × budgets on one task.

Every cell of the grid is an ordinary ``x1 eval`` run directory (``runs/ARM-N{N}/``), so a cell
resumes exactly as an eval does, and the study resumes by re-running the same command: finished
cells are summarised from their traces without loading a model. Cells run budget by budget
(all arms at N=1, then all at N=4, ...), so an interrupted study has every arm's cheap points
first. Arm parameters may name the budget: ``n: "{N}"`` or ``width: "{max(1, N // 4)}"``.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from x1.config import ConfigError, ModelConfig, RunConfig, SearchConfig, StepConfig, load_yaml
from x1.models.base import Backend
from x1.tasks.base import Task


class ArmConfig(BaseModel):
    """One line of the study: a strategy whose parameters may depend on the budget N."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    strategy: str
    params: dict[str, Any] = Field(default_factory=dict)
    budgets: list[int] | None = None  # None: the study's budgets; [1] for an arm that does not scale (greedy CoT)
    model: str | None = None  # another policy for this arm only (the reference model)
    temperature: float | None = Field(None, ge=0)
    # re-vote the finished chains of this earlier arm's runs (same budget) with this arm's voting and evaluator, sampling
    # nothing: a best-of-N arm's samples, or the terminals of a search's trees (MCTS answers by value, not by a vote)
    revote: str | None = None


class ScaleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: str
    task_options: dict[str, Any] = Field(default_factory=dict)
    n: int = Field(200, gt=0)
    seed: int = 0
    model: ModelConfig = Field(default_factory=ModelConfig)
    temperature: float = Field(0.8, ge=0)
    step: StepConfig = Field(default_factory=StepConfig)
    max_active: int | None = Field(None, ge=1)
    budgets: list[int] = Field(default_factory=lambda: [1, 4, 16])
    baseline: str = "majority"  # the arm every other arm is compared with, on the same problems and budget
    reference: str | None = None  # an arm (e.g. a larger model decoding greedily) every arm is also compared with
    arms: list[ArmConfig]
    # trace files the evaluators were trained on: their questions are removed from the evaluation problems
    exclude_traces: list[Path] = Field(default_factory=list)
    # trained evaluators whose AUC on held-out chains the report gives (scored on auc_arm's largest finished budget)
    auc: list[str] = Field(default_factory=list)
    auc_arm: str | None = None  # default: the baseline

    @field_validator("budgets")
    @classmethod
    def _positive(cls, budgets: list[int]) -> list[int]:
        if not budgets or any(b < 1 for b in budgets):
            raise ValueError("budgets must be a non-empty list of integers >= 1, e.g. [1, 4, 16]")
        return sorted(set(budgets))

    @classmethod
    def from_yaml(cls, path: str | Path) -> ScaleConfig:
        config = load_yaml(cls, path)
        config.check()
        return config

    def arm_budgets(self, arm: ArmConfig) -> list[int]:
        return sorted(set(arm.budgets)) if arm.budgets else self.budgets

    def check(self) -> None:
        """Names unique, baseline and reference present; every cell's parameters valid (no model loads)."""
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ConfigError(f"arm names must be unique, got {names}")
        for ref in (self.baseline, self.reference, self.auc_arm):
            if ref is not None and ref not in names:
                raise ConfigError(f"no arm is named {ref!r} (arms: {', '.join(names)}); fix: name one of them or change baseline/reference")
        for i, arm in enumerate(self.arms):
            if arm.revote is not None:
                source = next((a for a in self.arms[:i] if a.name == arm.revote), None)
                if source is None or arm.strategy != "best_of_n":
                    raise ConfigError(f"arm {arm.name!r}: revote needs an arm listed before it, and must be best_of_n itself "
                                      f"(its voting decides); fix: revote: the name of an earlier arm, strategy: best_of_n")
                if set(self.arm_budgets(arm)) - set(self.arm_budgets(source)):
                    raise ConfigError(f"arm {arm.name!r}: revote of {source.name!r} needs its budgets to be among the source's")
            for budget in self.arm_budgets(arm):
                cell_config(self, arm, budget)


_OPS: dict[type, Callable[..., Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv, ast.Div: operator.truediv,
}
_FUNCS: dict[str, Callable[..., Any]] = {"min": min, "max": max, "int": int, "round": round}


def _eval_budget_expr(node: ast.AST, budget: int, text: str) -> Any:
    """Arithmetic on N only: a parameter template must not be able to run code."""
    if isinstance(node, ast.Expression):
        return _eval_budget_expr(node.body, budget, text)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return node.value
    if isinstance(node, ast.Name) and node.id == "N":
        return budget
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_eval_budget_expr(node.left, budget, text), _eval_budget_expr(node.right, budget, text))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS and not node.keywords:
        return _FUNCS[node.func.id](*(_eval_budget_expr(a, budget, text) for a in node.args))
    raise ConfigError(f"parameter template {text!r}: only N, numbers, + - * / // and min/max/int/round are allowed")


def params_for_budget(params: dict[str, Any], budget: int) -> dict[str, Any]:
    """Fill ``"{...}"`` templates with the budget N; other values pass through."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, str) and value.startswith("{") and value.endswith("}"):
            expr = value[1:-1]
            try:
                tree = ast.parse(expr, mode="eval")
            except SyntaxError as err:
                raise ConfigError(f"parameter {key}={value!r} is not an expression in N, e.g. \"{{N}}\" or \"{{max(1, N // 4)}}\"") from err
            result = _eval_budget_expr(tree, budget, value)
            out[key] = int(result) if isinstance(result, float) and result.is_integer() else result
        else:
            out[key] = value
    return out


def cell_config(study: ScaleConfig, arm: ArmConfig, budget: int) -> RunConfig:
    """The eval config of one cell, checked (strategy, parameters and evaluator specs)."""
    from x1.pipelines.solve import check_search

    model = study.model.model_copy(update={"name": arm.model} if arm.model else {})
    search = SearchConfig(
        strategy=arm.strategy,
        params=params_for_budget(arm.params, budget),
        temperature=study.temperature if arm.temperature is None else arm.temperature,
        seed=study.seed,
        max_active=study.max_active,
        step=study.step,
    )
    config = RunConfig(model=model, search=search)
    try:
        check_search(config)
    except ValueError as err:
        raise ConfigError(f"arm {arm.name!r} at N={budget}: {err}") from err
    return config


def cell_dir(out_dir: Path, arm: str, budget: int) -> Path:
    return out_dir / "runs" / f"{arm}-N{budget}"


def grid(study: ScaleConfig) -> list[tuple[ArmConfig, int]]:
    """Cells in run order: budget by budget, so every arm's cheap points come first."""
    budgets = sorted({b for arm in study.arms for b in study.arm_budgets(arm)})
    return [(arm, b) for b in budgets for arm in study.arms if b in study.arm_budgets(arm)]


def run_study(
    study: ScaleConfig,
    out_dir: Path,
    tasks: list[Task],
    on_cell: Callable[[str, int, int, int], None] | None = None,
    on_done: Callable[[bool], None] | None = None,
    policies: dict[str, Backend] | None = None,
    report: ScaleConfig | None = None,
    on_scoring: Callable[[str, str, int], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) every cell, then write results.json, scaling.md and scaling.png into ``out_dir``
    for ``report`` (default: this study; a run of some of its arms or budgets reports them all).

    ``on_cell(arm, budget, done_already, total)`` announces a cell; ``on_done(correct)`` fires per finished problem.
    """
    from x1.pipelines.evaluate import evaluate, read_results
    from x1.pipelines.scale_report import write_report
    from x1.pipelines.solve import open_policy

    study.check()
    out_dir.mkdir(parents=True, exist_ok=True)
    policies = policies if policies is not None else {}
    for arm, budget in grid(study):
        config = cell_config(study, arm, budget)
        run_dir = cell_dir(out_dir, arm.name, budget)
        resume = run_dir.exists()

        def skipped(k: int, arm: ArmConfig = arm, budget: int = budget) -> None:
            if on_cell:
                on_cell(arm.name, budget, k, len(tasks))

        if arm.revote is not None:
            from x1.pipelines.scale_revote import revote_cell

            done = len(read_cell(out_dir, arm.name, budget).keys() & {t.id for t in tasks})
            if on_cell:
                on_cell(arm.name, budget, done, len(tasks))
            params = config.search.params
            siblings = [cell_dir(out_dir, other.name, budget) for other in study.arms
                        if other.revote == arm.revote and other.name != arm.name and budget in study.arm_budgets(other)]
            revote_cell(cell_dir(out_dir, arm.revote, budget), run_dir, tasks, params.get("voting", "majority"),
                        params.get("evaluator"), on_done=on_done, siblings=siblings)
            continue
        finished = read_results(run_dir)
        if finished is not None and finished.n == len(tasks):
            skipped(len(tasks))  # finished: no model opens, and its files stay as its own run wrote them
            continue
        policy = policies.get(config.model.name)
        if policy is None:  # an unfinished cell has problems to run (a finished one was skipped above)
            policy = policies[config.model.name] = open_policy(config)
        evaluate(tasks, config, run_dir, study.task, resume=resume, policy=policy, on_skip=skipped,
                 on_done=(lambda outcome: on_done(outcome.correct)) if on_done else None)
    return write_report(report or study, out_dir, tasks, on_scoring)


def load_study_tasks(study: ScaleConfig) -> tuple[list[Task], int]:
    """The evaluation problems, and how many were dropped because an evaluator's training traces hold them.

    Generated sources (rg:, synthetic:) can repeat a question under another seed, so disjointness is
    checked on the question text, not assumed from the seed. Extra problems are drawn to keep ``n``.
    """
    from x1.tasks.registry import load_tasks
    from x1.trace import read_traces

    seen: set[str] = set()
    for path in study.exclude_traces:
        if not Path(path).exists():
            raise ConfigError(f"exclude_traces: {path} does not exist; fix: run the training split first, or remove it")
        seen |= {" ".join(str(r.get("question", "")).split()) for r in read_traces(path)}
    if not seen:
        return load_tasks(study.task, n=study.n, seed=study.seed, **study.task_options), 0
    pool = load_tasks(study.task, n=study.n * 2, seed=study.seed, **study.task_options)
    kept: list[Task] = []
    dropped = 0
    for task in pool:
        if len(kept) == study.n:
            break
        if " ".join(task.question.split()) in seen:
            dropped += 1
        else:
            kept.append(task)
    return kept, dropped


def read_cell(out_dir: Path, arm: str, budget: int) -> dict[str, dict]:
    """Task id → trace record of one finished cell."""
    from x1.trace import read_traces

    path = cell_dir(out_dir, arm, budget) / "traces.jsonl"
    return {r["task_id"]: r for r in read_traces(path)} if path.exists() else {}
