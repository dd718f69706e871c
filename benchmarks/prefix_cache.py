"""The prefix cache under MCTS: re-prefilled prompt tokens per generated token, by slots and eviction.

One run compares, on the same problems and model, llama.cpp's sequence slots and the eviction
rule (plain least-recently-used against "covered first": a slot whose tokens another slot also
holds goes first) and how the engine counts live sequences for admission (a request's ``n`` until
the whole request is back, or what the stream says is queued or decoding), each with 64 live. Re-prefilled tokens are those prefilled beyond
the problems' own prompts (their token trie), i.e. paths the cache had lost.

    python benchmarks/prefix_cache.py                       # SmolLM2, 32 problems, 16 iterations
    python benchmarks/prefix_cache.py --model default --variants 128:lru:requests,256:covered:stream
    python benchmarks/prefix_cache.py --threads 2 --variants 256:covered:stream:unified,256:covered:stream:streams

Measured 2026-12-03 (SmolLM2, 32 gsm_symbolic problems, 1 thread, shared machine):
128 slots LRU 0.260, 128 covered-first 0.211, 256 covered-first 0.066 (the default since).

The first table (``--held``) is what the cached cells cost: every decode step attends over the
occupied cells of the unified KV cache, other sequences' included. SmolLM2, 2 threads, 32 live
one-token sequences: 0.136 s per step with nothing else held, 0.209 s with 4,096 cells held,
0.228 s with 8,192, 0.3-0.43 s with 16-30k (1.5-3.1x). A cell budget that evicted idle slots
above 8,192 held cells was tried against this (4th session of 2026-12-03, same 32 problems, 2
threads, nothing else running): re-prefilled per generated token 0.080 -> 0.211 and wall 314 ->
339 s, so it was not kept: what the search re-reads is worth more than the attention it costs.

A KV stream per slot (the fourth part of a variant, ``streams``; x1's ``model.kv_stream_cells``)
removes that cost: each sequence attends over its own stream. 5th session of 2026-12-03, SmolLM2,
2 threads, nothing else running: a step beside 30,000 held cells 0.148 s against 0.443 s unified
(default model 0.446 against 0.728 s). llama.cpp batches only runs of consecutive stream ids,
so a first try with x1's usual slot choice (scattered slots) gained nothing (352 against 376 s);
with the running sequences kept in the lowest slots, 32 MCTS problems took 244 against 342 s
(123.8 against 85.9 processed tok/s), re-prefilled 0.080 per generated token in both.
"""

from __future__ import annotations

import argparse
import sys
import time
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


