"""Continuous batching over one llama.cpp context: requests join the running decode as slots free up.

Requests leave the decode as soon as they finish; the backend's ``generate`` is this stream run
until everything is back. The stream talks to the backend only through ``StreamBackend``.
"""

from __future__ import annotations

import contextlib
from collections import deque
from dataclasses import dataclass, field, replace

import numpy as np

from x1.models.base import BackendError, Completion, ContextFull, GenerationRequest, refuse_adapters, truncate_at_stop
from x1.models.llama_cpp.contract import Entry, StreamBackend


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
    cache_ref: int | None = None  # what its slot held when it finished: another request may take the slot before this one's siblings finish


def _fit_request(n_seq_max: int, n_ctx: int, request: GenerationRequest, prompt_tokens: int) -> GenerationRequest:
    """The request as it can run: refused at submission if it never could (rather than waiting forever),
    its ``max_tokens`` cut to the cells left after the prompt (it then finishes with "length")."""
    if request.n > n_seq_max:
        raise BackendError(f"n={request.n} exceeds the {n_seq_max} parallel sequences; fix: raise n_seq_max")
    if prompt_tokens >= n_ctx:
        raise ContextFull(
            f"prompt of {prompt_tokens} tokens leaves no room in the {n_ctx} KV cells one sequence may fill; "
            "fix: raise n_ctx (with one KV stream per sequence, model.kv_stream_cells) or shorten the prompt"
        )
    if prompt_tokens + request.max_tokens > n_ctx:
        return replace(request, max_tokens=n_ctx - prompt_tokens)
    return request


