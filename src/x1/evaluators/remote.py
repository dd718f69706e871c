"""A value model behind HTTP: the Evaluator contract over ``x1 serve value``'s ``POST /v1/score``.

Each item is sent as ``{"prompt": item.prefix, "continuation": item.path_text}``: the
chat-formatted question and the reasoning path so far; the server answers a score in [0, 1]
per item. One ``evaluate`` call is one HTTP request (split into chunks of ``max_items``), so
the engine's one-call-per-tick batching reaches the server whole.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from typing import Any

from x1.evaluators.base import EvalItem
from x1.models.base import BackendError

SERVE_VALUE_FIX = "start one with `x1 serve value --model MODEL --port 8001`, or correct the URL"


def value_inputs(items: list[EvalItem]) -> tuple[list[str], list[str]]:
    """(prompts, continuations) for a value scorer: the prefix and the path text of each item."""
    return [item.prefix for item in items], [item.path_text for item in items]


class RemoteValueEvaluator:
    """Scores thoughts through a value server; ``url`` is e.g. ``http://127.0.0.1:8001`` (a trailing /v1 is fine)."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        name: str = "value",
        timeout: float = 60.0,
        max_retries: int = 1,
        max_items: int = 512,
        model: str | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise BackendError(f"value server URL {url!r} needs a scheme; fix: use e.g. http://127.0.0.1:8001")
        base = url.rstrip("/")
        self.base_url = base.removesuffix("/v1")
        self.url = f"{self.base_url}/v1/score"
        self.api_key = api_key or os.environ.get("X1_VALUE_API_KEY")
        self.name = name
        self.model = model
        self.timeout = float(timeout)
        self.max_retries = max(0, int(max_retries))
        self.max_items = max(1, int(max_items))
        self.model_calls = 0
        self._client: Any = None

    def _http(self) -> Any:
        if self._client is None:
            try:
                import httpx
            except ImportError as err:
                raise BackendError("the remote value evaluator needs httpx; fix: pip install 'x1[openai]'") from err
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            self._client = httpx.Client(timeout=httpx.Timeout(self.timeout, connect=min(5.0, self.timeout)), headers=headers)
        return self._client

    def _post(self, payload: dict[str, Any]) -> Any:
        import httpx

        client = self._http()
        for attempt in range(self.max_retries + 1):
            try:
                response = client.post(self.url, json=payload)
            except httpx.ConnectError as err:
                if attempt < self.max_retries:
                    time.sleep(0.25 * 2**attempt)
                    continue
                raise BackendError(f"no value server answers at {self.base_url} (connection refused); fix: {SERVE_VALUE_FIX}") from err
            except httpx.TimeoutException as err:
                raise BackendError(
                    f"the value server at {self.base_url} did not answer within {self.timeout:g}s; fix: raise the timeout or check its load"
                ) from err
            except httpx.HTTPError as err:
                raise BackendError(f"request to the value server at {self.base_url} failed: {type(err).__name__}: {err}; "
                                   f"fix: {SERVE_VALUE_FIX}") from err
            if response.status_code in (502, 503, 504) and attempt < self.max_retries:
                time.sleep(0.25 * 2**attempt)
                continue
            return self._decode(response)
        raise AssertionError("unreachable")

    def _decode(self, response: Any) -> Any:
        status = response.status_code
        if status in (401, 403):
            raise BackendError(f"the value server at {self.base_url} refused the API key (HTTP {status}); "
                               "fix: pass api_key= or set X1_VALUE_API_KEY")
        if status == 404:
            raise BackendError(f"the server at {self.base_url} has no /v1/score route or not this model (HTTP 404); "
                               "fix: point at an `x1 serve value` server")
        try:
            body = response.json()
        except ValueError:
            body = None
        if status != 200:
            message = body.get("error", {}).get("message") if isinstance(body, dict) and isinstance(body.get("error"), dict) else None
            detail = " ".join(str(message or response.text).split())[:200]
            fix = "check the server log" if status >= 500 else "check what is sent"
            raise BackendError(f"the value server at {self.base_url} answered HTTP {status}: {detail}; fix: {fix}")
        if not isinstance(body, dict) or not isinstance(body.get("scores"), list):
            raise BackendError(f"the server at {self.base_url} answered without a scores list; fix: point at an `x1 serve value` server")
        return body

    def evaluate(self, items: list[EvalItem]) -> list[float]:
        """Scores in [0, 1], one per item, in order."""
        if not items:
            return []
        prompts, continuations = value_inputs(items)
        steps = [item.steps for item in items]  # a PRM server scores each step
        scores: list[float] = []
        for start in range(0, len(items), self.max_items):
            window = range(start, min(len(items), start + self.max_items))
            chunk = [{"prompt": prompts[i], "continuation": continuations[i], "steps": steps[i]} for i in window]
            payload: dict[str, Any] = {"items": chunk}
            if self.model:
                payload["model"] = self.model
            body = self._post(payload)
            self.model_calls += 1
            got = body["scores"]
            if len(got) != len(chunk):
                raise BackendError(f"the value server at {self.base_url} returned {len(got)} scores for {len(chunk)} items; "
                                   "fix: check the server version")
            for s in got:
                value = float(s)
                if not math.isfinite(value) or not 0.0 <= value <= 1.0:
                    raise BackendError(f"the value server at {self.base_url} returned the score {s!r}, outside [0, 1]; "
                                       "fix: check its scorer")
                scores.append(value)
        return scores

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown
            self.close()
