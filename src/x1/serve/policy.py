"""The policy server: any x1 Backend behind OpenAI-compatible HTTP, with dynamic batching.

Routes:

- ``POST /v1/completions``: ``prompt`` (a string or a list of strings), ``n``, ``max_tokens``
  (default 16), ``temperature`` (default 1), ``top_p``, ``stop`` (string or list), ``seed``,
  ``logprobs`` (int k: the legacy ``{tokens, token_logprobs, top_logprobs, text_offset}``, with
  ``text_offset`` counted from the start of the returned text). ``echo``, ``stream``, ``suffix``
  and penalties are not supported (400). Choices also carry vLLM's ``stop_reason`` (the stop
  string that ended the text, if any), which x1's ``OpenAIBackend`` reads.
  Like llama.cpp's servers, logprobs cover *every generated token*: when a stop string ended the
  text, the last tokens are the stop string's (cut from ``text``), so ``usage``, the logprobs and
  x1's compute accounting agree with an in-process run.
- ``POST /v1/chat/completions``: ``messages`` rendered by ``backend.format_chat``; the same
  sampling fields, ``max_tokens`` or ``max_completion_tokens`` (default 256), ``logprobs: bool``
  and ``top_logprobs: int``, answered in the chat format.
- ``GET /v1/models``, ``GET /health``, ``GET /metrics`` (Prometheus text).

LoRA adapters: when the backend has adapters loaded (``TransformersBackend(adapters=...)``,
``x1 serve policy --adapter NAME=PATH``), a request's ``model`` field picks one by name, as with
vLLM's ``--lora-modules``; the served name (or ``default``, or no model) means the base model.
``/v1/models`` lists the base model and every adapter; an unknown name is a 404 that lists them.

Concurrent requests join the running decode of a backend that streams (llama.cpp: a
``ContinuousBatcher``); for other backends a ``DynamicBatcher`` gathers them into one
``backend.generate`` call.
``usage.prompt_tokens`` is the prompt's length in tokens where the backend can tokenize,
else the tokens it actually prefilled.

A backend that returns no ``top_logprobs`` (llama.cpp today) still answers ``logprobs=k``: each
position then lists the chosen token alone.
"""

import codecs
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from x1.models.base import Backend, BackendError, Completion, GenerationRequest
from x1.serve.batcher import Batcher, BatcherClosed, DynamicBatcher
from x1.serve.common import DEFAULT_MAX_BODY_BYTES, APIError, check_model, make_app, model_lock
from x1.serve.continuous import ContinuousBatcher
from x1.serve.metrics import ServerMetrics

MAX_TOP_LOGPROBS = 20
MAX_STOP = 16


# -- request schemas ----------------------------------------------------------------------------
class _Sampling(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    n: int = Field(1, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0)
    stream: bool = False
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None

    def stop_list(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > MAX_STOP:
            raise APIError(400, f"stop has {len(stops)} strings; at most {MAX_STOP} are allowed", param="stop")
        return [s for s in stops if s]


class CompletionRequest(_Sampling):
    prompt: str | list[str]
    max_tokens: int = Field(16, ge=1)
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "developer"]
    content: str
    name: str | None = None


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)


# -- batching -----------------------------------------------------------------------------------
@dataclass
class _Item:
    request: GenerationRequest
    want_tokens: bool  # logprobs asked for: also return each token's text


@dataclass
class _Generated:
    completions: list[Completion]
    prompt_tokens: int
    tokens: list[list[str]]  # per completion, the text of each token (empty unless asked)


