"""The HTTP side of the OpenAI backend: a private event loop, the async client, retries and one-line errors.

Kept apart from ``openai_backend.py``, which maps x1's requests to completions parameters and the
answers back to ``Completion``s: this module knows nothing of either, only how to get one
completions call through (or say, in one line with the fix, why it did not).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from x1.models.base import BackendError

T = TypeVar("T")
SERVE_FIX = "start one (x1 serve policy / llama-server / vllm serve) or correct --model openai:URL"


class LoopThread:
    """A private event loop in a daemon thread: sync callers (even ones inside a running loop) block on it.

    One long-lived loop also lets the HTTP client keep its connections between calls.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="x1-openai-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        if not self.thread.is_alive():
            self.loop.close()


class CompletionsClient:
    """Completions calls to ``base_url`` on a private loop (started on first use), retried on transient failures."""

    def __init__(
        self,
        base_url: str,
        model_name: str,
        api_key: str,
        timeout: float,
        max_retries: int,
        extra_body: dict[str, Any],
    ) -> None:
        self.base_url = base_url
        self.model_name = model_name
        self.api_key = api_key
        self.timeout = timeout
        self.max_retries = max_retries
        self.extra_body = extra_body  # server-specific knobs, e.g. {"top_k": 0}
        self._runner: LoopThread | None = None
        self._client: Any = None
        self._lock = threading.Lock()

    def loop_thread(self) -> LoopThread:
        with self._lock:
            if self._runner is None:
                self._runner = LoopThread()
            return self._runner

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the private loop and wait for it."""
        return self.loop_thread().run(coro)

    def _get_client(self) -> Any:
        """Create the client inside the private loop (its connection pool belongs to that loop)."""
        if self._client is None:
            from openai import AsyncOpenAI

            self._client = AsyncOpenAI(base_url=self.base_url, api_key=self.api_key, timeout=self.timeout, max_retries=0)
        return self._client

    def error(self, err: Exception, model: str | None = None) -> BackendError:
        """One line naming the URL, what went wrong, and the fix."""
        import openai

        url = self.base_url
        model = model or self.model_name
        if isinstance(err, openai.APITimeoutError):
            return BackendError(
                f"the server at {url} did not answer within {self.timeout:g}s; fix: raise --timeout or check the server load"
            )
        if isinstance(err, openai.APIConnectionError):
            cause = err.__cause__ or err
            text = str(cause).lower()
            why = (
                "connection refused"
                if "refused" in text or "connect" in type(cause).__name__.lower()
                else (str(cause).splitlines()[0] if str(cause) else type(cause).__name__)
            )
            return BackendError(f"no server answers at {url} ({why}); fix: {SERVE_FIX}")
        if isinstance(err, openai.NotFoundError):
            what = "adapter (sent as the model name)" if model != self.model_name else "model"
            return BackendError(
                f"the server at {url} has no {what} {model!r} or no /completions route (HTTP 404); "
                "fix: pass a name listed at /v1/models (--model-name, or the request's adapter) and a URL ending in /v1"
            )
        if isinstance(err, openai.AuthenticationError | openai.PermissionDeniedError):
            return BackendError(f"the server at {url} refused the API key (HTTP {err.status_code}); fix: set OPENAI_API_KEY")
        if isinstance(err, openai.APIStatusError):
            detail = " ".join(str(err.message).split())[:200]
            fix = "check the server log" if err.status_code >= 500 else "check the request options the server supports"
            return BackendError(f"the server at {url} answered HTTP {err.status_code}: {detail}; fix: {fix}")
        return BackendError(f"request to {url} failed: {type(err).__name__}: {err}; fix: check the server")

    async def call(self, sem: asyncio.Semaphore, model: str | None = None, **params: Any) -> Any:
        """One completions request (``model``: a LoRA adapter's name, else the served model), retried on transient failures."""
        import openai

        model = model or self.model_name

        transient = (openai.APIConnectionError, openai.InternalServerError, openai.RateLimitError)
        client = self._get_client()
        if self.extra_body:
            params["extra_body"] = {**self.extra_body, **params.get("extra_body", {})}
        async with sem:
            for attempt in range(self.max_retries + 1):
                try:
                    return await client.completions.create(model=model, **params)
                except transient as err:
                    if attempt >= self.max_retries:
                        raise self.error(err, model) from err
                    await asyncio.sleep(min(0.25 * 2**attempt, 8.0))
                except openai.APIError as err:
                    raise self.error(err, model) from err
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Close the HTTP client and stop the private loop."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):  # closing is best effort
                runner.run(client.close())
        runner.stop()
