"""Engine speed, side by side in one run.

    python benchmarks/engine.py [--skip-model] [--problems 32] [--model default]

(a) engine overhead alone: MCTS node expansions per second on the zero-latency fake backend
    (target ≥ 20,000/s on a 2-core machine);
(b) MCTS on the bundled model over N problems, one problem at a time versus all batched, in
    lock-step ticks and with continuous batching: the wall-time ratio (target ≥ 3×) and prompt
    tokens re-prefilled per generated token (target ≤ 0.1).
"""

from __future__ import annotations

import argparse
import sys
import time

from rich.console import Console
from rich.table import Table

from x1.engine import Engine
from x1.evaluators.simple import ConfidenceEvaluator
from x1.models.fake import FakeBackend
from x1.strategies.mcts import MCTS
from x1.tasks.answers import numbers_equal
from x1.tasks.base import StepFormat, Task, Verification

console = Console()


def fake_tasks(n: int) -> list[Task]:
    return [
        Task(f"t{i}", f"question {i}", "1", lambda a, g: Verification(float(numbers_equal(a, g))), step_format=StepFormat(max_steps=40))
        for i in range(n)
    ]


def engine_overhead() -> tuple[int, float]:
    fake = FakeBackend(steps_to_answer=30)
    engine = Engine(fake, {"confidence": ConfidenceEvaluator()})
    start = time.perf_counter()
    outcomes = engine.run(fake_tasks(64), MCTS(iterations=64, expand=3, parallel=4))
    wall = time.perf_counter() - start
    expansions = sum(len(o.graph) - 1 for o in outcomes)
    return expansions, wall


def distinct_prefix_tokens(prompts: list[list[int]]) -> int:
    """Nodes of the prompts' token trie: the fewest tokens any prefix cache must evaluate."""
    seen: set[tuple[int, ...]] = set()
    for tokens in prompts:
        for end in range(1, len(tokens) + 1):
            seen.add(tuple(tokens[:end]))
    return len(seen)


def batch_ceiling(backend, prompt: str, small: int, large: int, max_tokens: int = 48) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Decode tokens/s with ``small`` and with ``large`` sequences (one prompt, prefilled once).

    Their ratio is the most any batching can win on this machine for this model.
    """
    from x1.models.base import GenerationRequest

    rates = []
    for n in (small, large):
        backend.clear_cache()
        backend.generate([GenerationRequest(prompt, max_tokens=1, temperature=0.0)])  # prefill outside the clock
        gen0, start = backend.stats.generated_tokens, time.perf_counter()
        backend.generate([GenerationRequest(prompt, n=n, max_tokens=max_tokens, temperature=1.0, seed=0)])
        rates.append((backend.stats.generated_tokens - gen0) / (time.perf_counter() - start))
    return rates[0], rates[1]


def model_run(backend, tasks, batched: bool, strategy: MCTS, continuous: bool = True) -> tuple[float, int, int, int, int]:  # type: ignore[no-untyped-def]
    """Wall time, prefilled, re-prefilled and generated tokens, and correct answers.

    Re-prefilled = prefilled minus the prompts' tokens evaluated once (shared prefixes such as
    the system prompt counted once): what was evaluated again, or evaluated at all only
    because a step's last sampled token had not been decoded yet.
    """
    backend.clear_cache()
    prompt0, gen0 = backend.stats.prompt_tokens, backend.stats.generated_tokens
    start = time.perf_counter()
    outcomes = []
    groups = [tasks] if batched else [[t] for t in tasks]
    for group in groups:
        engine = Engine(backend, {"confidence": ConfidenceEvaluator()}, seed=0, continuous=continuous)
        outcomes += engine.run(group, strategy)
    wall = time.perf_counter() - start
    prefilled = backend.stats.prompt_tokens - prompt0
    first_time = distinct_prefix_tokens([backend.tokenize(o.graph.meta["prefix"]) for o in outcomes])
    correct = sum(o.correct for o in outcomes)
    return wall, prefilled, prefilled - first_time, backend.stats.generated_tokens - gen0, correct


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-model", action="store_true")
    parser.add_argument("--problems", type=int, default=32)
    parser.add_argument("--model", default="default")
    parser.add_argument("--iterations", type=int, default=3)
    args = parser.parse_args()

    runs = sorted((engine_overhead() for _ in range(5)), key=lambda r: r[1])
    expansions, wall = runs[len(runs) // 2]  # the median of 5 runs: one run is under a second
    table = Table("measure", "value", "target", title="(a) engine overhead, zero-latency fake backend")
    table.add_row("MCTS node expansions / s", f"{expansions / wall:,.0f}", "≥ 20,000")
    table.add_row("expansions, wall (median of 5 runs)", f"{expansions:,} in {wall:.2f}s", "")
    console.print(table)
    if args.skip_model:
        return 0

    from x1.models.llamacpp import LlamaCppBackend
    from x1.models.registry import resolve_model
    from x1.tasks.registry import load_tasks

    spec = resolve_model(args.model)
    # 256 slots: every tree node of every problem keeps its KV cells, so an expansion reuses its path.
    backend = LlamaCppBackend(spec.location, n_ctx=32768, n_seq_max=256)
    tasks = load_tasks("rg:gsm_symbolic", n=args.problems, seed=0)
    for t in tasks:
        t.step_format = StepFormat(delimiter="\n\n", max_step_tokens=64, max_steps=6)
    strategy = MCTS(iterations=args.iterations, expand=2)
    rows = {
        "one at a time": model_run(backend, tasks, batched=False, strategy=strategy),
        "lock-step batched": model_run(backend, tasks, batched=True, strategy=strategy, continuous=False),
        "continuous batched": model_run(backend, tasks, batched=True, strategy=strategy),
    }
    title = f"(b) MCTS (iterations {args.iterations}, expand 2) on {spec.name}, {len(tasks)} problems"
    table = Table("mode", "wall s", "generated", "prefilled", "re-prefilled", "re-prefilled / generated", "correct", title=title)
    for mode, (wall, prefilled, again, generated, ok) in rows.items():
        table.add_row(mode, f"{wall:.0f}", str(generated), str(prefilled), str(again), f"{again / max(generated, 1):.3f}", str(ok))
    for mode in ("lock-step batched", "continuous batched"):
        speedup = rows["one at a time"][0] / rows[mode][0]
        table.add_row(f"speed-up, {mode}", f"{speedup:.2f}× (target ≥ 3×)", "", "", "", "target ≤ 0.1", "")
    console.print(table)
    width = 2 * len(tasks)
    low, high = batch_ceiling(backend, tasks[0].question, small=2, large=width)
    console.print(
        f"batching ceiling on this machine: {high:.1f} tok/s with {width} sequences vs {low:.1f} with 2 "
        f"= {high / low:.2f}× (the largest speed-up any batching of this model can give here)"
    )
    backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
