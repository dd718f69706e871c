"""Several LoRA adapters over one base model: the transformers backend, the policy server, and refusals.

A tiny random Llama (SmolLM2's tokenizer) and two random LoRA adapters that change its greedy
output. One batched ``generate`` mixing adapter a, adapter b and the base model must give exactly
what three separate single-adapter backends give; the policy server must route by ``model``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import one_torch_thread, save_tiny_llama

from x1.models.base import BackendError, GenerationRequest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

PROMPTS = ["Hello there, how are", "The answer to the question is"]
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Two threads on a shared two-core machine run several times slower than one."""
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> str:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny"), max_positions=256)


def make_adapter(base: str, out: Path, seed: int, embeddings: bool = False) -> Path:
    """A LoRA adapter with random (not zero) B weights, saved the way x1's trainers save an unmerged one."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from x1.training.model_io import load_tokenizer, save_policy

    torch.manual_seed(seed)
    net = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(r=4, lora_alpha=8, target_modules=ALL_LINEAR))
    with torch.no_grad():
        for name, param in net.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.5)
    if embeddings:
        net.get_input_embeddings().weight.requires_grad_(True)  # as when a new <eois> row was trained
    save_policy(net, load_tokenizer(base), out, merge=False, base=base)
    return out


@pytest.fixture(scope="module")
def adapters(tiny: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {"a": make_adapter(tiny, root / "a", seed=1), "b": make_adapter(tiny, root / "b", seed=2)}


@pytest.fixture(scope="module")
def shared(tiny: str, adapters: dict[str, Path]):
    from x1.models.hf import TransformersBackend

    backend = TransformersBackend(tiny, name="tiny", device="cpu", adapters=adapters)
    yield backend
    backend.close()


def greedy(prompt: str, adapter: str | None, max_tokens: int = 8) -> GenerationRequest:
    return GenerationRequest(prompt, max_tokens=max_tokens, temperature=0.0, top_logprobs=2, adapter=adapter)


# -- the transformers backend ---------------------------------------------------------------------
def test_mixed_batch_equals_separate_models(shared, tiny: str, adapters: dict[str, Path]) -> None:
    from x1.models.hf import TransformersBackend

    assert shared.capabilities.adapters and set(shared.adapters) == {"a", "b"}
    names: list[str | None] = ["a", None, "b"]
    requests = [greedy(p, a) for p in PROMPTS for a in names]  # adapters interleaved: the backend must regroup them
    mixed = shared.generate(requests)
    assert len(mixed) == len(requests) and all(len(r) == 1 for r in mixed)
    by_adapter: dict[str | None, list[list[int]]] = {}
    for adapter in names:
        single = TransformersBackend(tiny, device="cpu", adapters={adapter: adapters[adapter]} if adapter else None)
        try:
            expected = single.generate([greedy(p, adapter) for p in PROMPTS])
        finally:
            single.close()
        got = [mixed[i] for i, r in enumerate(requests) if r.adapter == adapter]  # in request order
        for e, g in zip(expected, got, strict=True):
            assert g[0].text == e[0].text and g[0].token_ids == e[0].token_ids
            assert g[0].logprobs == pytest.approx(e[0].logprobs, abs=1e-5)
            for top_g, top_e in zip(g[0].top_logprobs, e[0].top_logprobs, strict=True):
                assert list(top_g) == list(top_e) and list(top_g.values()) == pytest.approx(list(top_e.values()), abs=1e-5)
        by_adapter[adapter] = [c[0].token_ids for c in got]
    # The adapters really change the model: otherwise the comparison above proves nothing.
    assert by_adapter["a"] != by_adapter[None] and by_adapter["b"] != by_adapter[None] and by_adapter["a"] != by_adapter["b"]


def test_score_under_an_adapter_matches_the_merged_model(shared, tiny: str, adapters: dict[str, Path], tmp_path: Path) -> None:
    """Independent of x1's switching: adapter 'a' through PEFT equals its weights merged into a plain model."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from x1.models.hf import TransformersBackend

    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny), str(adapters["a"])).merge_and_unload()
    merged.save_pretrained(str(tmp_path / "merged"))
    AutoTokenizer.from_pretrained(tiny).save_pretrained(str(tmp_path / "merged"))
    plain = TransformersBackend(tmp_path / "merged", device="cpu")
    try:
        continuations = [" you doing today", " forty two"]
        want = plain.score(PROMPTS, continuations)
    finally:
        plain.close()
    got = shared.score(PROMPTS, continuations, adapter="a")
    base = shared.score(PROMPTS, continuations)
    for g, w, b in zip(got, want, base, strict=True):
        assert g == pytest.approx(w, abs=1e-4)
        assert b != pytest.approx(w, abs=1e-3)  # and the base model (adapters off) is not adapter a


