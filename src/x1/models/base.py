"""The one contract every policy backend speaks.

A backend turns batches of text prompts into continuations. Strategies never call a backend
directly: the engine gathers every pending request of every problem into one ``generate`` call,
so a backend that declares ``batching`` gets the whole tick at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable


class BackendError(RuntimeError):
    """A backend could not do what was asked; the message names the fix."""


class ContextFull(BackendError):
    """A prompt leaves no room for even one generated token in the cells one sequence may fill.

    Raised at submission. The engine ends that problem (stop reason "context full") and the run goes
    on: a path that grew this long is one problem's failure, not the run's.
    """


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do, so callers choose a path instead of guessing."""

    batching: bool = False  # many sequences decoded together in one forward pass
    logprobs: bool = False  # logprob of each generated token
    top_logprobs: int = 0  # how many alternatives per position it can return (0 = none)
    full_distribution: bool = False  # whole next-token distribution (exact entropy/varentropy/gini)
    prefix_reuse: bool = False  # a prompt prefix already evaluated is not prefilled again
    scoring: bool = False  # teacher-forced logprobs of a given continuation
    max_batch: int = 1
    adapters: bool = False  # requests may name a LoRA adapter applied over one shared base model
    continuous: bool = False  # open_stream(): requests join and leave a running decode (continuous batching)


@dataclass
class GenerationRequest:
    """Ask for ``n`` continuations of ``prompt`` (already chat-formatted text)."""

    prompt: str
    n: int = 1
    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    top_logprobs: int = 0  # >0: return that many alternatives per position (for token signals)
    signals: bool = False  # compute exact token signals from the full distribution where possible
    adapter: str | None = None  # name of a LoRA adapter the backend has loaded; None = the base model


FinishReason = Literal["stop", "eos", "length"]


@dataclass
class Completion:
    """One continuation. ``prompt_tokens`` counts only the prompt tokens actually prefilled for it."""

    text: str
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[dict[str, float]] = field(default_factory=list)
    signals: list[dict[str, float]] = field(default_factory=list)  # per position: entropy, varentropy, ...
    finish_reason: FinishReason = "eos"
    stop: str | None = None  # the stop string that ended it, if any (not included in text)
    prompt_tokens: int = 0
    generated_tokens: int = 0
    # The backend's name for the cached KV cells that now hold the prompt and this continuation, or
    # None. A caller that knows how likely a prompt is to extend them passes it to ``rank_cached``.
    cache_ref: int | None = None


@dataclass
class BackendStats:
    """Running totals; benchmarks and the engine read them."""

    calls: int = 0  # batched model calls: generate or score calls, and each step of a decode stream
    sequences: int = 0
    prompt_tokens: int = 0  # tokens prefilled (evaluated) after any prefix reuse
    reused_prompt_tokens: int = 0  # tokens that reuse saved instead of prefilling
    generated_tokens: int = 0
    scored_tokens: int = 0
    # Where a decode stream's time goes (llama.cpp fills them; the engine benchmark's profile reads them).
    decode_s: float = 0.0  # inside the model's forward passes
    sample_s: float = 0.0  # choosing next tokens
    signals_s: float = 0.0  # entropy and varentropy on top of sampling
    batch_sizes: dict[int, int] = field(default_factory=dict)  # sequences sampled in a step -> how many steps
    # Σ position of every running sequence's decoded token: over ``decoded_tokens``, the mean context a decode
    # step attends over (the engine benchmark matches its ceiling to it).
    decoded_positions: int = 0
    decoded_tokens: int = 0
    # KV streams: runs of consecutive slots in the decode calls (llama.cpp splits a batch between them), and
    # running sequences moved down into a free slot to close such a gap
    slot_runs: int = 0
    packed: int = 0


