"""GRPO: group-relative policy optimisation, with outcome rewards (TRL) or process rewards (own loop).

For G completions o_1..o_G of one prompt (BLUEPRINT.md):

    A_i = (r_i − mean(r)) / std(r)
    L = −(1/G) Σ_i (1/|o_i|) Σ_t [ min(ρ_{i,t}·A_{i,t}, clip(ρ_{i,t}, 1 − ε, 1 + ε)·A_{i,t}) − β·KL_{i,t} ]
    KL_{i,t} = π_ref/π_θ − log(π_ref/π_θ) − 1   (unbiased estimator)

``train_grpo`` is a thin layer over TRL's ``GRPOTrainer``: the reward of a completion is the
task verifier's score of the answer extracted from it. TRL gives every token of o_i the same
A_i; its only door to per-token advantages is overriding the private
``_generate_and_score_completions``, which changes between releases. So the process-reward
variant, ``train_grpo_process``, is a small loop of x1's own: a process reward model scores
every step, the group's step rewards are normalised together, and each step's tokens get that
step's advantage (DeepSeekMath's process supervision; see ``rl.process_advantages``).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from x1.tasks.base import Task
from x1.training._common import TrainResult, autocast, result_from_trainer, save_final_policy, train_resumable, trl_args
from x1.training.checkpoint import LoopCheckpoints
from x1.training.config import GRPOTrainConfig, ProcessGRPOConfig
from x1.training.model_io import EOIS, Policy, is_peft, pick_device, policy_from_config, save_policy
from x1.training.progress import StepLog
from x1.training.rl import (
    aggregate_loss,
    batched_logprobs,
    clipped_surrogate,
    forward_logprobs,
    frozen_reference,
    kl_k3,
    process_advantages,
    reference_context,
    sample,
    split_steps,
    token_step_index,
)

StepRewardFn = Callable[[list[str], list[list[str]]], list[list[float]]]


def completion_text(completion: Any) -> str:
    """TRL hands reward functions plain strings or, for chat prompts, a list of messages."""
    if isinstance(completion, str):
        return completion
    return "".join(str(m.get("content", "")) for m in completion if m.get("role") == "assistant") or str(completion[-1]["content"])


def verifier_reward(tasks: Sequence[Task]) -> Callable[..., list[float]]:
    """A TRL reward function: score in [0, 1] of the answer each completion gives, by its task's verifier.

    The dataset row's ``task_index`` column says which task a completion answers.
    """

    def outcome_reward(prompts: list[Any], completions: list[Any], task_index: list[int], **_: Any) -> list[float]:
        scores = []
        for completion, index in zip(completions, task_index, strict=True):
            text = completion_text(completion).replace(EOIS, "\n\n")
            scores.append(float(tasks[int(index)].check_solution(text)[1].score))
        return scores

    return outcome_reward


def _grpo_args(cfg: GRPOTrainConfig) -> dict[str, Any]:
    args = trl_args(cfg)
    args["per_device_train_batch_size"] = cfg.prompts_per_step * cfg.group_size  # completions per step
    args["gradient_accumulation_steps"] = 1
    return {
        **args,
        "num_generations": cfg.group_size,
        "max_completion_length": cfg.max_completion_length,
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "beta": cfg.beta,
        "epsilon": cfg.epsilon,
        "num_iterations": cfg.num_iterations,
        "loss_type": cfg.loss_type,
        "scale_rewards": "group" if cfg.scale_rewards else "none",
        "remove_unused_columns": False,
    }


def build_grpo_trainer(
    cfg: GRPOTrainConfig,
    tasks: Sequence[Task],
    policy: Policy | None = None,
    reward_funcs: Sequence[Callable[..., list[float]]] | None = None,
) -> tuple[Any, Policy, Path | None]:
    """The TRL trainer, the policy, and the temporary reference folder to delete after training.

    Without LoRA and with β > 0, TRL loads π_ref from the model's own path, which fails for
    GGUF sources and would lack an added ``<eois>``; so the starting policy is saved once to
    ``output_dir/_reference`` and the model's config points there.
    """
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    policy = policy or policy_from_config(cfg)
    ref_dir: Path | None = None
    if cfg.beta > 0 and not is_peft(policy.model):
        ref_dir = Path(cfg.output_dir) / "_reference"
        save_policy(policy.model, policy.tokenizer, ref_dir)
        policy.model.config._name_or_path = str(ref_dir)
    rows = [{"prompt": task.messages(), "task_index": i} for i, task in enumerate(tasks)]
    if not rows:
        raise ValueError("GRPO got no tasks")
    trainer = GRPOTrainer(
        model=policy.model,
        reward_funcs=list(reward_funcs) if reward_funcs else [verifier_reward(tasks)],
        args=GRPOConfig(**_grpo_args(cfg)),
        train_dataset=Dataset.from_list(rows),
        processing_class=policy.tokenizer,
    )
    return trainer, policy, ref_dir


def train_grpo(
    cfg: GRPOTrainConfig,
    tasks: Sequence[Task],
    policy: Policy | None = None,
    reward_funcs: Sequence[Callable[..., list[float]]] | None = None,
) -> TrainResult:
    """Outcome-reward GRPO through TRL; metrics carry the mean reward and KL per step."""
    trainer, policy, ref_dir = build_grpo_trainer(cfg, tasks, policy, reward_funcs)
    try:
        train_resumable(trainer, cfg)
    finally:
        if ref_dir is not None:
            shutil.rmtree(ref_dir, ignore_errors=True)
    policy.model = trainer.model
    if cfg.save:
        policy.model = save_final_policy(policy, cfg)
    return result_from_trainer(trainer, cfg.output_dir, ("reward", "kl"))


# -- process-reward GRPO (x1's own loop) -------------------------------------------------------
def prm_step_rewards(prm: Any) -> StepRewardFn:
    """Use a ``ProcessRewardModel`` (anything with ``predict_steps(prompts, steps)``) as step rewards."""
    return lambda prompts, steps: prm.predict_steps(prompts, steps)


def prompt_text(tokenizer: Any, task: Task) -> str:
    """The chat-formatted prompt the policy continues (ChatML when the tokenizer has no template)."""
    from x1.models._sampling import render_chatml

    if getattr(tokenizer, "chat_template", None):
        return str(tokenizer.apply_chat_template(task.messages(), add_generation_prompt=True, tokenize=False))
    return render_chatml(task.messages())


def _token_advantages(
    rollout: Any, tokenizer: Any, group_steps: list[list[str]], rewards: list[list[float]], cfg: ProcessGRPOConfig, start: int
) -> torch.Tensor:
    """(G, C) advantages for one group: each token gets the advantage of the step it belongs to."""
    step_adv = process_advantages(rewards, cfg.process_advantage, cfg.scale_rewards)
    out = torch.zeros(len(group_steps), rollout.completion_ids.shape[1])
    for g, (steps, adv) in enumerate(zip(group_steps, step_adv, strict=True)):
        row = start + g
        index = token_step_index(tokenizer, rollout.tokens(row), steps)
        for t, k in enumerate(index):
            out[g, t] = adv[min(k, len(adv) - 1)]
    return out


def train_grpo_process(
    cfg: ProcessGRPOConfig,
    tasks: Sequence[Task],
    step_rewards: StepRewardFn | Any,
    policy: Policy | None = None,
) -> TrainResult:
    """GRPO with per-step advantages from a process reward model.

    Each iteration: take ``prompts_per_step`` tasks (in turn), sample ``group_size``
    completions each, split them into steps (at ``<eois>`` if the policy has it, else at
    ``step_delimiter``), score the steps with ``step_rewards`` (a ``StepRewardFn`` or a
    ``ProcessRewardModel``), optionally add ``outcome_weight`` × the verifier's score to each
    output's last step, turn the group's step rewards into per-token advantages, then take
    ``num_iterations`` optimiser steps on the clipped objective with the k3 KL penalty.
    The loss of every optimiser step is recorded.
    """
    if hasattr(step_rewards, "predict_steps"):  # a ProcessRewardModel (an nn.Module, so callable too)
        step_rewards = prm_step_rewards(step_rewards)
    if not tasks:
        raise ValueError("GRPO got no tasks")
    policy = policy or policy_from_config(cfg)
    model, tokenizer = policy.model, policy.tokenizer
    device = pick_device(cfg.device)
    model.to(device).train()
    delimiter = EOIS if policy.eois_id is not None else cfg.step_delimiter
    ref = frozen_reference(model) if cfg.beta > 0 else None
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    losses: list[float] = []
    metrics: dict[str, list[float]] = {"reward": [], "kl": []}
    ckpt = LoopCheckpoints(cfg, cfg.iterations, {"model": model}, optimizer)  # one checkpoint unit: an iteration
    start, saved = ckpt.resume()
    losses, metrics = saved.get("losses", losses), saved.get("metrics", metrics)
    log = StepLog(cfg, "grpo-prm", cfg.iterations * cfg.num_iterations, done=start * cfg.num_iterations)
    for it in range(start, cfg.iterations):
        cursor = it * cfg.prompts_per_step
        batch = [tasks[(cursor + j) % len(tasks)] for j in range(cfg.prompts_per_step)]
        prompts = [prompt_text(tokenizer, t) for t in batch for _ in range(cfg.group_size)]
        rollout = sample(
            model,
            tokenizer,
            prompts,
            max_new_tokens=cfg.max_completion_length,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            seed=cfg.seed + it,
        )
        steps = [split_steps(text, delimiter) for text in rollout.texts]
        rewards = [list(map(float, r)) for r in step_rewards(prompts, steps)]
        if [len(r) for r in rewards] != [len(s) for s in steps]:
            raise ValueError("step_rewards must return one reward per step of every completion")
        if cfg.outcome_weight > 0:
            for i, text in enumerate(rollout.texts):
                task = batch[i // cfg.group_size]
                rewards[i][-1] += cfg.outcome_weight * task.check_solution(text.replace(EOIS, "\n\n"))[1].score
        metrics["reward"].append(sum(sum(r) / max(1, len(r)) for r in rewards) / len(rewards))
        advantages = torch.cat(
            [
                _token_advantages(rollout, tokenizer, steps[g : g + cfg.group_size], rewards[g : g + cfg.group_size], cfg, g)
                for g in range(0, len(prompts), cfg.group_size)
            ]
        ).to(device)
        ids, mask, cmask = rollout.input_ids, rollout.attention_mask, rollout.completion_mask
        n = cmask.shape[1]
        with torch.no_grad(), autocast(cfg, device):
            old_logp = batched_logprobs(model, ids, mask, n, cfg.batch_size, temperature=cfg.temperature)
            ref_logp = None
            if cfg.beta > 0:
                runner, ctx = reference_context(model, ref)
                with ctx:
                    ref_logp = batched_logprobs(runner, ids, mask, n, cfg.batch_size, temperature=cfg.temperature)
        total_tokens = float(cmask.sum().clamp(min=1))
        chunk = cfg.batch_size  # sequences per forward pass; gradients accumulate over the chunks
        for _ in range(cfg.num_iterations):
            optimizer.zero_grad()
            step_loss, kl_sum = 0.0, 0.0
            for lo in range(0, ids.shape[0], chunk):
                part = slice(lo, lo + chunk)
                with autocast(cfg, device):
                    logp, _ = forward_logprobs(model, ids[part], mask[part], n, temperature=cfg.temperature)
                per_token = clipped_surrogate(logp, old_logp[part], advantages[part], cfg.epsilon)
                if ref_logp is not None:
                    kl = kl_k3(logp, ref_logp[part])
                    per_token = per_token + cfg.beta * kl
                    kl_sum += float((kl.detach() * cmask[part]).sum())
                loss = aggregate_loss(per_token, cmask[part], cfg.loss_type, cfg.max_completion_length)
                # chunk losses are means over their own rows/tokens: weight them into the batch mean
                share = float(cmask[part].sum()) / total_tokens if cfg.loss_type in ("dapo", "bnpo") else logp.shape[0] / ids.shape[0]
                (loss * share).backward()
                step_loss += float(loss.detach()) * share
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            losses.append(step_loss)
            if ref_logp is not None:
                metrics["kl"].append(kl_sum / total_tokens)
            log.step(loss=step_loss, reward=metrics["reward"][-1], **({"kl": metrics["kl"][-1]} if ref_logp is not None else {}))
        ckpt.maybe_save(it + 1, {"losses": losses, "metrics": metrics})
    log.close()
    model.eval()
    if cfg.save:
        policy.model = save_final_policy(policy, cfg)
    return TrainResult(cfg.output_dir, losses, len(losses), {k: v for k, v in metrics.items() if v})
