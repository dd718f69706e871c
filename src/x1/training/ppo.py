"""PPO with a value head on the policy — x1's own compact loop (TRL 1.x no longer ships a PPOTrainer).

Per iteration (BLUEPRINT.md, "Training"):

1. Rollout: sample completions o for prompts x from π_old (the current policy, frozen for the
   iteration); record log π_old(o_t), the value head's V(s_t), and log π_ref(o_t).
2. Reward: the task's reward R(x, o) (default: the verifier's score mapped to ±1, x1's terminal
   reward convention) at the last token of o, 0 elsewhere.
3. GAE on tokens: δ_t = r_t + γ·V(s_{t+1}) − V(s_t),  A_t = Σ_k (γλ)^k δ_{t+k},  R̂_t = A_t + V(s_t);
   advantages whitened over the batch.
4. ``ppo_epochs`` passes of minibatch updates on

       L = −E_t[min(ρ_t·A_t, clip(ρ_t, 1 − ε, 1 + ε)·A_t)] + c_V·E_t[(V − R̂)²] + λ_KL·E_t[KL_t] − λ_H·E_t[H_t]

   with ρ_t = π_θ/π_old, the value loss clipped around V_old when ``value_clip`` is set
   (max of clipped and unclipped squared errors), KL_t the k3 estimator
   π_ref/π_θ − log(π_ref/π_θ) − 1 (the blueprint puts the KL in the loss, not the reward),
   and H_t the policy's entropy at step t. Every π here is softmax(logits / T) at the sampling
   temperature T = ``cfg.temperature``: at T ≠ 1 the T = 1 distribution is not the one sampled from.

The value head is a linear layer on the policy's last hidden state (as in the former TRL
``AutoModelForCausalLMWithValueHead``), so policy and critic share the backbone. It is saved
next to the policy as ``ppo_value_head.safetensors``; the policy folder itself stays a plain
transformers model for x1's backends.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from x1.tasks.base import Task
from x1.training._common import TrainResult, autocast, masked_mean
from x1.training.checkpoint import LoopCheckpoints, final_folder
from x1.training.config import PPOTrainConfig
from x1.training.grpo import prompt_text
from x1.training.model_io import EOIS, Policy, pick_device, policy_from_config, save_from_config
from x1.training.progress import StepLog
from x1.training.rl import (
    Rollout,
    clipped_surrogate,
    forward_logprobs,
    frozen_reference,
    gae,
    kl_k3,
    left_pad,
    reference_context,
    sample,
    whiten,
)
from x1.training.sft import field_of

RewardFn = Callable[[Task, str], float]
VALUE_HEAD_FILE = "ppo_value_head.safetensors"


def signed_verifier_reward(task: Task, completion: str) -> float:
    """+1 for a verified answer, −1 for a wrong one (2·score − 1): x1's terminal rewards."""
    return 2.0 * task.check_solution(completion.replace(EOIS, "\n\n"))[1].score - 1.0


class ValueHead(nn.Module):
    """V(s_t) = w·h_t + b on the hidden state that predicts token t; float32 whatever the backbone."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)
        with torch.no_grad():
            self.linear.weight.normal_(0.0, 0.01)
            self.linear.bias.zero_()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden.float()).squeeze(-1)


def entropy_from_logits(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, n: int, temperature: float = 1.0
) -> torch.Tensor:
    """Per-token entropy H = −Σ p log p of the policy sampled at ``temperature`` (p = softmax(logits / T)),
    at each completion position (an extra forward)."""
    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, use_cache=False).logits
    logp = torch.log_softmax(logits[:, -n - 1 : -1, :].float() / temperature, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def ppo_step_loss(
    logp: torch.Tensor,
    values: torch.Tensor,
    old_logp: torch.Tensor,
    old_values: torch.Tensor,
    ref_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cfg: PPOTrainConfig,
    entropy: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The PPO objective above for one minibatch (token means over ``mask``), and its parts."""
    pg = masked_mean(clipped_surrogate(logp, old_logp, advantages, cfg.clip_epsilon), mask)
    vf_err = (values - returns) ** 2
    if cfg.value_clip is not None:
        clipped = old_values + torch.clamp(values - old_values, -cfg.value_clip, cfg.value_clip)
        vf_err = torch.maximum(vf_err, (clipped - returns) ** 2)
    vf = masked_mean(vf_err, mask)
    loss = pg + cfg.vf_coef * vf
    parts = {"policy_loss": float(pg.detach()), "value_loss": float(vf.detach())}
    if ref_logp is not None and cfg.kl_coef > 0:
        kl = masked_mean(kl_k3(logp, ref_logp), mask)
        loss = loss + cfg.kl_coef * kl
        parts["kl"] = float(kl.detach())
    if entropy is not None and cfg.entropy_coef > 0:
        ent = masked_mean(entropy, mask)
        loss = loss - cfg.entropy_coef * ent
        parts["entropy"] = float(ent.detach())
    return loss, parts


