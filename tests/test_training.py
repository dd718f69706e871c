"""x1.training on a tiny random Llama with SmolLM2's real tokenizer: every trainer learns, and the maths is right.

Each trainer takes a handful of steps on an overfittable data set with a fixed seed, and the mean
of its last two losses must be below the mean of its first two. The RL losses go down because
each batch of samples is optimised on several times (μ > 1 / several PPO epochs), which
improves the surrogate on that batch. Formulas (GRPO advantages, the k3 KL estimator, the
clipped surrogate, GAE) are checked against hand-computed numbers.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("trl")
pytest.importorskip("peft")
pytest.importorskip("datasets")

from helpers import one_torch_thread, save_tiny_llama, smollm2_tokenizer_dir  # noqa: E402

from x1.config import ConfigError  # noqa: E402
from x1.tasks.base import Task, Verification  # noqa: E402
from x1.training.config import (  # noqa: E402
    DPOTrainConfig,
    GRPOTrainConfig,
    LoRAConfig,
    PPOTrainConfig,
    ProcessGRPOConfig,
    RejectionSamplingConfig,
    SFTTrainConfig,
    ValueTrainConfig,
)
from x1.training.model_io import EOIS, load_policy, save_policy  # noqa: E402
from x1.training.rl import (  # noqa: E402
    clipped_surrogate,
    gae,
    group_advantages,
    kl_k3,
    process_advantages,
    split_steps,
    token_step_index,
)


def went_down(losses: list[float]) -> bool:
    assert len(losses) >= 4, losses
    return sum(losses[-2:]) / 2 < sum(losses[:2]) / 2


# -- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Two threads on a shared two-core machine run several times slower than one."""
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def tokenizer_dir() -> Path:
    return smollm2_tokenizer_dir()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> str:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny"))


def odd_even_task(i: int) -> Task:
    """A task whose 'answer' is the whole completion, correct when its length is even (≈ half of random samples)."""
    return Task(
        id=f"t{i}",
        question=f"Write something ({i}).",
        gold=None,
        system=None,
        extractor=lambda text: text,
        verifier=lambda answer, gold: Verification(1.0 if len(answer) % 2 == 0 else 0.0),
    )


def common(tiny: str, tmp_path: Path, **kw: object) -> dict[str, object]:
    return {"model": tiny, "output_dir": str(tmp_path / "out"), "lr_scheduler": "constant", "seed": 0, **kw}


def sft_example(question: str, completion: str) -> dict[str, object]:
    return {"prompt_messages": [{"role": "user", "content": question}], "completion": completion, "task_id": question, "source": "t"}


# one completion already in step format, one split by a blank line: both must come out with <eois>
SFT_DATA = [sft_example("What is 2+2?", f"2+2=4{EOIS}The answer is: 4"), sft_example("What is 3+3?", "3+3=6\n\nThe answer is: 6")]


# -- maths, by hand ----------------------------------------------------------------------------------
def test_group_advantages_match_hand_computation() -> None:
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    adv = group_advantages(rewards, group_size=4)
    s = math.sqrt(1 / 3)  # sample std of (1, 0, 0, 1)
    expected = [0.5 / (s + 1e-4), -0.5 / (s + 1e-4), -0.5 / (s + 1e-4), 0.5 / (s + 1e-4), 0, 0, 0, 0]
    assert adv.tolist() == pytest.approx(expected, abs=1e-6)
    unscaled = group_advantages(rewards, group_size=4, scale=False)
    assert unscaled.tolist() == pytest.approx([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0])


def test_process_advantages_match_hand_computation() -> None:
    # one group: output 1 has steps rewarded (1, 0), output 2 one step rewarded 0
    s = math.sqrt(1 / 3)  # sample std of (1, 0, 0), mean 1/3
    hi, lo = (2 / 3) / (s + 1e-4), (-1 / 3) / (s + 1e-4)
    assert process_advantages([[1.0, 0.0], [0.0]], mode="step") == [pytest.approx([hi, lo]), pytest.approx([lo])]
    assert process_advantages([[1.0, 0.0], [0.0]], mode="return") == [pytest.approx([hi + lo, lo]), pytest.approx([lo])]