def token_texts(backend: Any, completion: Completion) -> list[str]:
    """The text of each generated token, joined back into the completion's text where possible."""
    ids = completion.token_ids
    piece = getattr(backend, "piece", None)
    if ids and callable(piece):  # llama.cpp: raw bytes, decoded incrementally so split characters join up
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        return [decoder.decode(piece(t)) for t in ids]
    tokenizer = getattr(backend, "tokenizer", None)
    if ids and tokenizer is not None and hasattr(tokenizer, "decode"):  # transformers
        return [tokenizer.decode([t]) for t in ids]
    n = len(completion.logprobs)
    if completion.top_logprobs and len(completion.top_logprobs) == n:
        return [max(d, key=lambda k, d=d: d[k]) if d else "" for d in completion.top_logprobs]
    return [completion.text] + [""] * (n - 1) if n else []


def finish_fn(backend: Backend) -> Any:
    """What one request's completions become: the usage counts and, when asked, token texts."""
    tokenize = getattr(backend, "tokenize", None)

    def finish(item: _Item, completions: list[Completion]) -> _Generated:
        # usage counts the whole prompt; the backend's own count skips a reused prefix
        prompt_tokens = len(tokenize(item.request.prompt)) if callable(tokenize) else sum(c.prompt_tokens for c in completions)
        tokens = [token_texts(backend, c) for c in completions] if item.want_tokens else [[] for _ in completions]
        return _Generated(list(completions), prompt_tokens, tokens)

    return finish


def policy_batch_fn(backend: Backend) -> Any:
    lock = model_lock(backend)
    finish = finish_fn(backend)

    def run(items: list[_Item]) -> list[_Generated]:
        requests = [item.request for item in items]
        with lock:
            results = backend.generate(requests)
            if len(results) != len(requests):
                raise BackendError(f"backend {backend.name} returned {len(results)} results for {len(requests)} requests")
            return [finish(item, completions) for item, completions in zip(items, results, strict=True)]

    return run


def policy_batcher(
    backend: Backend, max_batch: int, max_wait_ms: float, metrics: ServerMetrics, continuous: bool = True
) -> Batcher[_Item, _Generated]:
    """Continuous batching where the backend streams (llama.cpp), else gather-then-generate batches."""
    if continuous and backend.capabilities.continuous:
        return ContinuousBatcher(
            backend.open_stream,  # type: ignore[attr-defined]
            lambda item: item.request, finish_fn(backend), max_batch=max_batch, metrics=metrics, name="policy",
            lock=model_lock(backend),
        )
    return DynamicBatcher(
        policy_batch_fn(backend), max_batch=max_batch, max_wait_ms=max_wait_ms, size=lambda item: item.request.n,
        metrics=metrics, name="policy",
    )


