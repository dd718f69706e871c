"""The prefix cache under MCTS: re-prefilled prompt tokens per generated token, by slots and eviction.

One run compares, on the same problems and model, llama.cpp's sequence slots and the eviction
rule (plain least-recently-used against "covered first": a slot whose tokens another slot also
holds goes first) and how the engine counts live sequences for admission (a request's ``n`` until
the whole request is back, or what the stream says is queued or decoding), each with 64 live. Re-prefilled tokens are those prefilled beyond
the problems' own prompts (their token trie), i.e. paths the cache had lost.

    python benchmarks/prefix_cache.py                       # SmolLM2, 32 problems, 16 iterations
    python benchmarks/prefix_cache.py --model default --variants 128:lru:requests,256:covered:stream

Measured 2026-12-03 (SmolLM2, 32 gsm_symbolic problems, 1 thread, shared machine):
128 slots LRU 0.260, 128 covered-first 0.211, 256 covered-first 0.066 (the default since).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from engine import model_run  # noqa: E402  (the engine benchmark's own search run)
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from x1.config import StepConfig  # noqa: E402
from x1.engine import Engine  # noqa: E402
from x1.models.llama_cpp import LlamaCppBackend  # noqa: E402
from x1.models.registry import resolve_model  # noqa: E402
from x1.tasks.registry import load_tasks  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--problems", type=int, default=32)
    parser.add_argument("--iterations", type=int, default=16)
    parser.add_argument("--live", type=int, default=64, help="live sequences (the engine's admission target)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", default="128:lru:requests,128:covered:requests,256:covered:requests,256:covered:stream",
                        help="SLOTS:lru|covered:requests|stream, comma-separated (the last part: how admission counts live sequences)")
    args = parser.parse_args()
    variants = [tuple(v.split(":")) for v in args.variants.split(",")]
    if any(len(v) != 3 or not v[0].isdigit() or v[1] not in ("lru", "covered") or v[2] not in ("requests", "stream") for v in variants):
        parser.error("--variants: each is SLOTS:lru|covered:requests|stream, e.g. 256:covered:stream")
    spec = resolve_model(args.model)
    tasks = load_tasks("rg:gsm_symbolic", n=args.problems, seed=0)
    for t in tasks:
        t.step_format = StepConfig(delimiter="newline").apply(t.step_format)

    import engine as bench  # the run builds its Engine through this module's name

    table = Table("slots", "eviction", "live counted by", "generated", "prefilled", "re-prefilled / generated", "mean live", "wall s",
                  title=f"MCTS (iterations {args.iterations}, expand 3) on {spec.name}, {args.problems} gsm_symbolic problems, "
                        f"{args.live} live")
    for slots, rule, count in variants:
        backend = LlamaCppBackend(spec.location, n_ctx=32768, n_seq_max=int(slots), n_threads=args.threads)
        backend.kv.evict_covered_first = rule == "covered"
        options = {"max_live": args.live, "live_from_stream": count == "stream"}
        bench.Engine = lambda *a, options=options, **k: Engine(*a, **{**k, **options})  # type: ignore[misc]
        run = model_run(backend, tasks, batched=True, iterations=args.iterations)
        steps = sum(run.histogram.values())
        mean = sum(b * n for b, n in run.histogram.items()) / max(steps, 1)
        table.add_row(str(backend.n_seq_max), rule, count, f"{run.generated:,}", f"{run.prefilled:,}",
                      f"{run.again / max(run.generated, 1):.3f}", f"{mean:.1f}", f"{run.wall:.0f}")
        backend.close()
    Console().print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