def test_kl_k3_matches_formula_and_is_unbiased() -> None:
    logp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    # π_ref/π_θ − log(π_ref/π_θ) − 1 with π_ref/π_θ = 0.5
    assert kl_k3(logp, ref).item() == pytest.approx(0.5 - math.log(0.5) - 1)
    assert kl_k3(ref, ref).item() == pytest.approx(0.0)
    # E_{x~p}[k3] = KL(p ‖ q) exactly
    p, q = torch.tensor([0.5, 0.3, 0.2]), torch.tensor([0.2, 0.2, 0.6])
    expected = float((p * (p / q).log()).sum())
    assert float((p * kl_k3(p.log(), q.log())).sum()) == pytest.approx(expected)


def test_clipped_surrogate_matches_hand_computation() -> None:
    old = torch.zeros(4)
    logp = torch.tensor([math.log(1.5), math.log(1.5), math.log(0.5), math.log(0.5)])
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])
    assert clipped_surrogate(logp, old, adv, 0.2).tolist() == pytest.approx([-1.2, 1.5, -0.5, 0.8])


def test_gae_matches_hand_computation() -> None:
    values = torch.tensor([[0.5, 0.6, 0.7]])
    adv, ret = gae(torch.tensor([[0.0, 0.0, 1.0]]), values, torch.ones(1, 3), gamma=1.0, lam=0.5)
    assert adv.tolist()[0] == pytest.approx([0.225, 0.25, 0.3])
    assert ret.tolist()[0] == pytest.approx([0.725, 0.85, 1.0])
    # a sequence ending early: no value after its last real token, padding gets nothing
    adv, _ = gae(torch.tensor([[0.0, 1.0, 0.0]]), values, torch.tensor([[1, 1, 0]]), gamma=1.0, lam=0.5)
    assert adv.tolist()[0] == pytest.approx([0.3, 0.4, 0.0])


class FixedLogits(torch.nn.Module):
    """A 'model' whose next-token logits are [1, 0, −1] at every position (vocabulary of three)."""

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False, output_hidden_states=False):  # noqa: ANN001
        from types import SimpleNamespace

        logits = torch.tensor([1.0, 0.0, -1.0]).expand(*input_ids.shape, 3)
        return SimpleNamespace(logits=logits, hidden_states=(logits,) if output_hidden_states else None)


def test_logprobs_and_entropy_are_those_of_the_sampling_temperature() -> None:
    """At T = 0.5 the logits become [2, 0, −2]: Z = e² + 1 + e⁻² = 8.524391, log Z = 2.142932,
    so log p(0) = 2 − 2.142932 = −0.142932, log p(1) = −2.142932, log p(2) = −4.142932;
    H = 0.441057. At T = 1: log p(0) = 1 − log(e + 1 + e⁻¹) = −0.407606."""
    from x1.training.ppo import entropy_from_logits
    from x1.training.rl import batched_logprobs, forward_logprobs

    ids = torch.tensor([[1, 0, 1, 2]])  # prompt token 1, completion tokens 0, 1, 2
    mask = torch.ones_like(ids)
    logp, _ = forward_logprobs(FixedLogits(), ids, mask, 3, temperature=0.5)
    assert logp.tolist()[0] == pytest.approx([-0.1429316, -2.1429316, -4.1429316], abs=1e-6)
    assert batched_logprobs(FixedLogits(), ids, mask, 3, 1, temperature=0.5).tolist()[0] == pytest.approx(logp.tolist()[0])
    assert forward_logprobs(FixedLogits(), ids, mask, 3)[0][0, 0].item() == pytest.approx(-0.4076060, abs=1e-6)
    assert entropy_from_logits(FixedLogits(), ids, mask, 3, temperature=0.5).tolist()[0] == pytest.approx([0.4410574] * 3, abs=1e-6)


def test_steps_map_to_their_tokens(tokenizer_dir: Path) -> None:
    from x1.training.model_io import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    text = "Add 2 and 2.\n\nThat gives 4.\n\nThe answer is: 4"
    steps = split_steps(text, "\n\n")
    assert steps == ["Add 2 and 2.\n\n", "That gives 4.\n\n", "The answer is: 4"]
    assert split_steps("a\n\n\n\nb\n\n", "\n\n") == ["a\n\n\n\n", "b\n\n"]
    ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    index = token_step_index(tok, ids, steps)
    assert index == sorted(index) and index[0] == 0 and index[-1] == 2
    for k, step in enumerate(steps):
        assert tok.decode([i for i, s in zip(ids, index, strict=True) if s == k], skip_special_tokens=True) == step


