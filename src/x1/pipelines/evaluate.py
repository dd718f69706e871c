"""The evaluation pipeline: a data set through the engine, with an honest error bar.

A run directory holds ``traces.jsonl`` (one record per finished problem, written as soon as
it finishes), ``checkpoint.jsonl`` (graphs of problems still in flight) and ``results.json``.
``resume`` reads the finished task ids back from the trace and runs only the rest, so an
interrupted run loses at most the in-flight ticks and never runs a problem twice.
"""

from __future__ import annotations

import gc
import json
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from x1.config import RunConfig
from x1.engine import Outcome
from x1.evaluators.spec import oracle_reason
from x1.models.base import Backend
from x1.pipelines.run_clock import RunClock
from x1.pipelines.rundir import RunDirError, atomic_write_text, check_identity, check_out_dir, finished_records, run_identity
from x1.pipelines.solve import open_policy, run_tasks
from x1.strategies import Problem
from x1.tasks.base import Task
from x1.trace import read_traces

EvalError = RunDirError  # one error class for everything wrong with a run directory or its inputs


@dataclass
class GroupResult:
    """Accuracy of one slice of the tasks: a level (all types), a type (all levels), or both."""

    type: str | None  # None: every type together
    level: int | None  # None: every level together
    n: int
    correct: int
    accuracy: float


@dataclass
class EvalResult:
    task: str
    strategy: str
    model: str
    n: int
    correct: int
    accuracy: float
    ci_low: float
    ci_high: float
    mean_score: float
    prompt_tokens: int
    generated_tokens: int
    policy_calls: int
    wall_s: float  # every session of the run, including time the machine spent on other jobs
    resumed: int  # problems taken from an earlier, interrupted run
    oracle: str | None = None  # why gold answers guided the search (verifier evaluator, training mode), if they did
    by_level: list[GroupResult] = field(default_factory=list)  # empty unless the tasks carry a level
    cpu_s: float | None = None  # this run's own CPU seconds, all sessions (None when some session went uncounted)
    # positions trained evaluators ran for these problems (None when some record predates the count)
    evaluator_tokens: int | None = None


