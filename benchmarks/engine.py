"""Engine speed against the machine's own ceiling, everything in one run.

    python benchmarks/engine.py                  # the issue's sizes: 128 problems, 1k / 10k iterations
    python benchmarks/engine.py --problems 16 --serial 4 --iterations 4   # a quick development run
    python benchmarks/engine.py --skip-model     # engine overhead only

(a) Engine overhead: MCTS expansions (new thoughts) per second on the zero-latency fake backend
    with trees of 1,000 and of 10,000 iterations (4 problems each, parallel 4, no terminal ever,
    so every iteration expands). Target: ≥ 40,000/s at both, within 15% of each other.
(b) Steady state: MCTS (16 iterations, expand 3, line steps, T = 0.8) on gsm_symbolic problems
    with the bundled model, as ``x1 eval`` runs it (continuous batching, problems admitted up to
    the live-sequence target), against the same run one problem at a time. Targets: ≥ 4× faster,
    re-prefilled ≤ 0.1 per generated token. The speed-up's own ceiling is printed after (c): llama.cpp
    alone at the batched run's histogram against at the one-at-a-time run's (which still decodes an
    expansion's children together).
(c) The ceiling: llama.cpp alone (low-level API, a fresh context sized for the job, no sampling,
    no Python per token) decoding as many sequences as the search had live, step by step (the
    search's histogram); the search's processed tokens/s (prefilled + generated) as a fraction of
    it. Target ≥ 85%. Measured twice: with the question alone as each sequence's context, and
    with the context as long as the search's mean decode position, in the search's KV layout
    (streams or unified). The second is the ceiling the target is read against: a step's
    attention grows with the context, and llama.cpp alone pays that as much as the search does.
(d) The profile: where a batched decode step's time went, and the sampler before and after at the
    search's mean batch (the per-row numpy sampler x1 had, re-implemented here for the comparison).
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import sys
import time
from dataclasses import dataclass

import numpy as np
from rich.console import Console
from rich.table import Table

from x1.config import StepConfig
from x1.engine import Engine
from x1.evaluators.simple import ConfidenceEvaluator
from x1.models.fake import FakeBackend
from x1.models.sampling import StepSampler
from x1.signals import token_signals
from x1.strategies.mcts import MCTS
from x1.tasks.base import StepFormat, Task, Verification

console = Console(width=200)


def note(text: str) -> None:
    """Progress on stderr, so a long run in the background shows where it is."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# -- (a) engine overhead ----------------------------------------------------------------------
def endless_tasks(n: int) -> list[Task]:
    return [Task(f"t{i}", f"question {i}", "1", lambda a, g: Verification(0.0), step_format=StepFormat(max_steps=10**6)) for i in range(n)]


def engine_overhead(iterations: int, problems: int = 4) -> tuple[int, float, float, float, float]:
    """New thoughts, wall seconds, the seconds the fake backend itself took, the thoughts' mean depth,
    and the kernel's (system) CPU seconds, for ``problems`` trees of ``iterations`` each: every step is a fresh line, never an answer,
    so each iteration expands a leaf into 3 children. The fake's own time (building prompts' hashes
    and completions) is the harness, not the engine: the table shows the rate with and without it.
    The depth is why the larger trees cost more per expansion: selection, backup and the prompt
    all follow the path from the root, which is the only part of the tree they touch."""
    fake = FakeBackend(responder=lambda prompt, i: f"Step {i}: go on.\n\n")
    generate, in_fake = fake.generate, [0.0]

    def timed_generate(requests):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        try:
            return generate(requests)
        finally:
            in_fake[0] += time.perf_counter() - start

    fake.generate = timed_generate  # type: ignore[method-assign]
    engine = Engine(fake, {"confidence": ConfidenceEvaluator()})
    system_before = resource.getrusage(resource.RUSAGE_SELF).ru_stime
    start = time.perf_counter()
    outcomes = engine.run(endless_tasks(problems), MCTS(iterations=iterations, expand=3, parallel=4))
    wall = time.perf_counter() - start
    system = resource.getrusage(resource.RUSAGE_SELF).ru_stime - system_before
    depths = [len(o.graph.path(t.id)) for o in outcomes for t in o.graph if t.parents]
    return sum(len(o.graph) - 1 for o in outcomes), wall, in_fake[0], sum(depths) / max(len(depths), 1), system


