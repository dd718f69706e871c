"""The `x1` command: a thin skin over configs and pipelines."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from x1.cli.fit import fit_app
from x1.cli.scale import scale_command
from x1.cli.view import report_command, view_command
from x1.config import DEFAULT_MODEL, DEFAULT_STRATEGY, STEP_KINDS, ConfigError, RunConfig, parse_params
from x1.engine import Outcome
from x1.models.base import BackendError
from x1.strategies import STRATEGIES

console = Console()
err_console = Console(stderr=True)
INTERRUPTED = "interrupted (Ctrl-C): finished work is saved; rerun the same command (x1 eval with --resume) to continue"


def _on_interrupt(signum: int, frame: object) -> None:
    """Say what Ctrl-C left behind; typer then exits 130 (it swallows KeyboardInterrupt, so main()'s handler never ran)."""
    err_console.print(f"[bold yellow]{INTERRUPTED}[/]", soft_wrap=True)
    raise KeyboardInterrupt


class _Typer(typer.Typer):
    """The ``x1`` console script calls the app object itself, so its Ctrl-C message lives here, not in main()."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _on_interrupt)
        return super().__call__(*args, **kwargs)


app = _Typer(add_completion=False, no_args_is_help=True, help="x1: reasoning language models from the blueprint's parts.")

ModelOpt = Annotated[
    str | None, typer.Option("--model", "-m", help="bundled name (default, smollm2), .gguf path, folder, or openai:URL "
                             f"(default: {DEFAULT_MODEL}, as for every command)")
]
StrategyOpt = Annotated[str | None, typer.Option("--strategy", "-s", help=f"{', '.join(STRATEGIES)} (x1 strategies) "
                                                 f"(default: {DEFAULT_STRATEGY}, or the YAML's)")]
ParamOpt = Annotated[list[str] | None, typer.Option("--param", "-p", help="strategy hyper-parameter key=value, repeatable; "
                                                    "evaluator=confidence|verifier|judge|value:DIR|prm:DIR|orm:DIR|remote:URL")]
StepOpt = Annotated[str | None, typer.Option(
    "--step", help="step granularity: newline, blank (paragraphs), eois (the <eois> marker), token, solution [default: the task's]")]
MaxStepTokensOpt = Annotated[int | None, typer.Option("--max-step-tokens", min=1, help="most tokens per step [default: the task's]")]
ChatTemplateOpt = Annotated[str | None, typer.Option(
    "--chat-template", help="for openai: models: chatml, a Jinja file, or a model folder with tokenizer_config.json")]
SeedOpt = Annotated[int | None, typer.Option(help="search seed [default: 0, or the YAML's]")]
TemperatureOpt = Annotated[float | None, typer.Option(
    help="sampling temperature; when given it wins over the strategy's own, as -p temperature= does (default: the strategy's)")]
ThreadsOpt = Annotated[int | None, typer.Option(
    min=1, help="CPU threads for a local model (default: all); give each of several processes its share of the cores")]
ValueUrlOpt = Annotated[
    str | None, typer.Option("--value-url", help="`x1 serve value` server (http://HOST:8001): -p evaluator=value then means remote:URL")
]


def fail(message: str) -> None:
    # one line however long; escaped: a fix such as pip install 'x1[ray]' is no markup
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(2)


def build_config(
    model: str | None,
    strategy: str | None,
    params: list[str] | None,
    seed: int | None,
    temperature: float | None,
    config: Path | None,
    model_name: str | None = None,
    value_url: str | None = None,
    default_strategy: str = DEFAULT_STRATEGY,
    step: str | None = None,
    max_step_tokens: int | None = None,
    chat_template: str | None = None,
    threads: int | None = None,
) -> RunConfig:
    """The run's config: the YAML's values, overridden by the flags the user gave (and only those);
    then the strategy and every evaluator it names are checked, before any model loads."""
    from x1.pipelines.solve import check_search

    cfg = RunConfig.from_yaml(config) if config else RunConfig()
    if model is not None:
        cfg.model.name = model
    if model_name:
        cfg.model.model_name = model_name
    if value_url:
        cfg.search.value_url = value_url
    if strategy is not None:
        cfg.search.strategy = strategy
    elif "strategy" not in cfg.search.model_fields_set:
        cfg.search.strategy = default_strategy
    cfg.search.params.update(parse_params(params or []))
    if seed is not None:
        cfg.search.seed = seed
    if temperature is not None:
        cfg.search.temperature = temperature
    if step is not None:
        if step not in STEP_KINDS:
            raise ConfigError(f"--step {step!r} is not one of {', '.join(STEP_KINDS)}")
        cfg.search.step.delimiter = step  # type: ignore[assignment]
    if max_step_tokens is not None:
        cfg.search.step.max_step_tokens = max_step_tokens
    if chat_template is not None:
        cfg.model.chat_template = chat_template
    if threads is not None:
        cfg.model.threads = threads
    check_search(cfg)
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


def _field_default(f: Any) -> Any:
    """A dataclass field's default; for a default_factory field, what the factory makes (not dataclasses.MISSING)."""
    from dataclasses import MISSING

    return f.default_factory() if f.default is MISSING and f.default_factory is not MISSING else f.default


@app.command()
def strategies() -> None:
    """List the reasoning strategies and their hyper-parameters."""
    from dataclasses import fields

    from x1.strategies import STRATEGIES

    table = Table("name", "what it does", "parameters (defaults)")
    from x1.strategies import DESCRIPTIONS

    for name, cls in STRATEGIES.items():
        params = ", ".join(f"{f.name}={_field_default(f)}" for f in fields(cls) if f.name != "name")  # type: ignore[arg-type]
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
    model: ModelOpt = None,
    strategy: StrategyOpt = None,
    param: ParamOpt = None,
    gold: Annotated[str | None, typer.Option(help="the right answer, to check against")] = None,
    seed: SeedOpt = None,
    temperature: TemperatureOpt = None,
    trace: Annotated[Path, typer.Option(help="where to write the trace (JSONL)")] = Path("runs/solve.jsonl"),
    config: Annotated[Path | None, typer.Option(help="YAML run config (flags override it)")] = None,
    model_name: Annotated[str | None, typer.Option(help="model id for an openai: server")] = None,
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
        return
    except OSError as err:  # e.g. --trace in a folder that cannot be written
        fail(f"{err.filename or trace}: {err.strerror or err}; fix: choose another --trace")
        return
    console.print(f"trace: {trace}  ({summary.wall_s:.1f}s)")


@app.command()
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
        return
    right = sum(o.correct for o in summary.outcomes)
    console.print(
        f"[bold]{right}/{len(summary.outcomes)} right[/] · {summary.generated_tokens} tokens generated, "
        f"{summary.prompt_tokens} prefilled, {summary.policy_calls} batched model calls · "
        f"{time.perf_counter() - start:.1f}s · trace: {trace}"
    )


@app.command()
def doctor(
    model: Annotated[str, typer.Option("--model", "-m", help="the model to decode with in the child process")] = "smollm2",
) -> None:
    """Check that llama.cpp runs on this machine: a short decode in a child process, so a crash is reported, not fatal."""
    from x1.models.llamacpp_build import choose_features, read_build_record, unsupported_build_features
    from x1.models.llamacpp_check import REBUILD_HINT, self_check

    record = read_build_record()
    console.print(f"this CPU: {choose_features('auto').describe()}")
    console.print(f"this environment's build: {' '.join(record['features']) if record else 'unknown (not built by scripts/setup.sh)'}")
    unsupported = unsupported_build_features()
    if unsupported:
        fail(f"llama.cpp here was built with {', '.join(unsupported)}, which this CPU does not report; fix: {REBUILD_HINT}")
    try:
        console.print(self_check(model))
    except BackendError as err:
        fail(str(err))


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
    model: ModelOpt = None,
    strategy: StrategyOpt = None,
    param: ParamOpt = None,
    n: Annotated[int, typer.Option("--n", help="how many problems")] = 50,
    seed: SeedOpt = None,
    temperature: TemperatureOpt = None,
    out: Annotated[Path | None, typer.Option(help="run directory (traces.jsonl, results.json); default runs/eval-TASK-STRATEGY")] = None,
    resume: Annotated[bool, typer.Option(help="continue an interrupted run in --out, skipping finished problems")] = False,
    task_option: Annotated[list[str] | None, typer.Option("--task-option", help="task config key=value (e.g. difficulty=0.5)")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="token budget per problem (prefilled + generated)")] = None,
    max_active: Annotated[
        int | None, typer.Option(min=1, help="problems in flight at once (default all); keep problems × chains within the model's slots")
    ] = None,
    max_live: Annotated[
        int | None, typer.Option(min=1, help="live sequences at which new problems wait (default: half the model's sequence slots)")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="YAML run config (flags override it)")] = None,
    model_name: Annotated[str | None, typer.Option(help="model id for an openai: server")] = None,
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
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=err_console) as progress:
            bar = progress.add_task(f"{strategy} · {task}", total=len(problems))
            right = [0, 0]

            def done(correct: bool) -> None:
                right[0] += correct
                right[1] += 1
                progress.update(bar, advance=1, description=f"{strategy} · {task} · {right[0]}/{right[1]} right")

            def skip(k: int) -> None:
                progress.advance(bar, k)

            if workers:
                from x1.pipelines.distributed import evaluate_distributed

                result = evaluate_distributed(problems, cfg, out_dir, task, workers, address=address, resume=resume,
                                              on_done=lambda record: done(record["correct"]), on_skip=skip)
            else:
                result = evaluate(problems, cfg, out_dir, task, resume=resume, on_done=lambda outcome: done(outcome.correct), on_skip=skip)
    except (BackendError, ConfigError, EvalError, TaskError, ValueError) as err:
        fail(str(err))
        return
    except OSError as err:  # e.g. the disk filled up mid-run: every finished record is already on disk
        fail(f"{err.filename or 'the run directory'}: {err.strerror or err}; finished problems are saved, "
             "fix the cause and rerun with --resume")
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
    if result.oracle:
        console.print(f"[bold yellow]oracle run:[/] gold answers guided the search ({escape(result.oracle)}); "
                      "this accuracy is not what the strategy reaches without them")
    if result.by_level:
        console.print(level_table(result.by_level))
    if result.resumed:
        console.print(f"resumed: {result.resumed} problems were already finished and were not run again")
    console.print(f"traces and results: {out_dir}")


