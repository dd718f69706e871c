"""The inference pipeline: tasks in, outcomes and a trace out. `x1 solve`, `x1 demo` and
`x1 eval` are all this function with different task lists."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from x1 import __version__
from x1.config import RunConfig
from x1.engine import Budget, Engine, Outcome, Sampling
from x1.evaluators import build_evaluators
from x1.evaluators.remote import RemoteValueEvaluator
from x1.models.base import Backend
from x1.models.registry import load_backend, resolve_model
from x1.strategies import Problem, build_strategy
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


def open_policy(config: RunConfig) -> Backend:
    spec = resolve_model(config.model.name, config.model.model_name)
    options: dict[str, Any] = {}
    if spec.kind == "llamacpp":
        options = {"n_ctx": config.model.n_ctx, "n_seq_max": config.model.n_seq_max}
    elif spec.kind == "openai":
        options = {"timeout": config.model.timeout}
    return load_backend(spec, **options)


def run_tasks(
    tasks: list[Task],
    config: RunConfig,
    policy: Backend | None = None,
    trace_path: Path | None = None,
    checkpoint_path: Path | None = None,
    on_done: Callable[[Outcome], None] | None = None,
    on_tick: Callable[[int, list[Problem]], None] | None = None,
) -> RunSummary:
    """Run one strategy over ``tasks``, batched across them; append a trace record per finished task."""
    policy = policy or open_policy(config)
    strategy = build_strategy(config.search.strategy, **config.search.params)
    b = config.search.budget
    evaluators = build_evaluators(policy)
    remote_value = RemoteValueEvaluator(config.search.value_url, timeout=config.model.timeout) if config.search.value_url else None
    if remote_value is not None:
        evaluators["value"] = remote_value  # strategies pick it with evaluator=value
    engine = Engine(
        policy=policy,
        evaluators=evaluators,
        budget=Budget(b.max_tokens, b.max_policy_calls, b.max_nodes, b.max_seconds),
        sampling=Sampling(config.search.temperature, config.search.top_p),
        seed=config.search.seed,
        checkpoint_path=checkpoint_path,
        checkpoint_interval_s=5.0,  # an interrupt loses at most the last 5 s of search
        on_tick=on_tick,
        max_active=config.search.max_active,
    )
    header = {
        "x1_version": __version__,
        "model": policy.name,
        "strategy": strategy.name,
        "strategy_config": strategy.config(),
        "seed": config.search.seed,
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
        if remote_value is not None:
            remote_value.close()
    return RunSummary(
        outcomes=outcomes,
        wall_s=time.perf_counter() - start,
        policy_calls=policy.stats.calls - calls0,
        prompt_tokens=policy.stats.prompt_tokens - prompt0,
        generated_tokens=policy.stats.generated_tokens - gen0,
    )
