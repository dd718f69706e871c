"""Issue 20's server defects: a full KV cache, abandoned work, an empty value prompt, slow and oversized clients."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from x1.models.base import BackendError

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def small_ctx():
    """SmolLM2 with a 1024-token cache: two ~600-token prompts fit one at a time, not together."""
    pytest.importorskip("llama_cpp")
    from x1.models.llama_cpp import LlamaCppBackend
    from x1.models.registry import smollm2_path

    try:
        path = smollm2_path()
    except BackendError as err:
        pytest.skip(str(err))
    b = LlamaCppBackend(path, name="smollm2", n_ctx=1024, n_seq_max=16, n_threads=1)
    yield b
    b.close()


def long_prompt(tag: str) -> str:
    return f"{tag} " * 300  # about 600 tokens


def test_two_prompts_that_only_fit_one_at_a_time_are_both_served_and_the_cache_stays_usable(small_ctx) -> None:
    from x1.serve.common import BackgroundServer
    from x1.serve.policy import create_policy_app

    assert 500 < len(small_ctx.tokenize(long_prompt("b0"))) < 1000
    with BackgroundServer(create_policy_app(small_ctx, max_batch=8)) as server:

        async def main() -> list[int]:
            async with httpx.AsyncClient(timeout=120) as client:
                answers = await asyncio.gather(*(client.post(f"{server.url}/v1/completions",
                                                             json={"prompt": long_prompt(f"b{i}"), "max_tokens": 2}) for i in range(2)))
                after = await client.post(f"{server.url}/v1/completions", json={"prompt": "2+2=", "max_tokens": 2})
                return [r.status_code for r in answers] + [after.status_code]

        assert asyncio.run(main()) == [200, 200, 200]


def test_a_failed_score_frees_the_cache_it_filled(small_ctx) -> None:
    with pytest.raises(BackendError, match="KV cache"):
        small_ctx.score([long_prompt("x9"), long_prompt("y9")], [" 1", " 2"])  # together over 1024 tokens, in one decode
    assert not any(slot.busy for slot in small_ctx._slots)
    assert len(small_ctx.score(["2+2="], ["4"])[0]) >= 1  # the cache is not left full


def test_an_empty_value_prompt_is_scored_alone_and_beside_a_neighbour(small_ctx) -> None:
    from x1.serve.common import BackgroundServer
    from x1.serve.value import create_value_app

    with BackgroundServer(create_value_app(small_ctx)) as server:
        alone = httpx.post(f"{server.url}/v1/score", json={"items": [{"prompt": "", "continuation": "4"}]}, timeout=60)
        assert alone.status_code == 200, alone.text
        pair = httpx.post(f"{server.url}/v1/score", json={"items": [{"prompt": "", "continuation": "4"},
                                                                   {"prompt": "2+2=", "continuation": "4"}]}, timeout=60)
        assert pair.status_code == 200
        assert pair.json()["scores"][0] == pytest.approx(alone.json()["scores"][0], abs=1e-4)


def test_an_abandoned_request_leaves_the_decode_and_does_not_block_others(small_ctx) -> None:
    from x1.serve.common import BackgroundServer
    from x1.serve.policy import create_policy_app

    app = create_policy_app(small_ctx, max_batch=8, max_tokens_limit=900)
    with BackgroundServer(app) as server:
        with pytest.raises(httpx.TimeoutException):
            httpx.post(f"{server.url}/v1/completions", json={"prompt": "Tell a story.", "n": 4, "max_tokens": 900,
                                                             "temperature": 1.0, "seed": 1}, timeout=1.0)
        start = time.perf_counter()
        good = httpx.post(f"{server.url}/v1/completions", json={"prompt": "2+2=", "max_tokens": 2}, timeout=120)
        waited = time.perf_counter() - start
        assert good.status_code == 200
        deadline = time.monotonic() + 10
        while app.state.batchers[0]._in_flight and time.monotonic() < deadline:
            time.sleep(0.1)
        assert app.state.batchers[0]._in_flight == 0  # the abandoned 4 x 900 tokens left the decode
        assert waited < 60
        assert 'outcome="cancelled"' in app.state.metrics.render()


def test_health_reports_a_wedged_batcher() -> None:
    from x1.serve.batcher import DynamicBatcher
    from x1.serve.common import BackgroundServer, make_app
    from x1.serve.metrics import ServerMetrics

    release = threading.Event()
    batcher: DynamicBatcher[int, int] = DynamicBatcher(lambda items: (release.wait(10), items)[1], max_wait_ms=0)
    app = make_app("t", "t", ServerMetrics(), [batcher], None, 1 << 20, wedged_after_s=0.3)

    @app.post("/v1/echo")
    async def echo() -> dict[str, int]:
        return {"value": await batcher.submit(1)}

    with BackgroundServer(app) as server:
        assert httpx.get(f"{server.url}/health").status_code == 200
        stuck = threading.Thread(target=lambda: httpx.post(f"{server.url}/v1/echo", timeout=20))
        stuck.start()
        time.sleep(0.8)
        health = httpx.get(f"{server.url}/health")
        assert health.status_code == 503 and health.json()["status"].startswith("wedged")
        release.set()
        stuck.join(20)
        assert httpx.get(f"{server.url}/health").status_code == 200


@pytest.fixture()
def tiny_server(monkeypatch: pytest.MonkeyPatch):
    """The fake policy behind the real uvicorn settings, with a 0.5 s header deadline."""
    from x1.models.fake import FakeBackend
    from x1.serve.common import BackgroundServer
    from x1.serve.policy import create_policy_app
    from x1.serve.slow import SlowClientH11Protocol

    monkeypatch.setattr(SlowClientH11Protocol, "header_timeout_s", 0.5)
    with BackgroundServer(create_policy_app(FakeBackend(), api_key="k")) as server:
        yield server


def raw_exchange(port: int, data: bytes, wait: float = 3.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
        return b"".join(chunks)


def test_slow_headers_get_408_and_huge_headers_get_431(tiny_server) -> None:
    start = time.perf_counter()
    answer = raw_exchange(tiny_server.port, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    assert answer.startswith(b"HTTP/1.1 408") and time.perf_counter() - start < 2.5
    huge = b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"a" * 100) for i in range(400)) + b"\r\n"
    assert raw_exchange(tiny_server.port, huge).startswith(b"HTTP/1.1 431")
    assert httpx.get(f"{tiny_server.url}/health").status_code == 200


@pytest.mark.parametrize("path", ["//v1/completions", "/v1%2Fcompletions", "/v1/../v1/completions", "/docs", "/openapi.json",
                                  "/metrics", "/health", "/v1/models", "/V1/completions"])
def test_every_path_variant_gets_a_4xx_or_is_served_and_v1_needs_the_key(tiny_server, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer k"}):
        for method in ("GET", "POST"):
            r = httpx.request(method, f"{tiny_server.url}{path}", headers=headers, json={"prompt": "1+1=", "max_tokens": 2})
            assert r.status_code < 500, (path, method, r.status_code)
            if r.status_code == 200 and not headers:
                assert path in ("/metrics", "/health"), f"{path} answered without the key"


def test_nul_bytes_and_huge_numbers_get_4xx(tiny_server) -> None:
    auth = {"Authorization": "Bearer k"}
    bodies = [{"prompt": "a\x00b", "max_tokens": 2}, {"prompt": "a", "n": 10**9}, {"prompt": "a", "max_tokens": 10**12},
              {"prompt": "a", "logprobs": 10**6}, {"prompt": "a", "max_tokens": -1}]
    for body in bodies:
        r = httpx.post(f"{tiny_server.url}/v1/completions", headers=auth, json=body)
        assert r.status_code < 500, (body, r.text)
    big = httpx.post(f"{tiny_server.url}/v1/completions", headers=auth, content=b"x" * (10 << 20))
    assert big.status_code == 413
