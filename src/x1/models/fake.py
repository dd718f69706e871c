"""A deterministic, scriptable backend: exact logic tests with no model, and zero-cost benchmarks.

Two ways to drive it:
- ``responses``: a map from the *end of the prompt* (usually the path so far, "" for the first
  step) to a list of continuations; the k-th time a key is asked for, it answers item k (cycling).
  The longest key the prompt ends with wins.
- otherwise a procedural generator: hashed, reproducible steps that end with
  "The answer is N" after a few steps.
"""

from __future__ import annotations

import hashlib
import time
import zlib
from collections import defaultdict
from collections.abc import Callable

from x1.models.base import BackendStats, Capabilities, Completion, ContextFull, GenerationRequest, refuse_adapters, truncate_at_stop

Responder = Callable[[str, int], str]
EOS = "<eos>"


def _hash(*parts: object) -> int:
    return int.from_bytes(hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest(), "big")


class _PromptHash:
    """``_hash(prompt, x)`` for many ``x``: the long prompt is encoded and hashed once per request."""

    def __init__(self, prompt: str) -> None:
        self.prompt = prompt
        self._prefix = hashlib.blake2b((prompt + "\x1f").encode(), digest_size=8)
        self.steps_done = prompt.count("Step ")

    def __call__(self, x: object) -> int:
        h = self._prefix.copy()
        h.update(str(x).encode())
        return int.from_bytes(h.digest(), "big")


class FakeBackend:
    name = "fake"

    def __init__(
        self,
        responses: dict[str, list[str]] | None = None,
        *,
        responder: Responder | None = None,
        latency_s: float = 0.0,
        token_latency_s: float = 0.0,
        steps_to_answer: int = 3,
        answers: int = 4,
        name: str = "fake",
        continuous: bool = False,
        context_chars: int | None = None,
    ) -> None:
        self.name = name
        # what one sequence may hold, in characters: the stream refuses a longer prompt with ContextFull,
        # as llama.cpp's KV stream per sequence does (engine tests of a path that outgrows its cells)
        self.context_chars = context_chars
        self.responses = responses
        self.responder = responder
        self.latency_s = latency_s
        self.token_latency_s = token_latency_s
        self.steps_to_answer = steps_to_answer
        self.answers = answers
        self.stats = BackendStats()
        self.capabilities = Capabilities(batching=True, logprobs=True, scoring=True, max_batch=1 << 16, continuous=continuous)
        self.decode_steps = 0  # model time in decode steps: a word is a token, sequences of a step decode together
        self._asked: dict[str, int] = defaultdict(int)
        self._keys_by_length = sorted(responses or {}, key=len, reverse=True)
        self._ids_by_text: dict[str, tuple[int, ...]] = {}

    @classmethod
    def preset(cls, kind: str = "arithmetic", **options: object) -> FakeBackend:
        """``fake`` / ``fake:arithmetic`` from the CLI: the procedural generator."""
        return cls(**options)  # type: ignore[arg-type]

    # -- text production ------------------------------------------------------------------
    def _procedural(self, prompt: _PromptHash, index: int) -> str:
        steps_done = prompt.steps_done
        h = prompt(index)
        if steps_done + 1 >= self.steps_to_answer or (steps_done >= 1 and h % 5 == 0):
            return f"The answer is {h % self.answers}.{EOS}"
        return f"Step {steps_done + 1}: consider {h % 997}.\n\n"

    def _respond(self, hashed: _PromptHash, seed: int | None, index: int, temperature: float = 1.0) -> str:
        prompt = hashed.prompt
        if self.responder is not None:
            return self.responder(prompt, index)
        if self.responses is not None:
            for key in self._keys_by_length:
                if prompt.endswith(key):
                    options = self.responses[key]
                    k = self._asked[key]
                    self._asked[key] += 1
                    return options[k % len(options)]
            return EOS
        if temperature <= 0:  # greedy: the same prompt always gets the same continuation
            return self._procedural(hashed, 0)
        return self._procedural(hashed, index + 1000 * (seed or 0))

    def generate(self, requests: list[GenerationRequest]) -> list[list[Completion]]:
        refuse_adapters(self.name, requests)
        self.stats.calls += 1
        if self.latency_s:
            time.sleep(self.latency_s)
        out = [self._complete(req) for req in requests]
        # What a lock-step batch costs: its longest sequence, in decode steps.
        self.decode_steps += max((c.generated_tokens for group in out for c in group), default=0)
        return out

    def open_stream(self) -> FakeStream:
        return FakeStream(self)

    def _complete(self, req: GenerationRequest) -> list[Completion]:
        prompt_tokens = len(req.prompt.split())
        self.stats.prompt_tokens += prompt_tokens
        group = []
        hashed = _PromptHash(req.prompt)
        for i in range(req.n):
            raw = self._respond(hashed, req.seed, i, req.temperature)
            ended = raw.endswith(EOS)
            raw = raw.removesuffix(EOS)
            text, stop = truncate_at_stop(raw, req.stop)
            all_words = text.split()
            words = all_words[: req.max_tokens]
            finish = "stop" if stop is not None else ("eos" if ended else "length")
            if len(all_words) > req.max_tokens:
                text, stop, finish = " ".join(words), None, "length"
            h = hashed(i)  # one hash per completion keeps the fake nearly free
            logprobs = [-(((h >> (j % 48)) + 7 * j) % 1000) / 1000.0 for j in range(len(words))]
            group.append(
                Completion(
                    text=text,
                    token_ids=list(self._token_ids(text, words)),
                    logprobs=logprobs,
                    finish_reason=finish,  # type: ignore[arg-type]
                    stop=stop,
                    prompt_tokens=prompt_tokens if i == 0 else 0,
                    generated_tokens=len(words),
                )
            )
            self.stats.generated_tokens += len(words)
            self.stats.sequences += 1
        if self.token_latency_s:
            time.sleep(self.token_latency_s * max((len(c.token_ids) for c in group), default=0))
        return group

    def _token_ids(self, text: str, words: list[str]) -> tuple[int, ...]:
        """A word's id is its CRC; a step's ids are kept, since the same steps recur (what a tokenizer's cache does)."""
        ids = self._ids_by_text.get(text)
        if ids is None:
            if len(self._ids_by_text) >= 1 << 16:
                self._ids_by_text.clear()
            ids = self._ids_by_text[text] = tuple(zlib.crc32(w.encode()) % 50000 for w in words)
        return ids

    def score(self, prompts: list[str], continuations: list[str]) -> list[list[float]]:
        result = []
        for p, c in zip(prompts, continuations, strict=True):
            words = c.split()
            self.stats.scored_tokens += len(words)
            result.append([-((_hash(p, w, j) % 1000) / 1000.0) for j, w in enumerate(words)])
        return result

    def format_chat(self, messages: list[dict[str, str]]) -> str:
        return "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in messages) + "<|assistant|>\n"

    def close(self) -> None:
        pass


