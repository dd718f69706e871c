"""The policy and value servers for real: uvicorn on loopback, the bundled SmolLM2, the official openai client.

In-thread servers share one in-process llama.cpp backend (one thread: on a busy 2-core machine
two llama.cpp threads fight everything else); the MCTS comparison starts `x1 serve policy` and
`x1 serve value` as subprocesses, like a user would.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest

from x1.models.base import BackendError, GenerationRequest

httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

pytestmark = pytest.mark.server
KEY = "test-key"


@pytest.fixture(scope="module")
def backend():
    pytest.importorskip("llama_cpp")
    from x1.models.llama_cpp import LlamaCppBackend
    from x1.models.registry import smollm2_path

    try:
        path = smollm2_path()
    except BackendError as err:
        pytest.skip(str(err))
    b = LlamaCppBackend(path, name="smollm2", n_ctx=8192, n_seq_max=64, n_threads=1)  # as `x1 serve` sets it up
    yield b
    b.close()


@pytest.fixture(scope="module")
def policy(backend):
    from x1.serve.common import BackgroundServer
    from x1.serve.policy import create_policy_app

    app = create_policy_app(backend, api_key=KEY, max_prompt_chars=4000, max_tokens_limit=64, max_body_bytes=64_000)
    with BackgroundServer(app) as server:
        yield server


@pytest.fixture(scope="module")
def value(backend):
    from x1.serve.common import BackgroundServer
    from x1.serve.value import create_value_app

    with BackgroundServer(create_value_app(backend, max_prompt_chars=4000, max_items=8)) as server:
        yield server


@pytest.fixture(scope="module")
def client(policy):
    c = openai.OpenAI(base_url=f"{policy.url}/v1", api_key=KEY, max_retries=0, timeout=60)
    yield c
    c.close()


@pytest.fixture(scope="module")
def prompt(backend) -> str:
    return backend.format_chat([{"role": "user", "content": "Name three colors."}])


AUTH = {"Authorization": f"Bearer {KEY}"}


# -- Prometheus text, checked strictly ---------------------------------------------------------
_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"'
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{((?:{_LABEL})(?:,{_LABEL})*)?\}})? (\S+)$")


def parse_prometheus(text: str) -> dict[str, dict]:
    """family -> {type, samples: [(name, labels, value)]}; raises on anything malformed."""
    assert text.endswith("\n")
    families: dict[str, dict] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped") and name not in families
            families[name] = {"type": kind, "samples": []}
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        name, labels_text, raw = m.groups()
        value = float(raw.replace("+Inf", "inf"))
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', labels_text or ""))
        family = next((f for f in (name, re.sub(r"_(bucket|sum|count)$", "", name)) if f in families), None)
        assert family is not None, f"sample {name} has no # TYPE line before it"
        families[family]["samples"].append((name, labels, value))
    for name, fam in families.items():
        if fam["type"] == "histogram":
            buckets = [(float(lab["le"].replace("+Inf", "inf")), v) for n, lab, v in fam["samples"] if n.endswith("_bucket")]
            assert buckets and buckets[-1][0] == math.inf
            assert all(a[0] < b[0] and a[1] <= b[1] for a, b in zip(buckets, buckets[1:], strict=False)), name
            count = next(v for n, _, v in fam["samples"] if n == f"{name}_count")
            assert buckets[-1][1] == count
    return families


def metric(families: dict, name: str, **labels: str) -> float:
    fam_name = re.sub(r"_(bucket|sum|count)$", "", name) if name not in families else name
    for n, lab, v in families[fam_name]["samples"]:
        if n == name and all(lab.get(k) == v2 for k, v2 in labels.items()):
            return v
    return 0.0


def scrape(server) -> dict:
    response = httpx.get(f"{server.url}/metrics", timeout=10)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return parse_prometheus(response.text)


# -- the policy server -------------------------------------------------------------------------
def test_openai_client_completions_with_logprobs(client, backend, prompt) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == ["smollm2"]
    r = client.completions.create(model="smollm2", prompt=prompt, max_tokens=8, temperature=0, logprobs=3, seed=1)
    choice = r.choices[0]
    local = backend.generate([GenerationRequest(prompt, max_tokens=8, temperature=0.0)])[0][0]
    assert choice.text == local.text and choice.text
    lp = choice.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == r.usage.completion_tokens
    assert "".join(lp.tokens) == choice.text
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
    assert lp.token_logprobs == pytest.approx(local.logprobs, abs=1e-3)
    for token, value, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert value <= 0 and top[token] == pytest.approx(value)
    assert r.usage.prompt_tokens == len(backend.tokenize(prompt)) and r.usage.total_tokens == r.usage.prompt_tokens + 8
    assert choice.finish_reason == "length"

    # a list of prompts, n choices each, a stop string; seeded sampling is reproducible
    two = client.completions.create(model="smollm2", prompt=[prompt, prompt + "1."], n=2, max_tokens=12, temperature=0.9, seed=7,
                                    stop=[","])
    assert [c.index for c in two.choices] == [0, 1, 2, 3]
    assert all("," not in c.text for c in two.choices)
    again = client.completions.create(model="default", prompt=[prompt, prompt + "1."], n=2, max_tokens=12, temperature=0.9, seed=7,
                                      stop=[","])
    assert [c.text for c in again.choices] == [c.text for c in two.choices]


def test_openai_client_chat_completions(client) -> None:
    r = client.chat.completions.create(model="smollm2", messages=[{"role": "system", "content": "Be brief."},
                                                                  {"role": "user", "content": "Say hello."}],
                                       max_tokens=10, temperature=0, logprobs=True, top_logprobs=2)
    choice = r.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    content = choice.logprobs.content
    assert content and "".join(t.token for t in content).startswith(choice.message.content[:1])
    for t in content:
        assert t.logprob <= 0 and 1 <= len(t.top_logprobs) <= 2 and bytes(t.bytes).decode() == t.token
    assert r.usage.completion_tokens == len(content) and r.usage.prompt_tokens > 5


def test_concurrent_requests_are_batched(policy, prompt) -> None:
    before = scrape(policy)

    def one(i: int) -> httpx.Response:
        body = {"prompt": prompt + f"{i}.", "max_tokens": 6, "temperature": 0}
        return httpx.post(f"{policy.url}/v1/completions", json=body, headers=AUTH, timeout=60)

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(one, range(8)))
    assert [r.status_code for r in responses] == [200] * 8
    assert all(r.json()["choices"][0]["text"] for r in responses)
    after = scrape(policy)
    # llama.cpp streams: each model call is one decode step and counts the sequences in flight.
    steps = metric(after, "x1_batch_size_count") - metric(before, "x1_batch_size_count")
    sequences = metric(after, "x1_batch_size_sum") - metric(before, "x1_batch_size_sum")
    assert sequences / steps > 1, f"8 requests: {sequences:g} sequence-steps in {steps:g} decode steps, so none shared a step"
    assert metric(after, "x1_requests_total", status="200") - metric(before, "x1_requests_total", status="200") == 8
    assert metric(after, "x1_queue_depth") == 0


def test_a_short_request_comes_back_before_a_long_one_over_http(policy, backend, prompt) -> None:
    """The OpenAI backend's stream (each request its own call) against the continuously batching
    server: a short request sent after a long one comes back first, and as much as the alone run."""
    from x1.models.base import GenerationRequest
    from x1.models.openai_backend import OpenAIBackend

    remote = OpenAIBackend(f"{policy.url}/v1", model_name=backend.name, api_key=KEY, max_retries=0)
    try:
        story = backend.format_chat([{"role": "user", "content": "Write a long story about a dragon who learns to bake bread."}])
        stream = remote.open_stream()
        long_t = stream.submit(GenerationRequest(story, max_tokens=60, temperature=0))
        time.sleep(0.2)  # the long one is decoding
        short_t = stream.submit(GenerationRequest(prompt, max_tokens=2, temperature=0))
        first = stream.step()
        assert [t for t, _ in first] == [short_t] and stream.busy
        (short,) = first[0][1]
        rest: dict[int, list] = {}
        while stream.busy:
            rest.update(stream.step())
        assert rest[long_t][0].generated_tokens == 60
        alone = remote.generate([GenerationRequest(prompt, max_tokens=2, temperature=0)])[0][0]
        assert short.text == alone.text and short.generated_tokens == 2
    finally:
        remote.close()


def test_api_key_is_enforced(policy, prompt) -> None:
    body = {"prompt": prompt, "max_tokens": 2}
    assert httpx.post(f"{policy.url}/v1/completions", json=body, timeout=30).status_code == 401
    wrong = httpx.post(f"{policy.url}/v1/completions", json=body, headers={"Authorization": "Bearer nope"}, timeout=30)
    assert wrong.status_code == 401 and "API key" in wrong.json()["error"]["message"]
    assert httpx.get(f"{policy.url}/v1/models", timeout=30).status_code == 401
    bad = openai.OpenAI(base_url=f"{policy.url}/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.completions.create(model="smollm2", prompt="hi", max_tokens=2)
    assert httpx.get(f"{policy.url}/health", timeout=30).status_code == 200  # probes need no key


BAD_REQUESTS = [
    ("/v1/completions", b'{"prompt": "hi", "max_tokens": ', 400, "JSON"),
    ("/v1/completions", b"[1, 2, 3]", 400, ""),
    ("/v1/completions", {"max_tokens": 4}, 400, "prompt"),
    ("/v1/completions", {"prompt": 42}, 400, "prompt"),
    ("/v1/completions", {"prompt": [1, 2, 3]}, 400, "prompt"),
    ("/v1/completions", {"prompt": "hi", "max_tokens": "many"}, 400, "max_tokens"),
    ("/v1/completions", {"prompt": "hi", "temperature": -1}, 400, "temperature"),
    ("/v1/completions", {"prompt": "hi", "logprobs": 99}, 400, "logprobs"),
    ("/v1/completions", {"prompt": "hi", "n": 0}, 400, "n"),
    ("/v1/completions", {"prompt": "hi", "seed": -3}, 400, "seed"),
    ("/v1/completions", {"prompt": "hi", "echo": True}, 400, "echo"),
    ("/v1/completions", {"prompt": "hi", "stream": True}, 400, "stream"),
    ("/v1/completions", {"prompt": "hi", "model": "gpt-9"}, 404, "gpt-9"),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 10_000}, 400, "limit of 64"),
    ("/v1/completions", {"prompt": "x" * 5000}, 413, "limit is 4000"),
    ("/v1/completions", {"prompt": ["ok", "x" * 4001]}, 413, "limit is 4000"),
    ("/v1/completions", {"prompt": "x" * 70_000}, 413, "64000 bytes"),
    ("/v1/chat/completions", {"messages": []}, 400, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "wizard", "content": "hi"}]}, 400, "role"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 65}, 400, "limit of 64"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x" * 4001}]}, 413, "limit is 4000"),
    ("/v1/nothing", {}, 404, ""),
]


def test_bad_requests_get_4xx_and_the_server_stays_healthy(policy, prompt) -> None:
    for path, body, status, words in BAD_REQUESTS:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {**AUTH, "Content-Type": "application/json"}
        r = httpx.post(f"{policy.url}{path}", content=content, headers=headers, timeout=30)
        assert r.status_code == status, (path, body if isinstance(body, bytes) else str(body)[:80], r.text[:300])
        error = r.json()["error"]
        assert words in error["message"] or words == error.get("param"), (words, error)
    # a chunked body (no Content-Length) over the limit is cut off too
    chunks = (b"x" * 16_000 for _ in range(8))
    r = httpx.post(f"{policy.url}/v1/completions", content=chunks, headers={**AUTH, "Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 413
    assert httpx.get(f"{policy.url}/health", timeout=30).json()["status"] == "ok"
    good = httpx.post(f"{policy.url}/v1/completions", json={"prompt": prompt, "max_tokens": 3, "temperature": 0}, headers=AUTH,
                      timeout=60)
    assert good.status_code == 200 and good.json()["choices"][0]["text"]
    families = scrape(policy)
    assert metric(families, "x1_requests_total", status="500") == 0


def test_metrics_are_prometheus_text(policy) -> None:
    families = scrape(policy)
    assert families["x1_queue_depth"]["type"] == "gauge"
    assert families["x1_batch_size"]["type"] == "histogram"
    assert families["x1_request_latency_seconds"]["type"] == "histogram"
    assert families["x1_requests_total"]["type"] == "counter"
    assert metric(families, "x1_batch_size_count") >= 1


# -- the batcher on its own: a poisoned request fails alone ------------------------------------
def test_a_failing_request_fails_alone_and_the_worker_lives() -> None:
    from x1.models.fake import FakeBackend
    from x1.serve.common import BackgroundServer
    from x1.serve.policy import create_policy_app

    class Fragile(FakeBackend):
        def generate(self, requests):  # type: ignore[no-untyped-def]
            if any("POISON" in r.prompt for r in requests):
                raise BackendError("poisoned prompt")
            time.sleep(0.05)
            return super().generate(requests)

    with BackgroundServer(create_policy_app(Fragile(name="fragile"), max_wait_ms=30)) as server:
        def one(text: str) -> httpx.Response:
            return httpx.post(f"{server.url}/v1/completions", json={"prompt": text, "max_tokens": 5}, timeout=30)

        with ThreadPoolExecutor(6) as pool:
            responses = list(pool.map(one, ["a", "b", "POISON", "c", "d", "e"]))
        codes = [r.status_code for r in responses]
        assert codes == [200, 200, 400, 200, 200, 200], [r.text[:200] for r in responses]
        assert "poisoned prompt" in responses[2].json()["error"]["message"]
        families = scrape(server)
        assert metric(families, "x1_batch_items_total", outcome="error") == 1
        assert metric(families, "x1_batch_items_total", outcome="ok") == 5
        assert metric(families, "x1_batch_retries_total") >= 1
        assert one("f").status_code == 200
        assert httpx.get(f"{server.url}/health", timeout=10).json()["status"] == "ok"


# -- the value server and the remote evaluator ---------------------------------------------------
def test_value_server_scores_like_the_backend(value, backend, prompt) -> None:
    from x1.serve.value import BackendScorer

    items = [{"prompt": prompt, "continuation": "Red, green and blue."}, {"prompt": prompt, "continuation": "7 7 7 7"},
             {"prompt": prompt, "continuation": ""}]
    r = httpx.post(f"{value.url}/v1/score", json={"items": items}, timeout=60)
    assert r.status_code == 200, r.text
    scores = r.json()["scores"]
    local = BackendScorer(backend).score_texts([i["prompt"] for i in items], [i["continuation"] for i in items])
    assert scores == pytest.approx(local, abs=1e-4)
    assert all(0.0 <= s <= 1.0 for s in scores) and scores[2] == 0.5 and scores[0] > scores[1]
    for body, status in [({"items": []}, 400), ({"items": [{"prompt": "p"}]}, 400), ({"prefix": "p", "steps": []}, 400),
                         ({"items": [{"prompt": "p", "continuation": "c"}] * 9}, 413),
                         ({"items": [{"prompt": "x" * 4000, "continuation": "c"}]}, 413)]:
        assert httpx.post(f"{value.url}/v1/score", json=body, timeout=30).status_code == status, body
    assert httpx.get(f"{value.url}/health", timeout=10).json()["status"] == "ok"
    assert metric(scrape(value), "x1_batch_size_sum") >= 2


def test_value_app_takes_any_scorer() -> None:
    from x1.serve.common import BackgroundServer
    from x1.serve.value import TextModelScorer, as_scorer, create_value_app

    class Lengths:  # a stand-in for a trained value model: scores whole texts
        def unit_scores(self, texts: list[str]) -> list[float]:
            return [min(1.0, len(t) / 100) for t in texts]

    assert isinstance(as_scorer(Lengths()), TextModelScorer)
    with BackgroundServer(create_value_app(Lengths(), api_key=KEY, model_name="lengths")) as server:
        body = {"items": [{"prompt": "ab", "continuation": "cd"}, {"prompt": "x" * 60, "continuation": "y" * 60}]}
        assert httpx.post(f"{server.url}/v1/score", json=body, timeout=10).status_code == 401
        r = httpx.post(f"{server.url}/v1/score", json=body, headers=AUTH, timeout=10)
        assert r.json()["scores"] == [0.04, 1.0] and r.json()["model"] == "lengths"


def test_api_key_is_enforced_behind_a_prefix_proxy() -> None:
    """A proxy that mounts the app under a prefix (root_path) must not open a way around the key."""
    import asyncio

    from x1.serve.value import create_value_app

    class Lengths:
        def unit_scores(self, texts: list[str]) -> list[float]:
            return [0.5 for _ in texts]

    app = create_value_app(Lengths(), api_key=KEY, model_name="lengths")
    body = b'{"items": [{"prompt": "ab", "continuation": "cd"}]}'

    async def call(headers: list[tuple[bytes, bytes]]) -> int:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
                 "path": "/value/v1/score", "raw_path": b"/value/v1/score", "root_path": "/value", "query_string": b"",
                 "headers": [(b"content-type", b"application/json"), *headers], "server": ("test", 80), "client": ("test", 1)}  # fmt: skip
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        status: list[int] = []

        async def receive() -> dict:
            if messages:
                return messages.pop(0)
            await asyncio.sleep(3600)  # a client that stays connected (a disconnect now would cancel the request)
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app(scope, receive, send)
        return status[0]

    assert asyncio.run(call([])) == 401
    assert asyncio.run(call([(b"authorization", f"Bearer {KEY}".encode())])) != 401  # past the guard (503: no lifespan here)


def test_remote_value_evaluator_says_how_to_fix_a_missing_server() -> None:
    from helpers import number_task

    from x1.evaluators.base import EvalItem, Evaluator
    from x1.evaluators.remote import RemoteValueEvaluator
    from x1.graph import ReasoningGraph
    from x1.serve.common import free_port

    url = f"http://127.0.0.1:{free_port()}"
    evaluator = RemoteValueEvaluator(url, timeout=5, max_retries=0)
    assert isinstance(evaluator, Evaluator)
    graph = ReasoningGraph(problem="q")
    child = graph.add(0, "step one")

    with pytest.raises(BackendError) as info:
        evaluator.evaluate([EvalItem(number_task(), graph, child.id, "prefix")])
    message = str(info.value)
    assert url in message and "x1 serve value" in message and "fix:" in message and "\n" not in message


# -- MCTS through the servers equals MCTS in-process ---------------------------------------------
def _start_cli(kind: str, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "x1.cli", "serve", kind, "--model", "smollm2", "--port", str(port), "--threads", "1",
           "--n-ctx", "8192", "--log-level", "warning"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _wait_healthy(proc: subprocess.Popen, url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace")[-2000:] if proc.stderr else ""
            pytest.fail(f"the server exited with {proc.returncode}: {err}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{url} did not become healthy within {timeout:g}s")
        time.sleep(0.2)


class OneAtATime:
    """A backend that decodes one request per call (n sequences), like a server fed by a client with concurrency 1."""

    def __init__(self, backend) -> None:  # type: ignore[no-untyped-def]
        self.backend = backend
        self.name, self.stats = backend.name, backend.stats
        self.capabilities = replace(backend.capabilities, continuous=False)  # no stream: one request per call

    def generate(self, requests):  # type: ignore[no-untyped-def]
        return [self.backend.generate([r])[0] for r in requests]

    def score(self, prompts, continuations):  # type: ignore[no-untyped-def]
        return self.backend.score(prompts, continuations)

    def format_chat(self, messages):  # type: ignore[no-untyped-def]
        return self.backend.format_chat(messages)

    def close(self) -> None:
        self.backend.close()


def _run_mcts(policy_backend, evaluator, tasks):  # type: ignore[no-untyped-def]
    from x1.engine import Engine, Sampling
    from x1.strategies import MCTS

    # Lock-step on both sides, so both send the very same calls in the same order.
    engine = Engine(policy=policy_backend, evaluators={"value": evaluator}, sampling=Sampling(temperature=0.0), seed=11,
                    continuous=False)
    return engine.run(tasks, MCTS(iterations=4, expand=2, temperature=0.0, evaluator="value"))


def _search_record(graph) -> list[tuple]:  # type: ignore[no-untyped-def]
    """Everything search decided, thought by thought. Left out: token ids (the HTTP answer has token
    texts, not ids) and prompt-token counts (in-process counts only what the prefix cache did not
    hold; the server's usage counts the whole prompt)."""
    return [(t.id, t.text, tuple(t.parents), tuple(t.children), t.terminal, t.answer, t.visits, t.value, dict(t.scores),
             t.compute.generated_tokens, t.compute.policy_calls) for t in graph]


def test_mcts_through_the_servers_matches_in_process(backend) -> None:
    """The same MCTS run (2 problems, seed 11, temperature 0) through `x1 serve policy` + `x1 serve value`
    and in-process gives the same graphs.

    llama.cpp's results depend on which sequences share a batch and in what order (its sums and
    prefix cache are batch-dependent, enough to flip a greedy near-tie), and concurrent HTTP
    requests reach the server in no fixed order. So the client sends one request at a time
    and the in-process policy decodes one request per call: the same calls on both sides, so
    the graphs must agree exactly. Batching itself is tested above.
    """
    from x1.evaluators.remote import RemoteValueEvaluator
    from x1.models.llama_cpp import LlamaCppBackend
    from x1.models.openai_backend import OpenAIBackend
    from x1.serve.common import free_port
    from x1.serve.value import ScorerEvaluator
    from x1.tasks.registry import load_tasks

    tasks = load_tasks("samples", n=2, seed=0)
    # one line a step, so the trees grow a few levels deep in a few seconds
    tasks = [replace(t, step_format=replace(t.step_format, delimiter="\n", max_step_tokens=40)) for t in tasks]
    ports = free_port(), free_port()
    procs = [_start_cli("policy", ports[0]), _start_cli("value", ports[1])]
    try:
        # The in-process run goes while the servers load, on fresh models set up as `x1 serve` does.
        policy_model, value_model = (LlamaCppBackend(backend.path, name="smollm2", n_ctx=8192, n_seq_max=64, n_threads=1)
                                     for _ in range(2))
        try:
            local = _run_mcts(OneAtATime(policy_model), ScorerEvaluator(value_model), tasks)
        finally:
            policy_model.close()
            value_model.close()
        for proc, port in zip(procs, ports, strict=True):
            _wait_healthy(proc, f"http://127.0.0.1:{port}")
        remote_policy = OpenAIBackend(f"http://127.0.0.1:{ports[0]}/v1", model_name="smollm2", timeout=120, max_retries=0,
                                      concurrency=1)
        remote_value = RemoteValueEvaluator(f"http://127.0.0.1:{ports[1]}", timeout=120)
        try:
            remote = _run_mcts(remote_policy, remote_value, tasks)
        finally:
            remote_policy.close()
            remote_value.close()
        assert remote_value.model_calls > 0
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    for a, b in zip(local, remote, strict=True):
        assert len(a.graph) >= 5
        assert _search_record(a.graph) == _search_record(b.graph)
        assert (a.answer, a.correct, a.stop_reason) == (b.answer, b.correct, b.stop_reason)
        for ta, tb in zip(a.graph, b.graph, strict=True):
            # in-process logprobs also cover the stop string's tokens; over HTTP they end with the text
            assert tb.logprobs == ta.logprobs[: len(tb.logprobs)] and len(ta.logprobs) - len(tb.logprobs) in (0, 1, 2)


def test_batcher_stop_fails_waiters() -> None:
    import asyncio

    from x1.serve.batcher import BatcherClosed, DynamicBatcher

    release = threading.Event()

    def slow(items: list[int]) -> list[int]:
        release.wait(5)
        return [i * 2 for i in items]

    async def main() -> None:
        batcher: DynamicBatcher[int, int] = DynamicBatcher(slow, max_batch=2, max_wait_ms=1)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit_many([1, 2]))
        await asyncio.sleep(0.05)
        late = asyncio.ensure_future(batcher.submit(3))  # waits behind the running batch
        await asyncio.sleep(0.05)
        release.set()
        assert await first == [2, 4]
        assert await late == 6
        blocked = threading.Event()
        batcher.run_batch = lambda items: (blocked.wait(5), items)[1]  # type: ignore[assignment]
        stuck = [asyncio.ensure_future(batcher.submit(i)) for i in (4, 5, 6)]  # 4, 5 run; 6 waits
        await asyncio.sleep(0.05)
        await batcher.stop()  # does not wait for the model call; every waiter hears why
        blocked.set()
        results = await asyncio.gather(*stuck, return_exceptions=True)
        assert all(isinstance(r, BatcherClosed) for r in results), results
        with pytest.raises(BatcherClosed):
            await batcher.submit(6)

    asyncio.run(main())


