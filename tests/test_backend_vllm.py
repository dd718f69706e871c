"""VLLMBackend's configuration logic against a stand-in ``vllm`` module (no GPU or vLLM needed)."""

from __future__ import annotations

import sys
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from x1.models.base import BackendError


class StubTokenizer:
    """One token per character, its code point: easy to read in a test."""

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [ord(ch) for ch in text]


class StubLLM:
    built: list[dict[str, Any]] = []

    def __init__(self, model: str, **kwargs: Any) -> None:
        StubLLM.built.append({"model": model, **kwargs})
        self.calls: list[tuple[list[Any], Any]] = []

    def get_tokenizer(self) -> StubTokenizer:
        return StubTokenizer()

    def generate(self, prompts: list[Any], sampling_params: Any = None, use_tqdm: bool = False, **_: Any) -> list[Any]:
        """Prompt logprobs: position k of a prompt gets −k/10 for its own token (None at position 0)."""
        self.calls.append((prompts, sampling_params))
        outputs = []
        for p in prompts:
            ids = p["prompt_token_ids"]
            rows = [None] + [{t: SimpleNamespace(logprob=-k / 10)} for k, t in enumerate(ids) if k > 0]
            outputs.append(SimpleNamespace(prompt_logprobs=rows, prompt_token_ids=ids, outputs=[]))
        return outputs


@pytest.fixture
def vllm_stub(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    module = ModuleType("vllm")
    module.LLM = StubLLM  # type: ignore[attr-defined]
    module.SamplingParams = lambda **kw: SimpleNamespace(**kw)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", module)
    StubLLM.built.clear()
    return module


def test_prefix_caching_by_default_and_then_no_scoring(vllm_stub: ModuleType) -> None:
    from x1.models.vllm_backend import VLLMBackend

    backend = VLLMBackend("some/model", gpu_memory_utilization=0.5)
    assert StubLLM.built == [{"model": "some/model", "gpu_memory_utilization": 0.5, "enable_prefix_caching": True}]
    assert backend.capabilities.prefix_reuse and not backend.capabilities.scoring
    with pytest.raises(BackendError, match=r"prefix caching on.*fix: .*enable_prefix_caching=False"):
        backend.score(["ab"], ["cd"])
    assert backend.llm.calls == []  # refused before asking vLLM


def test_scoring_backend_turns_prefix_caching_off(vllm_stub: ModuleType) -> None:
    from x1.models.vllm_backend import VLLMBackend

    backend = VLLMBackend("some/model", enable_prefix_caching=False)
    assert StubLLM.built[-1]["enable_prefix_caching"] is False
    assert backend.capabilities.scoring and not backend.capabilities.prefix_reuse
    # prompt "ab" + continuation "cd": the continuation's tokens sit at positions 2 and 3 → −0.2, −0.3
    assert backend.score(["ab"], ["cd"]) == [[pytest.approx(-0.2), pytest.approx(-0.3)]]
    ((prompts, params),) = backend.llm.calls
    assert prompts == [{"prompt_token_ids": [97, 98, 99, 100]}] and params.prompt_logprobs == 0