class FakeStream:
    """Continuous batching, simulated: a request comes back after as many steps as its longest
    completion has words, so engine tests see problems interleave as on a real backend."""

    def __init__(self, backend: FakeBackend) -> None:
        self.backend = backend
        self._running: dict[int, tuple[int, list[Completion]]] = {}  # ticket -> (steps left, completions)
        self._next = 0

    def submit(self, request: GenerationRequest) -> int:
        refuse_adapters(self.backend.name, [request])
        limit = self.backend.context_chars
        if limit is not None and len(request.prompt) >= limit:
            raise ContextFull(f"prompt of {len(request.prompt)} characters leaves no room in the fake's {limit}")
        group = self.backend._complete(request)
        ticket, self._next = self._next, self._next + 1
        self._running[ticket] = (max(1, max((c.generated_tokens for c in group), default=0)), group)
        return ticket

    def step(self) -> list[tuple[int, list[Completion]]]:
        self.backend.decode_steps += 1
        self.backend.stats.calls += 1
        done = []
        for ticket, (left, group) in list(self._running.items()):
            if left <= 1:
                done.append((ticket, group))
                del self._running[ticket]
            else:
                self._running[ticket] = (left - 1, group)
        return done

    @property
    def busy(self) -> bool:
        return bool(self._running)

    def close(self) -> None:
        self._running.clear()

    def cancel(self, ticket: int) -> None:
        self._running.pop(ticket, None)
