"""A backend that talks to any OpenAI-compatible server (vLLM, llama.cpp, llama-cpp-python, ``x1 serve``).

It uses the *completions* endpoint, not chat: tree search extends raw partial reasoning paths,
which a chat endpoint cannot continue. All requests of one ``generate`` call go out together
(bounded by ``concurrency``), so a server with continuous batching sees the whole tick at once;
``open_stream`` goes further: each request comes back on its own, as soon as it is done.

Because the endpoint takes text, ``format_chat`` cannot ask the server for its template: it
renders ``chat_template`` (a Hugging Face style Jinja string) when one is given, else ChatML
(``<|im_start|>role\\n...<|im_end|>\\n`` then ``<|im_start|>assistant\\n``), which is right for
Qwen and SmolLM2 models; pass the model's own template for any other family.

A request's ``adapter`` is sent as its ``model`` field: that is how vLLM's server
(``--lora-modules NAME=PATH``) and ``x1 serve policy --adapter NAME=PATH`` select a LoRA adapter.

This module maps requests to completions parameters and answers back to ``Completion``s; getting
a call through (private event loop, retries, one-line errors) is ``openai_client.CompletionsClient``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import warnings
from typing import Any

from x1.models._sampling import render_chatml, render_template, resolve_chat_template, sample_seed
from x1.models.base import (
    BackendError,
    BackendStats,
    Capabilities,
    Completion,
    FinishReason,
    GenerationRequest,
    truncate_at_stop,
)
from x1.models.openai_client import CompletionsClient
from x1.signals import signals_from_top_logprobs

MAX_TOP_LOGPROBS = 20


class OpenAIBackend:
    """Completions against ``base_url`` (e.g. ``http://127.0.0.1:8000/v1``), with retries and clear errors."""

    def __init__(
        self,
        base_url: str,
        model_name: str = "default",
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 3,
        concurrency: int = 32,
        chat_template: str | None = None,
        extra_body: dict[str, Any] | None = None,
        **_: Any,
    ) -> None:
        try:
            import openai  # noqa: F401
        except ImportError as err:
            raise BackendError("the OpenAI backend needs the openai package; fix: pip install 'x1[openai]'") from err
        self.base_url = base_url.rstrip("/")
        self.model_name = model_name
        self.name = model_name
        self.concurrency = max(1, int(concurrency))
        if chat_template is None:
            warnings.warn(f"openai:{base_url} formats chats as ChatML (Qwen, SmolLM2); for another model family pass "
                          "--chat-template FILE|MODEL_DIR (or chatml to silence this)", stacklevel=2)
        self.chat_template = resolve_chat_template(chat_template)
        self.http = CompletionsClient(
            self.base_url, model_name, api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY",
            timeout=float(timeout), max_retries=max(0, int(max_retries)), extra_body=dict(extra_body or {}),
        )
        self.stats = BackendStats()
        self.capabilities = Capabilities(
            batching=True,  # many sequences in flight at once; the server decides how to batch them
            logprobs=True,
            top_logprobs=MAX_TOP_LOGPROBS,
            full_distribution=False,
            prefix_reuse=False,
            scoring=False,  # echo support varies by server; score() tries and says when it cannot
            max_batch=self.concurrency,
            adapters=True,  # sent as the model name; the server says (404) if it has no such adapter
            continuous=True,  # open_stream(): each request its own call in flight, back as soon as it is done
        )
        self._logprobs_ok = True  # turned off if the server rejects logprobs

    # -- generation -----------------------------------------------------------------------
    def generate(self, requests: list[GenerationRequest]) -> list[list[Completion]]:
        """All requests concurrently; each asks the server for ``n`` choices (topped up if it gives fewer)."""
        self.stats.calls += 1
        return self.http.run(self._generate(requests))

    def open_stream(self) -> _HTTPStream:
        return _HTTPStream(self)

    async def _generate(self, requests: list[GenerationRequest]) -> list[list[Completion]]:
        sem = asyncio.Semaphore(self.concurrency)
        return list(await asyncio.gather(*(self._one(sem, req) for req in requests)))

    async def _one(self, sem: asyncio.Semaphore, req: GenerationRequest) -> list[Completion]:
        if req.n <= 0:
            return []
        out = await self._request(sem, req, req.n, req.seed)
        # Some servers (llama-cpp-python) ignore n: ask for the missing samples one by one.
        missing = req.n - len(out)
        if missing > 0:
            extra = await asyncio.gather(*(self._request(sem, req, 1, sample_seed(req.seed, len(out) + k)) for k in range(missing)))
            for batch in extra:
                out.extend(batch)
        return out[: req.n]

    async def _request(self, sem: asyncio.Semaphore, req: GenerationRequest, n: int, seed: int | None) -> list[Completion]:
        import openai

        params: dict[str, Any] = {
            "prompt": req.prompt,
            "n": n,
            "max_tokens": req.max_tokens,
            "temperature": req.temperature,
            "top_p": req.top_p,
        }
        if req.stop:
            params["stop"] = list(req.stop)
        if seed is not None:
            params["seed"] = seed
        if self._logprobs_ok:
            # Signals need alternatives: ask for the most a server commonly allows (vLLM's default cap is 20).
            wanted = MAX_TOP_LOGPROBS if req.signals else req.top_logprobs
            params["logprobs"] = max(1, min(wanted, MAX_TOP_LOGPROBS))
        try:
            response = await self.http.call(sem, req.adapter, **params)
        except BackendError as err:
            cause = err.__cause__
            if "logprobs" in params and isinstance(cause, openai.BadRequestError) and "logprob" in str(cause).lower():
                self._logprobs_ok = False  # this server cannot: carry on without them
                params.pop("logprobs")
                response = await self.http.call(sem, req.adapter, **params)
            else:
                raise
        return self._completions(req, response)

    def _completions(self, req: GenerationRequest, response: Any) -> list[Completion]:
        usage = getattr(response, "usage", None)
        prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        choices = sorted(response.choices, key=lambda c: c.index or 0)
        self.stats.sequences += len(choices)
        self.stats.prompt_tokens += prompt_tokens
        self.stats.generated_tokens += completion_tokens
        results = []
        for i, choice in enumerate(choices):
            completion = self._choice(choice, req)
            if not completion.generated_tokens:
                completion.generated_tokens = completion_tokens // max(1, len(choices))
            # the server prefilled the prompt once for all its choices: count it on the first
            completion.prompt_tokens = prompt_tokens if i == 0 else 0
            results.append(completion)
        return results

    @staticmethod
    def _choice(choice: Any, req: GenerationRequest) -> Completion:
        """One choice as a Completion: finish reason, stop string, and logprobs trimmed to the text."""
        text = choice.text or ""
        lp = getattr(choice, "logprobs", None)
        tokens = list(getattr(lp, "tokens", None) or [])
        values = [float(v) if v is not None else 0.0 for v in (getattr(lp, "token_logprobs", None) or [])]
        top: list[dict[str, float]] = []
        signals: list[dict[str, float]] = []
        for d in (getattr(lp, "top_logprobs", None) or []) if (req.top_logprobs > 0 or req.signals) else []:
            ranked = dict(sorted(((k, float(v)) for k, v in (d or {}).items()), key=lambda kv: -kv[1]))
            if req.top_logprobs > 0:
                top.append(dict(list(ranked.items())[: req.top_logprobs]))
            if req.signals:
                # Only the top-k is visible: the tail is lumped together, so entropy is a lower bound.
                signals.append(signals_from_top_logprobs(ranked))
        generated = len(tokens)
        finish: FinishReason
        stop: str | None = None
        reason = getattr(choice, "stop_reason", None)  # vLLM: the matched stop string; None for EOS
        kept, hit = truncate_at_stop(text, req.stop)  # a server that left the stop string in the text
        if hit is not None:
            text, stop, finish = kept, hit, "stop"
        elif choice.finish_reason == "length":
            finish = "length"
        elif isinstance(reason, str) and reason in req.stop:
            finish, stop = "stop", reason
        else:
            # llama.cpp servers cut the stop string from the text but keep its tokens in the logprobs.
            joined_kept, joined_hit = truncate_at_stop("".join(tokens), req.stop)
            if joined_hit is not None and joined_kept == text:
                finish, stop = "stop", joined_hit
            else:
                finish = "eos"
        if tokens and stop is not None:
            # Drop the tokens that lie wholly inside the stop string (a token straddling it stays).
            n, length = 0, 0
            while n < len(tokens) and length < len(text):
                length += len(tokens[n])
                n += 1
            values, top, signals = values[:n], top[:n], signals[:n]
        return Completion(
            text=text,
            logprobs=values,
            top_logprobs=top,
            signals=signals,
            finish_reason=finish,
            stop=stop,
            generated_tokens=generated,
        )

    # -- scoring --------------------------------------------------------------------------
    def score(self, prompts: list[str], continuations: list[str], adapter: str | None = None) -> list[list[float]]:
        """Teacher-forced logprobs through ``echo=True, logprobs=1``, where the server supports it (``adapter``: as in generate).

        A token straddling the prompt/continuation boundary counts as prompt. llama-cpp-python's
        server pairs echoed tokens with the wrong positions unless the prompt starts with the model's
        BOS token; that is detected when it can be (a BackendError), but not always, so
        ``capabilities.scoring`` stays False.
        """
        if len(prompts) != len(continuations):
            raise BackendError(f"score got {len(prompts)} prompts but {len(continuations)} continuations")
        self.stats.calls += 1
        return self.http.run(self._score(prompts, continuations, adapter))

    async def _score(self, prompts: list[str], continuations: list[str], adapter: str | None = None) -> list[list[float]]:
        sem = asyncio.Semaphore(self.concurrency)
        pairs = zip(prompts, continuations, strict=True)
        return list(await asyncio.gather(*(self._score_one(sem, p, c, adapter) for p, c in pairs)))

    async def _score_one(self, sem: asyncio.Semaphore, prompt: str, continuation: str, adapter: str | None = None) -> list[float]:
        if not continuation:
            return []
        full = prompt + continuation
        fix = "fix: use a server whose echo returns prompt logprobs (vLLM), or a local backend (hf, llamacpp)"
        try:
            # max_tokens=1, not 0: llama-cpp-python reads 0 as "until the context is full".
            response = await self.http.call(sem, adapter, prompt=full, echo=True, logprobs=1, max_tokens=1, temperature=0.0)
        except BackendError as err:
            raise BackendError(f"the server at {self.base_url} cannot score (echo with logprobs failed: {err}); {fix}") from err
        choice = response.choices[0] if response.choices else None
        lp = getattr(choice, "logprobs", None)
        tokens = [str(t) for t in (getattr(lp, "tokens", None) or [])]
        values = list(getattr(lp, "token_logprobs", None) or [])
        if not tokens or len(tokens) != len(values):
            raise BackendError(f"the server at {self.base_url} returned no echoed prompt logprobs, so it cannot score; {fix}")
        # Match entries to text from the end (token strings, not text_offset: llama-cpp-python's
        # offsets skip special tokens). First the generated token, which must be there when text was generated.
        echoed = getattr(choice, "text", None) or ""
        generated = echoed[len(full) :] if echoed.startswith(full) else ""
        end, tail = len(tokens), ""
        while generated and end > 0 and len(tail) < len(generated):
            end -= 1
            tail = tokens[end] + tail
        if tail != generated:
            # e.g. llama-cpp-python 0.3.x without a BOS token: each logprob is shifted one position.
            raise BackendError(f"the server at {self.base_url} returns misaligned echo logprobs, so it cannot score; {fix}")
        start, covered = end, ""
        while start > 0 and len(covered) < len(continuation):
            start -= 1
            covered = tokens[start] + covered
        if not covered.endswith(continuation):
            raise BackendError(f"the server at {self.base_url} echoed text that does not end with the continuation; {fix}")
        if len(covered) > len(continuation):
            start += 1  # the first token straddles the prompt boundary: it counts as prompt
        picked = [float(v) if v is not None else 0.0 for v in values[start:end]]
        self.stats.scored_tokens += len(picked)
        usage = getattr(response, "usage", None)
        self.stats.prompt_tokens += int(getattr(usage, "prompt_tokens", 0) or 0)
        return picked

    # -- chat -----------------------------------------------------------------------------
    def format_chat(self, messages: list[dict[str, str]]) -> str:
        """``chat_template`` if given, else ChatML: the completions endpoint cannot render chats for us."""
        if self.chat_template:
            return render_template(self.chat_template, messages)
        return render_chatml(messages)

    def close(self) -> None:
        """Close the HTTP client and stop the private loop."""
        self.http.close()


class _HTTPStream:
    """Continuous batching against a server (the ``DecodeStream`` contract): each request is its own
    call in flight (at most ``concurrency``), and a step returns whatever came back, waiting for at
    least one. A search problem whose step is back asks for the next one while others still
    decode, and a server that batches continuously (vLLM, ``x1 serve policy``) takes it at once."""

    def __init__(self, backend: OpenAIBackend) -> None:
        self.backend = backend
        self._sem = asyncio.Semaphore(backend.concurrency)
        self._in_flight: dict[int, concurrent.futures.Future[list[Completion]]] = {}
        self._next = 0

    def submit(self, request: GenerationRequest) -> int:
        runner = self.backend.http.loop_thread()
        ticket, self._next = self._next, self._next + 1
        self._in_flight[ticket] = asyncio.run_coroutine_threadsafe(self.backend._one(self._sem, request), runner.loop)
        self.backend.stats.calls += 1
        return ticket

    def step(self) -> list[tuple[int, list[Completion]]]:
        if not self._in_flight:
            return []
        concurrent.futures.wait(self._in_flight.values(), return_when=concurrent.futures.FIRST_COMPLETED)
        done = [t for t, f in self._in_flight.items() if f.done()]
        return [(t, self._in_flight.pop(t).result()) for t in done]  # a failed request raises its BackendError

    @property
    def busy(self) -> bool:
        return bool(self._in_flight)

    def close(self) -> None:
        for future in self._in_flight.values():
            future.cancel()
        self._in_flight.clear()
