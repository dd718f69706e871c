"""OpenAIBackend against llama-cpp-python's real OpenAI-compatible server on loopback, plus its failure messages."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from x1.models.base import Backend, BackendError, GenerationRequest

pytest.importorskip("openai")


def free_port() -> int:
    """A port nothing listens on (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server_url():
    pytest.importorskip("llama_cpp.server", reason="needs llama-cpp-python[server]")
    from x1.models.registry import smollm2_path

    try:
        model = smollm2_path()
    except BackendError as err:
        pytest.skip(str(err))
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--n_ctx", "2048", "--n_threads", "1", "--n_threads_batch", "1", "--verbose", "False"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace")[-2000:] if proc.stderr else ""
                pytest.fail(f"llama_cpp.server exited with {proc.returncode}: {err}")
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("llama_cpp.server did not answer /v1/models within 90s")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def backend(server_url):
    from x1.models.openai_backend import OpenAIBackend

    b = OpenAIBackend(server_url, timeout=60.0, max_retries=1, concurrency=8)
    yield b
    b.close()


@pytest.fixture(scope="module")
def prompt(backend) -> str:
    return backend.format_chat([{"role": "user", "content": "Name three colors."}])


# -- no server needed -----------------------------------------------------------------------
def test_format_chat_chatml_default_and_custom_template() -> None:
    from x1.models.openai_backend import OpenAIBackend

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    b = OpenAIBackend("http://127.0.0.1:1/v1")
    assert isinstance(b, Backend)
    assert b.format_chat(messages) == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    template = "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}"
    custom = OpenAIBackend("http://127.0.0.1:1/v1", chat_template=template)
    assert custom.format_chat(messages) == "[system] Be brief.\n[user] Hi\n[assistant] "
    assert not b.capabilities.scoring and b.capabilities.logprobs


def test_refused_port_names_the_url_and_the_fix() -> None:
    from x1.models.openai_backend import OpenAIBackend

    url = f"http://127.0.0.1:{free_port()}/v1"
    b = OpenAIBackend(url, timeout=5, max_retries=1)
    try:
        with pytest.raises(BackendError) as info:
            b.generate([GenerationRequest("Hello", max_tokens=2)])
    finally:
        b.close()
    message = str(info.value)
    assert url in message and "connection refused" in message and "fix:" in message
    assert "\n" not in message


def test_vllm_missing_is_a_backend_error() -> None:
    pytest.importorskip("x1.models.vllm_backend")
    try:
        import vllm  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("vllm is installed here")
    from x1.models.vllm_backend import VLLMBackend

    with pytest.raises(BackendError, match=r"vLLM is not installed.*fix: pip install 'x1\[vllm\]'"):
        VLLMBackend("some/model")


# -- the real server ------------------------------------------------------------------------
@pytest.mark.server
def test_n_choices_with_stop_strings(backend, prompt) -> None:
    out = backend.generate([GenerationRequest(prompt, n=2, max_tokens=12, temperature=0.8, seed=3, stop=[" "])])
    assert len(out) == 1 and len(out[0]) == 2  # llama-cpp-python ignores n: the backend tops up
    for c in out[0]:
        assert " " not in c.text
        assert c.finish_reason in ("stop", "eos", "length")
        if c.finish_reason == "stop":
            assert c.stop == " "
    assert any(c.finish_reason == "stop" and c.stop == " " for c in out[0])


@pytest.mark.server
def test_greedy_logprobs_and_usage(backend, prompt) -> None:
    before = backend.stats.prompt_tokens
    c = backend.generate([GenerationRequest(prompt, max_tokens=6, temperature=0.0, top_logprobs=3)])[0][0]
    again = backend.generate([GenerationRequest(prompt, max_tokens=6, temperature=0.0)])[0][0]
    assert c.text and c.text == again.text
    assert c.finish_reason in ("length", "eos")
    assert len(c.logprobs) == c.generated_tokens > 0 and all(lp <= 0 for lp in c.logprobs)
    assert len(c.top_logprobs) == len(c.logprobs)
    for top, lp in zip(c.top_logprobs, c.logprobs, strict=True):
        assert 1 <= len(top) <= 3
        assert max(top.values()) == pytest.approx(lp, abs=1e-4)  # greedy picks the top token
    assert c.prompt_tokens > 0 and backend.stats.prompt_tokens - before == 2 * c.prompt_tokens
    assert not c.signals  # not asked for


@pytest.mark.server
def test_approximate_signals_from_top_logprobs(backend, prompt) -> None:
    c = backend.generate([GenerationRequest(prompt, max_tokens=4, temperature=0.0, signals=True)])[0][0]
    assert len(c.signals) == len(c.logprobs) > 0 and not c.top_logprobs
    for sig in c.signals:
        assert sig["entropy"] >= 0 and 0 <= sig["gini"] <= 1 and 0 < sig["top1"] <= 1
        assert sig["exact"] == 0.0  # from a truncated top-k, not the full distribution


@pytest.mark.server
def test_concurrent_requests_and_a_running_event_loop(backend, prompt) -> None:
    other = backend.format_chat([{"role": "user", "content": "What is 2+3?"}])
    requests = [GenerationRequest(p, max_tokens=4, temperature=0.0) for p in (prompt, other, prompt, other)]
    sequences = backend.stats.sequences

    async def inside_a_loop():
        return backend.generate(requests)  # sync call from a coroutine: runs on the backend's own loop

    out = asyncio.run(inside_a_loop())
    assert [len(o) for o in out] == [1, 1, 1, 1]
    assert out[0][0].text == out[2][0].text and out[1][0].text == out[3][0].text
    assert backend.stats.sequences - sequences == 4


@pytest.mark.server
def test_score_works_when_aligned_and_refuses_when_not(backend, prompt) -> None:
    c = backend.generate([GenerationRequest(prompt, max_tokens=5, temperature=0.0)])[0][0]
    # SmolLM2's BOS is <|im_start|>, so a chat prompt starts with it and the echo is aligned.
    [scores] = backend.score([prompt], [c.text])
    assert scores == pytest.approx(c.logprobs, abs=1e-3)
    with pytest.raises(BackendError, match="fix:"):
        backend.score(["The capital of France is Paris. The capital of"], [" Germany"])


@pytest.mark.server
def test_tiny_timeout_names_the_fix(server_url) -> None:
    from x1.models.openai_backend import OpenAIBackend

    b = OpenAIBackend(server_url, timeout=0.001, max_retries=1)
    try:
        with pytest.raises(BackendError) as info:
            b.generate([GenerationRequest("Hello", max_tokens=2)])
    finally:
        b.close()
    message = str(info.value)
    assert "did not answer within" in message and "fix:" in message and server_url in message
