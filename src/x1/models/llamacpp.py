"""In-process llama.cpp: the CPU default. Many sequences decode together in one context.

Why by hand over llama-cpp-python's low-level API rather than its ``Llama`` class: that class
decodes one sequence at a time and re-evaluates prompts, while tree search needs (a) every
frontier child of every problem in one ``llama_decode`` batch and (b) a parent's evaluated
prefix *shared* by its children. Both come from one unified KV cache in which a sequence
copy (``llama_memory_seq_cp``) only tags cells, so a prefix costs its cells once.

The prefix cache: each of ``n_seq_max`` sequence slots remembers the tokens its KV cells hold.
A new prompt is matched against every slot by longest common token prefix; a slot whose whole
sequence is a prefix of the prompt, and that no other prompt of the batch reads, is extended in
place; otherwise the match is copied into a fresh slot. Only the remainder is prefilled. Children of one request copy the
prefilled prompt. Slots are evicted least-recently-used.

Continuous batching (``open_stream``): requests join the running decode as slots free up and
leave it as soon as they finish; ``generate`` is that stream run until everything is back.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from x1.models.base import (
    BackendError,
    BackendStats,
    Capabilities,
    Completion,
    GenerationRequest,
    refuse_adapters,
    truncate_at_stop,
)
from x1.models.llamacpp_build import unsupported_build_features
from x1.models.registry import check_gguf
from x1.models.sampling import StepSampler

try:  # the runtime is optional: `pip install 'x1[cpu]'`
    import llama_cpp as _llama
except ImportError:  # pragma: no cover - exercised only without the extra
    _llama = None

# Module-level so the C callback is never garbage-collected while llama.cpp holds it.
_SILENT_LOG = _llama.llama_log_callback(lambda level, text, user_data: None) if _llama else None


@dataclass
class _Slot:
    tokens: list[int] = field(default_factory=list)  # what this sequence's KV cells hold, in order
    last_used: int = 0
    busy: bool = False


@dataclass
class _Ticket:
    """One submitted request: its prompt tokens and its ``n`` sequences."""

    id: int
    request: GenerationRequest
    prompt: list[int]
    seqs: list[_Seq] = field(default_factory=list)
    prefilled: int = 0
    left: int = 0  # sequences not finished yet


@dataclass
class _Seq:
    """One sequence being generated."""

    slot: int
    ticket: _Ticket
    child: int
    rng: np.random.Generator
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    signals: list[dict[str, float]] = field(default_factory=list)
    raw: bytearray = field(default_factory=bytearray)
    finish: str = ""
    stop: str | None = None
    text: str = ""


def _raise_for(n_seq_max: int, n_ctx: int, request: GenerationRequest, prompt_tokens: int) -> None:
    if request.n > n_seq_max:
        raise BackendError(f"n={request.n} exceeds the {n_seq_max} parallel sequences; fix: raise n_seq_max")
    if prompt_tokens + request.max_tokens > n_ctx:
        raise BackendError(
            f"prompt of {prompt_tokens} tokens + max_tokens {request.max_tokens} exceeds n_ctx {n_ctx}; "
            "fix: raise n_ctx or shorten the prompt"
        )


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class LlamaCppBackend:
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
        verbose: bool = False,
        **_: object,
    ) -> None:
        if _llama is None:
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
            _llama.llama_log_set(_SILENT_LOG, ctypes.c_void_p(0))
        _llama.llama_backend_init()
        mparams = _llama.llama_model_default_params()
        self._model = _llama.llama_model_load_from_file(str(path).encode(), mparams)
        if not self._model:
            raise BackendError(f"llama.cpp could not load {path}; fix: check that it is a complete, uncorrupted GGUF file")
        self._vocab = _llama.llama_model_get_vocab(self._model)
        self.n_vocab = _llama.llama_vocab_n_tokens(self._vocab)
        n_seq_max = min(n_seq_max, _llama.llama_max_parallel_sequences())
        cparams = _llama.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = n_batch
        cparams.n_ubatch = min(512, n_batch)
        cparams.n_seq_max = n_seq_max
        cparams.kv_unified = True  # seq_cp shares cells instead of copying them
        threads = n_threads or os.cpu_count() or 1
        self.n_threads = threads
        cparams.n_threads = threads
        cparams.n_threads_batch = threads
        self._ctx = _llama.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            raise BackendError(f"llama.cpp could not create a context of {n_ctx} tokens; fix: lower n_ctx")
        self._mem = _llama.llama_get_memory(self._ctx)
        self.n_ctx = _llama.llama_n_ctx(self._ctx)
        self.n_batch = min(n_batch, self.n_ctx)  # llama.cpp clamps its n_batch to n_ctx and aborts on a bigger chunk
        self.n_seq_max = n_seq_max
        self._batch = _llama.llama_batch_init(n_batch, 0, 1)
        self._slots = [_Slot() for _ in range(n_seq_max)]
        self._clock = 0
        self._add_bos = _llama.llama_vocab_get_add_bos(self._vocab)
        self._piece_buf = ctypes.create_string_buffer(256)
        self._pieces: dict[int, bytes] = {}
        self._chat_formatter = self._load_chat_template()
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

    # -- text <-> tokens ------------------------------------------------------------------
    def tokenize(self, text: str, add_bos: bool | None = None) -> list[int]:
        data = text.encode()
        add = self._add_bos if add_bos is None else add_bos
        cap = len(data) + 8
        buf = (_llama.llama_token * cap)()
        n = _llama.llama_tokenize(self._vocab, data, len(data), buf, cap, add, True)
        if n < 0:
            buf = (_llama.llama_token * -n)()
            n = _llama.llama_tokenize(self._vocab, data, len(data), buf, -n, add, True)
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        cached = self._pieces.get(token)
        if cached is None:
            n = _llama.llama_token_to_piece(self._vocab, token, self._piece_buf, 256, 0, False)
            cached = self._piece_buf.raw[: max(n, 0)]
            self._pieces[token] = cached
        return cached

    def detokenize(self, tokens: list[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", errors="replace")

    def _meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(1 << 16)
        n = _llama.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        return buf.value.decode() if n >= 0 else None

    def _load_chat_template(self):  # type: ignore[no-untyped-def]
        template = self._meta("tokenizer.chat_template")
        if not template:
            return None
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        def token_text(key: str) -> str:
            tid = self._meta(key)
            return self.piece(int(tid)).decode(errors="replace") if tid is not None else ""

        return Jinja2ChatFormatter(template, token_text("tokenizer.ggml.eos_token_id"), token_text("tokenizer.ggml.bos_token_id"))

    def format_chat(self, messages: list[dict[str, str]]) -> str:
        if self._chat_formatter is None:
            return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "
        text = self._chat_formatter(messages=messages).prompt
        bos = self._chat_formatter.bos_token
        # llama.cpp adds BOS itself when the model wants it; do not double it.
        return text[len(bos):] if bos and self._add_bos and text.startswith(bos) else text

    # -- KV slots -------------------------------------------------------------------------
    def _take_slot(self, protect: int = -1, keep: set[int] | frozenset[int] = frozenset()) -> int:
        """A free slot, evicting the least recently used cached one: never ``protect`` (a copy is
        about to read it), and slots in ``keep`` (later prompts of this batch read them) only when
        nothing else is free."""
        free = [i for i, s in enumerate(self._slots) if not s.busy and i != protect]
        if not free:
            raise BackendError(f"all {self.n_seq_max} sequence slots are busy; fix: raise n_seq_max or send smaller batches")
        empty = [i for i in free if not self._slots[i].tokens]
        spare = [i for i in free if i not in keep] or free
        slot = empty[0] if empty else min(spare, key=lambda i: self._slots[i].last_used)
        _llama.llama_memory_seq_rm(self._mem, slot, -1, -1)
        self._slots[slot] = _Slot(busy=True, last_used=self._clock)
        return slot

    def _best_prefix(self, tokens: list[int], among: set[int] | None = None) -> tuple[int, int]:
        """(slot, length) of the longest cached prefix of ``tokens``; (-1, 0) if none."""
        if not self.prefix_reuse:
            return -1, 0
        best, best_len = -1, 0
        for i, s in enumerate(self._slots):
            if s.tokens and (among is None or i in among):
                n = _common_prefix(s.tokens, tokens)
                if n > best_len:
                    best, best_len = i, n
        return best, best_len

    def _evict_idle(self) -> bool:
        idle = [i for i, s in enumerate(self._slots) if not s.busy and s.tokens]
        if not idle:
            return False
        victim = min(idle, key=lambda i: self._slots[i].last_used)
        _llama.llama_memory_seq_rm(self._mem, victim, -1, -1)
        self._slots[victim] = _Slot()
        return True

    # -- decoding -------------------------------------------------------------------------
    def _decode(self, entries: list[tuple[int, int, int, bool]]) -> np.ndarray:
        """Decode (token, pos, slot, want_logits) entries; return logits rows of the flagged ones.

        Chunked by n_batch; on a full KV cache, idle cached slots are evicted and it retries.
        """
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
                start = time.perf_counter()
                rc = _llama.llama_decode(self._ctx, batch)
                self.stats.decode_s += time.perf_counter() - start
                if rc == 0:
                    break
                if rc == 1 and self._evict_idle():
                    continue
                raise BackendError(
                    f"llama_decode failed (code {rc}): the KV cache of {self.n_ctx} tokens is full; "
                    "fix: raise n_ctx, or lower the batch (fewer problems or children at once)"
                )
            if n_out:
                ptr = _llama.llama_get_logits(self._ctx)
                view = np.ctypeslib.as_array(ptr, shape=(n_out, self.n_vocab))
                # The buffer lives until the next decode; callers consume it before that.
                rows.append(view if chunks == 1 else view.copy())
        return np.concatenate(rows) if rows else np.empty((0, self.n_vocab), dtype=np.float32)

    def _prefill(
        self, prompts: list[list[int]], lead: list[tuple[int, int, int, bool]] | None = None
    ) -> tuple[list[int], np.ndarray, list[int], np.ndarray]:
        """Put each prompt in a fresh slot reusing the best cached prefix; return slots,
        last-position logits, tokens actually prefilled per prompt, and the logits of ``lead``.

        ``lead`` are decode entries of running sequences (each wants logits): they go into the
        same ``llama_decode`` call, so a step that admits requests still reads the weights once.
        A prompt may share a long prefix with an earlier prompt of the same batch whose cells
        are not decoded yet: then the pending entries are decoded first (one extra call), so
        the copy sees real cells. Short in-batch overlaps are simply prefilled again.
        """
        lead = lead or []
        slots, prefilled, rows = [], [], []
        entries = list(lead)
        pending: set[int] = set()
        cached = {i for i, s in enumerate(self._slots) if s.tokens}
        # Which cached slot each prompt will read: a slot no later prompt reads is extended in
        # place (no copy, no new slot), and the others are kept from eviction until read.
        planned = [self._best_prefix(tokens, cached)[0] for tokens in prompts]
        for k, tokens in enumerate(prompts):
            ready = {i for i, s in enumerate(self._slots) if s.tokens} - pending
            src, reuse = self._best_prefix(tokens, ready)
            if src >= 0 and self._slots[src].busy:
                # A running sequence's last token may not be decoded yet: read only what is.
                reuse = min(reuse, len(self._slots[src].tokens) - 1)
            later, later_reuse = self._best_prefix(tokens, pending)
            if later_reuse > reuse + 32:
                rows.append(self._decode(entries).copy())  # a view would be overwritten by the next decode
                entries, pending = [], set()
                src, reuse = later, later_reuse
            reuse = min(reuse, len(tokens) - 1)  # the last prompt token is evaluated for its logits
            keep = {j for j in planned[k + 1 :] if j >= 0}
            if (src >= 0 and src not in keep and src not in slots and not self._slots[src].busy
                    and reuse >= len(self._slots[src].tokens) - 1):
                # The cached sequence is a prefix of this prompt and nobody else needs it: extend it.
                slot = src
                _llama.llama_memory_seq_rm(self._mem, slot, reuse, -1)
                self._slots[slot] = _Slot(busy=True, last_used=self._clock)
            else:
                slot = self._take_slot(protect=src, keep=keep)
                if reuse > 0:
                    _llama.llama_memory_seq_cp(self._mem, src, slot, 0, reuse)
                    self._slots[src].last_used = self._clock
            for pos in range(reuse, len(tokens)):
                entries.append((tokens[pos], pos, slot, pos == len(tokens) - 1))
            self._slots[slot].tokens = list(tokens)
            pending.add(slot)
            slots.append(slot)
            prefilled.append(len(tokens) - reuse)
            self.stats.reused_prompt_tokens += reuse
        rows.append(self._decode(entries))
        self.stats.prompt_tokens += sum(prefilled)
        logits = np.concatenate(rows) if len(rows) > 1 else rows[0]
        return slots, logits[len(lead) :], prefilled, logits[: len(lead)]

    @staticmethod
    def _log_softmax(logits: np.ndarray) -> np.ndarray:
        x = logits.astype(np.float32, copy=False)
        m = x.max(axis=-1, keepdims=True)
        return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))

    def open_stream(self) -> _LlamaStream:
        """Continuous batching: requests join the running decode as slots free up (``DecodeStream``)."""
        return _LlamaStream(self)

    def generate(self, requests: list[GenerationRequest]) -> list[list[Completion]]:
        refuse_adapters(self.name, requests)  # llama.cpp applies a LoRA to a whole context, not per sequence
        stream = _LlamaStream(self)
        try:
            tickets = [stream.submit(r) for r in requests]  # every request is checked before any decodes
            results: dict[int, list[Completion]] = {}
            while stream.busy:
                results.update(stream.step())
        finally:
            stream.close()
        return [results[t] for t in tickets]

    # -- scoring --------------------------------------------------------------------------
    def score(self, prompts: list[str], continuations: list[str]) -> list[list[float]]:
        with self._lock:
            self._clock += 1
            out: list[list[float]] = []
            # A running stream may hold slots: score in waves of the free ones.
            wave = sum(not s.busy for s in self._slots)
            if wave == 0:
                raise BackendError(f"all {self.n_seq_max} sequence slots are busy generating; fix: raise n_seq_max")
            for start in range(0, len(prompts), wave):
                with self._freeing_on_error():
                    out.extend(self._score_wave(prompts[start : start + wave], continuations[start : start + wave]))
            self.stats.calls += 1
            return out

    def _score_wave(self, prompts: list[str], continuations: list[str]) -> list[list[float]]:
        entries, spans, slots = [], [], []
        n_flagged = 0
        for prompt, cont in zip(prompts, continuations, strict=True):
            p_tokens = self.tokenize(prompt)
            full = self.tokenize(prompt + cont)
            split = _common_prefix(p_tokens, full)
            if split == len(full):
                raise BackendError("score() needs a non-empty continuation")
            if split == 0:  # no prompt token to condition the first one on: condition it on BOS (else a neighbour's row is read)
                bos = _llama.llama_vocab_bos(self._vocab)
                full, split = [bos if bos >= 0 else _llama.llama_vocab_eos(self._vocab)] + full, 1
            ready = {i for i, sl in enumerate(self._slots) if sl.tokens} - set(slots)
            src, reuse = self._best_prefix(full, ready)
            reuse = min(reuse, split - 1) if split > 0 else 0
            slot = self._take_slot(protect=src)
            if reuse > 0:
                _llama.llama_memory_seq_cp(self._mem, src, slot, 0, reuse)
            start_row = n_flagged
            for pos in range(reuse, len(full)):
                want = split - 1 <= pos < len(full) - 1
                entries.append((full[pos], pos, slot, want))
                n_flagged += want
            self._slots[slot].tokens = list(full)
            spans.append((start_row, full[split:]))
            slots.append(slot)
            self.stats.prompt_tokens += len(full) - reuse
            self.stats.reused_prompt_tokens += reuse
            self.stats.scored_tokens += len(full) - split
        logits = self._decode(entries)
        result = []
        for start_row, targets in spans:
            rows = self._log_softmax(logits[start_row : start_row + len(targets)])
            result.append([float(rows[j, t]) for j, t in enumerate(targets)])
        for slot in slots:
            self._slots[slot].busy = False
            self._slots[slot].last_used = self._clock
        return result

    @contextlib.contextmanager
    def _freeing_on_error(self) -> Iterator[None]:
        """Slots a failed call took (a full KV cache mid-prefill) are emptied, so the failure does not keep their cells forever."""
        before = {i for i, s in enumerate(self._slots) if s.busy}
        try:
            yield
        except Exception:
            for i, slot in enumerate(self._slots):
                if slot.busy and i not in before:
                    _llama.llama_memory_seq_rm(self._mem, i, -1, -1)
                    self._slots[i] = _Slot()
            raise

    def clear_cache(self) -> None:
        """Forget every cached prefix (benchmarks use it to measure cold prefills)."""
        with self._lock:
            _llama.llama_memory_clear(self._mem, True)
            self._slots = [_Slot() for _ in range(self.n_seq_max)]

    def close(self) -> None:
        if getattr(self, "_ctx", None):
            _llama.llama_batch_free(self._batch)
            _llama.llama_free(self._ctx)
            _llama.llama_model_free(self._model)
            self._ctx = None
            self._sampler.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown
            self.close()


class _LlamaStream:
    """Continuous batching over one llama.cpp context (the ``DecodeStream`` contract).

    Each step admits queued requests (first in, first out) into the free slots and, in one
    ``llama_decode``, prefills them (with prefix reuse) and decodes the token every running
    sequence sampled last step; then it samples everyone's next token. A finished sequence frees its slot at once, so a short step no
    longer waits for the longest one of its batch. Between steps no logits are held, so
    ``score()`` may run in between (one slot is left free for it while sequences run).
    """

    def __init__(self, backend: LlamaCppBackend) -> None:
        self.backend = backend
        self._queue: deque[_Ticket] = deque()
        self._open: dict[int, _Ticket] = {}
        self._running: list[_Seq] = []  # each has sampled a token that the next step decodes
        self._entries: list[tuple[int, int, int, bool]] = []  # those tokens, aligned with _running
        self._next = 0
        self._cells: dict[int, int] = {}  # admitted ticket -> the KV cells its admission fills (prompt + n)

    def submit(self, request: GenerationRequest) -> int:
        b = self.backend
        refuse_adapters(b.name, [request])
        prompt = b.tokenize(request.prompt)
        _raise_for(b.n_seq_max, b.n_ctx, request, len(prompt))
        ticket = _Ticket(self._next, request, prompt, left=request.n)
        self._next += 1
        self._queue.append(ticket)
        self._open[ticket.id] = ticket
        return ticket.id

    @property
    def busy(self) -> bool:
        return bool(self._open)

    def step(self) -> list[tuple[int, list[Completion]]]:
        b = self.backend
        finished: list[_Ticket] = []
        with b._lock:
            b._clock += 1
            b.stats.calls += 1  # one batched model call per step
            # Admit into the slots free now; the newcomers' prompts are prefilled in the same
            # llama_decode call that decodes the running sequences' last tokens.
            admitted = self._take_admissible()
            if not admitted and not self._running and self._queue:
                raise BackendError(
                    f"request needs {self._queue[0].request.n} sequence slots but all {b.n_seq_max} are busy elsewhere; "
                    "fix: raise n_seq_max or finish the other stream first"
                )
            running_logits = None
            if admitted:
                with b._freeing_on_error():
                    seqs, first_logits, running_logits = self._start(admitted, self._entries)
            elif self._running:
                running_logits = b._decode(self._entries)
            entries: list[tuple[int, int, int, bool]] = []
            running: list[_Seq] = []
            width = len(self._running) + (len(seqs) if admitted else 0)
            if width:
                b.stats.batch_sizes[width] = b.stats.batch_sizes.get(width, 0) + 1
            if self._running:
                self._advance(self._running, running_logits, entries, running, finished)
            if admitted:
                self._advance(seqs, first_logits, entries, running, finished)
            self._running, self._entries = running, entries
        return [(t.id, self._completions(t)) for t in finished]

    def close(self) -> None:
        """Free the slots of unfinished sequences; their cells are dropped (a token may be undecoded)."""
        b = self.backend
        with b._lock:
            for seq in self._running:
                _llama.llama_memory_seq_rm(b._mem, seq.slot, -1, -1)
                b._slots[seq.slot] = _Slot()
            self._running, self._entries = [], []
            self._queue.clear()
            self._open.clear()
            self._cells.clear()

    # -- internals ------------------------------------------------------------------------
    def _take_admissible(self) -> list[_Ticket]:
        b = self.backend
        free = sum(not s.busy for s in b._slots)
        taken: list[_Ticket] = []
        while self._queue:
            # While sequences run, keep one slot for score() between steps.
            reserve = 1 if (self._running or taken) else 0
            head = self._queue[0]
            need = head.request.n
            cells = len(head.prompt) + head.request.n  # its prompt and a first token per sequence: what admission fills at once
            # Prompts that do not fit beside the admitted ones wait for them (one alone always goes); reserving n x max_tokens
            # would halve the batch for searches whose steps stop early, and a decode that outgrows the cache frees its slots.
            if need + reserve > free or ((self._cells or taken) and sum(self._cells.values()) + cells > b.n_ctx):
                break
            free -= need
            self._cells[head.id] = cells
            taken.append(self._queue.popleft())
        return taken

    def cancel(self, ticket: int) -> None:
        """Drop a request whose client went away: out of the queue, or out of the decode with its slots freed."""
        b = self.backend
        with b._lock:
            t = self._open.pop(ticket, None)
            self._cells.pop(ticket, None)
            if t is None:
                return
            with contextlib.suppress(ValueError):
                self._queue.remove(t)
            keep = [k for k, seq in enumerate(self._running) if seq.ticket is not t]
            for seq in t.seqs:
                if seq.finish == "":
                    _llama.llama_memory_seq_rm(b._mem, seq.slot, -1, -1)
                    b._slots[seq.slot] = _Slot()
            self._running = [self._running[k] for k in keep]
            self._entries = [self._entries[k] for k in keep]

    def _start(
        self, tickets: list[_Ticket], lead: list[tuple[int, int, int, bool]]
    ) -> tuple[list[_Seq], np.ndarray, np.ndarray]:
        """Prefill the admitted requests (with ``lead`` in the same decode) and fork their children."""
        b = self.backend
        slots, last_logits, prefilled, lead_logits = b._prefill([t.prompt for t in tickets], lead)
        seqs: list[_Seq] = []
        rows: list[int] = []
        for k, t in enumerate(tickets):
            req = t.request
            t.prefilled = prefilled[k]
            base = np.random.SeedSequence(req.seed if req.seed is not None else np.random.SeedSequence().entropy)
            rngs = [np.random.default_rng(x) for x in base.spawn(req.n)]
            for child in range(req.n):
                if child == 0:
                    slot = slots[k]
                else:
                    slot = b._take_slot()
                    _llama.llama_memory_seq_cp(b._mem, slots[k], slot, -1, -1)
                    b._slots[slot].tokens = list(t.prompt)
                seq = _Seq(slot=slot, ticket=t, child=child, rng=rngs[child])
                t.seqs.append(seq)
                seqs.append(seq)
                rows.append(k)
        return seqs, last_logits[rows], lead_logits

    def _advance(
        self,
        seqs: list[_Seq],
        logits: np.ndarray,
        entries: list[tuple[int, int, int, bool]],
        running: list[_Seq],
        finished: list[_Ticket],
    ) -> None:
        """Sample each sequence's next token from its logits row (consumed: shifted in place); finish
        it or queue the token for decoding. Every step carries entropy, varentropy and top-1 from
        the sampler's own sums; requests that ask for ``signals`` also get Gini and the margin."""
        b = self.backend
        reqs = [seq.ticket.request for seq in seqs]
        sampler = b._sampler
        before = sampler.sample_s, sampler.signals_s
        drawn = sampler.sample(logits, [r.temperature for r in reqs], [r.top_p for r in reqs], [seq.rng for seq in seqs],
                               full_signals=[r.signals for r in reqs])
        b.stats.sample_s += sampler.sample_s - before[0]
        b.stats.signals_s += sampler.signals_s - before[1]
        chosen = drawn.logprobs
        for r, (seq, tok) in enumerate(zip(seqs, drawn.tokens, strict=True)):
            req = reqs[r]
            seq.signals.append(drawn.signals[r])
            if _llama.llama_vocab_is_eog(b._vocab, tok):
                self._finish(seq, "eos", finished)
                continue
            seq.tokens.append(tok)
            seq.logprobs.append(float(chosen[r]))
            seq.raw += b.piece(tok)
            if req.stop:
                text = seq.raw.decode("utf-8", errors="ignore")
                cut, hit = truncate_at_stop(text, req.stop)
                if hit is not None:
                    seq.stop, seq.text = hit, cut
                    self._finish(seq, "stop", finished)
                    continue
            if len(seq.tokens) >= req.max_tokens:
                self._finish(seq, "length", finished)
                continue
            slot_tokens = b._slots[seq.slot].tokens
            entries.append((tok, len(slot_tokens), seq.slot, True))
            slot_tokens.append(tok)
            running.append(seq)

    def _finish(self, seq: _Seq, reason: str, finished: list[_Ticket]) -> None:
        b = self.backend
        seq.finish = reason
        slot = b._slots[seq.slot]
        slot.busy = False
        slot.last_used = b._clock
        seq.ticket.left -= 1
        if seq.ticket.left == 0:
            finished.append(seq.ticket)

    def _completions(self, ticket: _Ticket) -> list[Completion]:
        b = self.backend
        del self._open[ticket.id]
        self._cells.pop(ticket.id, None)
        out = []
        for seq in ticket.seqs:
            text = seq.text if seq.finish == "stop" else seq.raw.decode("utf-8", errors="replace")
            b.stats.generated_tokens += len(seq.tokens)
            b.stats.sequences += 1
            out.append(
                Completion(
                    text=text,
                    token_ids=seq.tokens,
                    logprobs=seq.logprobs,
                    signals=seq.signals,
                    finish_reason=seq.finish,  # type: ignore[arg-type]
                    stop=seq.stop,
                    prompt_tokens=ticket.prefilled if seq.child == 0 else 0,
                    generated_tokens=len(seq.tokens),
                )
            )
        return out