serve_app = typer.Typer(no_args_is_help=True, help="Serve a policy (OpenAI-compatible) or a value model over HTTP, batched.")
app.add_typer(serve_app, name="serve")

HostOpt = Annotated[str, typer.Option(help="address to bind (loopback by default; pass --api-key before exposing it)")]
ApiKeyOpt = Annotated[str | None, typer.Option("--api-key", envvar="X1_API_KEY", help="require 'Authorization: Bearer KEY' on /v1")]
MaxBatchOpt = Annotated[int, typer.Option(min=1, help="most sequences per model call")]
MaxWaitOpt = Annotated[float, typer.Option(min=0.0, help="how long to gather a batch after its first request (ms)")]
RayServeOpt = Annotated[bool, typer.Option("--ray-serve", help="deploy on Ray Serve (http://HOST:PORT/policy or /value), not uvicorn")]
ReplicasOpt = Annotated[int, typer.Option(min=1, help="with --ray-serve: replicas, each with its own model and batcher")]
ReplicaCpusOpt = Annotated[float, typer.Option(min=0.01, help="with --ray-serve: CPUs Ray reserves per replica (and its model threads)")]
RayAddressOpt = Annotated[str | None, typer.Option(help="with --ray-serve: Ray cluster to join (auto, HOST:6379); default: a local one")]