# -- configs ------------------------------------------------------------------------------------------
def test_configs_load_from_yaml_and_name_bad_fields(tmp_path: Path) -> None:
    good = tmp_path / "grpo.yaml"
    good.write_text("model: smollm2\ngroup_size: 4\nbeta: 0.0\nlora:\n  enabled: true\n  r: 8\n")
    cfg = GRPOTrainConfig.from_yaml(good)
    assert cfg.group_size == 4 and cfg.beta == 0.0 and cfg.lora.enabled and cfg.lora.r == 8
    bad = tmp_path / "bad.yaml"
    bad.write_text("group_size: 1\n")
    with pytest.raises(ConfigError, match="group_size"):
        GRPOTrainConfig.from_yaml(bad)
    bad.write_text("learning_rat: 0.1\n")
    with pytest.raises(ConfigError, match="learning_rat"):
        SFTTrainConfig.from_yaml(bad)
    assert ValueTrainConfig(lora=LoRAConfig(enabled=True)).lora.enabled  # evaluators train LoRA adapters too
    with pytest.raises(ValueError, match="merged when it is loaded"):
        ValueTrainConfig(lora=LoRAConfig(enabled=True, merge_on_save=True))


# -- model io -----------------------------------------------------------------------------------------
def test_eois_is_one_token_with_a_new_embedding_row(tiny: str) -> None:
    plain = load_policy(tiny)
    vocab = plain.model.get_input_embeddings().weight.shape[0]
    assert plain.eois_id is None and EOIS not in plain.tokenizer.get_vocab()
    policy = load_policy(tiny, eois_token=True)
    tok, model = policy.tokenizer, policy.model
    assert len(tok) == vocab + 1 and policy.eois_id == vocab
    assert model.get_input_embeddings().weight.shape[0] == vocab + 1
    assert model.get_output_embeddings().weight.shape[0] == vocab + 1
    ids = tok(f"step one{EOIS}step two", add_special_tokens=False)["input_ids"]
    assert ids.count(policy.eois_id) == 1
    assert EOIS in tok.decode(ids, skip_special_tokens=True)  # kept, so x1's backends can see step ends
    # the new row starts at the blank line's embedding
    blank = tok("\n\n", add_special_tokens=False)["input_ids"]
    emb = model.get_input_embeddings().weight
    assert torch.allclose(emb[policy.eois_id], emb[blank].mean(0))
    # adding it again changes nothing
    from x1.training.model_io import add_eois

    before = emb[policy.eois_id].clone()
    assert add_eois(tok, model) == policy.eois_id and len(tok) == vocab + 1
    assert torch.equal(model.get_input_embeddings().weight[policy.eois_id], before)


def test_lora_adapter_saves_and_loads_back_and_merges_for_the_backend(tiny: str, tmp_path: Path) -> None:
    from x1.models.hf import TransformersBackend

    policy = load_policy(tiny, eois_token=True, lora=LoRAConfig(enabled=True, r=4), device="cpu")
    trainable = {n for n, p in policy.model.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trainable) and any("embed_tokens" in n for n in trainable)
    with torch.no_grad():  # stand-in for training: move every trainable weight
        for p in policy.model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    x = torch.tensor([[1, 20, 300, policy.eois_id, 4000]])
    expected = policy.model(input_ids=x).logits
    save_policy(policy.model, policy.tokenizer, tmp_path / "adapter", merge=False, base=policy.base)
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    again = load_policy(tmp_path / "adapter", device="cpu")
    assert again.eois_id == policy.eois_id
    assert torch.allclose(again.model(input_ids=x).logits, expected, atol=1e-5)
    save_policy(again.model, again.tokenizer, tmp_path / "merged", merge=True)
    assert (tmp_path / "merged" / "model.safetensors").exists()
    backend = TransformersBackend(tmp_path / "merged", device="cpu")
    try:
        assert torch.allclose(backend.model(input_ids=x).logits, expected, atol=1e-4)
        assert backend.tokenizer.convert_tokens_to_ids(EOIS) == policy.eois_id
    finally:
        backend.close()


