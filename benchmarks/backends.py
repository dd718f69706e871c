"""Backend throughput and prefix reuse, side by side in one run (ratios, not absolute claims).

    python benchmarks/backends.py [--model default] [--tokens 48] [--hf] [--sizes 1,8,32]

Prints three tables:
1. generated tokens/s for 1, 8 and 32 sequences: x1's llama.cpp backend against llama.cpp's
   own batched decoding (the same low-level calls with llama.cpp's C greedy sampler and no
   Python per-token work) on the same prompts; the ratio is the target (≥ 0.9);
2. the same sizes through the transformers backend (with --hf; slow to load);
3. prompt tokens prefilled for a 3-level tree (branching 3) with and without prefix reuse.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from rich.console import Console
from rich.table import Table

from x1.models.base import GenerationRequest
from x1.models.llama_cpp import LlamaCppBackend
from x1.models.registry import resolve_model

console = Console()


def prompts_for(backend, k: int) -> list[str]:  # type: ignore[no-untyped-def]
    return [
        backend.format_chat([{"role": "user", "content": f"Count upwards from {100 + 7 * i}, separated by commas."}])
        for i in range(k)
    ]


def x1_throughput(backend: LlamaCppBackend, prompts: list[str], max_tokens: int) -> tuple[float, int]:
    backend.clear_cache()
    start = time.perf_counter()
    results = backend.generate([GenerationRequest(p, n=1, max_tokens=max_tokens, temperature=0.0) for p in prompts])
    wall = time.perf_counter() - start
    generated = sum(c.generated_tokens for group in results for c in group)
    return generated / wall, generated


def llama_cpp_own_throughput(backend: LlamaCppBackend, prompts: list[str], max_tokens: int) -> tuple[float, int]:
    """llama.cpp's batched decoding without x1: prefill every prompt, then decode all sequences
    together, sampling with llama.cpp's C greedy sampler (what its batched example does)."""
    import llama_cpp as L

    backend.clear_cache()
    ctx, mem, vocab = backend._ctx, backend._mem, backend.vocab.handle
    sampler = L.llama_sampler_init_greedy()
    start = time.perf_counter()
    tokenized = [backend.tokenize(p) for p in prompts]
    # The batch holds at most n_batch tokens per llama_decode (and 64 prompts exceed that), so
    # prompts prefill in chunks; each sequence's first token is sampled from the chunk that ends it.
    batch = L.llama_batch_init(max(backend.n_batch, len(prompts)), 0, 1)
    L.llama_memory_clear(mem, True)
    flat = [(s, pos, t) for s, toks in enumerate(tokenized) for pos, t in enumerate(toks)]
    next_tokens: dict[int, int] = {}
    for lo in range(0, len(flat), backend.n_batch):
        chunk = flat[lo : lo + backend.n_batch]
        ends = {}
        for j, (s, pos, t) in enumerate(chunk):
            batch.token[j], batch.pos[j], batch.n_seq_id[j] = t, pos, 1
            batch.seq_id[j][0] = s
            batch.logits[j] = pos == len(tokenized[s]) - 1
            if batch.logits[j]:
                ends[s] = j
        batch.n_tokens = len(chunk)
        assert L.llama_decode(ctx, batch) == 0
        next_tokens.update({s: L.llama_sampler_sample(sampler, ctx, j) for s, j in ends.items()})
    positions = [len(t) for t in tokenized]
    active = list(range(len(prompts)))
    index: dict[int, int] = {}
    generated = 0
    steps = 0
    while active and steps < max_tokens:
        if steps:
            next_tokens = {s: L.llama_sampler_sample(sampler, ctx, index[s]) for s in active}
        still = [s for s in active if not L.llama_vocab_is_eog(vocab, next_tokens[s])]
        generated += len(still)
        steps += 1
        if steps >= max_tokens or not still:
            break
        for j, s in enumerate(still):
            batch.token[j], batch.pos[j], batch.n_seq_id[j] = next_tokens[s], positions[s], 1
            batch.seq_id[j][0] = s
            batch.logits[j] = True
            positions[s] += 1
            index[s] = j
        batch.n_tokens = len(still)
        assert L.llama_decode(ctx, batch) == 0
        active = still
    wall = time.perf_counter() - start
    L.llama_batch_free(batch)
    L.llama_sampler_free(sampler)
    L.llama_memory_clear(mem, True)
    backend.clear_cache()
    return generated / wall, generated


def tree_prefill(backend: LlamaCppBackend, branching: int = 3, depth: int = 3, step_tokens: int = 12) -> int:
    """Grow a tree level by level, as a search would; return prompt tokens prefilled."""
    backend.clear_cache()
    before = backend.stats.prompt_tokens
    question = "Think step by step: a train travels 60 km in 1.5 hours. What is its speed?"
    frontier = backend.format_chat([{"role": "user", "content": question}])
    level = [frontier]
    for d in range(depth):
        requests = [
            GenerationRequest(p, n=branching, max_tokens=step_tokens, temperature=0.8, seed=d * 100 + i) for i, p in enumerate(level)
        ]
        results = backend.generate(requests)
        level = [p + c.text for p, group in zip(level, results, strict=True) for c in group][: branching**2]
    return backend.stats.prompt_tokens - before


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--sizes", default="1,8,32")
    parser.add_argument("--hf", action="store_true", help="also measure the transformers backend (slow to load)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    spec = resolve_model(args.model)
    console.print(f"model: {spec.name} ({spec.location}) · {os.cpu_count()} CPU threads · {args.tokens} new tokens per sequence")

    backend = LlamaCppBackend(spec.location, n_ctx=16384, n_seq_max=64)
    table = Table("sequences", "x1 llama.cpp tok/s", "llama.cpp own tok/s", "x1 / own", title="batched decoding (same run)")
    for k in sizes:
        prompts = prompts_for(backend, k)
        own, _ = llama_cpp_own_throughput(backend, prompts, args.tokens)
        ours, _ = x1_throughput(backend, prompts, args.tokens)
        table.add_row(str(k), f"{ours:.1f}", f"{own:.1f}", f"{ours / own:.2f}")
    console.print(table)

    with_reuse = tree_prefill(backend)
    backend.prefix_reuse = False
    without = tree_prefill(backend)
    backend.prefix_reuse = True
    tree = Table("prefix reuse", "prompt tokens prefilled", title="3-level tree, branching 3")
    tree.add_row("on", str(with_reuse))
    tree.add_row("off", str(without))
    tree.add_row("saved", f"{1 - with_reuse / without:.0%}")
    console.print(tree)
    backend.close()

    if args.hf:
        from x1.models.hf import TransformersBackend

        hf = TransformersBackend(spec.location, name=spec.name)
        hft = Table("sequences", "transformers tok/s", title="transformers backend (CPU)")
        for k in sizes:
            prompts = prompts_for(hf, k)
            start = time.perf_counter()
            results = hf.generate([GenerationRequest(p, n=1, max_tokens=args.tokens, temperature=0.0) for p in prompts])
            generated = sum(c.generated_tokens for g in results for c in g)
            hft.add_row(str(k), f"{generated / (time.perf_counter() - start):.1f}")
        console.print(hft)
    return 0


if __name__ == "__main__":
    sys.exit(main())