def _parse_adapters(specs: list[str]) -> dict[str, str]:
    """``NAME=PATH`` options as a name -> folder map (a name given twice is a mistake, not an override)."""
    adapters: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        name, path = name.strip(), path.strip()
        if not sep or not name or not path:
            raise BackendError(f"--adapter {spec!r} is not NAME=PATH; fix: e.g. --adapter math=runs/sft")
        if name in adapters:
            raise BackendError(f"--adapter {name!r} is given twice; fix: give each adapter its own name")
        adapters[name] = path
    return adapters


def _load_with_adapters(model: str, adapters: dict[str, str], threads: int | None) -> Any:
    """A transformers backend with LoRA adapters over one base (llama.cpp cannot switch adapters per request)."""
    from x1.models.registry import load_backend, resolve_model

    spec = resolve_model(model)
    if spec.kind != "hf":
        raise BackendError(
            f"--adapter needs a transformers model, but {model!r} runs on {spec.kind}; "
            "fix: pass the base model's transformers folder, or hf:NAME / hf:FILE.gguf"
        )
    return load_backend(spec, adapters=adapters, **({"threads": threads} if threads else {}))


def _serve(kind: str, model: str, host: str, port: int, api_key: str | None, max_batch: int, max_wait_ms: float, n_ctx: int,
           threads: int | None, served_name: str | None, log_level: str, limits: dict[str, int | bool],
           adapters: list[str] | None = None) -> None:
    from x1.serve.run import check_exposure, load_serving_backend, load_value_scorer, run_app

    try:
        if adapters:
            backend = _load_with_adapters(model, _parse_adapters(adapters), threads)
        elif kind == "value":
            backend = load_value_scorer(model, n_ctx=n_ctx, n_seq_max=max(64, 2 * max_batch), threads=threads)
        else:
            backend = load_serving_backend(model, n_ctx=n_ctx, n_seq_max=max(64, 2 * max_batch), threads=threads)
    except (BackendError, ValueError) as err:
        fail(str(err))
        return
    try:
        if kind == "policy":
            from x1.serve.policy import create_policy_app

            server = create_policy_app(backend, api_key=api_key, max_batch=max_batch, max_wait_ms=max_wait_ms,
                                       model_name=served_name, **limits)
            route = "/v1/completions, /v1/chat/completions"
        else:
            from x1.serve.value import create_value_app

            server = create_value_app(backend, api_key=api_key, max_batch=max_batch, max_wait_ms=max_wait_ms,
                                      model_name=served_name, **limits)
            route = "/v1/score"
        if warning := check_exposure(host, api_key):
            err_console.print(f"[bold yellow]warning:[/] {warning}")
        err_console.print(f"x1 {kind} server: {served_name or backend.name} at http://{host}:{port}/v1 ({route}; /health, /metrics)")
        if adapters:
            err_console.print(f"LoRA adapters (the request's model field picks one): {', '.join(getattr(backend, 'adapters', {}))}")
        run_app(server, host, port, log_level)
    except BackendError as err:
        fail(str(err))
    finally:
        backend.close()


