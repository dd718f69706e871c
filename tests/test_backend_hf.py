"""TransformersBackend on the bundled SmolLM2-135M GGUF (de-quantised by transformers), plus token-signal math."""

from __future__ import annotations

import math

import numpy as np
import pytest

from x1.models.base import Backend, BackendError, GenerationRequest
from x1.signals import token_signals

MESSAGES = [
    [{"role": "user", "content": "What is 2+3?"}],
    [{"role": "user", "content": "Name a color."}],
]


# -- pure math, no model --------------------------------------------------------------------
def test_token_signals_uniform_and_peaked() -> None:
    n = 8
    uniform = token_signals(np.full(n, -math.log(n)))
    assert uniform["entropy"] == pytest.approx(math.log(n))
    assert uniform["varentropy"] == pytest.approx(0.0, abs=1e-12)
    assert uniform["gini"] == pytest.approx(0.0, abs=1e-12)
    assert uniform["top1"] == pytest.approx(1 / n)
    assert uniform["margin"] == pytest.approx(0.0, abs=1e-12)

    peaked = token_signals(np.array([0.0, -np.inf, -np.inf, -np.inf]))
    assert peaked["entropy"] == pytest.approx(0.0)
    assert peaked["top1"] == pytest.approx(1.0)
    assert peaked["margin"] == pytest.approx(1.0)
    assert peaked["gini"] == pytest.approx(0.75)  # the maximum for n=4: 1 - 1/n

    two = token_signals(np.log(np.array([0.5, 0.25, 0.25])))
    assert two["entropy"] == pytest.approx(1.5 * math.log(2))
    h = 1.5 * math.log(2)
    assert two["varentropy"] == pytest.approx(0.5 * (math.log(2) - h) ** 2 + 0.5 * (2 * math.log(2) - h) ** 2)
    assert two["margin"] == pytest.approx(0.25)


def test_missing_path_is_a_backend_error() -> None:
    pytest.importorskip("transformers")
    from x1.models.hf import TransformersBackend

    with pytest.raises(BackendError, match="fix:"):
        TransformersBackend("/nonexistent/model-folder")


# -- the real model -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hf():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    import torch

    from x1.models.hf import TransformersBackend
    from x1.models.registry import smollm2_path

    try:
        path = smollm2_path()
    except BackendError as err:
        pytest.skip(str(err))
    threads = torch.get_num_threads()
    # One thread: on a shared 2-core machine two spinning threads run many times slower.
    backend = TransformersBackend(path, name="smollm2", threads=1)
    yield backend
    backend.close()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def prompts(hf) -> list[str]:
    return [hf.format_chat(m) for m in MESSAGES]


def greedy(prompt: str, max_tokens: int = 8, **kw) -> GenerationRequest:
    return GenerationRequest(prompt, n=1, max_tokens=max_tokens, temperature=0.0, **kw)


@pytest.mark.model
def test_protocol_capabilities_and_chat(hf, prompts) -> None:
    assert isinstance(hf, Backend)
    caps = hf.capabilities
    assert caps.batching and caps.logprobs and caps.full_distribution and caps.scoring
    assert caps.top_logprobs == 20 and not caps.prefix_reuse
    assert prompts[0].endswith("<|im_start|>assistant\n")
    assert "What is 2+3?" in prompts[0]


@pytest.mark.model
def test_greedy_is_deterministic_and_respects_max_tokens(hf, prompts) -> None:
    a = hf.generate([greedy(prompts[1], max_tokens=6)])[0][0]
    b = hf.generate([greedy(prompts[1], max_tokens=6)])[0][0]
    assert a.text == b.text and a.token_ids == b.token_ids and a.text
    assert len(a.token_ids) <= 6 and len(a.logprobs) == len(a.token_ids)
    assert a.finish_reason in ("length", "eos")
    if a.finish_reason == "length":
        assert len(a.token_ids) == 6 and a.generated_tokens == 6
    assert all(lp <= 0 for lp in a.logprobs)
    assert a.prompt_tokens > 0


@pytest.mark.model
def test_stop_strings_cut_the_text(hf, prompts) -> None:
    full = hf.generate([greedy(prompts[1], max_tokens=10)])[0][0]
    words = full.text.split(" ")
    assert len(words) >= 3, full.text
    stop = " " + words[2]  # a string the greedy path is known to produce
    cut = hf.generate([greedy(prompts[1], max_tokens=10, stop=["<never>", stop])])[0][0]
    assert cut.finish_reason == "stop" and cut.stop == stop
    assert cut.text == full.text[: full.text.index(stop)]
    assert stop not in cut.text
    assert len(cut.token_ids) == len(cut.logprobs) < len(full.token_ids)
    assert cut.token_ids == full.token_ids[: len(cut.token_ids)]


@pytest.mark.model
def test_batched_equals_one_at_a_time(hf, prompts) -> None:
    singles = [hf.generate([greedy(p)])[0][0] for p in prompts]
    batched = [out[0] for out in hf.generate([greedy(p) for p in prompts])]
    assert [c.text for c in batched] == [c.text for c in singles]
    for b, s in zip(batched, singles, strict=True):
        np.testing.assert_allclose(b.logprobs, s.logprobs, atol=1e-3)


@pytest.mark.model
def test_score_matches_generation_logprobs(hf, prompts) -> None:
    out = hf.generate([greedy(p) for p in prompts])
    completions = [o[0] for o in out]
    before = hf.stats.scored_tokens
    scores = hf.score(prompts, [c.text for c in completions])
    for c, s in zip(completions, scores, strict=True):
        assert hf.tokenizer(c.text, add_special_tokens=False)["input_ids"] == c.token_ids
        np.testing.assert_allclose(s, c.logprobs, atol=1e-3)
    assert hf.stats.scored_tokens - before == sum(len(s) for s in scores)
    assert hf.score(prompts[:1], [""]) == [[]]


@pytest.mark.model
def test_signals_and_top_logprobs(hf, prompts) -> None:
    c = hf.generate([greedy(prompts[0], max_tokens=5, signals=True, top_logprobs=4)])[0][0]
    assert len(c.signals) == len(c.token_ids) == len(c.top_logprobs) > 0
    for sig, top, lp in zip(c.signals, c.top_logprobs, c.logprobs, strict=True):
        assert set(sig) >= {"entropy", "varentropy", "gini", "top1", "margin"}
        assert sig["entropy"] >= 0 and sig["varentropy"] >= 0
        assert 0 <= sig["gini"] <= 1
        assert 0 < sig["top1"] <= 1 and 0 <= sig["margin"] <= sig["top1"]
        assert 1 <= len(top) <= 4
        assert max(top.values()) == pytest.approx(lp, abs=1e-5)  # greedy: the chosen token is the top one
        assert math.exp(lp) == pytest.approx(sig["top1"], rel=1e-4)


@pytest.mark.model
def test_seeded_sampling_is_reproducible(hf, prompts) -> None:
    req = GenerationRequest(prompts[1], n=2, max_tokens=5, temperature=1.0, top_p=0.9, seed=7)
    calls = hf.stats.calls
    a = hf.generate([req])[0]
    b = hf.generate([req])[0]
    assert len(a) == 2 and [c.text for c in a] == [c.text for c in b]
    assert hf.stats.calls == calls + 2
    assert hf.generate([GenerationRequest(prompts[1], n=0)]) == [[]]