@runtime_checkable
class Backend(Protocol):
    """A policy model. Implementations live next to this file, one per runtime."""

    name: str
    capabilities: Capabilities
    stats: BackendStats

    def generate(self, requests: list[GenerationRequest]) -> list[list[Completion]]:
        """One list of ``request.n`` completions per request, in order."""
        ...

    def score(self, prompts: list[str], continuations: list[str]) -> list[list[float]]:
        """Teacher-forced logprob of every token of each continuation given its prompt."""
        ...

    def format_chat(self, messages: list[dict[str, str]]) -> str:
        """Render chat messages with the model's own template, ready for the assistant's turn."""
        ...

    def close(self) -> None: ...

    # A backend with a prefix cache may also offer ``rank_cached({cache_ref: rank})``: what keeping each
    # completion's cached cells is worth, None when no later prompt will extend them (an expanded step,
    # a final answer, a finished problem), else in [0, 1]; the cache evicts the lowest first.


class DecodeStream(Protocol):
    """Continuous batching: requests join a running decode and leave it as soon as they finish.

    ``submit`` queues a request (checked at once: a bad one raises here and touches nothing
    else) and returns its ticket; each ``step`` advances every running sequence by one token,
    admitting queued requests as sequence slots free up, and returns the requests that
    finished, so a caller refills the batch instead of waiting for its longest member.
    A stream may also offer ``live_sequences()`` (queued plus decoding), which the engine's
    admission then counts instead of whole requests.
    """

    def submit(self, request: GenerationRequest) -> int: ...

    def step(self) -> list[tuple[int, list[Completion]]]: ...

    @property
    def busy(self) -> bool:
        """Something submitted has not come back yet."""
        ...

    def close(self) -> None:
        """Drop whatever is still queued or running and free its slots."""
        ...


class LockStepStream:
    """The stream of a backend without continuous batching: one ``generate`` call per step serves
    everything submitted since the last one, so callers need only one code path."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._queued: list[tuple[int, GenerationRequest]] = []
        self._next = 0

    def submit(self, request: GenerationRequest) -> int:
        ticket, self._next = self._next, self._next + 1
        self._queued.append((ticket, request))
        return ticket

    def step(self) -> list[tuple[int, list[Completion]]]:
        queued, self._queued = self._queued, []
        if not queued:
            return []
        results = self.backend.generate([r for _, r in queued])
        if len(results) != len(queued):
            raise BackendError(f"backend {self.backend.name} returned {len(results)} results for {len(queued)} requests")
        return [(t, c) for (t, _), c in zip(queued, results, strict=True)]

    @property
    def busy(self) -> bool:
        return bool(self._queued)

    def close(self) -> None:
        self._queued = []

    def cancel(self, ticket: int) -> None:
        """Drop a request not yet handed to ``generate`` (one already generating runs to its end)."""
        self._queued = [(t, r) for t, r in self._queued if t != ticket]


def open_stream(backend: Backend) -> DecodeStream:
    """The backend's own continuous stream where it has one, else lock-step batches."""
    if backend.capabilities.continuous:
        return backend.open_stream()  # type: ignore[attr-defined, no-any-return]
    return LockStepStream(backend)


def refuse_adapters(backend: str, requests: list[GenerationRequest]) -> None:
    """For backends without LoRA support: fail loudly rather than silently answer with the base model."""
    named = sorted({r.adapter for r in requests if r.adapter is not None})
    if named:
        raise BackendError(
            f"backend {backend!r} cannot apply LoRA adapters (requested: {', '.join(map(repr, named))}); "
            "fix: serve the base model with the transformers backend (a transformers folder or hf:PATH, with adapters=...) "
            "or vLLM, or merge the adapter into the weights and load that model"
        )


def truncate_at_stop(text: str, stop: list[str]) -> tuple[str, str | None]:
    """Cut ``text`` at the earliest stop string; return the kept text and the stop that matched."""
    best: tuple[int, str] | None = None
    for s in stop:
        if not s:
            continue
        i = text.find(s)
        if i >= 0 and (best is None or i < best[0]):
            best = (i, s)
    if best is None:
        return text, None
    return text[: best[0]], best[1]
