"""`x1 serve policy --ray-serve`: the policy app as a Ray Serve deployment, reached with the official openai client.

One private local Ray instance, one replica of the deterministic fake backend (so the answer can be
checked against an in-process call), the proxy on a free loopback port; torn down at the end.
"""

from __future__ import annotations

import sys

import pytest
from typer.testing import CliRunner

from x1.cli import app
from x1.models.base import GenerationRequest

KEY = "test-key"


def test_missing_ray_serve_names_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray.serve", None)  # `import ray.serve` now fails as if the extra were not installed
    result = CliRunner().invoke(app, ["serve", "policy", "--ray-serve", "--model", "fake"])
    assert result.exit_code == 2 and "pip install 'x1[ray]'" in result.output, result.output


def test_bad_replica_options_fail_before_ray_starts():
    result = CliRunner().invoke(app, ["serve", "value", "--ray-serve", "--model", "fake", "--replicas", "0"])
    assert result.exit_code == 2 and "--replicas" in result.output, result.output


@pytest.fixture(scope="module")
def deployment():
    pytest.importorskip("ray.serve", reason="Ray Serve is not installed (pip install 'x1[ray]')")
    pytest.importorskip("fastapi")
    from x1.serve.common import free_port
    from x1.serve.ray_serve import ReplicaSpec, deploy

    spec = ReplicaSpec("policy", "fake", api_key=KEY, limits={"max_prompt_chars": 4000, "max_tokens_limit": 64})
    running = deploy(spec, replicas=1, num_cpus=0.5, port=free_port())
    try:
        yield running
    finally:
        running.shutdown()


def test_openai_client_completes_through_the_ray_serve_proxy(deployment):
    openai = pytest.importorskip("openai")
    httpx = pytest.importorskip("httpx")
    from x1.models.registry import load_backend

    assert deployment.url.endswith("/policy")
    client = openai.OpenAI(base_url=f"{deployment.url}/v1", api_key=KEY, max_retries=0, timeout=60)
    try:
        assert [m.id for m in client.models.list().data] == ["fake"]
        prompt = "What is 2 + 3?"
        r = client.completions.create(model="fake", prompt=prompt, max_tokens=32, temperature=0, seed=1)
    finally:
        client.close()
    local = load_backend("fake").generate([GenerationRequest(prompt, max_tokens=32, temperature=0.0, seed=1)])[0][0]
    assert r.choices[0].text == local.text and r.choices[0].text
    assert r.usage.completion_tokens == local.generated_tokens

    health = httpx.get(f"{deployment.url}/health", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "ok" and health.json()["kind"] == "policy"
    # The API key still guards /v1 under the route prefix.
    denied = httpx.post(f"{deployment.url}/v1/completions", json={"prompt": "hi"}, timeout=10)
    assert denied.status_code == 401 and denied.json()["error"]["code"] == "invalid_api_key"