# -- trainers ---------------------------------------------------------------------------------------
def test_sft_masks_the_prompt_learns_and_saves_for_the_backend(tiny: str, tmp_path: Path) -> None:
    from x1.models.hf import TransformersBackend
    from x1.training.sft import build_sft_trainer, train_sft

    cfg = SFTTrainConfig(**common(tiny, tmp_path, learning_rate=1e-2, max_steps=6, batch_size=2, eois_token=True))
    trainer, policy = build_sft_trainer(cfg, SFT_DATA)
    tok = policy.tokenizer
    for row, example in zip(trainer.train_dataset, SFT_DATA, strict=True):
        ids, labels = row["input_ids"], row["labels"]
        text = tok.apply_chat_template(example["prompt_messages"], add_generation_prompt=True, tokenize=False)
        prompt = tok(text, add_special_tokens=False)["input_ids"]
        assert ids[: len(prompt)] == prompt
        assert all(label == -100 for label in labels[: len(prompt)])  # no loss on the prompt
        assert labels[len(prompt) :] == ids[len(prompt) :]  # all of the completion is learned
        completion = tok.decode(ids[len(prompt) :])
        assert completion.startswith(example["completion"][:3]) and EOIS in completion  # step format
    result = train_sft(cfg, SFT_DATA, policy)
    assert result.steps == 6 and went_down(result.losses), result.losses
    backend = TransformersBackend(result.output_dir, device="cpu")
    try:
        assert EOIS in backend.tokenizer.get_vocab() and backend.model.config.use_cache
    finally:
        backend.close()


def test_format_steps_reads_both_layouts() -> None:
    from x1.training.sft import format_steps

    assert format_steps("a\n\nb\n\n\n\nc", eois=True) == f"a{EOIS}b{EOIS}c"
    assert format_steps(f"a {EOIS} b", eois=True) == f"a{EOIS}b"
    assert format_steps(f"a{EOIS}b", eois=False) == "a\n\nb"
    assert format_steps("a\n\n  b ", eois=False) == "a\n\n  b "  # untouched without <eois>


def test_lora_reference_is_the_base_with_adapters_off(tiny: str) -> None:
    from x1.training.rl import forward_logprobs, frozen_reference, reference_context

    base = load_policy(tiny, device="cpu").model
    policy = load_policy(tiny, lora=LoRAConfig(enabled=True, r=4), device="cpu").model
    assert frozen_reference(policy) is None  # no second copy in memory
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    ids, mask = torch.tensor([[5, 6, 7, 8, 9]]), torch.ones(1, 5, dtype=torch.long)
    runner, ctx = reference_context(policy, None)
    with torch.no_grad(), ctx:
        ref = forward_logprobs(runner, ids, mask, 3)[0]
    with torch.no_grad():
        assert torch.allclose(ref, forward_logprobs(base, ids, mask, 3)[0], atol=1e-6)
        assert not torch.allclose(ref, forward_logprobs(policy, ids, mask, 3)[0], atol=1e-3)


def test_dpo_learns_the_preference(tiny: str, tmp_path: Path) -> None:
    from x1.training.dpo import train_dpo

    pairs = [
        {"prompt": "Q: 2+2?\n", "chosen": "2+2=4", "rejected": "2+2=5", "q_chosen": 1.0, "q_rejected": -1.0, "task_id": "a"},
        {"prompt": "Q: 3+3?\n", "chosen": "3+3=6", "rejected": "3+3=7", "q_chosen": 1.0, "q_rejected": -1.0, "task_id": "b"},
    ]
    cfg = DPOTrainConfig(**common(tiny, tmp_path, learning_rate=1e-2, max_steps=5, batch_size=2, save=False))
    result = train_dpo(cfg, pairs)
    assert result.losses[0] == pytest.approx(math.log(2), abs=1e-3)  # π_θ = π_ref at the start
    assert went_down(result.losses), result.losses
    assert result.metrics["rewards/margins"][-1] > 0


