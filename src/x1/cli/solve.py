"""`x1 solve`, `x1 eval`, `x1 demo` (the search from the command line) and the listings: models, strategies, tasks, doctor.

Plain functions; ``x1.cli`` registers them on the app, in the order ``x1 --help`` lists them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from x1.cli.options import (
    ChatTemplateOpt,
    MaxStepTokensOpt,
    ModelNameOpt,
    ModelOpt,
    ParamOpt,
    RunConfigOpt,
    SeedOpt,
    StepOpt,
    StrategyOpt,
    TaskOptionOpt,
    TemperatureOpt,
    ThreadsOpt,
    ValueUrlOpt,
    build_config,
)
from x1.cli.progress import RunProgress
from x1.cli.root import console, err_console, fail
from x1.config import DEFAULT_MODEL, ConfigError, RunConfig, parse_params
from x1.engine import Outcome
from x1.models.base import BackendError

if TYPE_CHECKING:
    from x1.pipelines.solve import RunSummary
    from x1.strategies import Problem
    from x1.tasks.base import Task


def compute_line(outcome: Outcome) -> str:
    """What one problem cost, in the units the budgets count."""
    c = outcome.graph.total_compute()
    scored = f", {c.evaluator_tokens} evaluator tokens" if c.evaluator_tokens else ""
    return (
        f"{c.generated_tokens} generated + {c.prompt_tokens} prefilled tokens, {c.policy_calls} policy calls{scored}, "
        f"{len(outcome.graph) - 1} thoughts, {outcome.wall_s:.1f}s"
    )


def models() -> None:
    """List the models available on this machine."""
    from x1.models.registry import available_models

    table = Table("name", "model", "status")
    for name, description, status in available_models():
        table.add_row(name, description, status)
    console.print(table)
    console.print("Also: a path to a .gguf file, a transformers folder (or hf:PATH), openai:URL --model-name NAME, vllm:MODEL (GPU).")


def _field_default(f: Any) -> Any:
    """A dataclass field's default; for a default_factory field, what the factory makes (not dataclasses.MISSING)."""
    from dataclasses import MISSING

    return f.default_factory() if f.default is MISSING and f.default_factory is not MISSING else f.default


def strategies() -> None:
    """List the reasoning strategies and their hyper-parameters."""
    from dataclasses import fields

    from x1.strategies import DESCRIPTIONS, STRATEGIES

    table = Table("name", "what it does", "parameters (defaults)")
    for name, cls in STRATEGIES.items():
        params = ", ".join(f"{f.name}={_field_default(f)}" for f in fields(cls) if f.name != "name")  # type: ignore[arg-type]
        table.add_row(name, DESCRIPTIONS.get(name, ""), params)
    console.print(table)


def tasks() -> None:
    """List the task sources, with a one-line description each."""
    from x1.tasks.registry import list_task_sources

    table = Table("spec", "what it is")
    for spec, description in list_task_sources():
        table.add_row(spec, description)
    console.print(table)


def doctor(
    model: Annotated[str, typer.Option("--model", "-m", help="the model to decode with in the child process")] = "smollm2",
) -> None:
    """Check that llama.cpp runs on this machine: a short decode in a child process, so a crash is reported, not fatal."""
    from x1.models.hf_loading import native_bf16_flags
    from x1.models.llama_cpp.build import choose_features, read_build_record, unsupported_build_features
    from x1.models.llama_cpp.check import REBUILD_HINT, self_check

    record = read_build_record()
    auto = choose_features("auto")
    console.print(f"this CPU: {auto.describe()}", markup=False)
    console.print(f"this environment's build: {' '.join(record['features']) if record else 'unknown (not built by scripts/setup.sh)'}",
                  markup=False)
    if record and record.get("features") != auto.features:
        console.print("  setup would build the set above now (an older choice, or a fallback after a crash); "
                      "`scripts/setup.sh` switches, and its self-check falls back again if that set crashes", markup=False)
    native = native_bf16_flags()
    console.print(f"bfloat16 for trained evaluators: native ({', '.join(native)}): value:DIR?dtype=bfloat16 scores about 3x faster"
                  if native else "bfloat16 for trained evaluators: emulated on this CPU (about 8x slower): keep float32", markup=False)
    unsupported = unsupported_build_features()
    if unsupported:
        fail(f"llama.cpp here was built with {', '.join(unsupported)}, which this CPU does not report; fix: {REBUILD_HINT}")
    try:
        console.print(self_check(model))
    except BackendError as err:
        fail(str(err))