def bootstrap_ci(values: list[float], confidence: float = 0.95, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean; (0, 0) for no data."""
    if not values:
        return 0.0, 0.0
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(resamples))
    lo = means[int((1 - confidence) / 2 * resamples)]
    hi = means[min(resamples - 1, int((1 + confidence) / 2 * resamples))]
    return lo, hi


def summarize(records: list[dict], task: str, strategy: str, model: str, wall_s: float, resumed: int,
              cpu_s: float | None = None) -> EvalResult:
    correct = [1.0 if r["correct"] else 0.0 for r in records]
    lo, hi = bootstrap_ci(correct)
    return EvalResult(
        task=task,
        strategy=strategy,
        model=model,
        n=len(records),
        correct=int(sum(correct)),
        accuracy=sum(correct) / len(correct) if correct else 0.0,
        ci_low=lo,
        ci_high=hi,
        mean_score=sum(r["score"] for r in records) / len(records) if records else 0.0,
        prompt_tokens=sum(r["compute"]["prompt_tokens"] for r in records),
        generated_tokens=sum(r["compute"]["generated_tokens"] for r in records),
        policy_calls=sum(r["compute"]["policy_calls"] for r in records),
        wall_s=wall_s,
        resumed=resumed,
        cpu_s=cpu_s,
        evaluator_tokens=sum_evaluator_tokens(records),
    )


def evaluator_tokens_of(compute: dict) -> int | None:
    """A record's evaluator positions, None where unknown: an evaluator that does not count them (a remote server) was
    called, or the record predates the count and some evaluator was called (with none called, it is 0)."""
    if "evaluator_tokens" in compute:
        return None if compute["evaluator_tokens"] is None else int(compute["evaluator_tokens"])
    return 0 if not compute.get("evaluator_calls") else None


def sum_evaluator_tokens(records: list[dict]) -> int | None:
    counts = [evaluator_tokens_of(r["compute"]) for r in records]
    return None if any(c is None for c in counts) else sum(c for c in counts if c is not None)


def by_level(records: list[dict], tasks: list[Task]) -> list[GroupResult]:
    """Accuracy per level, and per type and per (type, level) when the tasks mix types.

    Levels and types come from the tasks' meta (the trace records carry a copy), so a trace
    written before records carried them still breaks down.
    """
    meta = {t.id: t.meta for t in tasks}
    tally: dict[tuple[str | None, int | None], list[int]] = defaultdict(lambda: [0, 0])
    types = {meta[r["task_id"]].get("type") for r in records if r["task_id"] in meta}
    for record in records:
        info = meta.get(record["task_id"], {})
        level, kind = info.get("level"), info.get("type")
        if level is None:
            continue
        keys = [(None, level)] + ([(kind, None), (kind, level)] if len(types) > 1 else [])
        for key in keys:
            tally[key][0] += 1
            tally[key][1] += bool(record["correct"])
    order = sorted(tally, key=lambda key: (key[0] is not None, key[0] or "", key[1] is not None, key[1] or 0))
    groups = []
    for kind, level in order:
        n, correct = tally[(kind, level)]
        groups.append(GroupResult(kind, level, n, correct, correct / n))
    return groups


def level_table(groups: list[GroupResult]) -> object:
    """The breakdown as a rich table: one row per level, then per type and its levels when mixed."""
    from rich.table import Table

    table = Table("type", "level", "n", "correct", "accuracy", title="accuracy by level")
    for g in groups:
        table.add_row(g.type or "all", "all" if g.level is None else str(g.level), str(g.n), str(g.correct), f"{g.accuracy:.1%}")
    return table


def open_run(tasks: list[Task], config: RunConfig, out_dir: Path, resume: bool, task_spec: str | None = None) -> tuple[list[Task], int]:
    """Check the run directory (writable, same run identity on resume, every finished record whole);
    the tasks still to run, and how many of ``tasks`` an earlier run finished."""
    if not tasks:
        raise EvalError("no problems to run; fix: check that the task source has records and that --n is at least 1")
    check_out_dir(out_dir)
    trace_path = out_dir / "traces.jsonl"
    checkpoint = out_dir / "checkpoint.jsonl"
    if not resume and (trace_path.exists() or checkpoint.exists()):
        raise EvalError(f"{out_dir} already holds a run; fix: pass --resume to continue it, or choose another --out")
    if task_spec is not None:
        check_identity(out_dir, run_identity(config, task_spec), resume)
    done = finished_records(trace_path, config.search.strategy) if resume else {}
    if not resume:
        checkpoint.unlink(missing_ok=True)
    return [t for t in tasks if t.id not in done], len(done.keys() & {t.id for t in tasks})


def read_results(out_dir: Path) -> EvalResult | None:
    """The summary a finished run wrote (results.json), or None when there is none or it is unreadable."""
    try:
        data = json.loads((out_dir / "results.json").read_text())
        data["by_level"] = [GroupResult(**g) for g in data.get("by_level", [])]
        return EvalResult(**{f.name: data[f.name] for f in fields(EvalResult) if f.name in data})
    except (OSError, ValueError, TypeError, KeyError):
        return None


def write_results(
    tasks: list[Task], config: RunConfig, out_dir: Path, task_spec: str, model_name: str, clock: RunClock, resumed: int
) -> EvalResult:
    """Summarize the trace into results.json, in task order: the interval must not depend on which problem finished first."""
    trace_path = out_dir / "traces.jsonl"
    (out_dir / "checkpoint.jsonl").unlink(missing_ok=True)
    ids = {t.id for t in tasks}
    by_id = {r["task_id"]: r for r in read_traces(trace_path) if r["task_id"] in ids} if trace_path.exists() else {}
    records = [by_id[t.id] for t in tasks if t.id in by_id]
    elapsed = clock.record()
    result = summarize(records, task_spec, config.search.strategy, model_name, elapsed.wall_s, resumed, elapsed.cpu_s)
    result.oracle = oracle_reason(config.search.params)
    result.by_level = by_level(records, tasks)
    atomic_write_text(out_dir / "results.json", json.dumps({**asdict(result), "config": config.model_dump()}, indent=2))
    return result


def evaluate(
    tasks: list[Task],
    config: RunConfig,
    out_dir: Path,
    task_spec: str,
    resume: bool = False,
    policy: Backend | None = None,
    on_done: Callable[[Outcome], None] | None = None,
    on_tick: Callable[[int, list[Problem]], None] | None = None,
    on_skip: Callable[[int], None] | None = None,
    device: str | None = None,
    bind_identity: bool = True,
) -> EvalResult:
    """Run ``tasks`` into ``out_dir`` (traces, checkpoint, results.json), resuming an earlier run when asked.

    A policy this call opens itself is closed at the end, so a caller that trains between evaluations
    (the recipe) gets its memory back. ``bind_identity=False`` skips ``run.json``: the recipe binds its
    whole folder once, and each search inside follows from it.
    """
    todo, resumed = open_run(tasks, config, out_dir, resume, task_spec if bind_identity else None)
    if on_skip:
        on_skip(resumed)
    if not todo and resume:
        finished = read_results(out_dir)
        if finished is not None and finished.n == len(tasks):
            return finished  # nothing ran: its results, wall and CPU seconds stay as the run that finished it wrote them
    clock = RunClock(out_dir, resume)
    model_name = config.model.name

    def tick(n: int, problems: list[Problem]) -> None:
        clock.record()
        if on_tick:
            on_tick(n, problems)

    if todo:
        opened = policy is None
        policy = policy or open_policy(config, device)
        model_name = policy.name
        try:
            run_tasks(todo, config, policy=policy, trace_path=out_dir / "traces.jsonl", checkpoint_path=out_dir / "checkpoint.jsonl",
                      on_done=on_done, on_tick=tick, device=device)
        finally:
            if opened:
                policy.close()
                gc.collect()
    return write_results(tasks, config, out_dir, task_spec, model_name, clock, resumed)