def held_cells_cost(backend, held: list[int], live: int = 32, steps: int = 8,  # type: ignore[no-untyped-def]
                    streams: bool = False, spacing: int = 1) -> dict[int, float]:
    """Seconds per decode step of ``live`` one-token sequences while other sequences hold ``h`` cells, for each h.

    One context: a unified cache of 32,768 cells (x1's default), or with ``streams`` one stream
    of 4,096 cells per sequence. The other sequences' cells are never read by the live ones, so
    any growth is what the prefix cache's idle cells cost every step. ``spacing`` 2 puts the live
    sequences in every other slot (0, 2, 4, ...), as a scattered slot choice would.
    """
    from engine import _decode, fresh_context

    first_held = live * spacing
    n_ctx = (first_held + 8) * 4096 if streams else 32768
    out: dict[int, float] = {}
    filled = 0
    with fresh_context(backend, n_ctx, first_held + 8, streams) as (L, ctx, batch):
        mem = L.llama_get_memory(ctx)
        for target in sorted(held):
            while filled < target:  # the 8 sequences after the live ones hold the cells, 4,096 positions each
                n = min(512, target - filled)
                seq, base = first_held + (filled // 4096) % 8, filled % 4096
                _decode(L, ctx, batch, [(100 + j % 50, base + j, seq, False) for j in range(n)])
                filled += n
            live_ids = range(0, first_held, spacing)
            for s in live_ids:
                L.llama_memory_seq_rm(mem, s, -1, -1)
            _decode(L, ctx, batch, [(200, 0, s, True) for s in live_ids])  # warm-up
            start = time.perf_counter()
            for k in range(1, steps + 1):
                _decode(L, ctx, batch, [(200, k, s, True) for s in live_ids])
            out[target] = (time.perf_counter() - start) / steps
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--problems", type=int, default=32)
    parser.add_argument("--iterations", type=int, default=16)
    parser.add_argument("--live", type=int, default=64, help="live sequences (the engine's admission target)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", default="128:lru:requests,128:covered:requests,256:covered:requests,256:covered:stream",
                        help="SLOTS:lru|covered:requests|stream[:unified|streams], comma-separated (the third part: how "
                             "admission counts live sequences; the fourth: one unified KV cache or a stream per slot; empty: skip)")
    parser.add_argument("--stream-cells", type=int, default=1024, help="cells per sequence in a streams variant")
    parser.add_argument("--held", default="0,4096,8192,16384,30000",
                        help="cells other sequences hold in the cost table (empty: skip it)")
    args = parser.parse_args()
    variants = [tuple(v.split(":")) for v in args.variants.split(",") if v]  # empty: only the cost table
    if any(len(v) not in (3, 4) or not v[0].isdigit() or v[1] not in ("lru", "covered") or v[2] not in ("requests", "stream")
           or v[3:] not in ((), ("unified",), ("streams",)) for v in variants):
        parser.error("--variants: each is SLOTS:lru|covered:requests|stream[:unified|streams], e.g. 256:covered:stream:streams")
    spec = resolve_model(args.model)
    tasks = load_tasks("rg:gsm_symbolic", n=args.problems, seed=0)
    for t in tasks:
        t.step_format = StepConfig(delimiter="newline").apply(t.step_format)

    import engine as bench  # the run builds its Engine through this module's name

    if args.held:
        backend = LlamaCppBackend(spec.location, n_ctx=1024, n_seq_max=1, n_threads=args.threads)
        held = [int(h) for h in args.held.split(",")]
        cost = {layout: held_cells_cost(backend, held, streams=layout == "streams") for layout in ("unified", "streams")}
        # why x1 keeps running sequences in the lowest slots: llama.cpp batches only consecutive stream ids together
        spaced = {layout: held_cells_cost(backend, [0], streams=layout == "streams", spacing=2)[0] for layout in ("unified", "streams")}
        backend.close()
        held_table = Table("cells other sequences hold", "unified: s / step (32 live)", "vs none held",
                           "streams: s / step", "vs none held", "streams / unified",
                           title=f"What idle cached cells cost every decode step ({spec.name}; unified KV cache of 32,768 cells, "
                                 "or one stream of 4,096 per sequence)")
        u, st = cost["unified"], cost["streams"]
        for h in sorted(u):
            held_table.add_row(f"{h:,}", f"{u[h]:.3f}", f"{u[h] / u[min(u)]:.2f}×", f"{st[h]:.3f}", f"{st[h] / st[min(st)]:.2f}×",
                               f"{st[h] / u[h]:.2f}")
        Console().print(held_table)
        for layout, t in spaced.items():
            together = f"{cost[layout][0]:.3f}" if 0 in cost[layout] else "not measured"
            Console().print(f"{layout}, nothing held: 32 live in slots 0-31 {together} s / step, in every other slot {t:.3f}")

    table = Table("slots", "KV cache", "eviction", "live counted by", "generated", "prefilled", "re-prefilled / generated",
                  "mean live", "processed tok/s", "wall s",
                  title=f"MCTS (iterations {args.iterations}, expand 3) on {spec.name}, {args.problems} gsm_symbolic problems, "
                        f"{args.live} live")
    for slots, rule, count, *layout in variants:
        streams = layout == ["streams"]  # one KV stream per slot, each of --stream-cells cells
        backend = LlamaCppBackend(spec.location, n_ctx=int(slots) * args.stream_cells if streams else 32768, n_seq_max=int(slots),
                                  n_threads=args.threads, kv_streams=streams)
        backend.kv.evict_covered_first = rule == "covered"
        options = {"max_live": args.live, "live_from_stream": count == "stream"}
        bench.Engine = lambda *a, options=options, **k: Engine(*a, **{**k, **options})  # type: ignore[misc]
        run = model_run(backend, tasks, batched=True, iterations=args.iterations)
        steps = sum(run.histogram.values())
        mean = sum(b * n for b, n in run.histogram.items()) / max(steps, 1)
        layout_name = f"streams of {backend.n_ctx_seq:,}" if streams else f"unified {backend.n_ctx:,}"
        table.add_row(str(backend.n_seq_max), layout_name, rule, count, f"{run.generated:,}", f"{run.prefilled:,}",
                      f"{run.again / max(run.generated, 1):.3f}", f"{mean:.1f}", f"{(run.generated + run.prefilled) / run.wall:.1f}",
                      f"{run.wall:.0f}")
        backend.close()
    if variants:
        Console().print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