def test_continuous_batcher_admits_mid_decode_and_contains_failures() -> None:
    """A request that arrives while others decode joins them; a request the stream refuses fails
    alone; a step that raises fails only what was in flight, and the next request still works."""
    import asyncio

    from x1.models.base import BackendError, GenerationRequest
    from x1.models.fake import FakeBackend, FakeStream
    from x1.serve.continuous import ContinuousBatcher

    fake = FakeBackend(responder=lambda prompt, i: ("boom " if "boom" in prompt else "word ") * int(prompt.split()[-1]),
                       continuous=True)

    class Picky(FakeStream):
        def submit(self, request: GenerationRequest) -> int:
            if "bad" in request.prompt:
                raise BackendError("this prompt is bad")
            return super().submit(request)

        def step(self):  # type: ignore[no-untyped-def]
            if any(g[0].text.startswith("boom") for _, g in self._running.values()):
                raise BackendError("the model fell over")
            time.sleep(0.005)  # a decode step takes time
            return super().step()

    steps: list[int] = []

    def finish(prompt: str, completions):  # type: ignore[no-untyped-def]
        steps.append(fake.decode_steps)
        return completions[0].generated_tokens

    async def main() -> None:
        batcher: ContinuousBatcher[str, int] = ContinuousBatcher(
            lambda: Picky(fake), lambda p: GenerationRequest(p, max_tokens=100), finish, max_batch=8)
        batcher.start()
        long = asyncio.ensure_future(batcher.submit("long 40"))
        await asyncio.sleep(0.01)
        assert await batcher.submit("short 2") == 2  # joined the running decode and left before the long one
        assert not long.done()
        with pytest.raises(BackendError, match="bad"):
            await batcher.submit("bad 3")
        assert await long == 40
        with pytest.raises(BackendError, match="fell over"):
            await batcher.submit("boom 3")
        assert await batcher.submit("after 3") == 3  # a fresh stream serves the next request
        await batcher.stop()

    asyncio.run(main())
    assert steps[0] < steps[1]  # the short request finished at an earlier step than the long one


def test_the_policy_server_batches_continuously_on_a_streaming_backend_unless_told_to_gather() -> None:
    from x1.models.fake import FakeBackend
    from x1.serve.batcher import DynamicBatcher
    from x1.serve.continuous import ContinuousBatcher
    from x1.serve.metrics import ServerMetrics
    from x1.serve.policy import policy_batcher

    streaming, plain = FakeBackend(continuous=True), FakeBackend()
    assert isinstance(policy_batcher(streaming, 8, 5.0, ServerMetrics()), ContinuousBatcher)
    gathered = policy_batcher(streaming, 8, 5.0, ServerMetrics(), continuous=False)
    assert isinstance(gathered, DynamicBatcher) and not isinstance(gathered, ContinuousBatcher)
    assert not isinstance(policy_batcher(plain, 8, 5.0, ServerMetrics()), ContinuousBatcher)