# -- (b) the search on the bundled model ------------------------------------------------------
@dataclass
class Timed:
    """Seconds spent in the strategy's ask/tell and in the evaluator, for the profile."""

    strategy_s: float = 0.0
    evaluator_s: float = 0.0


class TimedStrategy:
    """The strategy, unchanged, with its ask and tell timed."""

    def __init__(self, inner: MCTS, timed: Timed) -> None:
        self._inner, self._timed = inner, timed

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self._inner, name)

    def ask(self, problem):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        try:
            return self._inner.ask(problem)
        finally:
            self._timed.strategy_s += time.perf_counter() - start

    def tell(self, problem, replies):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        try:
            return self._inner.tell(problem, replies)
        finally:
            self._timed.strategy_s += time.perf_counter() - start


class TimedEvaluator:
    """The confidence evaluator, timed."""

    name = "confidence"
    model_calls = 0

    def __init__(self, timed: Timed) -> None:
        self._inner, self._timed = ConfidenceEvaluator(), timed

    def evaluate(self, items):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        try:
            return self._inner.evaluate(items)
        finally:
            self._timed.evaluator_s += time.perf_counter() - start


def distinct_prefix_tokens(prompts: list[list[int]]) -> int:
    """Nodes of the prompts' token trie: the fewest tokens any prefix cache must evaluate."""
    seen: set[tuple[int, ...]] = set()
    for tokens in prompts:
        for end in range(1, len(tokens) + 1):
            seen.add(tuple(tokens[:end]))
    return len(seen)


@dataclass
class Run:
    wall: float
    prefilled: int
    again: int
    generated: int
    correct: int
    problems: int
    histogram: dict[int, int]
    decode_s: float
    sample_s: float
    signals_s: float
    timed: Timed
    mean_context: float  # mean position of a running sequence's decoded token: what a step attends over
    mean_in_flight: float  # problems started and not finished, averaged over the engine's ticks
    slot_runs: int = 0  # KV streams: runs of consecutive slots over the decode calls (llama.cpp's pieces)
    packed: int = 0  # running sequences moved down to close such a gap

    @property
    def processed_rate(self) -> float:
        return (self.prefilled + self.generated) / self.wall


def model_run(backend, tasks: list[Task], batched: bool, iterations: int, max_active: int | None = None) -> Run:  # type: ignore[no-untyped-def]
    """One search over ``tasks``, all in one engine (batched) or one engine per problem."""
    backend.clear_cache()
    stats = backend.stats
    before = (stats.prompt_tokens, stats.generated_tokens, stats.decode_s, stats.sample_s, stats.signals_s, stats.slot_runs, stats.packed)
    stats.batch_sizes = {}
    stats.decoded_positions = stats.decoded_tokens = 0
    timed = Timed()
    strategy = TimedStrategy(MCTS(iterations=iterations, expand=3, temperature=0.8), timed)
    start = time.perf_counter()
    outcomes = []
    in_flight: list[int] = []

    def count_in_flight(tick: int, problems) -> None:  # type: ignore[no-untyped-def]
        in_flight.append(sum(1 for p in problems if len(p.graph) > 1 and not p.done))

    for group in [tasks] if batched else [[t] for t in tasks]:
        engine = Engine(backend, {"confidence": TimedEvaluator(timed)}, seed=0, max_active=max_active, on_tick=count_in_flight)
        outcomes += engine.run(group, strategy)  # type: ignore[arg-type]
    wall = time.perf_counter() - start
    prefilled = stats.prompt_tokens - before[0]
    first_time = distinct_prefix_tokens([backend.tokenize(o.graph.meta["prefix"]) for o in outcomes])
    return Run(wall, prefilled, prefilled - first_time, stats.generated_tokens - before[1], sum(o.correct for o in outcomes), len(tasks),
               dict(stats.batch_sizes), stats.decode_s - before[2], stats.sample_s - before[3], stats.signals_s - before[4], timed,
               stats.decoded_positions / max(stats.decoded_tokens, 1), sum(in_flight) / max(len(in_flight), 1),
               stats.slot_runs - before[5], stats.packed - before[6])


