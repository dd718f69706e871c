"""The prefix cache replayed without a model: re-prefilled tokens per generated token, in seconds.

Re-prefill is a token count, not a speed, so it needs no matrix multiply to measure. This runs
x1's real engine, MCTS, decode stream, prefill planner and slot cache (``LlamaCppBackend`` with
only ``llama_decode`` and the sampler replaced) on the real tokenizer, with a scripted policy in
place of the model: each step is a line of random words about as long as the bundled models'
gsm_symbolic steps, ending in a newline (sometimes a double one, which a line step cuts in
the middle of a token, as real models do), and some steps give a final answer and end with EOS.
So a variant of the cache or of admission is compared on the same trees in seconds, and the
one worth a model run is then timed by ``benchmarks/engine.py``.

    python benchmarks/cache_replay.py                     # 32 and 128 problems, the defaults
    python benchmarks/cache_replay.py --problems 128 --max-active 0,32,16

Calibrated against the model runs of ``benchmarks/engine.py`` (SmolLM2, 256 slots, KV streams):
there 0.080 re-prefilled per generated token on 32 problems and 0.19-0.22 on 128.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np
from rich.console import Console
from rich.table import Table

from x1.config import StepConfig
from x1.engine import Engine
from x1.evaluators.simple import ConfidenceEvaluator
from x1.models.base import BackendStats, Capabilities, GenerationRequest
from x1.models.llama_cpp.backend import LlamaCppBackend
from x1.models.llama_cpp.contract import Entry
from x1.models.llama_cpp.slots import SlotCache
from x1.models.sampling import StepSample
from x1.strategies.mcts import MCTS

console = Console(width=200)

WORDS = ("so", "the", "total", "is", "each", "has", "apples", "then", "we", "add", "12", "7", "times", "minus", "=", "cost",
         "she", "buys", "3", "more", "left", "per", "day", "48", "dollars", "of", "half", "which", "gives", "5")


class NoCells:
    """``KVMemory`` with nothing behind it: the slot table alone decides what is reused."""

    def remove(self, slot: int, start: int = -1, end: int = -1) -> None:
        pass

    def copy(self, src: int, dst: int, start: int = -1, end: int = -1) -> None:
        pass

    def clear(self) -> None:
        pass


@dataclass
class _Script:
    rng: np.random.Generator  # held so that its id() is not reused while the script lives
    tokens: list[int]


class ScriptedLlama(LlamaCppBackend):
    """The llama.cpp backend's bookkeeping with a scripted policy: every prompt, slot and copy is real."""

    def __init__(self, vocab, eos: int, n_slots: int, streams: bool, cells: int, step_tokens: float,  # type: ignore[no-untyped-def]
                 answer_p: float) -> None:
        self.name = "scripted"
        self.prefix_reuse = True
        self.stats = BackendStats()
        self._lock = threading.Lock()
        self.vocab = vocab
        self.n_vocab = 1
        self.n_seq_max = n_slots
        self.kv_streams = streams
        self.n_ctx = cells * n_slots if streams else 32768
        self.n_ctx_seq = cells if streams else self.n_ctx
        self.n_batch = 2048
        self.kv = SlotCache(NoCells(), n_slots, True, compact=streams)
        self.capabilities = Capabilities(batching=True, logprobs=True, prefix_reuse=True, scoring=True, max_batch=n_slots, continuous=True)
        self._eos = eos
        self._step_words = max(1.0, step_tokens / 1.6)  # random words run about 1.6 tokens each with the newline
        self._answer_p = answer_p
        self._scripts: dict[int, _Script] = {}

    def is_eog(self, token: int) -> bool:
        return token == self._eos

    def _decode(self, entries: list[Entry]) -> np.ndarray:
        return np.zeros((sum(1 for e in entries if e[3]), 1), dtype=np.float32)

    def _script(self, rng: np.random.Generator) -> list[int]:
        words = rng.choice(WORDS, size=1 + rng.poisson(self._step_words - 1)).tolist()
        if rng.random() < self._answer_p:
            return self.vocab.tokenize(" ".join(words) + f". The answer is {rng.integers(100)}.", add_bos=False) + [self._eos]
        end = ".\n\n" if rng.random() < 0.3 else ".\n"
        return self.vocab.tokenize(" ".join(words) + end, add_bos=False)

    def sample(self, logits: np.ndarray, requests: list[GenerationRequest], rngs: list[np.random.Generator]) -> StepSample:
        tokens, logprobs = [], []
        for rng in rngs:
            script = self._scripts.get(id(rng))
            if script is None or script.rng is not rng:
                script = self._scripts[id(rng)] = _Script(rng, self._script(rng))
            tokens.append(script.tokens.pop(0))
            if not script.tokens:
                del self._scripts[id(rng)]
            logprobs.append(-float(rng.exponential(0.5)))
        signals = [{"entropy": 1.0, "varentropy": 1.0, "top1": 0.5} for _ in rngs]
        return StepSample(tokens, np.asarray(logprobs, dtype=np.float32), signals)

    def close(self) -> None:
        pass