# -- the app ------------------------------------------------------------------------------------
def create_policy_app(
    backend: Backend,
    api_key: str | None = None,
    max_batch: int = 32,
    max_wait_ms: float = 5.0,
    max_prompt_chars: int = 65536,
    max_tokens_limit: int = 4096,
    max_n: int = 64,
    max_prompts: int = 64,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    model_name: str | None = None,
    default_chat_max_tokens: int = 256,
    continuous: bool = True,
) -> FastAPI:
    """An OpenAI-compatible app serving ``backend``; the caller owns (and closes) the backend.

    ``continuous=False`` gathers requests into whole ``generate`` calls even when the backend streams.
    """
    served = model_name or backend.name
    adapters = [str(a) for a in (getattr(backend, "adapters", None) or {})]
    for adapter in adapters:
        if adapter in (served, "default"):
            raise BackendError(f"adapter name {adapter!r} is the base model's name here; fix: give the adapter another name")
    metrics = ServerMetrics()
    batcher = policy_batcher(backend, max_batch, max_wait_ms, metrics, continuous)
    limits = {"max_prompt_chars": max_prompt_chars, "max_tokens": max_tokens_limit, "max_n": max_n, "max_prompts": max_prompts}
    info = {"kind": "policy", "limits": limits, **({"adapters": adapters} if adapters else {})}
    app = make_app("x1 policy server", served, metrics, [batcher], api_key, max_body_bytes, info=lambda: info)
    app.state.backend = backend
    if adapters:
        _list_adapters(app, [served, *adapters])

    def pick_adapter(requested: str | None) -> str | None:
        """The adapter a request's ``model`` names; None for the base model."""
        if requested in adapters:
            return requested
        if not adapters:
            check_model(requested, served)
        elif requested not in (None, "", served, "default"):
            names = ", ".join(map(repr, [served, *adapters]))
            raise APIError(404, f"model {requested!r} is not served here; this server serves {names} (see /v1/models)",
                           "not_found_error", "model", "model_not_found")
        return None

    def check_common(body: _Sampling, max_tokens: int) -> str | None:
        adapter = pick_adapter(body.model)
        if body.stream:
            raise APIError(400, "stream is not supported by this server; send stream=false", param="stream")
        if body.presence_penalty or body.frequency_penalty or body.logit_bias:
            raise APIError(400, "presence_penalty, frequency_penalty and logit_bias are not supported", param="presence_penalty")
        if max_tokens > max_tokens_limit:
            raise APIError(400, f"max_tokens {max_tokens} exceeds this server's limit of {max_tokens_limit} (--max-tokens-limit)",
                           param="max_tokens", code="max_tokens_too_large")
        if body.n > max_n:
            raise APIError(400, f"n {body.n} exceeds this server's limit of {max_n}", param="n")
        return adapter

    def check_prompt(text: str, what: str) -> None:
        if len(text) > max_prompt_chars:
            raise APIError(413, f"{what} has {len(text)} characters; this server's limit is {max_prompt_chars} (--max-prompt-chars)",
                           param="prompt", code="prompt_too_large")

    async def generate(items: list[_Item]) -> list[_Generated]:
        try:
            return await batcher.submit_many(items)
        except BatcherClosed as err:
            raise APIError(503, str(err), "server_error") from err
        except (BackendError, ValueError) as err:
            raise APIError(400, f"the model could not serve this request: {err}", code="model_error") from err
        except Exception as err:
            raise APIError(500, f"the model failed: {type(err).__name__}: {err}", "server_error") from err

    def record_tokens(prompt: int, completion: int) -> None:
        metrics.tokens.inc(prompt, kind="prompt")
        metrics.tokens.inc(completion, kind="completion")

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest) -> dict[str, Any]:
        adapter = check_common(body, body.max_tokens)
        if body.echo:
            raise APIError(400, "echo is not supported by this server; score texts with a value server (x1 serve value)", param="echo")
        if body.suffix:
            raise APIError(400, "suffix is not supported by this server", param="suffix")
        if body.best_of is not None and body.best_of != body.n:
            raise APIError(400, "best_of is not supported by this server; ask for n choices", param="best_of")
        prompts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
        if not prompts:
            raise APIError(400, "prompt is an empty list", param="prompt")
        if len(prompts) > max_prompts:
            raise APIError(413, f"{len(prompts)} prompts in one request; this server's limit is {max_prompts}", param="prompt")
        for k, p in enumerate(prompts):
            check_prompt(p, "prompt" if len(prompts) == 1 else f"prompt {k}")
        stop = body.stop_list()
        want = body.logprobs is not None
        items = [
            _Item(
                GenerationRequest(prompt=p, n=body.n, max_tokens=body.max_tokens, temperature=body.temperature, top_p=body.top_p,
                                  stop=stop, seed=body.seed, top_logprobs=body.logprobs or 0, adapter=adapter),
                want,
            )
            for p in prompts
        ]
        results = await generate(items)
        choices, prompt_tokens, completion_tokens = [], 0, 0
        for p_index, result in enumerate(results):
            prompt_tokens += result.prompt_tokens
            for j, c in enumerate(result.completions):
                completion_tokens += c.generated_tokens
                choice: dict[str, Any] = {
                    "index": p_index * body.n + j,
                    "text": c.text,
                    "logprobs": _legacy_logprobs(c, result.tokens[j], body.logprobs) if want else None,
                    "finish_reason": "length" if c.finish_reason == "length" else "stop",
                    "stop_reason": c.stop,
                }
                choices.append(choice)
        record_tokens(prompt_tokens, completion_tokens)
        return {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": adapter or served,
            "choices": choices,
            "usage": _usage(prompt_tokens, completion_tokens),
        }

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest) -> dict[str, Any]:
        max_tokens = body.max_completion_tokens or body.max_tokens or min(default_chat_max_tokens, max_tokens_limit)
        adapter = check_common(body, max_tokens)
        if body.top_logprobs and not body.logprobs:
            raise APIError(400, "top_logprobs needs logprobs=true", param="top_logprobs")
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.content} for m in body.messages]
        check_prompt("".join(m["content"] for m in messages), "messages")
        try:
            prompt = backend.format_chat(messages)
        except Exception as err:
            raise APIError(400, f"the model's chat template rejected these messages: {err}", param="messages") from err
        k = body.top_logprobs or 0
        item = _Item(
            GenerationRequest(prompt=prompt, n=body.n, max_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p,
                              stop=body.stop_list(), seed=body.seed, top_logprobs=k, adapter=adapter),
            body.logprobs,
        )
        (result,) = await generate([item])
        choices = []
        completion_tokens = 0
        for j, c in enumerate(result.completions):
            completion_tokens += c.generated_tokens
            choices.append({
                "index": j,
                "message": {"role": "assistant", "content": c.text},
                "logprobs": {"content": _chat_logprobs(c, result.tokens[j], k)} if body.logprobs else None,
                "finish_reason": "length" if c.finish_reason == "length" else "stop",
                "stop_reason": c.stop,
            })
        record_tokens(result.prompt_tokens, completion_tokens)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": adapter or served,
            "choices": choices,
            "usage": _usage(result.prompt_tokens, completion_tokens),
        }

    return app