def _run_with_progress(tasks: list[Task], cfg: RunConfig, trace: Path | None, show_solution: bool) -> RunSummary:
    """Run the tasks under a transient progress bar, printing each answer (and its path, for solve) as it lands."""
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

        def tick(n: int, problems: list[Problem]) -> None:
            nodes = sum(len(p.graph) for p in problems)
            progress.update(bar, description=f"{cfg.search.strategy} on {cfg.model.name} · tick {n} · {nodes} thoughts")

        return run_tasks(tasks, cfg, trace_path=trace, on_done=done, on_tick=tick)


def solve(
    question: Annotated[str, typer.Argument(help="the problem to solve")],
    model: ModelOpt = None,
    strategy: StrategyOpt = None,
    param: ParamOpt = None,
    gold: Annotated[str | None, typer.Option(help="the right answer, to check against")] = None,
    seed: SeedOpt = None,
    temperature: TemperatureOpt = None,
    trace: Annotated[Path, typer.Option(help="where to write the trace (JSONL)")] = Path("runs/solve.jsonl"),
    config: RunConfigOpt = None,
    model_name: ModelNameOpt = None,
    value_url: ValueUrlOpt = None,
    step: StepOpt = None,
    max_step_tokens: MaxStepTokensOpt = None,
    chat_template: ChatTemplateOpt = None,
    threads: ThreadsOpt = None,
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
        cfg = build_config(model, strategy, param, seed, temperature, config, model_name, value_url,
                           step=step, max_step_tokens=max_step_tokens, chat_template=chat_template, threads=threads)
        trace.parent.mkdir(parents=True, exist_ok=True)
        task = Task(id="question", question=question, gold=gold, verifier=check, source="cli")
        summary = _run_with_progress([task], cfg, trace, show_solution=True)
    except (BackendError, ConfigError, ValueError) as err:
        fail(str(err))
    except OSError as err:  # e.g. --trace in a folder that cannot be written
        fail(f"{err.filename or trace}: {err.strerror or err}; fix: choose another --trace")
    console.print(f"trace: {trace}  ({summary.wall_s:.1f}s)")


def demo(
    model: ModelOpt = DEFAULT_MODEL,
    strategy: Annotated[str, typer.Option("--strategy", "-s", help="any strategy (x1 strategies); the demo is a tree search")] = "mcts",
    param: ParamOpt = None,
    n: Annotated[int, typer.Option(help="how many sample problems")] = 4,
    seed: int = 0,
    trace: Path = Path("runs/demo.jsonl"),
    temperature: TemperatureOpt = None,
    threads: ThreadsOpt = None,
) -> None:
    """The main job: solve sample word problems with a tree search on the bundled model."""
    from x1.tasks.registry import load_tasks

    try:
        params = parse_params(param or [])
        if strategy == "mcts":
            params = {"iterations": 6, "expand": 2, "parallel": 2, **params}
        cfg = build_config(model, strategy, [f"{k}={json.dumps(v)}" for k, v in params.items()], seed, temperature, None, threads=threads)
        tasks = load_tasks("samples", n=n, seed=seed)
        trace.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        summary = _run_with_progress(tasks, cfg, trace, show_solution=False)
    except (BackendError, ConfigError, ValueError) as err:
        fail(str(err))
    right = sum(o.correct for o in summary.outcomes)
    console.print(
        f"[bold]{right}/{len(summary.outcomes)} right[/] · {summary.generated_tokens} tokens generated, "
        f"{summary.prompt_tokens} prefilled, {summary.policy_calls} batched model calls · "
        f"{time.perf_counter() - start:.1f}s · trace: {trace}"
    )


def eval_(
    task: Annotated[str, typer.Option("--task", "-t", help="task spec: rg:NAME, jsonl:PATH, synthetic:sat, champ, samples (x1 tasks)")],
    model: ModelOpt = None,
    strategy: StrategyOpt = None,
    param: ParamOpt = None,
    n: Annotated[int, typer.Option("--n", help="how many problems")] = 50,
    seed: SeedOpt = None,
    temperature: TemperatureOpt = None,
    out: Annotated[Path | None, typer.Option(help="run directory (traces.jsonl, results.json); default runs/eval-TASK-STRATEGY")] = None,
    resume: Annotated[bool, typer.Option(help="continue an interrupted run in --out, skipping finished problems")] = False,
    task_option: TaskOptionOpt = None,
    max_tokens: Annotated[int | None, typer.Option(help="token budget per problem (prefilled + generated)")] = None,
    max_active: Annotated[
        int | None, typer.Option(min=1, help="problems in flight at once (default all); keep problems × chains within the model's slots")
    ] = None,
    max_live: Annotated[
        int | None, typer.Option(min=1, help="live sequences at which new problems wait (default: half the model's sequence slots)")
    ] = None,
    config: RunConfigOpt = None,
    model_name: ModelNameOpt = None,
    value_url: ValueUrlOpt = None,
    workers: Annotated[int, typer.Option(min=0, help="spread the problems over N Ray actors (0: in this process)")] = 0,
    address: Annotated[str | None, typer.Option(help="Ray cluster to join with --workers: auto, HOST:6379 or ray://HOST:10001")] = None,
    step: StepOpt = None,
    max_step_tokens: MaxStepTokensOpt = None,
    chat_template: ChatTemplateOpt = None,
    threads: ThreadsOpt = None,
) -> None:
    """Evaluate a strategy on a data set: accuracy with a 95% bootstrap interval, compute, traces."""
    from x1.pipelines.evaluate import EvalError, evaluate, level_table, open_run
    from x1.tasks.base import TaskError
    from x1.tasks.registry import load_tasks

    if address and not workers:
        fail(f"--address {address} needs --workers N (how many Ray actors to start there)")
    try:
        cfg = build_config(model, strategy, param, seed, temperature, config, model_name, value_url,
                           step=step, max_step_tokens=max_step_tokens, chat_template=chat_template, threads=threads)
        if max_tokens is not None:
            if max_tokens < 1:
                raise ConfigError(f"--max-tokens {max_tokens}: the token budget per problem must be at least 1; fix: e.g. 4096")
            cfg.search.budget.max_tokens = max_tokens
        if max_active:
            cfg.search.max_active = max_active
        if max_live:
            cfg.search.max_live = max_live
        problems = load_tasks(task, n=n, seed=cfg.search.seed, **parse_params(task_option or []))
        if not problems:
            raise TaskError(f"{task} holds no problems (an empty file, or --n 0); fix: give a task source with records and --n 1 or more")
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in task)
        strategy = cfg.search.strategy
        out_dir = out or Path("runs") / f"eval-{safe}-{strategy}"
        if not workers:  # the model's path is checked here too, before a progress bar (workers resolve it where they run)
            from x1.models.registry import resolve_model

            resolve_model(cfg.model.name, cfg.model.model_name)
        open_run(problems, cfg, out_dir, resume, task)  # the run directory's errors come before any progress bar or model
        with RunProgress(f"{strategy} · {task}", len(problems)) as progress:
            right = [0, 0]

            def done(correct: bool) -> None:
                right[0] += correct
                right[1] += 1
                progress.advance(1, status=f"{right[0]}/{right[1]} right")

            def skip(k: int) -> None:
                progress.skip(k)

            if workers:
                from x1.pipelines.distributed import evaluate_distributed

                result = evaluate_distributed(problems, cfg, out_dir, task, workers, address=address, resume=resume,
                                              on_done=lambda record: done(record["correct"]), on_skip=skip)
            else:
                result = evaluate(problems, cfg, out_dir, task, resume=resume, on_done=lambda outcome: done(outcome.correct), on_skip=skip)
    except (BackendError, ConfigError, EvalError, TaskError, ValueError) as err:
        fail(str(err))
    except OSError as err:  # e.g. the disk filled up mid-run: every finished record is already on disk
        fail(f"{err.filename or 'the run directory'}: {err.strerror or err}; finished problems are saved, "
             "fix the cause and rerun with --resume")
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
    if result.evaluator_tokens:
        console.print(f"trained evaluators ran {result.evaluator_tokens:,} positions ({result.evaluator_tokens / max(1, result.n):,.0f} "
                      "per problem), besides the policy's tokens")
    if result.oracle:
        console.print(f"[bold yellow]oracle run:[/] gold answers guided the search ({escape(result.oracle)}); "
                      "this accuracy is not what the strategy reaches without them")
    if result.by_level:
        console.print(level_table(result.by_level))
    if result.resumed:
        console.print(f"resumed: {result.resumed} problems were already finished and were not run again")
    console.print(f"traces and results: {out_dir}")
