"""The inference pipeline: tasks in, outcomes and a trace out. `x1 solve`, `x1 demo` and
`x1 eval` are all this function with different task lists."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from x1 import __version__
from x1.config import DEFAULT_TEMPERATURE, ConfigError, RunConfig
from x1.engine import Budget, Engine, Outcome, Sampling
from x1.evaluators.base import Evaluator
from x1.evaluators.spec import build_evaluators_for, oracle_reason, parse_evaluator, resolve_value_alias, specs_in
from x1.models.base import Backend
from x1.models.registry import load_backend, resolve_model
from x1.strategies import Problem, Strategy, build_strategy
from x1.tasks.base import Task
from x1.trace import write_record


@dataclass
class RunSummary:
    outcomes: list[Outcome]
    wall_s: float
    policy_calls: int
    prompt_tokens: int
    generated_tokens: int

    @property
    def accuracy(self) -> float:
        return sum(o.correct for o in self.outcomes) / len(self.outcomes) if self.outcomes else 0.0


def open_policy(config: RunConfig, device: str | None = None) -> Backend:
    """The policy backend the config names; ``device`` places a transformers model (the recipe trains on one)."""
    spec = resolve_model(config.model.name, config.model.model_name)
    options: dict[str, Any] = {}
    if spec.kind == "llamacpp":
        options = {"n_ctx": config.model.n_ctx, "n_seq_max": config.model.n_seq_max}
        if config.model.kv_stream_cells:
            options.update(n_ctx=config.model.n_seq_max * config.model.kv_stream_cells, kv_streams=True)
        if config.model.threads:
            options["n_threads"] = config.model.threads
    elif spec.kind == "hf":
        options = {"threads": config.model.threads} if config.model.threads else {}
        if device:
            options["device"] = device
    elif spec.kind == "openai":
        options = {"timeout": config.model.timeout, "chat_template": config.model.chat_template}
    return load_backend(spec, **options)


def apply_temperature(config: RunConfig) -> None:
    """One precedence rule: a temperature the user gave (``--temperature`` or the YAML's ``search.temperature``)
    wins over the strategy's default, as ``-p temperature=`` does; giving both with different values is refused."""
    from dataclasses import fields

    from x1.strategies import STRATEGIES

    search = config.search
    cls = STRATEGIES.get(search.strategy)
    if search.temperature is None or cls is None or "temperature" not in {f.name for f in fields(cls)}:  # type: ignore[arg-type]
        return
    given = search.params.get("temperature")
    if isinstance(given, int | float) and float(given) != search.temperature:
        raise ConfigError(f"--temperature {search.temperature:g} and -p temperature={given} disagree; fix: give one of them")
    search.params["temperature"] = search.temperature


def check_search(config: RunConfig) -> Strategy:
    """The strategy, with every parameter and every evaluator it names checked, before any model loads.

    ``evaluator=value`` with a value URL is rewritten to ``remote:URL`` in the config, so traces name the server.
    """
    config.search.params = resolve_value_alias(config.search.params, config.search.value_url)
    apply_temperature(config)
    strategy = build_strategy(config.search.strategy, **config.search.params)
    config.search.params = {k: getattr(strategy, k) for k in config.search.params}  # typed: "1e-3" -> 0.001
    for text in specs_in(strategy.config()):
        parse_evaluator(text, config.search.value_url)
    return strategy


def open_evaluators(strategy: Strategy, policy: Backend, config: RunConfig, device: str | None = None) -> dict[str, Evaluator]:
    """Every evaluator the strategy names, loaded once each (trained models included)."""
    return build_evaluators_for(specs_in(strategy.config()), policy, value_url=config.search.value_url, timeout=config.model.timeout,
                                device=device)


def run_tasks(
    tasks: list[Task],
    config: RunConfig,
    policy: Backend | None = None,
    trace_path: Path | None = None,
    checkpoint_path: Path | None = None,
    on_done: Callable[[Outcome], None] | None = None,
    on_tick: Callable[[int, list[Problem]], None] | None = None,
    device: str | None = None,
) -> RunSummary:
    """Run one strategy over ``tasks``, batched across them; append a trace record per finished task."""
    strategy = check_search(config)
    step = config.search.step
    if step.delimiter or step.max_step_tokens or step.max_steps:
        tasks = [replace(t, step_format=step.apply(t.step_format)) for t in tasks]
    policy = policy or open_policy(config)
    b = config.search.budget
    evaluators = open_evaluators(strategy, policy, config, device)
    engine = Engine(
        policy=policy,
        evaluators=evaluators,
        budget=Budget(b.max_tokens, b.max_policy_calls, b.max_nodes, b.max_seconds),
        sampling=Sampling(DEFAULT_TEMPERATURE if config.search.temperature is None else config.search.temperature, config.search.top_p),
        seed=config.search.seed,
        checkpoint_path=checkpoint_path,
        checkpoint_interval_s=5.0,  # an interrupt loses at most the last 5 s of search
        on_tick=on_tick,
        max_active=config.search.max_active,
        max_live=config.search.max_live,
    )
    header = {
        "x1_version": __version__,
        "model": policy.name,
        "strategy": strategy.name,
        "strategy_config": strategy.config(),
        "seed": config.search.seed,
        "oracle": oracle_reason(strategy.config()),
    }
    trace_fh = trace_path.open("a") if trace_path else None

    def finished(outcome: Outcome) -> None:
        if trace_fh:
            write_record(trace_fh, {**header, **outcome.to_record()})
        if on_done:
            on_done(outcome)

    engine.on_done = finished
    start = time.perf_counter()
    calls0, prompt0, gen0 = policy.stats.calls, policy.stats.prompt_tokens, policy.stats.generated_tokens
    try:
        outcomes = engine.run(tasks, strategy)
    finally:
        if trace_fh:
            trace_fh.close()
        for evaluator in evaluators.values():
            close = getattr(evaluator, "close", None)
            if callable(close):
                close()
    return RunSummary(
        outcomes=outcomes,
        wall_s=time.perf_counter() - start,
        policy_calls=policy.stats.calls - calls0,
        prompt_tokens=policy.stats.prompt_tokens - prompt0,
        generated_tokens=policy.stats.generated_tokens - gen0,
    )