def test_dpo_keeps_eos_out_of_intermediate_steps(tiny: str, tmp_path: Path) -> None:
    """TRL appends EOS to every plain-text completion; only a final step may keep it in the margin."""
    from x1.training.dpo import build_dpo_trainer

    pairs = [  # an intermediate step pair, a final pair, and a final step against an intermediate one
        {"prompt": "Q: 2+2?\n", "chosen": "2+2=4\n\n", "rejected": "2+2=5\n\n", "chosen_final": False, "rejected_final": False},
        {"prompt": "Q: 3+3?\n", "chosen": "The answer is 6", "rejected": "The answer is 7"},
        {"prompt": "Q: 4+4?\n", "chosen": "The answer is 8", "rejected": "4+4=9\n\n", "chosen_final": True, "rejected_final": False},
    ]
    cfg = DPOTrainConfig(**common(tiny, tmp_path, max_steps=1, batch_size=3, save=False))
    trainer, policy = build_dpo_trainer(cfg, pairs)
    tok = policy.tokenizer
    eos = tok.eos_token_id
    rows = list(trainer.train_dataset)
    assert [(r["chosen_ids"][-1] == eos, r["rejected_ids"][-1] == eos) for r in rows] == [(False, False), (True, True), (True, False)]
    assert rows[0]["chosen_ids"] == tok("Q: 2+2?\n2+2=4\n\n", add_special_tokens=False)["input_ids"][len(rows[0]["prompt_ids"]) :]
    batch = trainer.data_collator(rows)  # what enters the loss: chosen rows first, then rejected rows
    rows_and_masks = zip(batch["input_ids"].tolist(), batch["completion_mask"].tolist(), strict=True)
    in_loss = [[t for t, m in zip(ids, mask, strict=True) if m] for ids, mask in rows_and_masks]
    assert [eos in ids for ids in in_loss] == [False, True, True, False, True, False]


def test_grpo_with_verifier_rewards(tiny: str, tmp_path: Path) -> None:
    from x1.training.grpo import train_grpo, verifier_reward

    tasks = [odd_even_task(0), odd_even_task(1)]
    reward = verifier_reward(tasks)
    chat = [[{"role": "assistant", "content": "ab"}], [{"role": "assistant", "content": "abc"}]]
    assert reward(prompts=["p", "p"], completions=chat, task_index=[0, 1]) == [1.0, 0.0]
    cfg = GRPOTrainConfig(
        **common(tiny, tmp_path, learning_rate=3e-3, max_steps=4, save=False),
        group_size=4,
        prompts_per_step=2,
        num_iterations=4,  # one batch of samples, four updates on it
        max_completion_length=8,
        beta=0.04,
    )
    result = train_grpo(cfg, tasks)
    assert result.steps == 4 and went_down(result.losses), result.losses
    assert 0.0 < result.metrics["reward"][0] < 1.0  # the group has signal
    assert not (Path(cfg.output_dir) / "_reference").exists()


def test_grpo_with_process_rewards(tiny: str, tmp_path: Path) -> None:
    from x1.training.grpo import train_grpo_process

    calls: list[tuple[list[str], list[list[str]]]] = []

    def step_rewards(prompts: list[str], steps: list[list[str]]) -> list[list[float]]:
        calls.append((prompts, steps))
        return [[float(len(s) % 2) for s in st] for st in steps]

    cfg = ProcessGRPOConfig(
        **common(tiny, tmp_path, learning_rate=3e-3, save=False),
        group_size=4,
        prompts_per_step=2,
        num_iterations=4,
        max_completion_length=12,
        beta=0.04,
        step_delimiter=" ",  # random tokens rarely hold blank lines; spaces give several steps
    )
    result = train_grpo_process(cfg, [odd_even_task(0), odd_even_task(1)], step_rewards)
    assert result.steps == 4 and went_down(result.losses), result.losses
    (prompts, steps), = calls
    assert len(prompts) == 8 and prompts[0] == prompts[3] != prompts[4]
    assert any(len(s) > 1 for s in steps)


def test_grpo_process_rewards_from_a_process_reward_model(tiny: str, tmp_path: Path) -> None:
    from x1.evaluators.reward_model import ProcessRewardModel
    from x1.training.grpo import train_grpo_process

    prm = ProcessRewardModel.from_pretrained_lm(tiny, device="cpu", dtype="float32")
    cfg = ProcessGRPOConfig(
        **common(tiny, tmp_path, learning_rate=1e-3, save=False),
        group_size=2,
        num_iterations=2,
        max_completion_length=6,
        beta=0.0,
        step_delimiter=" ",
    )
    result = train_grpo_process(cfg, [odd_even_task(0)], prm)
    assert result.steps == 2 and all(math.isfinite(x) for x in result.losses)
    assert 0.0 < result.metrics["reward"][0] < 1.0  # mean σ(head) over the steps