def _list_adapters(app: FastAPI, names: list[str]) -> None:
    """Replace the shared app's one-model ``/v1/models`` with the base model followed by its adapters."""
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) != "/v1/models"]
    started = int(time.time())

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        data = [{"id": n, "object": "model", "created": started, "owned_by": "x1"} for n in names]
        for entry in data[1:]:
            entry["parent"] = names[0]  # vLLM marks a LoRA module with its base model the same way
        return {"object": "list", "data": data}


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _top(c: Completion, tokens: list[str], i: int, k: int) -> dict[str, float]:
    """Up to k alternatives at position i (the backend's), always including the chosen token."""
    ranked: dict[str, float] = {}
    if i < len(c.top_logprobs) and k > 0:
        ranked = dict(sorted(c.top_logprobs[i].items(), key=lambda kv: -kv[1])[:k])
    chosen = tokens[i] if i < len(tokens) else ""
    if chosen not in ranked and i < len(c.logprobs):
        ranked[chosen] = float(c.logprobs[i])
    return ranked


def _legacy_logprobs(c: Completion, tokens: list[str], k: int | None) -> dict[str, Any]:
    n = min(len(tokens), len(c.logprobs))
    offsets, at = [], 0
    for t in tokens[:n]:
        offsets.append(at)
        at += len(t)
    return {
        "tokens": tokens[:n],
        "token_logprobs": [float(v) for v in c.logprobs[:n]],
        "top_logprobs": [_top(c, tokens, i, k or 0) for i in range(n)],
        "text_offset": offsets,
    }


def _chat_logprobs(c: Completion, tokens: list[str], k: int) -> list[dict[str, Any]]:
    n = min(len(tokens), len(c.logprobs))
    content = []
    for i in range(n):
        top = _top(c, tokens, i, k) if k else {}
        content.append({
            "token": tokens[i],
            "logprob": float(c.logprobs[i]),
            "bytes": list(tokens[i].encode()),
            "top_logprobs": [{"token": t, "logprob": v, "bytes": list(t.encode())} for t, v in top.items()][: max(k, 0)],
        })
    return content
