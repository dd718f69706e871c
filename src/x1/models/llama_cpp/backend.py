"""In-process llama.cpp: the CPU default. Many sequences decode together in one context.

Why by hand over llama-cpp-python's low-level API rather than its ``Llama`` class: that class
decodes one sequence at a time and re-evaluates prompts, while tree search needs (a) every
frontier child of every problem in one ``llama_decode`` batch and (b) a parent's evaluated
prefix *shared* by its children. Both come from one unified KV cache in which a sequence
copy (``llama_memory_seq_cp``) only tags cells, so a prefix costs its cells once.

The prefix cache (``slots.SlotCache``): a new prompt reuses the longest cached token prefix; a
slot whose whole sequence is a prefix of the prompt, and that no other prompt of the batch reads,
is extended in place; otherwise the match is copied into a fresh slot. Only the remainder is
prefilled. Children of one request copy the prefilled prompt. Slots are evicted least-recently-used,
after those whose tokens another slot holds, in the order the caller ranks them (``rank_cached``).

Continuous batching (``open_stream``, ``stream.LlamaStream``): requests join the running decode as
slots free up and leave it as soon as they finish; ``generate`` is that stream run until everything
is back. The stream drives this backend only through ``contract.StreamBackend``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from x1.models.base import BackendError, BackendStats, Capabilities, Completion, GenerationRequest, refuse_adapters
from x1.models.gguf import check_gguf
from x1.models.llama_cpp.build import unsupported_build_features
from x1.models.llama_cpp.contract import Entry, Prefill
from x1.models.llama_cpp.runtime import llama, silence_logs
from x1.models.llama_cpp.slots import RETIRED, Slot, SlotCache, common_prefix
from x1.models.llama_cpp.stream import LlamaStream
from x1.models.llama_cpp.vocab import LlamaVocab
from x1.models.sampling import StepSample, StepSampler
from x1.signals import log_softmax


class _LlamaKV:
    """``slots.KVMemory`` over a llama.cpp context's memory.

    In a unified cache a copy tags cells; with one stream per sequence (``streams``) llama.cpp
    can only copy a whole stream's buffer, so a prefix is copied whole and its tail dropped.
    """

    def __init__(self, handle: object, streams: bool = False) -> None:
        self.handle = handle
        self.streams = streams

    def remove(self, slot: int, start: int = -1, end: int = -1) -> None:
        llama.llama_memory_seq_rm(self.handle, slot, start, end)

    def copy(self, src: int, dst: int, start: int = -1, end: int = -1) -> None:
        if not self.streams:
            llama.llama_memory_seq_cp(self.handle, src, dst, start, end)
            return
        if start > 0:
            raise ValueError("a copy between KV streams starts at position 0")
        llama.llama_memory_seq_cp(self.handle, src, dst, -1, -1)
        if end >= 0:
            llama.llama_memory_seq_rm(self.handle, dst, end, -1)

    def clear(self) -> None:
        llama.llama_memory_clear(self.handle, True)


class LlamaCppBackend:
    """A GGUF model in one llama.cpp context shared by every sequence (implements ``StreamBackend`` for its stream)."""

    def __init__(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        n_ctx: int = 32768,
        n_seq_max: int = 64,
        n_batch: int = 2048,
        n_threads: int | None = None,
        prefix_reuse: bool = True,
        kv_streams: bool = False,
        verbose: bool = False,
        **_: object,
    ) -> None:
        if llama is None:
            raise BackendError("llama-cpp-python is not installed; fix: scripts/setup.sh cpu (builds llama.cpp for this CPU, ~5 min once)")
        unsupported = unsupported_build_features()
        if unsupported:  # a .venv carried to another CPU: fail here, not by SIGILL in the first matmul
            raise BackendError(
                f"llama.cpp in this environment was built with {', '.join(unsupported)}, which this CPU does not report; "
                "fix: rm -rf .venv && scripts/setup.sh (builds for this CPU)"
            )
        path = Path(path)
        check_gguf(path)
        self.name = name or path.stem
        self.path = path
        self.prefix_reuse = prefix_reuse
        self.stats = BackendStats()
        self._lock = threading.Lock()  # one llama context: one caller at a time
        if not verbose:
            silence_logs()
        llama.llama_backend_init()
        mparams = llama.llama_model_default_params()
        self._model = llama.llama_model_load_from_file(str(path).encode(), mparams)
        if not self._model:
            raise BackendError(f"llama.cpp could not load {path}; fix: check that it is a complete, uncorrupted GGUF file")
        self.vocab = LlamaVocab(self._model)
        self.n_vocab = self.vocab.n_tokens
        n_seq_max = min(n_seq_max, llama.llama_max_parallel_sequences())
        cparams = llama.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = n_batch
        cparams.n_ubatch = min(512, n_batch)
        cparams.n_seq_max = n_seq_max
        # Unified: seq_cp shares cells instead of copying them, but every decode step attends over
        # all occupied cells. Streams: each sequence attends over its own n_ctx / n_seq_max cells only.
        cparams.kv_unified = not kv_streams
        threads = n_threads or os.cpu_count() or 1
        self.n_threads = threads
        cparams.n_threads = threads
        cparams.n_threads_batch = threads
        self._ctx = llama.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            raise BackendError(f"llama.cpp could not create a context of {n_ctx} tokens; fix: lower n_ctx")
        self._mem = llama.llama_get_memory(self._ctx)
        self.n_ctx = llama.llama_n_ctx(self._ctx)
        self.kv_streams = kv_streams
        self.n_ctx_seq = llama.llama_n_ctx_seq(self._ctx) if kv_streams else self.n_ctx  # cells one sequence may fill
        self.n_batch = min(n_batch, self.n_ctx)  # llama.cpp clamps its n_batch to n_ctx and aborts on a bigger chunk
        self.n_seq_max = n_seq_max
        self._batch = llama.llama_batch_init(n_batch, 0, 1)
        self.kv = SlotCache(_LlamaKV(self._mem, kv_streams), n_seq_max, prefix_reuse, compact=kv_streams)
        self._sampler = StepSampler()
        self.capabilities = Capabilities(
            batching=True,
            logprobs=True,
            top_logprobs=20,
            full_distribution=True,
            prefix_reuse=prefix_reuse,
            scoring=True,
            max_batch=n_seq_max,
            continuous=True,
        )

    @property
    def _slots(self) -> list[Slot]:
        """The slot table, read-only here (tests check that every slot came back)."""
        return self.kv.slots

    # -- text <-> tokens (the model's vocabulary and chat template) -----------------------
    def tokenize(self, text: str, add_bos: bool | None = None) -> list[int]:
        return self.vocab.tokenize(text, add_bos)

    def piece(self, token: int) -> bytes:
        return self.vocab.piece(token)

    def detokenize(self, tokens: list[int]) -> str:
        return self.vocab.detokenize(tokens)

    def is_eog(self, token: int) -> bool:
        return self.vocab.is_eog(token)

    def format_chat(self, messages: list[dict[str, str]]) -> str:
        return self.vocab.format_chat(messages)

    # -- the StreamBackend contract: turns, slots, decoding, sampling ---------------------
    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        with self._lock:
            self.kv.tick()
            yield

    def freeing_on_error(self) -> contextlib.AbstractContextManager[None]:
        return self.kv.freeing_on_error()

    def free_slots(self) -> int:
        return self.kv.free_count()

    def fork(self, src: int, tokens: list[int]) -> int:
        return self.kv.fork(src, tokens)

    def append(self, slot: int, token: int) -> int:
        tokens = self.kv.slots[slot].tokens
        tokens.append(token)
        return len(tokens) - 1

    def cache_key(self, slot: int) -> int:
        return self.kv.key(slot)

    def release(self, slot: int) -> None:
        self.kv.release(slot)

    def pack(self, running: list[int], incoming: int) -> dict[int, int]:
        moves = self.kv.pack(running, incoming)
        self.stats.packed += len(moves)
        return moves

    def rank_cached(self, ranks: dict[int, float | None]) -> None:
        """What keeping each completion's cached cells is worth (by ``cache_ref``): None when no prompt
        will extend them again (evicted first), else in [0, 1] (the lowest is evicted next)."""
        with self._lock:
            self.kv.rank({ref: RETIRED if rank is None else rank for ref, rank in ranks.items()})

    def drop(self, slot: int) -> None:
        self.kv.drop(slot)

    def sample(self, logits: np.ndarray, requests: list[GenerationRequest], rngs: list[np.random.Generator]) -> StepSample:
        sampler = self._sampler
        before = sampler.sample_s, sampler.signals_s
        drawn = sampler.sample(logits, [r.temperature for r in requests], [r.top_p for r in requests], rngs,
                               full_signals=[r.signals for r in requests])
        self.stats.sample_s += sampler.sample_s - before[0]
        self.stats.signals_s += sampler.signals_s - before[1]
        return drawn

    def decode(self, entries: list[Entry]) -> np.ndarray:
        """Decode (token, pos, slot, want_logits) entries; return logits rows of the flagged ones.

        Chunked by n_batch; on a full KV cache, idle cached slots are evicted and it retries.
        With one KV stream per slot the entries go in slot order (llama.cpp batches only runs of
        consecutive stream ids together) and the rows come back in the caller's order.
        """
        if self.kv_streams and entries:
            slots = sorted({e[2] for e in entries})
            self.stats.slot_runs += 1 + sum(1 for a, b in zip(slots, slots[1:], strict=False) if b != a + 1)
        if self.kv_streams and len(entries) > 1:
            order = sorted(range(len(entries)), key=lambda j: (entries[j][2], entries[j][1]))
            if order != list(range(len(entries))):
                flagged = [j for j in order if entries[j][3]]
                sorted_rows = self._decode([entries[j] for j in order])
                return sorted_rows[np.argsort(flagged)]  # row k of sorted_rows is entry flagged[k]
        return self._decode(entries)

    def _decode(self, entries: list[Entry]) -> np.ndarray:
        rows: list[np.ndarray] = []
        batch = self._batch
        chunks = (len(entries) + self.n_batch - 1) // self.n_batch
        for start in range(0, len(entries), self.n_batch):
            chunk = entries[start : start + self.n_batch]
            n_out = 0
            for j, (tok, pos, slot, want) in enumerate(chunk):
                batch.token[j] = tok
                batch.pos[j] = pos
                batch.n_seq_id[j] = 1
                batch.seq_id[j][0] = slot
                batch.logits[j] = want
                n_out += want
            batch.n_tokens = len(chunk)
            while True:
                began = time.perf_counter()
                rc = llama.llama_decode(self._ctx, batch)
                self.stats.decode_s += time.perf_counter() - began
                if rc == 0:
                    break
                if rc == 1 and self.kv_streams:  # a stream holds one sequence: evicting others frees nothing for it
                    raise BackendError(
                        f"llama_decode failed: a sequence outgrew its KV stream of {self.n_ctx_seq} cells; "
                        "fix: raise model.kv_stream_cells (or, with the backend itself, n_ctx / n_seq_max)"
                    )
                if rc == 1 and self.kv.evict_idle():
                    continue
                raise BackendError(
                    f"llama_decode failed (code {rc}): the KV cache of {self.n_ctx} tokens is full; "
                    "fix: raise n_ctx, or lower the batch (fewer problems or children at once)"
                )
            if n_out:
                ptr = llama.llama_get_logits(self._ctx)
                view = np.ctypeslib.as_array(ptr, shape=(n_out, self.n_vocab))
                # The buffer lives until the next decode; callers consume it before that.
                rows.append(view if chunks == 1 else view.copy())
        return np.concatenate(rows) if rows else np.empty((0, self.n_vocab), dtype=np.float32)

    def prefill(self, prompts: list[list[int]], lead: list[Entry] | None = None) -> Prefill:
        """Put each prompt in a fresh slot reusing the best cached prefix, and decode it with ``lead``.

        ``lead`` are decode entries of running sequences (each wants logits): they go into the
        same ``llama_decode`` call, so a step that admits requests still reads the weights once.
        A prompt may share a long prefix with an earlier prompt of the same batch whose cells
        are not decoded yet: then the pending entries are decoded first (one extra call), so
        the copy sees real cells. Short in-batch overlaps are simply prefilled again.
        """
        kv = self.kv
        lead = lead or []
        slots, prefilled, rows = [], [], []
        entries = list(lead)
        pending: set[int] = set()
        # Which cached slot each prompt will read: a slot no later prompt reads is extended in
        # place (no copy, no new slot), and the others are kept from eviction until read.
        cached = kv.cached()
        planned = [kv.best_prefix(tokens, cached)[0] for tokens in prompts]
        for k, tokens in enumerate(prompts):
            src, reuse = kv.best_prefix(tokens, kv.cached() - pending)
            if src >= 0 and kv.slots[src].busy:
                # A running sequence's last token may not be decoded yet: read only what is.
                reuse = min(reuse, len(kv.slots[src].tokens) - 1)
            later, later_reuse = kv.best_prefix(tokens, pending)
            if later_reuse > reuse + 32:
                rows.append(self.decode(entries).copy())  # a view would be overwritten by the next decode
                entries, pending = [], set()
                src, reuse = later, later_reuse
            reuse = min(reuse, len(tokens) - 1)  # the last prompt token is evaluated for its logits
            keep = {j for j in planned[k + 1 :] if j >= 0}
            if (src >= 0 and src not in keep and src not in slots and not kv.slots[src].busy
                    and reuse >= len(kv.slots[src].tokens) - 1 and (not kv.compact or src == kv.lowest_free())):
                # The cached sequence is a prefix of this prompt and nobody else needs it: extend it.
                slot = src
                kv.reclaim(slot, reuse)
            else:
                slot = kv.take(protect=src, keep=keep)
                if reuse > 0:
                    kv.memory.copy(src, slot, 0, reuse)
                    kv.slots[src].last_used = kv.clock
            for pos in range(reuse, len(tokens)):
                entries.append((tokens[pos], pos, slot, pos == len(tokens) - 1))
            kv.slots[slot].tokens = list(tokens)
            pending.add(slot)
            slots.append(slot)
            prefilled.append(len(tokens) - reuse)
            self.stats.reused_prompt_tokens += reuse
        rows.append(self.decode(entries))
        self.stats.prompt_tokens += sum(prefilled)
        logits = np.concatenate(rows) if len(rows) > 1 else rows[0]
        return Prefill(slots, logits[len(lead) :], prefilled, logits[: len(lead)])

    # -- the Backend protocol -------------------------------------------------------------
    def open_stream(self) -> LlamaStream:
        """Continuous batching: requests join the running decode as slots free up (``DecodeStream``)."""
        return LlamaStream(self)

    def generate(self, requests: list[GenerationRequest]) -> list[list[Completion]]:
        refuse_adapters(self.name, requests)  # llama.cpp applies a LoRA to a whole context, not per sequence
        stream = LlamaStream(self)
        try:
            tickets = [stream.submit(r) for r in requests]  # every request is checked before any decodes
            results: dict[int, list[Completion]] = {}
            while stream.busy:
                results.update(stream.step())
        finally:
            stream.close()
        return [results[t] for t in tickets]

    def score(self, prompts: list[str], continuations: list[str]) -> list[list[float]]:
        with self.turn():
            out: list[list[float]] = []
            # A running stream may hold slots: score in waves of the free ones.
            wave = self.kv.free_count()
            if wave == 0:
                raise BackendError(f"all {self.n_seq_max} sequence slots are busy generating; fix: raise n_seq_max")
            for start in range(0, len(prompts), wave):
                with self.kv.freeing_on_error():
                    out.extend(self._score_wave(prompts[start : start + wave], continuations[start : start + wave]))
            self.stats.calls += 1
            return out

    def _score_wave(self, prompts: list[str], continuations: list[str]) -> list[list[float]]:
        kv = self.kv
        entries, spans, slots = [], [], []
        n_flagged = 0
        for prompt, cont in zip(prompts, continuations, strict=True):
            p_tokens = self.tokenize(prompt)
            full = self.tokenize(prompt + cont)
            split = common_prefix(p_tokens, full)
            if split == len(full):
                raise BackendError("score() needs a non-empty continuation")
            if split == 0:  # no prompt token to condition the first one on: condition it on BOS (else a neighbour's row is read)
                full, split = [self.vocab.bos_or_eos()] + full, 1
            src, reuse = kv.best_prefix(full, kv.cached() - set(slots))
            reuse = min(reuse, split - 1) if split > 0 else 0
            slot = kv.take(protect=src)
            if reuse > 0:
                kv.memory.copy(src, slot, 0, reuse)
            start_row = n_flagged
            for pos in range(reuse, len(full)):
                want = split - 1 <= pos < len(full) - 1
                entries.append((full[pos], pos, slot, want))
                n_flagged += want
            kv.slots[slot].tokens = list(full)
            spans.append((start_row, full[split:]))
            slots.append(slot)
            self.stats.prompt_tokens += len(full) - reuse
            self.stats.reused_prompt_tokens += reuse
            self.stats.scored_tokens += len(full) - split
        logits = self.decode(entries)
        result = []
        for start_row, targets in spans:
            rows = log_softmax(logits[start_row : start_row + len(targets)])
            result.append([float(rows[j, t]) for j, t in enumerate(targets)])
        for slot in slots:
            kv.release(slot)
        return result

    def clear_cache(self) -> None:
        """Forget every cached prefix (benchmarks use it to measure cold prefills)."""
        with self._lock:
            self.kv.clear()

    def close(self) -> None:
        if getattr(self, "_ctx", None):
            llama.llama_batch_free(self._batch)
            llama.llama_free(self._ctx)
            llama.llama_model_free(self._model)
            self._ctx = None
            self._sampler.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown
            self.close()