class LlamaStream:
    """Continuous batching over one llama.cpp context (the ``DecodeStream`` contract).

    Each step admits queued requests (first in, first out) into the free slots and, in one
    ``llama_decode``, prefills them (with prefix reuse) and decodes the token every running
    sequence sampled last step; then it samples everyone's next token. A finished sequence frees its slot at once, so a short step no
    longer waits for the longest one of its batch. Between steps no logits are held, so
    ``score()`` may run in between (one slot is left free for it while sequences run).
    """

    def __init__(self, backend: StreamBackend) -> None:
        self.backend = backend
        self._queue: deque[_Ticket] = deque()
        self._open: dict[int, _Ticket] = {}
        self._running: list[_Seq] = []  # each has sampled a token that the next step decodes
        self._entries: list[Entry] = []  # those tokens, aligned with _running
        self._next = 0
        self._cells: dict[int, int] = {}  # admitted ticket -> the KV cells its admission fills (prompt + n)

    def submit(self, request: GenerationRequest) -> int:
        b = self.backend
        refuse_adapters(b.name, [request])
        prompt = b.tokenize(request.prompt)
        request = _fit_request(b.n_seq_max, b.n_ctx_seq, request, len(prompt))
        ticket = _Ticket(self._next, request, prompt, left=request.n)
        self._next += 1
        self._queue.append(ticket)
        self._open[ticket.id] = ticket
        return ticket.id

    @property
    def busy(self) -> bool:
        return bool(self._open)

    def live_sequences(self) -> int:
        """Sequences queued or decoding: a request's finished children stop counting at once, so the
        engine admits the next problem while a slow sibling still decodes."""
        return len(self._running) + sum(t.request.n for t in self._queue)

    def step(self) -> list[tuple[int, list[Completion]]]:
        b = self.backend
        finished: list[_Ticket] = []
        with b.turn():
            b.stats.calls += 1  # one batched model call per step
            # Admit into the slots free now; the newcomers' prompts are prefilled in the same
            # llama_decode call that decodes the running sequences' last tokens.
            admitted = self._take_admissible()
            if not admitted and not self._running and self._queue:
                raise BackendError(
                    f"request needs {self._queue[0].request.n} sequence slots but all {b.n_seq_max} are busy elsewhere; "
                    "fix: raise n_seq_max or finish the other stream first"
                )
            self._pack(len(admitted))  # one prompt slot each in this step's decode; their children fork after it
            self._in_slot_order()
            running_logits = None
            if admitted:
                with b.freeing_on_error():
                    seqs, first_logits, running_logits = self._start(admitted, self._entries)
            elif self._running:
                running_logits = b.decode(self._entries)
            b.stats.decoded_tokens += len(self._entries)
            b.stats.decoded_positions += sum(entry[1] for entry in self._entries)
            entries: list[Entry] = []
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
        with b.turn():
            for seq in self._running:
                b.drop(seq.slot)
            self._running, self._entries = [], []
            self._queue.clear()
            self._open.clear()
            self._cells.clear()

    def cancel(self, ticket: int) -> None:
        """Drop a request whose client went away: out of the queue, or out of the decode with its slots freed."""
        b = self.backend
        with b.turn():
            t = self._open.pop(ticket, None)
            self._cells.pop(ticket, None)
            if t is None:
                return
            with contextlib.suppress(ValueError):
                self._queue.remove(t)
            keep = [k for k, seq in enumerate(self._running) if seq.ticket is not t]
            for seq in t.seqs:
                if seq.finish == "":
                    b.drop(seq.slot)
            self._running = [self._running[k] for k in keep]
            self._entries = [self._entries[k] for k in keep]

    # -- internals ------------------------------------------------------------------------
    def _take_admissible(self) -> list[_Ticket]:
        free = self.backend.free_slots()
        taken: list[_Ticket] = []
        while self._queue:
            # While sequences run, keep one slot for score() between steps.
            reserve = 1 if (self._running or taken) else 0
            head = self._queue[0]
            need = head.request.n
            cells = len(head.prompt) + head.request.n  # its prompt and a first token per sequence: what admission fills at once
            # Prompts that do not fit beside the admitted ones wait for them (one alone always goes); reserving n x max_tokens
            # would halve the batch for searches whose steps stop early, and a decode that outgrows the cache frees its slots.
            if need + reserve > free or ((self._cells or taken) and sum(self._cells.values()) + cells > self.backend.n_ctx):
                break
            free -= need
            self._cells[head.id] = cells
            taken.append(self._queue.popleft())
        return taken

    def _start(self, tickets: list[_Ticket], lead: list[Entry]) -> tuple[list[_Seq], np.ndarray, np.ndarray]:
        """Prefill the admitted requests (with ``lead`` in the same decode) and fork their children."""
        b = self.backend
        done = b.prefill([t.prompt for t in tickets], lead)
        seqs: list[_Seq] = []
        rows: list[int] = []
        for k, t in enumerate(tickets):
            req = t.request
            t.prefilled = done.prefilled[k]
            base = np.random.SeedSequence(req.seed if req.seed is not None else np.random.SeedSequence().entropy)
            rngs = [np.random.default_rng(x) for x in base.spawn(req.n)]
            for child in range(req.n):
                slot = done.slots[k] if child == 0 else b.fork(done.slots[k], t.prompt)
                seq = _Seq(slot=slot, ticket=t, child=child, rng=rngs[child])
                t.seqs.append(seq)
                seqs.append(seq)
                rows.append(k)
        return seqs, done.last_logits[rows], done.lead_logits

    def _advance(
        self,
        seqs: list[_Seq],
        logits: np.ndarray,
        entries: list[Entry],
        running: list[_Seq],
        finished: list[_Ticket],
    ) -> None:
        """Sample each sequence's next token from its logits row (consumed: shifted in place); finish
        it or queue the token for decoding. Every step carries entropy, varentropy and top-1 from
        the sampler's own sums; requests that ask for ``signals`` also get Gini and the margin."""
        b = self.backend
        reqs = [seq.ticket.request for seq in seqs]
        drawn = b.sample(logits, reqs, [seq.rng for seq in seqs])
        chosen = drawn.logprobs
        for r, (seq, tok) in enumerate(zip(seqs, drawn.tokens, strict=True)):
            req = reqs[r]
            seq.signals.append(drawn.signals[r])
            if b.is_eog(tok):
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
            entries.append((tok, b.append(seq.slot, tok), seq.slot, True))
            running.append(seq)

    def _in_slot_order(self) -> None:
        """With a KV stream per slot, llama.cpp takes a batch in slot order. Keeping the running sequences in
        that order here means the backend does not sort the batch and then permute the logits rows back: that
        permutation copied the whole [sequences, vocabulary] block every step (py-spy: 8% of a best-of-16 run)."""
        entries = self._entries
        if not self.backend.kv_streams or len(entries) < 2:
            return
        order = sorted(range(len(entries)), key=lambda k: (entries[k][2], entries[k][1]))
        if order != list(range(len(entries))):
            self._running = [self._running[k] for k in order]
            self._entries = [entries[k] for k in order]

    def _pack(self, incoming: int) -> None:
        """Keep the running sequences and ``incoming`` prompts in consecutive slots (KV streams): a moved
        sequence decodes from its new slot."""
        moves = self.backend.pack([seq.slot for seq in self._running], incoming)
        if not moves:
            return
        for k, seq in enumerate(self._running):
            new = moves.get(seq.slot)
            if new is not None:
                seq.slot = new
                tok, pos, _, want = self._entries[k]
                self._entries[k] = (tok, pos, new, want)

    def _finish(self, seq: _Seq, reason: str, finished: list[_Ticket]) -> None:
        seq.finish = reason
        seq.cache_ref = self.backend.cache_key(seq.slot)
        self.backend.release(seq.slot)
        seq.ticket.left -= 1
        if seq.ticket.left == 0:
            finished.append(seq.ticket)

    def _completions(self, ticket: _Ticket) -> list[Completion]:
        stats = self.backend.stats
        del self._open[ticket.id]
        self._cells.pop(ticket.id, None)
        out = []
        for seq in ticket.seqs:
            text = seq.text if seq.finish == "stop" else seq.raw.decode("utf-8", errors="replace")
            stats.generated_tokens += len(seq.tokens)
            stats.sequences += 1
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
                    cache_ref=seq.cache_ref,
                )
            )
        return out