def test_ppo_with_a_value_head(tiny: str, tmp_path: Path) -> None:
    from x1.training.ppo import VALUE_HEAD_FILE, load_value_head, train_ppo

    cfg = PPOTrainConfig(
        **common(tiny, tmp_path, learning_rate=3e-3),
        prompts_per_iteration=2,
        samples_per_prompt=2,
        max_new_tokens=8,
        ppo_epochs=4,
        entropy_coef=0.01,
    )
    result = train_ppo(cfg, [odd_even_task(0), odd_even_task(1)])
    assert result.steps == 4 and went_down(result.losses), result.losses
    assert went_down(result.metrics["value_loss"])
    assert (Path(result.output_dir) / VALUE_HEAD_FILE).exists()
    load_value_head(result.output_dir, 32)
    assert load_policy(result.output_dir).model is not None


def test_ppo_on_buffered_search_paths_raises_the_rewarded_path(tiny: str, tmp_path: Path) -> None:
    """PPO from the replay buffer: no sampling; the right path's log-probability rises, the wrong one's falls."""
    from x1.data import RewardedPath
    from x1.training.model_io import load_policy
    from x1.training.ppo import buffered_rollout, train_ppo
    from x1.training.rl import forward_logprobs

    buffer = [
        RewardedPath("Q: 2+2?\nA:", " 4", 1.0, "a"),
        RewardedPath("Q: 2+2?\nA:", " 5", -1.0, "a"),
    ]
    cfg = PPOTrainConfig(
        **common(tiny, tmp_path, learning_rate=3e-3), prompts_per_iteration=2, samples_per_prompt=1, ppo_epochs=4, kl_coef=0.0
    )

    def path_logprobs(model_dir: str) -> list[float]:
        policy = load_policy(model_dir)
        rollout = buffered_rollout(policy.tokenizer, buffer, torch.device("cpu"))
        with torch.no_grad():
            logp, _ = forward_logprobs(policy.model, rollout.input_ids, rollout.attention_mask, rollout.completion_mask.shape[1])
        return (logp * rollout.completion_mask).sum(dim=1).tolist()

    before = path_logprobs(tiny)
    result = train_ppo(cfg, [], buffer=buffer)
    after = path_logprobs(result.output_dir)
    assert result.steps == 4 and result.metrics["reward"] == [0.0]
    assert after[0] > before[0] and after[1] < before[1], (before, after)