@dataclass
class Replay:
    problems: int
    max_active: int
    generated: int
    prefilled: int
    again: int
    in_flight: float
    live: float
    runs: float  # runs of consecutive slots per decode step (llama.cpp's pieces with KV streams)
    packed: float  # running sequences moved down per step to close a gap
    seconds: float


def question_tokens(backend: ScriptedLlama, outcomes) -> int:  # type: ignore[no-untyped-def]
    """The problems' own prompts' distinct tokens (their trie): what any cache must prefill once."""
    seen: set[tuple[int, ...]] = set()
    for o in outcomes:
        tokens = backend.tokenize(o.graph.meta["prefix"])
        for end in range(1, len(tokens) + 1):
            seen.add(tuple(tokens[:end]))
    return len(seen)


def replay(vocab, eos: int, tasks, max_active: int, args: argparse.Namespace) -> Replay:  # type: ignore[no-untyped-def]
    backend = ScriptedLlama(vocab, eos, args.slots, not args.unified, args.cells, args.step_tokens, args.answer_p)
    in_flight: list[int] = []

    def count(tick: int, problems) -> None:  # type: ignore[no-untyped-def]
        in_flight.append(sum(1 for p in problems if len(p.graph) > 1 and not p.done))

    engine = Engine(backend, {"confidence": ConfidenceEvaluator()}, seed=0, max_active=max_active or None, on_tick=count,
                    max_live=args.max_live)
    start = time.perf_counter()
    outcomes = engine.run(tasks, MCTS(iterations=args.iterations, expand=3, temperature=0.8))
    seconds = time.perf_counter() - start
    stats = backend.stats
    steps = sum(stats.batch_sizes.values())
    live = sum(b * n for b, n in stats.batch_sizes.items()) / max(steps, 1)
    again = stats.prompt_tokens - question_tokens(backend, outcomes)
    return Replay(len(tasks), max_active, stats.generated_tokens, stats.prompt_tokens, again,
                  sum(in_flight) / max(len(in_flight), 1), live, stats.slot_runs / max(steps, 1), stats.packed / max(steps, 1), seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", default="32,128", help="gsm_symbolic problem counts, comma-separated")
    parser.add_argument("--max-active", default="0", help="problems in flight (x1 eval --max-active), comma-separated; 0 = all")
    parser.add_argument("--max-live", type=int, default=None, help="live sequences at which admission pauses (search.max_live)")
    parser.add_argument("--iterations", type=int, default=16)
    parser.add_argument("--slots", type=int, default=256)
    parser.add_argument("--cells", type=int, default=1024, help="cells per KV stream (model.kv_stream_cells)")
    parser.add_argument("--unified", action="store_true", help="one unified KV cache instead of a stream per slot")
    parser.add_argument("--step-tokens", type=float, default=18.0, help="mean tokens per scripted step")
    parser.add_argument("--answer-p", type=float, default=0.12, help="chance that a scripted step gives the final answer")
    parser.add_argument("--model", default="smollm2", help="whose tokenizer and chat template")
    args = parser.parse_args()

    from x1.models.llama_cpp.runtime import llama, silence_logs
    from x1.models.llama_cpp.vocab import LlamaVocab
    from x1.models.registry import resolve_model
    from x1.tasks.registry import load_tasks

    spec = resolve_model(args.model)
    params = llama.llama_model_default_params()
    params.vocab_only = True
    silence_logs()
    model = llama.llama_model_load_from_file(spec.location.encode(), params)
    vocab = LlamaVocab(model)
    eos = llama.llama_vocab_eos(vocab.handle)

    table = Table("problems", "in flight (max-active)", "mean live", "generated", "prefilled", "re-prefilled / generated",
                  "slot runs / step", "moved / step", "replay s",
                  title=f"MCTS ({args.iterations} iterations, expand 3) replayed on {args.slots} slots"
                  + (", unified cache" if args.unified else f", KV streams of {args.cells}"))
    for n in [int(x) for x in args.problems.split(",")]:
        tasks = load_tasks("rg:gsm_symbolic", n=n, seed=0)
        for t in tasks:
            t.step_format = StepConfig(delimiter="newline").apply(t.step_format)
        for cap in [int(x) for x in args.max_active.split(",")]:
            r = replay(vocab, eos, tasks, cap, args)
            table.add_row(str(n), f"{r.in_flight:.1f} ({cap or 'all'})", f"{r.live:.1f}", f"{r.generated:,}", f"{r.prefilled:,}",
                          f"{r.again / max(r.generated, 1):.3f}", f"{r.runs:.2f}", f"{r.packed:.2f}", f"{r.seconds:.1f}")
            console.print(f"[dim]{n} problems, max-active {cap or 'all'}: {r.generated / n:.0f} generated tokens per problem[/dim]")
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