def buffered_rollout(tokenizer: Any, paths: Sequence[Any], device: torch.device) -> Rollout:
    """Rollouts from the replay buffer (``RewardedPath``s or dicts with prompt, completion, reward):
    the search's own prompt text and path, tokenised, with an end-of-sequence token closing each path."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    prompts = [list(tokenizer(field_of(p, "prompt"), add_special_tokens=False)["input_ids"]) for p in paths]
    prompt_ids, prompt_mask = left_pad(prompts, pad_id, device)
    eos = [tokenizer.eos_token_id]
    completions = [list(tokenizer(field_of(p, "completion"), add_special_tokens=False)["input_ids"]) + eos for p in paths]
    width = max(len(c) for c in completions)
    completion_ids = torch.full((len(paths), width), pad_id, dtype=torch.long)
    completion_mask = torch.zeros((len(paths), width), dtype=torch.long)
    for i, c in enumerate(completions):
        completion_ids[i, : len(c)] = torch.tensor(c, dtype=torch.long)
        completion_mask[i, : len(c)] = 1
    texts = [str(field_of(p, "completion")) for p in paths]
    return Rollout(prompt_ids, prompt_mask, completion_ids.to(device), completion_mask.to(device), texts)


def train_ppo(
    cfg: PPOTrainConfig,
    tasks: Sequence[Task],
    reward_fn: RewardFn = signed_verifier_reward,
    policy: Policy | None = None,
    value_head: ValueHead | None = None,
    buffer: Sequence[Any] | None = None,
) -> TrainResult:
    """Run ``cfg.iterations`` rounds of rollout + PPO updates; losses are per optimiser step.

    With ``buffer`` (``RewardedPath``s: search paths and their true rewards, from
    ``x1.data.rewarded_paths``) each iteration takes its ``prompts_per_iteration ×
    samples_per_prompt`` rollouts from the replay buffer instead of sampling: the x1 recipe's
    phase 2, where MCTS produced the trajectories. π_old is the policy at the start of the
    iteration, as in on-policy PPO.
    """
    if not tasks and not buffer:
        raise ValueError("PPO got no tasks and no buffered rollouts")
    torch.manual_seed(cfg.seed)
    policy = policy or policy_from_config(cfg)
    model, tokenizer = policy.model, policy.tokenizer
    device = pick_device(cfg.device)
    model.to(device).train()
    head = (value_head or ValueHead(int(model.config.hidden_size))).to(device)
    ref = frozen_reference(model) if cfg.kl_coef > 0 else None
    params = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    losses: list[float] = []
    metrics: dict[str, list[float]] = {"reward": [], "policy_loss": [], "value_loss": [], "kl": [], "entropy": []}
    rollouts = cfg.prompts_per_iteration * cfg.samples_per_prompt
    per_epoch = -(-rollouts // (cfg.minibatch_size or rollouts))
    ckpt = LoopCheckpoints(cfg, cfg.iterations, {"model": model, "head": head}, optimizer)  # one checkpoint unit: an iteration
    start, saved = ckpt.resume()
    losses, metrics = saved.get("losses", losses), saved.get("metrics", metrics)
    log = StepLog(cfg, "ppo", cfg.iterations * cfg.ppo_epochs * per_epoch, done=start * cfg.ppo_epochs * per_epoch)
    for it in range(start, cfg.iterations):
        if buffer:
            size = cfg.prompts_per_iteration * cfg.samples_per_prompt
            cursor = it * size
            owners = [buffer[(cursor + j) % len(buffer)] for j in range(size)]
            rollout = buffered_rollout(tokenizer, owners, device)
            score_list = [float(field_of(p, "reward")) for p in owners]
        else:
            cursor = it * cfg.prompts_per_iteration
            batch = [tasks[(cursor + j) % len(tasks)] for j in range(cfg.prompts_per_iteration)]
            owners = [t for t in batch for _ in range(cfg.samples_per_prompt)]
            prompts = [prompt_text(tokenizer, t) for t in owners]
            rollout = sample(
                model, tokenizer, prompts, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, seed=cfg.seed + it
            )
            score_list = [float(reward_fn(t, text)) for t, text in zip(owners, rollout.texts, strict=True)]
        ids, mask, cmask = rollout.input_ids, rollout.attention_mask, rollout.completion_mask
        n = cmask.shape[1]
        scores = torch.tensor(score_list, device=device)
        metrics["reward"].append(float(scores.mean()))
        last = (cmask.sum(dim=1) - 1).clamp(min=0)
        rewards = torch.zeros(cmask.shape, device=device)
        rewards[torch.arange(len(owners), device=device), last] = scores
        with torch.no_grad(), autocast(cfg, device):
            old_logp, hidden = forward_logprobs(model, ids, mask, n, hidden=True, temperature=cfg.temperature)
            old_values = head(hidden)
            ref_logp = None
            if cfg.kl_coef > 0:
                runner, ctx = reference_context(model, ref)
                with ctx:
                    ref_logp, _ = forward_logprobs(runner, ids, mask, n, temperature=cfg.temperature)
        advantages, returns = gae(rewards, old_values, cmask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            advantages = whiten(advantages, cmask)
        size = cfg.minibatch_size or len(owners)
        generator = torch.Generator().manual_seed(cfg.seed + it)
        for _ in range(cfg.ppo_epochs):
            order = torch.randperm(len(owners), generator=generator).tolist()
            for lo in range(0, len(order), size):
                rows = torch.tensor(order[lo : lo + size], device=device)
                with autocast(cfg, device):
                    logp, hidden = forward_logprobs(model, ids[rows], mask[rows], n, hidden=True, temperature=cfg.temperature)
                    entropy = None
                    if cfg.entropy_coef > 0:
                        entropy = entropy_from_logits(model, ids[rows], mask[rows], n, temperature=cfg.temperature)
                values = head(hidden)
                loss, parts = ppo_step_loss(
                    logp,
                    values,
                    old_logp[rows],
                    old_values[rows],
                    None if ref_logp is None else ref_logp[rows],
                    advantages[rows],
                    returns[rows],
                    cmask[rows],
                    cfg,
                    entropy,
                )
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()
                losses.append(float(loss.detach()))
                for key, value in parts.items():
                    metrics[key].append(value)
                log.step(loss=losses[-1], reward=metrics["reward"][-1], **parts)
        ckpt.maybe_save(it + 1, {"losses": losses, "metrics": metrics})
    log.close()
    model.eval()
    if cfg.save:
        with final_folder(cfg.output_dir) as staging:
            policy.model = save_from_config(policy, cfg, staging)
            save_value_head(head, staging)
    return TrainResult(cfg.output_dir, losses, len(losses), {k: v for k, v in metrics.items() if v})


def save_value_head(head: ValueHead, directory: str | Path) -> Path:
    from safetensors.torch import save_file

    path = Path(directory) / VALUE_HEAD_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}, str(path))
    return path


def load_value_head(directory: str | Path, hidden_size: int) -> ValueHead:
    from safetensors.torch import load_file

    head = ValueHead(hidden_size)
    head.load_state_dict(load_file(str(Path(directory) / VALUE_HEAD_FILE)))
    return head