def test_rl_loops_score_samples_at_their_sampling_temperature(tiny: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """π_old, π_θ and π_ref of the PPO and process-GRPO loops are all log_softmax(logits / cfg.temperature)."""
    from x1.data import RewardedPath
    from x1.training import grpo, ppo

    seen: list[float] = []

    def recording(real):  # noqa: ANN001, ANN202
        def wrapper(*args, temperature=1.0, **kwargs):  # noqa: ANN002, ANN003, ANN202
            seen.append(temperature)
            return real(*args, temperature=temperature, **kwargs)

        return wrapper

    monkeypatch.setattr(ppo, "forward_logprobs", recording(ppo.forward_logprobs))
    monkeypatch.setattr(ppo, "entropy_from_logits", recording(ppo.entropy_from_logits))
    buffer = [RewardedPath("Q: 2+2?\nA:", " 4", 1.0, "a"), RewardedPath("Q: 2+2?\nA:", " 5", -1.0, "a")]
    cfg = PPOTrainConfig(**common(tiny, tmp_path, save=False), prompts_per_iteration=2, ppo_epochs=1, temperature=0.5, entropy_coef=0.01)
    ppo.train_ppo(cfg, [], buffer=buffer)
    assert seen == [0.5] * 4  # π_old, π_ref, then π_θ and its entropy

    seen.clear()
    monkeypatch.setattr(grpo, "forward_logprobs", recording(grpo.forward_logprobs))
    monkeypatch.setattr(grpo, "batched_logprobs", recording(grpo.batched_logprobs))
    gcfg = ProcessGRPOConfig(
        **common(tiny, tmp_path, save=False), group_size=2, num_iterations=1, max_completion_length=4, beta=0.04, temperature=0.7
    )
    grpo.train_grpo_process(gcfg, [odd_even_task(0)], lambda prompts, steps: [[0.0] * len(s) for s in steps])
    assert seen == [0.7] * 3  # π_old, π_ref, π_θ


@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_value_model_regression(tiny: str, tmp_path: Path, loss: str) -> None:
    from x1.evaluators.value_model import ValueModel
    from x1.training.value import train_value

    targets = [
        {"prompt": "Q: 2+2?\n", "partial_solution": "2+2=4", "target": 1.0, "task_id": "a"},
        {"prompt": "Q: 2+2?\n", "partial_solution": "2+2=5", "target": -1.0, "task_id": "a"},
        {"prompt": "Q: 3+3?\n", "partial_solution": "3+3=6", "target": 0.5, "task_id": "b"},
        {"prompt": "Q: 3+3?\n", "partial_solution": "3+3=7", "target": -0.5, "task_id": "b"},
    ]
    cfg = ValueTrainConfig(**common(tiny, tmp_path, learning_rate=3e-3, batch_size=4, max_steps=6), loss=loss)
    result = train_value(cfg, targets)
    assert went_down(result.losses), result.losses
    model = ValueModel.load(result.output_dir, device="cpu")
    good, bad = model.predict(["Q: 2+2?\n2+2=4", "Q: 2+2?\n2+2=5"])
    assert good > bad


def test_process_reward_model_fit(tiny: str, tmp_path: Path) -> None:
    from x1.evaluators.reward_model import ProcessRewardModel
    from x1.training.value import train_prm

    labels = [
        {"prompt": "Q: 2+2?\n", "steps": ["2+2", "=4\n\n", "The answer is: 4"], "labels": [1.0, 1.0, 1.0], "task_id": "a"},
        {"prompt": "Q: 2+2?\n", "steps": ["2+2", "=5\n\n", "The answer is: 5"], "labels": [0.5, 0.0, 0.0], "task_id": "a"},
    ]
    cfg = ValueTrainConfig(**common(tiny, tmp_path, learning_rate=3e-3, batch_size=2, max_steps=6))
    result = train_prm(cfg, labels)
    assert went_down(result.losses), result.losses
    prm = ProcessRewardModel.load(result.output_dir, device="cpu")
    right, wrong = prm.predict_steps([row["prompt"] for row in labels], [row["steps"] for row in labels])
    assert right[-1] > wrong[-1]


def test_rejection_sampling_keeps_verified_and_fine_tunes(tiny: str, tmp_path: Path) -> None:
    from x1.training.rejection_sampling import rejection_sampling_round

    def number_task(i: int, gold: int) -> Task:
        return Task(id=f"n{i}", question=f"What is {gold - 1}+1?", gold=str(gold), verifier=lambda a, g: Verification(float(a == g)))

    tasks = [number_task(0, 4), number_task(1, 7)]

    def sample_fn(ts: list[Task], n: int) -> list[list[str]]:
        outs = []
        for t in ts:
            right, wrong = f"Add one.\n\nThe answer is: {t.gold}", "Guess.\n\nThe answer is: 0"
            outs.append([right, wrong, right, wrong][:n])
        return outs

    cfg = RejectionSamplingConfig(**common(tiny, tmp_path, learning_rate=1e-2, max_steps=6, batch_size=2))
    rnd = rejection_sampling_round(tiny, tasks, sample_fn, n=4, cfg=cfg)
    assert rnd.sampled == 8 and rnd.accepted == 2  # two right per task, deduped to one
    assert rnd.accepted_per_task == {"n0": 1, "n1": 1} and rnd.acceptance_rate == 0.25
    assert all("The answer is: 0" not in ex.completion for ex in rnd.examples)
    assert rnd.result is not None and went_down(rnd.result.losses), rnd.result.losses
    assert rnd.policy_path == cfg.output_dir and (Path(cfg.output_dir) / "model.safetensors").exists()
    none = rejection_sampling_round(tiny, tasks, lambda ts, n: [["nothing"] * n for _ in ts], n=2, cfg=cfg)
    assert none.accepted == 0 and none.result is None
