"""The `x1` command: a thin skin over configs and pipelines."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from x1.config import ConfigError, RunConfig, parse_params
from x1.engine import Outcome
from x1.models.base import BackendError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="x1: reasoning language models from the blueprint's parts.")
console = Console()
err_console = Console(stderr=True)

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="bundled name (default, smollm2), .gguf path, folder, or openai:URL")]
StrategyOpt = Annotated[str, typer.Option("--strategy", "-s", help="cot, best_of_n, beam, mcts (x1 strategies)")]
ParamOpt = Annotated[list[str] | None, typer.Option("--param", "-p", help="strategy hyper-parameter key=value, repeatable")]


def fail(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(2)


def build_config(
    model: str,
    strategy: str,
    params: list[str] | None,
    seed: int,
    temperature: float,
    config: Path | None,
    model_name: str | None = None,
) -> RunConfig:
    cfg = RunConfig.from_yaml(config) if config else RunConfig()
    cfg.model.name = model
    if model_name:
        cfg.model.model_name = model_name
    cfg.search.strategy = strategy
    cfg.search.params.update(parse_params(params or []))
    cfg.search.seed = seed
    cfg.search.temperature = temperature
    return cfg


def compute_line(outcome: Outcome) -> str:
    c = outcome.graph.total_compute()
    return (
        f"{c.generated_tokens} generated + {c.prompt_tokens} prefilled tokens, {c.policy_calls} policy calls, "
        f"{len(outcome.graph) - 1} thoughts, {outcome.wall_s:.1f}s"
    )


@app.command()
def models() -> None:
    """List the models available on this machine."""
    from x1.models.registry import available_models

    table = Table("name", "model", "status")
    for name, description, status in available_models():
        table.add_row(name, description, status)
    console.print(table)
    console.print("Also: a path to a .gguf file, a transformers folder (or hf:PATH), openai:URL --model-name NAME, vllm:MODEL (GPU).")


@app.command()
def strategies() -> None:
    """List the reasoning strategies and their hyper-parameters."""
    from dataclasses import fields

    from x1.strategies import STRATEGIES

    table = Table("name", "what it does", "parameters (defaults)")
    from x1.strategies import DESCRIPTIONS

    for name, cls in STRATEGIES.items():
        params = ", ".join(f"{f.name}={f.default}" for f in fields(cls) if f.name != "name")  # type: ignore[arg-type]
        table.add_row(name, DESCRIPTIONS.get(name, ""), params)
    console.print(table)


def _run_with_progress(tasks, cfg: RunConfig, trace: Path | None, show_solution: bool):  # type: ignore[no-untyped-def]
    from x1.pipelines.solve import run_tasks

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        bar = progress.add_task(f"{cfg.search.strategy} on {cfg.model.name}", total=len(tasks))

        def done(outcome: Outcome) -> None:
            progress.advance(bar)
            mark = "[green]right[/]" if outcome.correct else ("[red]wrong[/]" if outcome.task.gold is not None else "[yellow]?[/]")
            gold = f" (gold {outcome.task.gold})" if outcome.task.gold is not None else ""
            progress.console.print(f"[bold]{outcome.task.id}[/] {outcome.task.question[:90]}")
            if show_solution and outcome.answer_thought is not None:
                progress.console.print(f"[dim]{outcome.graph.path_text(outcome.answer_thought.id).strip()}[/]")
            progress.console.print(f"  answer: [bold]{outcome.answer}[/]{gold} → {mark}   [dim]{compute_line(outcome)}[/]")

        def tick(n: int, problems) -> None:  # type: ignore[no-untyped-def]
            nodes = sum(len(p.graph) for p in problems)
            progress.update(bar, description=f"{cfg.search.strategy} on {cfg.model.name} · tick {n} · {nodes} thoughts")

        return run_tasks(tasks, cfg, trace_path=trace, on_done=done, on_tick=tick)


@app.command()
def solve(
    question: Annotated[str, typer.Argument(help="the problem to solve")],
    model: ModelOpt = "default",
    strategy: StrategyOpt = "best_of_n",
    param: ParamOpt = None,
    gold: Annotated[str | None, typer.Option(help="the right answer, to check against")] = None,
    seed: int = 0,
    temperature: float = 0.7,
    trace: Annotated[Path, typer.Option(help="where to write the trace (JSONL)")] = Path("runs/solve.jsonl"),
    config: Annotated[Path | None, typer.Option(help="YAML run config (flags override it)")] = None,
    model_name: Annotated[str | None, typer.Option(help="model id for an openai: server")] = None,
) -> None:
    """Solve one question with a reasoning strategy; print the answer and save the trace."""
    from x1.tasks.answers import numbers_equal
    from x1.tasks.base import Task, Verification

    def check(answer: str | None, expected: object) -> Verification:
        if expected is None:
            return Verification(0.0, "no gold answer given")
        ok = numbers_equal(answer, str(expected)) or (answer or "").strip().lower() == str(expected).strip().lower()
        return Verification(1.0 if ok else 0.0, "matches gold" if ok else "differs from gold")

    try:
        cfg = build_config(model, strategy, param, seed, temperature, config, model_name)
        trace.parent.mkdir(parents=True, exist_ok=True)
        task = Task(id="question", question=question, gold=gold, verifier=check, source="cli")
        summary = _run_with_progress([task], cfg, trace, show_solution=True)
    except (BackendError, ConfigError, ValueError) as err:
        fail(str(err))
        return
    console.print(f"trace: {trace}  ({summary.wall_s:.1f}s)")


@app.command()
def demo(
    model: ModelOpt = "default",
    strategy: StrategyOpt = "mcts",
    param: ParamOpt = None,
    n: Annotated[int, typer.Option(help="how many sample problems")] = 4,
    seed: int = 0,
    trace: Path = Path("runs/demo.jsonl"),
) -> None:
    """The main job: solve sample word problems with a tree search on the bundled model."""
    from x1.tasks.registry import load_tasks

    try:
        params = parse_params(param or [])
        if strategy == "mcts":
            params = {"iterations": 6, "expand": 2, "parallel": 2, **params}
        cfg = build_config(model, strategy, [f"{k}={json.dumps(v)}" for k, v in params.items()], seed, 0.7, None)
        tasks = load_tasks("samples", n=n, seed=seed)
        trace.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        summary = _run_with_progress(tasks, cfg, trace, show_solution=False)
    except (BackendError, ConfigError, ValueError) as err:
        fail(str(err))
        return
    right = sum(o.correct for o in summary.outcomes)
    console.print(
        f"[bold]{right}/{len(summary.outcomes)} right[/] · {summary.generated_tokens} tokens generated, "
        f"{summary.prompt_tokens} prefilled, {summary.policy_calls} batched policy calls · "
        f"{time.perf_counter() - start:.1f}s · trace: {trace}"
    )


@app.command()
def tasks() -> None:
    """List the task sources, with a one-line description each."""
    from x1.tasks.registry import list_task_sources

    table = Table("spec", "what it is")
    for spec, description in list_task_sources():
        table.add_row(spec, description)
    console.print(table)


@app.command(name="eval")
def eval_(
    task: Annotated[str, typer.Option("--task", "-t", help="task spec: rg:NAME, jsonl:PATH, synthetic:sat, champ, samples (x1 tasks)")],
    model: ModelOpt = "default",
    strategy: StrategyOpt = "cot",
    param: ParamOpt = None,
    n: Annotated[int, typer.Option("--n", help="how many problems")] = 50,
    seed: int = 0,
    temperature: float = 0.7,
    out: Annotated[Path | None, typer.Option(help="run directory (traces.jsonl, results.json); default runs/eval-TASK-STRATEGY")] = None,
    resume: Annotated[bool, typer.Option(help="continue an interrupted run in --out, skipping finished problems")] = False,
    task_option: Annotated[list[str] | None, typer.Option("--task-option", help="task config key=value (e.g. difficulty=0.5)")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="token budget per problem (prefilled + generated)")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML run config (flags override it)")] = None,
    model_name: Annotated[str | None, typer.Option(help="model id for an openai: server")] = None,
) -> None:
    """Evaluate a strategy on a data set: accuracy with a 95% bootstrap interval, compute, traces."""
    from x1.pipelines.evaluate import EvalError, evaluate
    from x1.tasks.base import TaskError
    from x1.tasks.registry import load_tasks

    try:
        cfg = build_config(model, strategy, param, seed, temperature, config, model_name)
        if max_tokens:
            cfg.search.budget.max_tokens = max_tokens
        problems = load_tasks(task, n=n, seed=seed, **parse_params(task_option or []))
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in task)
        out_dir = out or Path("runs") / f"eval-{safe}-{strategy}"
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=err_console) as progress:
            bar = progress.add_task(f"{strategy} · {task}", total=len(problems))
            right = [0, 0]

            def done(outcome: Outcome) -> None:
                right[0] += outcome.correct
                right[1] += 1
                progress.update(bar, advance=1, description=f"{strategy} · {task} · {right[0]}/{right[1]} right")

            result = evaluate(
                problems, cfg, out_dir, task, resume=resume, on_done=done, on_skip=lambda k: progress.advance(bar, k)
            )
    except (BackendError, ConfigError, EvalError, TaskError, ValueError) as err:
        fail(str(err))
        return
    table = Table("task", "strategy", "model", "n", "accuracy (95% CI)", "tokens gen / prefilled", "policy calls", "wall")
    table.add_row(
        result.task,
        result.strategy,
        result.model,
        str(result.n),
        f"{result.accuracy:.1%} [{result.ci_low:.1%}, {result.ci_high:.1%}]",
        f"{result.generated_tokens} / {result.prompt_tokens}",
        str(result.policy_calls),
        f"{result.wall_s:.0f}s",
    )
    console.print(table)
    if result.resumed:
        console.print(f"resumed: {result.resumed} problems were already finished and were not run again")
    console.print(f"traces and results: {out_dir}")


def main() -> None:  # pragma: no cover
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