def test_unknown_and_unfit_adapters_are_refused_clearly(shared, tiny: str, tmp_path: Path) -> None:
    from x1.models.hf import TransformersBackend

    with pytest.raises(BackendError, match=r"unknown adapter 'c'.*'a', 'b'.*fix:"):
        shared.generate([greedy(PROMPTS[0], "a"), greedy(PROMPTS[0], "c")])
    with pytest.raises(BackendError, match=r"unknown adapter 'c'"):
        shared.score(PROMPTS[:1], [" x"], adapter="c")
    with pytest.raises(BackendError, match=r"not a PEFT adapter folder.*fix:"):
        TransformersBackend(tiny, device="cpu", adapters={"full": tiny})  # a whole model, not an adapter
    with_embeddings = make_adapter(tiny, tmp_path / "emb", seed=3, embeddings=True)
    with pytest.raises(BackendError, match=r"stores base-model weights.*fix:"):
        TransformersBackend(tiny, device="cpu", adapters={"emb": with_embeddings})


def test_backends_without_adapters_refuse_an_adapter_request() -> None:
    from x1.models.fake import FakeBackend
    from x1.models.llama_cpp import LlamaCppBackend

    fake = FakeBackend()
    assert not fake.capabilities.adapters
    assert fake.generate([GenerationRequest("Q", max_tokens=4)])  # no adapter: unchanged
    with pytest.raises(BackendError, match=r"backend 'fake' cannot apply LoRA adapters \(requested: 'math'\).*fix:"):
        fake.generate([GenerationRequest("Q"), GenerationRequest("Q", adapter="math")])
    # llama.cpp refuses before it touches a model, so no model needs loading here.
    llama = object.__new__(LlamaCppBackend)
    llama.name = "smollm2"
    with pytest.raises(BackendError, match=r"backend 'smollm2' cannot apply LoRA adapters.*fix:"):
        llama.generate([GenerationRequest("Q", adapter="math")])


# -- the policy server and the OpenAI-compatible client ------------------------------------------
def test_policy_server_selects_adapters_by_model(shared) -> None:
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    pytest.importorskip("openai")
    from x1.models.openai_backend import OpenAIBackend
    from x1.serve.common import BackgroundServer
    from x1.serve.policy import create_policy_app

    prompt = PROMPTS[0]
    expected = {a: shared.generate([greedy(prompt, a)])[0][0].text for a in ("a", "b", None)}
    with BackgroundServer(create_policy_app(shared, max_wait_ms=20)) as server:
        listed = httpx.get(f"{server.url}/v1/models").json()["data"]
        assert [m["id"] for m in listed] == ["tiny", "a", "b"]
        body = {"prompt": prompt, "max_tokens": 8, "temperature": 0}
        for model, adapter in (("a", "a"), ("b", "b"), ("tiny", None), (None, None)):
            answer = httpx.post(f"{server.url}/v1/completions", json={**body, **({"model": model} if model else {})}, timeout=60).json()
            assert answer["choices"][0]["text"] == expected[adapter], model
            assert answer["model"] == (adapter or "tiny")
        missing = httpx.post(f"{server.url}/v1/completions", json={**body, "model": "c"}, timeout=60)
        assert missing.status_code == 404
        assert "'tiny', 'a', 'b'" in missing.json()["error"]["message"]
        # x1's own OpenAI client: a request's adapter travels as the model field, all three in one call.
        client = OpenAIBackend(f"{server.url}/v1", model_name="tiny")
        try:
            assert client.capabilities.adapters
            out = client.generate([greedy(prompt, a) for a in ("a", "b", None)])
            assert [c[0].text for c in out] == [expected["a"], expected["b"], expected[None]]
            with pytest.raises(BackendError, match=r"no adapter \(sent as the model name\) 'c'"):
                client.generate([greedy(prompt, "c")])
        finally:
            client.close()


def test_cli_adapter_option_is_checked() -> None:
    from typer.testing import CliRunner

    from x1.cli import app
    from x1.cli.serve import _parse_adapters

    assert _parse_adapters(["math=runs/sft", "code = runs/sft2"]) == {"math": "runs/sft", "code": "runs/sft2"}
    for bad in (["math"], ["=runs/sft"], ["a=x", "a=y"]):
        with pytest.raises(BackendError, match="--adapter"):
            _parse_adapters(bad)
    result = CliRunner().invoke(app, ["serve", "policy", "--model", "fake", "--adapter", "math=runs/sft"])
    assert result.exit_code == 2
    assert "needs a transformers model" in " ".join(result.output.split())
