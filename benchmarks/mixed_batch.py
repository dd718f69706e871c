"""What a decode step costs when it also prefills new sequences' prompt tails, by KV layout.

    python benchmarks/mixed_batch.py                       # SmolLM2, 2 threads
    python benchmarks/mixed_batch.py --model default --live 46 --context 240

x1's stream admits new requests into the same ``llama_decode`` call that decodes the running
sequences (one token each), so a step holds 1 token for each running sequence and a prompt tail
(what the prefix cache did not hold) for each newcomer. With one KV stream per sequence
llama.cpp splits a batch with ``split_equal``: every sequence in a micro-batch contributes the
same number of tokens, so the newcomers' tails go into extra micro-batches, each reading the
weights again. A unified cache splits by position (``split_simple``) and has no such cost. This
probe times, in each layout, a step of ``live`` running sequences alone, with one or three tails
beside them, the same tails decoded in a call of their own, and the ideal: as many tokens as the
mixed step, one per sequence.

Measured 2026-12-03 (6th session), SmolLM2, 2 threads, the background study paused, 6 repetitions:
46 running sequences at context 240 step in 0.253 s (streams) / 0.249 s (unified); with a
14-token tail in the same call 0.333 / 0.314, against 0.343 / 0.330 for 60 one-token sequences;
with tails of 5, 14 and 30 tokens 0.499 / 0.525, against 0.534 / 0.626 for 95. So the extra
micro-batches cost nothing measurable here: the idea that they explain the engine benchmark's
gap to its ceiling is refuted, and feeding tails one token per step would not pay. (A first run
beside the study said the opposite, 0.795 against 0.666: on this machine such probes need quiet.)
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from engine import _decode, fresh_context  # noqa: E402  (the engine benchmark's raw llama_decode helpers)
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from x1.models.llama_cpp import LlamaCppBackend  # noqa: E402
from x1.models.llama_cpp.contract import Entry  # noqa: E402
from x1.models.registry import resolve_model  # noqa: E402


def step_costs(backend: LlamaCppBackend, live: int, context: int, tails: list[list[int]], streams: bool,
               reps: int) -> dict[str, float]:
    """Seconds per step for each shape. Sequences ``live`` and up hold only the shared prompt between
    timed steps (what a step added to them is removed), so every repetition is the same step."""
    n_seq = live + max(sum(lengths) for lengths in tails)
    grown = (1 + 3 * len(tails)) * (reps + 1)  # positions a running sequence gains over all the timed steps
    n_ctx = n_seq * (context + grown + 300) if streams else context + n_seq * (grown + 8) + 1024
    with fresh_context(backend, n_ctx, n_seq, streams) as (L, ctx, batch):
        mem = L.llama_get_memory(ctx)
        _decode(L, ctx, batch, [(100 + p % 50, p, 0, p == context - 1) for p in range(context)])
        for seq in range(1, n_seq):
            L.llama_memory_seq_cp(mem, 0, seq, -1, -1)
        pos = [context] * n_seq

        def one_token_each(width: int) -> list[Entry]:
            return [(200, pos[seq], seq, True) for seq in range(width)]

        def tail_entries(lengths: list[int]) -> list[Entry]:
            return [(300 + i % 20, context + i, live + j, i == n - 1) for j, n in enumerate(lengths) for i in range(n)]

        def timed(calls: list[Callable[[], list[Entry]]]) -> float:
            """Mean seconds of ``calls`` (each builds its entries at the current positions) over ``reps`` repetitions after a warm-up."""
            times = []
            for _ in range(reps + 1):
                batches = [call() for call in calls]
                start = time.perf_counter()
                for entries in batches:
                    _decode(L, ctx, batch, entries)
                times.append(time.perf_counter() - start)
                for seq in range(live):
                    pos[seq] += 1
                for seq in range(live, n_seq):  # back to the shared prompt
                    L.llama_memory_seq_rm(mem, seq, context, -1)
                    pos[seq] = context
            return sum(times[1:]) / reps

        out = {"running alone": timed([lambda: one_token_each(live)])}
        for lengths in tails:
            label, same = "+".join(str(n) for n in lengths), live + sum(lengths)

            def mixed(lengths: list[int] = lengths) -> list[Entry]:
                return one_token_each(live) + tail_entries(lengths)

            def tails_alone(lengths: list[int] = lengths) -> list[Entry]:
                return tail_entries(lengths)

            def ideal(same: int = same) -> list[Entry]:
                return one_token_each(same)

            out[f"running + tails {label}, one call"] = timed([mixed])
            out[f"running, then tails {label} in a call of their own"] = timed([lambda: one_token_each(live), tails_alone])
            out[f"ideal for that many tokens: {same} sequences × 1 token"] = timed([ideal])
        return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--live", type=int, default=46, help="running sequences (the engine benchmark's mean was 46.7)")
    parser.add_argument("--context", type=int, default=240, help="their context (the engine benchmark's mean decode position was 242)")
    parser.add_argument("--reps", type=int, default=6)
    args = parser.parse_args()
    spec = resolve_model(args.model)
    backend = LlamaCppBackend(spec.location, n_ctx=2048, n_seq_max=4, n_threads=args.threads)
    tails = [[14], [5, 14, 30]]
    table = Table("step", "streams s / step", "unified s / step", title=f"{args.live} running sequences at context {args.context}, "
                  f"{spec.name}, {backend.n_threads} threads")
    results = {layout: step_costs(backend, args.live, args.context, tails, layout == "streams", args.reps)
               for layout in ("streams", "unified")}
    for name in results["streams"]:
        table.add_row(name, f"{results['streams'][name]:.3f}", f"{results['unified'].get(name, float('nan')):.3f}")
    Console(width=160).print(table)
    backend.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