# -- (c) llama.cpp's own decode rate ----------------------------------------------------------
def llama_step_seconds(backend, sizes: list[int], steps: int, prompt: str, context: int = 0,  # type: ignore[no-untyped-def]
                       streams: bool = False) -> dict[int, float]:
    """Seconds per ``llama_decode`` of b sequences (one token each, logits for all), for each b.

    A fresh context of the same weights, sized for the job (b sequences × prompt + steps), one
    prompt prefilled once and shared; no sampling, no Python per token: llama.cpp alone.
    ``context``: the prompt's tokens repeated to that length, so each step attends over as many
    cells as the search's did; ``streams``: one KV stream per sequence, as the search had.
    """
    tokens = backend.tokenize(prompt)
    if context > len(tokens):
        tokens = (tokens * (context // len(tokens) + 1))[:context]
    return {b: _step_seconds(backend, tokens, b, steps, streams) for b in sizes}


def _decode(L, ctx, batch, entries: list[tuple[int, int, int, bool]]) -> None:  # type: ignore[no-untyped-def]
    for j, (tok, pos, seq, want) in enumerate(entries):
        batch.token[j], batch.pos[j], batch.n_seq_id[j] = tok, pos, 1
        batch.seq_id[j][0], batch.logits[j] = seq, want
    batch.n_tokens = len(entries)
    if L.llama_decode(ctx, batch) != 0:
        raise RuntimeError(f"llama_decode failed on {len(entries)} tokens")


@contextlib.contextmanager
def fresh_context(backend, n_ctx: int, n_seq_max: int, streams: bool = False, n_batch: int = 512):  # type: ignore[no-untyped-def]
    """A new llama.cpp context on ``backend``'s weights and threads (one KV stream per sequence, or
    one unified cache), with a batch of ``n_batch`` tokens; freed on exit. Yields (llama_cpp, ctx, batch)."""
    import llama_cpp as L

    params = L.llama_context_default_params()
    params.n_ctx, params.n_seq_max, params.kv_unified = n_ctx, n_seq_max, not streams
    params.n_batch, params.n_ubatch = n_batch, min(512, n_batch)
    params.n_threads = params.n_threads_batch = backend.n_threads
    ctx = L.llama_init_from_model(backend._model, params)
    batch = L.llama_batch_init(n_batch, 0, 1)
    try:
        yield L, ctx, batch
    finally:
        L.llama_batch_free(batch)
        L.llama_free(ctx)


def _step_seconds(backend, tokens: list[int], b: int, steps: int, streams: bool = False) -> float:  # type: ignore[no-untyped-def]
    # streams: each of the b streams holds the prompt and its own steps (llama.cpp pads a stream to 256 cells)
    n_ctx = b * (len(tokens) + steps + 258) if streams else len(tokens) + b * (steps + 2) + 256
    with fresh_context(backend, n_ctx, b, streams, n_batch=max(512, len(tokens), b)) as (L, ctx, batch):
        _decode(L, ctx, batch, [(t, p, 0, p == len(tokens) - 1) for p, t in enumerate(tokens)])
        mem = L.llama_get_memory(ctx)
        for s in range(1, b):
            L.llama_memory_seq_cp(mem, 0, s, -1, -1)
        pos = len(tokens)
        _decode(L, ctx, batch, [(tokens[s % len(tokens)], pos, s, True) for s in range(b)])  # warm-up
        start = time.perf_counter()
        for k in range(1, steps + 1):
            _decode(L, ctx, batch, [(tokens[(s + k) % len(tokens)], pos + k, s, True) for s in range(b)])
        return (time.perf_counter() - start) / steps


def ceiling_rate(histogram: dict[int, int], step_s: dict[int, float]) -> float:
    """llama.cpp's tokens/s over the search's steps: Σ n_b·b / Σ n_b·t(b), t interpolated between measured sizes."""
    sizes = sorted(step_s)
    tokens = sum(n * b for b, n in histogram.items())
    seconds = sum(n * float(np.interp(b, sizes, [step_s[s] for s in sizes])) for b, n in histogram.items())
    return tokens / seconds


def measured_sizes(histogram: dict[int, int]) -> list[int]:
    """Powers of two spanning the histogram, plus its largest size: t(b) is smooth between them."""
    top = max(histogram)
    sizes = {1 << k for k in range(top.bit_length()) if (1 << k) <= top} | {top}
    return sorted(s for s in sizes if s >= min(histogram) // 2 or s == top)


# -- (d) the sampler, before and after --------------------------------------------------------
def per_row_sample(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> None:
    """x1's sampler before this change: a softmax and a float64 cumsum per row, signals per row."""
    maxes = logits.max(axis=1)
    lse = maxes + np.log(np.exp(logits - maxes[:, None]).sum(axis=1))
    for r in range(len(logits)):
        probs = np.exp((logits[r] - maxes[r]) / temperature)
        cdf = np.cumsum(probs, dtype=np.float64)
        int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))
        token_signals(logits[r] - lse[r])


def sampler_ms(rows: int, vocab: int) -> tuple[float, float, float]:
    """ms per step: per-row numpy (with signals), the batched sampler without and with signals."""
    x = np.random.default_rng(0).standard_normal((rows, vocab)).astype(np.float32) * 3
    x[:, :4] += 20
    rng = np.random.default_rng(1)
    start = time.perf_counter()
    per_row_sample(x.copy(), 0.8, rng)
    before = time.perf_counter() - start
    sampler = StepSampler()
    timings = []
    for signals in (False, True):
        best = 1e9
        for _ in range(3):
            data = x.copy()
            start = time.perf_counter()
            sampler.sample(data, [0.8] * rows, [1.0] * rows, [rng] * rows, signals=signals)
            best = min(best, time.perf_counter() - start)
        timings.append(best)
    return 1000 * before, 1000 * timings[0], 1000 * timings[1]


# -- the report -------------------------------------------------------------------------------
def overhead_table(iterations: list[int]) -> None:
    table = Table("iterations per tree", "expansions", "wall s", "of it in the fake", "of it in the kernel", "mean depth",
                  "expansions / s", "expansions / s without the fake", "target", title="(a) engine overhead, fake backend (best of 3)")
    rates, engine_rates, depths = [], [], []
    for n in iterations:
        expansions, wall, in_fake, depth, system = min((engine_overhead(n) for _ in range(3)), key=lambda r: r[1])
        rates.append(expansions / wall)
        engine_rates.append(expansions / (wall - in_fake))
        depths.append(depth)
        table.add_row(f"{n:,}", f"{expansions:,}", f"{wall:.2f}", f"{in_fake / wall:.0%}", f"{system / wall:.0%}", f"{depth:.1f}",
                      f"{rates[-1]:,.0f}", f"{engine_rates[-1]:,.0f}", "≥ 40,000")
    if len(rates) == 2:
        spread = [f"{abs(r[0] - r[1]) / max(r):.0%}" for r in (rates, engine_rates)]
        table.add_row("spread", "", "", "", "", f"+{depths[1] / depths[0] - 1:.0%}", spread[0], spread[1], "≤ 15%")
    console.print(table)
    console.print("Of it in the kernel: system CPU seconds, mostly page faults as a tree's heap grows into fresh memory "
                  "(a 10,000-iteration run allocates about 150 MB).")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-model", action="store_true", help="only (a), the engine overhead")
    parser.add_argument("--problems", type=int, default=128, help="gsm_symbolic problems in the batched run")
    parser.add_argument("--serial", type=int, default=None, help="of those, how many run one at a time (default: all)")
    parser.add_argument("--iterations", type=int, default=16, help="MCTS iterations per problem")
    parser.add_argument("--overhead", default="1000,10000", help="iterations per tree for (a)")
    parser.add_argument("--model", default="default")
    parser.add_argument("--ceiling-steps", type=int, default=8, help="timed llama_decode calls per batch size in (c)")
    parser.add_argument("--threads", type=int, default=None,
                        help="llama.cpp threads for the search and the ceiling alike (default: every core, as x1 eval)")
    parser.add_argument("--max-active", type=int, default=None,
                        help="problems in flight at once in the batched run (x1 eval --max-active); default: all")
    parser.add_argument("--kv-stream-cells", type=int, default=None,
                        help="search with one KV stream of this many cells per slot (model.kv_stream_cells); default: unified")
    args = parser.parse_args()

    note("engine overhead")
    overhead_table([int(n) for n in args.overhead.split(",") if n])
    if args.skip_model:
        return 0

    from x1.config import RunConfig
    from x1.models.registry import resolve_model
    from x1.pipelines.solve import open_policy
    from x1.tasks.registry import load_tasks

    spec = resolve_model(args.model)
    run_config = RunConfig()
    run_config.model.name, run_config.model.threads = args.model, args.threads
    run_config.model.kv_stream_cells = args.kv_stream_cells
    if spec.kind != "llamacpp":
        parser.error(f"--model {args.model}: the ceiling is llama.cpp's, so the model must be a GGUF one")
    backend = open_policy(run_config)  # the backend x1 eval opens, with its defaults
    note(f"llama.cpp with {backend.n_threads} threads, {backend.n_seq_max} slots"  # type: ignore[attr-defined]
         + (f", one KV stream of {backend.n_ctx_seq:,} cells each" if args.kv_stream_cells  # type: ignore[attr-defined]
            else f", one KV cache of {backend.n_ctx:,} cells"))  # type: ignore[attr-defined]
    tasks = load_tasks("rg:gsm_symbolic", n=args.problems, seed=0)
    for t in tasks:
        t.step_format = StepConfig(delimiter="newline").apply(t.step_format)
    serial_n = min(args.serial or len(tasks), len(tasks))
    note(f"batched run: {len(tasks)} problems")
    batched = model_run(backend, tasks, batched=True, iterations=args.iterations, max_active=args.max_active)
    note(f"batched run done in {batched.wall:.0f} s; one at a time: {serial_n} problems")
    serial = model_run(backend, tasks[:serial_n], batched=False, iterations=args.iterations)
    note(f"one at a time done in {serial.wall:.0f} s; measuring llama.cpp alone")

    title = f"(b) MCTS (iterations {args.iterations}, expand 3, line steps, T 0.8) on {spec.name}, gsm_symbolic"
    table = Table("mode", "problems", "wall s", "s / problem", "generated", "prefilled", "re-prefilled / generated",
                  "processed tok/s", "correct", title=title)
    for mode, run in (("batched (x1 eval)", batched), ("one at a time", serial)):
        table.add_row(mode, str(run.problems), f"{run.wall:.0f}", f"{run.wall / run.problems:.2f}", f"{run.generated:,}",
                      f"{run.prefilled:,}", f"{run.again / max(run.generated, 1):.3f} (≤ 0.1)", f"{run.processed_rate:.1f}",
                      f"{run.correct}/{run.problems}")
    speedup = (serial.wall / serial.problems) / (batched.wall / batched.problems)
    table.add_row("speed-up (s / problem)", "", "", f"{speedup:.2f}× (≥ 4×)", "", "", "", "", "")
    console.print(table)

    hist = batched.histogram
    steps = sum(hist.values())
    mean_batch = sum(b * n for b, n in hist.items()) / steps
    sizes = measured_sizes({**serial.histogram, **hist})  # both runs' sizes: the speed-up's ceiling needs the small ones
    context = round(batched.mean_context)
    streams = bool(getattr(backend, "kv_streams", False))
    step_s = llama_step_seconds(backend, sizes, args.ceiling_steps, tasks[0].question)
    matched_s = llama_step_seconds(backend, sizes, args.ceiling_steps, tasks[0].question, context=context, streams=streams)
    serial_context = round(serial.mean_context)
    serial_s = llama_step_seconds(backend, measured_sizes(serial.histogram), args.ceiling_steps, tasks[0].question,
                                  context=serial_context, streams=streams)
    short_len = len(backend.tokenize(tasks[0].question))
    ceiling, matched = ceiling_rate(hist, step_s), ceiling_rate(hist, matched_s)
    serial_ceiling = ceiling_rate(serial.histogram, serial_s)
    layout = "one KV stream each" if streams else "one unified KV cache"
    table = Table("batch b", f"s / step, {short_len}-token context", "tok/s", f"s / step, {context}-token context, {layout}", "tok/s",
                  "search steps with b live", title="(c) the ceiling: llama.cpp alone")
    for b in sorted(step_s):
        share = sum(n for size, n in hist.items() if b // 2 < size <= b)
        table.add_row(str(b), f"{step_s[b]:.3f}", f"{b / step_s[b]:.1f}", f"{matched_s[b]:.3f}", f"{b / matched_s[b]:.1f}",
                      f"{share} (sizes {b // 2 + 1}..{b})")
    console.print(table)
    rate = batched.processed_rate
    console.print(
        f"search: mean {mean_batch:.1f} live sequences over {steps} steps, {batched.mean_in_flight:.1f} problems in flight, "
        f"decoding at mean position {batched.mean_context:.0f}; "
        f"llama.cpp at that histogram: {ceiling:.1f} tok/s with the question alone as context ({short_len} tokens), "
        f"{matched:.1f} tok/s at the search's mean context and KV layout. Search processed {rate:.1f} tok/s = "
        f"[bold]{rate / matched:.0%}[/bold] of the matched ceiling (target ≥ 85%), {rate / ceiling:.0%} of the short one; "
        f"generated only: {batched.generated / batched.wall:.1f} tok/s = "
        f"{batched.generated / batched.wall / matched:.0%} of the matched ceiling"
    )
    serial_steps = sum(serial.histogram.values())
    serial_batch = sum(b * n for b, n in serial.histogram.items()) / max(serial_steps, 1)
    most = matched / serial_ceiling
    console.print(
        f"speed-up's ceiling: one problem at a time still decodes a mean {serial_batch:.1f} sequences (MCTS expands 3 children at "
        f"once), at mean position {serial.mean_context:.0f}, where llama.cpp alone does {serial_ceiling:.1f} tok/s; so batching "
        f"can make this search at most {matched:.1f} / {serial_ceiling:.1f} = [bold]{most:.2f}×[/bold] faster on this machine. "
        f"The search's speed-up: {speedup:.2f}× per problem ({speedup / most:.0%} of that), "
        f"{rate / serial.processed_rate:.2f}× in processed tok/s ({rate / serial.processed_rate / most:.0%})"
    )

    engine_s = batched.wall - batched.decode_s - batched.sample_s - batched.signals_s - batched.timed.strategy_s - batched.timed.evaluator_s
    table = Table("where a batched step's time went", "s", "share", "ms / step", title="(d) the profile (batched run)")
    for name, sec in (("llama.cpp (llama_decode)", batched.decode_s), ("sampling", batched.sample_s),
                      ("token signals (entropy, varentropy)", batched.signals_s), ("strategy (MCTS ask/tell)", batched.timed.strategy_s),
                      ("evaluator (confidence)", batched.timed.evaluator_s), ("engine, backend bookkeeping, rest", engine_s)):
        table.add_row(name, f"{sec:.1f}", f"{sec / batched.wall:.1%}", f"{1000 * sec / steps:.1f}")
    console.print(table)
    if streams:
        console.print(f"KV streams: {batched.slot_runs / steps:.2f} runs of consecutive slots per step (llama.cpp splits a batch "
                      f"between runs and reads the weights once per piece); {batched.packed / steps:.2f} running sequences "
                      "moved down per step to keep them consecutive")
    rows = max(1, round(mean_batch))
    before, after, with_signals = sampler_ms(rows, backend.n_vocab)
    llama_ms = 1000 * float(np.interp(rows, sorted(step_s), [step_s[s] for s in sorted(step_s)]))
    table = Table("sampler at the mean batch", "ms / step", "vs llama_decode", title=f"sampling {rows} rows of {backend.n_vocab:,} logits")
    table.add_row("per-row numpy + per-row signals (before)", f"{before:.1f}", f"{before / llama_ms:.1%}")
    table.add_row("batched, exact, no signals (after)", f"{after:.1f}", f"{after / llama_ms:.1%}")
    table.add_row("batched, exact, with entropy/varentropy (after, default)", f"{with_signals:.1f}", f"{with_signals / llama_ms:.1%}")
    table.add_row("llama_decode alone", f"{llama_ms:.1f}", "100%")
    console.print(table)
    backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