def _serve_ray(kind: str, model: str, host: str, port: int, api_key: str | None, max_batch: int,
               max_wait_ms: float, n_ctx: int, threads: int | None, served_name: str | None, limits: dict[str, int | bool], replicas: int,
               replica_cpus: float, address: str | None) -> None:
    """`--ray-serve`: the same app on Ray Serve replicas; blocks until Ctrl-C, then removes the deployment."""
    from x1.serve.ray_serve import RayServeError, ReplicaSpec, deploy, wait_for_interrupt
    from x1.serve.run import check_exposure

    # Each replica's model gets the CPUs Ray reserves for it, not all of the node's (replicas would fight over them).
    spec = ReplicaSpec(kind, model, api_key=api_key, max_batch=max_batch, max_wait_ms=max_wait_ms, n_ctx=n_ctx,
                       threads=threads or max(1, int(replica_cpus)), served_name=served_name, limits=limits)
    if warning := check_exposure(host, api_key):
        err_console.print(f"[bold yellow]warning:[/] {warning}")
    err_console.print(f"deploying the x1 {kind} app on Ray Serve: {replicas} replica(s) of {model} ...")
    try:
        running = deploy(spec, replicas=replicas, num_cpus=replica_cpus, host=host, port=port, address=address)
    except (RayServeError, BackendError, ValueError) as err:
        fail(str(err))
        return
    route = "/v1/completions, /v1/chat/completions" if kind == "policy" else "/v1/score"
    err_console.print(f"x1 {kind} server on Ray Serve: {served_name or model} at {running.url}/v1 ({route}; /health, /metrics)")
    err_console.print("Ctrl-C removes the deployment")
    try:
        wait_for_interrupt()
    finally:
        err_console.print(f"removing the x1 {kind} deployment")
        running.shutdown()


@serve_app.command("policy")
def serve_policy(
    model: ModelOpt = DEFAULT_MODEL,
    host: HostOpt = "127.0.0.1",
    port: int = 8000,
    api_key: ApiKeyOpt = None,
    max_batch: MaxBatchOpt = 32,
    max_wait_ms: MaxWaitOpt = 5.0,
    max_prompt_chars: Annotated[int, typer.Option(min=1, help="longest prompt accepted (characters); longer ones get 413")] = 65536,
    max_tokens_limit: Annotated[int, typer.Option(min=1, help="largest max_tokens accepted; larger gets 400")] = 4096,
    n_ctx: Annotated[int, typer.Option(min=256, help="llama.cpp context size (tokens, shared by the batch)")] = 32768,
    threads: Annotated[int | None, typer.Option(help="CPU threads for the model (default: all)")] = None,
    served_name: Annotated[str | None, typer.Option(help="model id clients send (default: the model's name)")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
    ray_serve: RayServeOpt = False,
    replicas: ReplicasOpt = 1,
    replica_cpus: ReplicaCpusOpt = 1.0,
    address: RayAddressOpt = None,
    adapter: Annotated[list[str] | None, typer.Option(
        "--adapter", help="NAME=PATH: a LoRA adapter folder served over the same base, picked by the request's model field; "
        "repeatable; transformers models only")] = None,
    continuous: Annotated[bool, typer.Option(
        "--continuous/--gather", help="continuous: requests join the running decode each token step (llama.cpp); "
        "gather: wait --max-wait-ms, then decode the gathered batch to the end")] = True,
) -> None:
    """OpenAI-compatible completions and chat for a policy model, with dynamic batching."""
    limits = {"max_prompt_chars": max_prompt_chars, "max_tokens_limit": max_tokens_limit, "continuous": continuous}
    if ray_serve and adapter:
        fail("--adapter is not supported with --ray-serve yet; fix: serve the adapters with uvicorn (drop --ray-serve)")
    if ray_serve:
        _serve_ray("policy", model, host, port, api_key, max_batch, max_wait_ms, n_ctx, threads, served_name, limits, replicas,
                   replica_cpus, address)
        return
    _serve("policy", model, host, port, api_key, max_batch, max_wait_ms, n_ctx, threads, served_name, log_level, limits, adapter)


ValueModelOpt = Annotated[str, typer.Option(
    "--model", "-m", help="a trained evaluator: value:DIR, prm:DIR, orm:DIR or a folder from `x1 fit value|prm|orm` (served with "
    "its head); or any policy model (bundled name, .gguf, folder), scored by mean token probability")]


@serve_app.command("value")
def serve_value(
    model: ValueModelOpt = DEFAULT_MODEL,
    host: HostOpt = "127.0.0.1",
    port: int = 8001,
    api_key: ApiKeyOpt = None,
    max_batch: MaxBatchOpt = 32,
    max_wait_ms: MaxWaitOpt = 5.0,
    max_prompt_chars: Annotated[int, typer.Option(min=1, help="longest prompt + continuation accepted (characters)")] = 65536,
    n_ctx: Annotated[int, typer.Option(min=256, help="llama.cpp context size (tokens, shared by the batch)")] = 32768,
    threads: Annotated[int | None, typer.Option(help="CPU threads for the model (default: all)")] = None,
    served_name: Annotated[str | None, typer.Option(help="model id clients send (default: the model's name)")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
    ray_serve: RayServeOpt = False,
    replicas: ReplicasOpt = 1,
    replica_cpus: ReplicaCpusOpt = 1.0,
    address: RayAddressOpt = None,
) -> None:
    """POST /v1/score: scores in [0, 1] for reasoning paths, from a trained value model / PRM / ORM or a policy's token probabilities."""
    if ray_serve:
        _serve_ray("value", model, host, port, api_key, max_batch, max_wait_ms, n_ctx, threads, served_name,
                   {"max_prompt_chars": max_prompt_chars}, replicas, replica_cpus, address)
        return
    _serve("value", model, host, port, api_key, max_batch, max_wait_ms, n_ctx, threads, served_name, log_level,
           {"max_prompt_chars": max_prompt_chars})


data_app = typer.Typer(no_args_is_help=True, help="Training data from traces: SFT, preference pairs, process labels, value targets.")
app.add_typer(data_app, name="data")
app.add_typer(fit_app, name="fit")
app.command("view")(view_command)
app.command("report")(report_command)
app.command("scale")(scale_command)

TracesOpt = Annotated[list[Path], typer.Option("--traces", help="trace file(s) (JSONL) written by x1 solve / x1 eval; repeatable")]
DataOutOpt = Annotated[Path, typer.Option("--out", help="where to write the records (JSONL)")]
FormatOpt = Annotated[str, typer.Option(
    "--format", help="trl: the rows TRL's trainers and datasets read (x1 fit reads them too); x1: x1's richer rows (q values, task ids)")]
StepFormatOpt = Annotated[bool | None, typer.Option(
    "--step-format/--raw-steps", help="x1 format: join steps with the <eois> marker (x1 fit adds it as a token); "
    "trl format keeps the policy's own step text [default: step format for x1, raw for trl]")]


def _check_format(fmt: str, step_format: bool | None) -> bool:
    """The step format to extract with: x1 rows default to <eois>; TRL rows never carry the literal marker."""
    from x1.data.formats import FORMATS

    if fmt not in FORMATS:
        fail(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt == "trl" and step_format:
        fail("--step-format writes the <eois> marker, which a stock tokenizer splits into pieces, so TRL rows keep the policy's "
             "own step text; fix: drop --step-format, or use --format x1 (x1 fit sft --config with eois_token: true adds the token)")
    return fmt == "x1" if step_format is None else step_format


def _write_data(traces: list[Path], out: Path, what: str, extract, fmt: str = "x1",  # type: ignore[no-untyped-def]
                check=None) -> None:  # type: ignore[no-untyped-def]
    """Read every trace, extract, write; one-line errors; refuse (and write nothing) when nothing qualifies."""
    from x1.data import load_records, write_jsonl
    from x1.data.formats import NOTHING_WRITTEN, FormatError, to_trl
    from x1.trace import TraceError

    try:
        records = load_records(traces)
        if check is not None:
            check(records)
        items = list(extract(records))
        if not items:
            fail(f"nothing to write: {len(records)} trace records give no {what} ({NOTHING_WRITTEN[what]}); no file was written")
        n = write_jsonl(out, to_trl(items) if fmt == "trl" else items)
    except (TraceError, FormatError, ValueError, KeyError) as err:
        fail(str(err) if not isinstance(err, KeyError) else f"a trace record lacks the field {err}; is it an x1 trace?")
        return
    console.print(f"wrote {n} {what} ({fmt} rows) from {len(records)} trace records to {out}")


@data_app.command("sft")
def data_sft(
    traces: TracesOpt,
    out: DataOutOpt,
    min_score: Annotated[float, typer.Option(help="keep records whose verdict reaches this score")] = 1.0,
    all_correct_paths: Annotated[bool, typer.Option(help="also every other correct terminal path in the graphs")] = False,
    step_format: StepFormatOpt = None,
    fmt: FormatOpt = "trl",
) -> None:
    """Rejection sampling: verified-correct paths as SFT examples (TRL prompt/completion messages by default)."""
    from x1.data import sft_examples

    steps = _check_format(fmt, step_format)
    _write_data(traces, out, "SFT examples", lambda r: sft_examples(r, min_score, all_correct_paths, steps), fmt)


@data_app.command("pairs")
def data_pairs(
    traces: TracesOpt,
    out: DataOutOpt,
    min_gap: Annotated[float, typer.Option(help="smallest q difference between chosen and rejected")] = 0.2,
    outcome: Annotated[bool, typer.Option(help="also correct-vs-incorrect whole solutions of a task")] = True,
    step: Annotated[bool, typer.Option(help="sibling steps ranked by q (needs verified or evaluator-scored traces)")] = True,
    max_per_parent: Annotated[int | None, typer.Option(help="at most this many step pairs per parent")] = None,
    allow_unverified: Annotated[bool, typer.Option(
        help="rank steps of traces run without -p training=true and without an evaluator by the policy's own confidence")] = False,
    fmt: FormatOpt = "trl",
) -> None:
    """Preference pairs (DPO): sibling steps by q, and correct vs incorrect solutions (TRL prompt/chosen/rejected by default)."""
    from x1.data import preference_pairs
    from x1.data.formats import unverified

    _check_format(fmt, None)

    def check(records: list[dict[str, Any]]) -> None:
        weak = unverified(records) if step and not allow_unverified else []
        if weak and (n := len(preference_pairs(weak, min_gap, outcome=False, max_per_parent=max_per_parent))):
            fail(f"{n} step pairs of {len(weak)} trace records would be ranked by the policy's own confidence (run without "
                 "-p training=true and without an evaluator), so a wrong step can become 'chosen'; fix: re-run with "
                 "-p training=true or -p evaluator=SPEC, or pass --no-step (outcome pairs only) or --allow-unverified")

    _write_data(traces, out, "preference pairs", lambda r: preference_pairs(r, min_gap, outcome, max_per_parent, step=step), fmt, check)


@data_app.command("process")
def data_process(
    traces: TracesOpt,
    out: DataOutOpt,
    hard: Annotated[bool, typer.Option(help="1 if any rollout below a step is correct (else the fraction)")] = False,
    fmt: FormatOpt = "trl",
) -> None:
    """Monte-Carlo process labels for a process reward model (TRL stepwise supervision by default: a label is true at >= 0.5)."""
    from x1.data import process_labels

    _check_format(fmt, None)
    _write_data(traces, out, "labelled paths", lambda r: process_labels(r, hard=hard), fmt)


@data_app.command("values")
def data_values(
    traces: TracesOpt,
    out: DataOutOpt,
    source: Annotated[str, typer.Option(help="mcts (backed-up q) or mc (discounted terminal rewards)")] = "mcts",
    gamma: Annotated[float, typer.Option(help="discount per step for --source mc")] = 0.96,
    min_visits: Annotated[int, typer.Option(help="for --source mcts: skip thoughts visited fewer times")] = 1,
) -> None:
    """Value-model targets in [-1, 1] for every labelled partial solution (x1 rows: TRL has no value-model shape)."""
    from x1.data import value_targets

    if source not in ("mcts", "mc"):
        fail(f"--source {source!r}: choose one of mcts, mc")
    _write_data(traces, out, "value targets", lambda r: value_targets(r, gamma, source, min_visits))  # type: ignore[arg-type]


@data_app.command("journey")
def data_journey(
    traces: TracesOpt,
    out: DataOutOpt,
    min_score: Annotated[float, typer.Option(help="keep records whose verdict reaches this score")] = 1.0,
    step_format: StepFormatOpt = None,
    whole_trace: Annotated[bool, typer.Option(help="the whole search graph as text instead of one journey chain")] = False,
    fmt: FormatOpt = "trl",
) -> None:
    """Trace-based SFT: searches flattened with their dead ends and backtracks (journey learning)."""
    from x1.data import journey_chains, trace_samples

    steps = _check_format(fmt, step_format)
    if whole_trace:
        _write_data(traces, out, "trace samples", lambda r: trace_samples(r, min_score), fmt)
    else:
        _write_data(traces, out, "journey chains", lambda r: journey_chains(r, min_score, steps), fmt)


@app.command()
def train(config: Annotated[Path, typer.Argument(help="recipe YAML (see examples/recipe-smollm2.yaml)")]) -> None:
    """The two-phase training recipe: SFT + value model, then MCTS rounds. Re-run to resume."""
    from x1.pipelines.recipe import RecipeConfig, RecipeError, metrics_table, run_recipe
    from x1.tasks.base import TaskError

    try:
        cfg = RecipeConfig.from_yaml(config)
        result = run_recipe(cfg, log=lambda message: err_console.print(f"[dim]{message}[/]"))
    except (BackendError, ConfigError, RecipeError, TaskError, ValueError, OSError) as err:
        fail(str(err))
        return
    console.print(metrics_table(result.metrics))
    console.print(f"metrics: {result.metrics_path}  state: {result.output_dir / 'state.json'}")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
