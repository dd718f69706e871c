"""The maths of x1's own RL loops (process-reward GRPO, PPO), as small functions that are tested alone.

Notation (BLUEPRINT.md, "Training"): ρ_t = π_θ(o_t|·)/π_old(o_t|·) per token, A an advantage,
ε the clip range, β / λ_KL the KL weight.

- clipped surrogate, per token:   −min(ρ·A, clip(ρ, 1 − ε, 1 + ε)·A)
- KL to the reference, per token, the unbiased "k3" estimator (Schulman; used by GRPO):
      KL ≈ π_ref/π_θ − log(π_ref/π_θ) − 1,  evaluated as exp(r) − r − 1 with r = log π_ref − log π_θ
- GRPO group advantage:           A_i = (r_i − mean(r_group)) / std(r_group)
- GAE:  δ_t = r_t + γ·V(s_{t+1}) − V(s_t),  A_t = δ_t + γλ·A_{t+1},  R̂_t = A_t + V(s_t)
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from x1.training._common import masked_mean


# -- per-token objectives -------------------------------------------------------------------
def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token KL(π_θ ‖ π_ref) estimate π_ref/π_θ − log(π_ref/π_θ) − 1 (≥ 0, unbiased, low variance)."""
    log_ratio = ref_logp - logp
    return torch.exp(log_ratio) - log_ratio - 1.0


def clipped_surrogate(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Per-token PPO-clip loss −min(ρ·A, clip(ρ, 1 − ε, 1 + ε)·A); ``advantages`` broadcast ((B,1) or (B,T))."""
    ratio = torch.exp(logp - old_logp)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - epsilon, 1.0 + epsilon) * advantages
    return -torch.minimum(unclipped, clipped)


def aggregate_loss(per_token: torch.Tensor, mask: torch.Tensor, loss_type: str, max_len: int | None = None) -> torch.Tensor:
    """One scalar from per-token losses.

    ``grpo``: mean over each sequence's tokens, then over sequences (the GRPO paper);
    ``dapo``/``bnpo``: mean over all tokens of the batch; ``dr_grpo``: sum / (sequences × max_len).
    """
    mask = mask.to(per_token.dtype)
    if loss_type == "grpo":
        return masked_mean(per_token, mask, dim=1).mean()
    if loss_type in ("dapo", "bnpo"):
        return masked_mean(per_token, mask)
    if loss_type == "dr_grpo":
        return (per_token * mask).sum() / (per_token.shape[0] * (max_len or per_token.shape[1]))
    raise ValueError(f"unknown loss_type {loss_type!r}; use grpo, dapo, bnpo or dr_grpo")


# -- advantages --------------------------------------------------------------------------------
def group_advantages(rewards: torch.Tensor, group_size: int, scale: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """GRPO outcome advantages for rewards laid out group after group: (r − mean) / (std + eps).

    std is the sample standard deviation (n − 1), as in TRL; a group whose rewards are all equal
    gets advantage 0 (it carries no signal).
    """
    grouped = rewards.view(-1, group_size)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale:
        centred = centred / (grouped.std(dim=1, keepdim=True) + eps)
    return centred.reshape(-1)


def process_advantages(
    step_rewards: Sequence[Sequence[float]], mode: str = "return", scale: bool = True, eps: float = 1e-4
) -> list[list[float]]:
    """Per-step advantages for ONE group of outputs from their per-step rewards (process supervision).

    All step rewards of the group are normalised together, r̃ = (r − mean(R)) / std(R), R the
    group's step rewards (DeepSeekMath §4.1.3). ``return``: a step's advantage is the sum of r̃
    over it and every later step of its output (the paper's choice: a token is credited with
    what follows it); ``step``: its own r̃ only.
    """
    flat = [float(r) for steps in step_rewards for r in steps]
    if not flat:
        return [[] for _ in step_rewards]
    values = torch.tensor(flat, dtype=torch.float64)
    mean = values.mean()
    std = values.std() if len(flat) > 1 else torch.tensor(0.0, dtype=torch.float64)
    out: list[list[float]] = []
    for steps in step_rewards:
        norm = [(float(r) - float(mean)) / (float(std) + eps) if scale else float(r) - float(mean) for r in steps]
        if mode == "return":
            acc, ret = 0.0, []
            for r in reversed(norm):
                acc += r
                ret.append(acc)
            norm = ret[::-1]
        elif mode != "step":
            raise ValueError(f"unknown process advantage mode {mode!r}; use 'return' or 'step'")
        out.append(norm)
    return out


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over right-padded token sequences: (advantages, returns).

    The value after a sequence's last real token is 0 (the episode ended there).
    """
    mask = mask.to(values.dtype)
    values = values * mask
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        next_value = values[:, t + 1] if t + 1 < values.shape[1] else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, advantages + values


def whiten(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    return (values - mean) * torch.rsqrt(var + eps) * mask.to(values.dtype)


# -- steps inside a completion ------------------------------------------------------------------
def split_steps(text: str, delimiter: str) -> list[str]:
    """Steps of a completion with their delimiters kept, so that ``"".join(steps) == text``.

    A piece that is only whitespace (e.g. from a doubled delimiter) is merged into the step before.
    """
    if not delimiter or delimiter not in text:
        return [text]
    parts = text.split(delimiter)
    pieces = [p + delimiter for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    steps: list[str] = []
    for piece in pieces:
        if steps and not piece.replace(delimiter, "").strip():
            steps[-1] += piece
        else:
            steps.append(piece)
    return steps


def token_step_index(tokenizer: Any, token_ids: Sequence[int], steps: Sequence[str]) -> list[int]:
    """For each completion token, the index of the step holding its last character.

    Decodes growing prefixes (robust to tokens that are partial UTF-8 or merge across a
    boundary); tokens that add no text (eos) belong to the step before them.
    """
    ends, total = [], 0
    for step in steps:
        total += len(step)
        ends.append(total)
    index, k = [], 0
    for i in range(len(token_ids)):
        length = len(tokenizer.decode(list(token_ids[: i + 1]), skip_special_tokens=True))
        while k < len(ends) - 1 and length > ends[k]:
            k += 1
        index.append(k)
    return index


# -- sampling and scoring -------------------------------------------------------------------------
@dataclass
class Rollout:
    """Prompts (left-padded) and sampled completions (right-padded, eos included in the mask)."""

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    texts: list[str]

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.prompt_ids, self.completion_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.prompt_mask, self.completion_mask], dim=1)

    def tokens(self, row: int) -> list[int]:
        n = int(self.completion_mask[row].sum())
        return self.completion_ids[row, :n].tolist()


def eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for value in (getattr(getattr(model, "generation_config", None), "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    return ids


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s) :] = torch.tensor(list(s), dtype=torch.long)
            mask[i, width - len(s) :] = 1
    return ids.to(device), mask.to(device)


@torch.no_grad()
def sample(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = None,
) -> Rollout:
    """Sample one completion per prompt text (repeat a prompt G times for a group)."""
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = [list(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    prompt_ids, prompt_mask = left_pad(encoded, pad_id, device)
    if seed is not None:
        torch.manual_seed(seed)
    stops = eos_ids(model, tokenizer)
    was_training = model.training
    model.eval()
    out = model.generate(
        input_ids=prompt_ids,
        attention_mask=prompt_mask,
        do_sample=True,
        temperature=temperature,
        top_p=top_p,
        top_k=0,
        max_new_tokens=max_new_tokens,
        pad_token_id=pad_id,
        eos_token_id=sorted(stops) or None,
    )
    model.train(was_training)
    completion = out[:, prompt_ids.shape[1] :]
    is_stop = torch.zeros_like(completion, dtype=torch.bool)
    for stop in stops:
        is_stop |= completion == stop
    # keep tokens up to and including the first stop token
    after_stop = (is_stop.long().cumsum(dim=1) - is_stop.long()) > 0
    completion_mask = (~after_stop).long()
    completion = completion.masked_fill(after_stop, pad_id)
    lengths = completion_mask.sum(dim=1).tolist()
    texts = [tokenizer.decode(completion[i, : int(n)].tolist(), skip_special_tokens=True) for i, n in enumerate(lengths)]
    return Rollout(prompt_ids, prompt_mask, completion, completion_mask, texts)


def forward_logprobs(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    n_completion: int,
    hidden: bool = False,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probability of each completion token (B, C) under the policy sampled at ``temperature``,
    log_softmax(logits / T), and optionally the hidden states that predict them.

    The tokens were drawn from softmax(logits / T); scoring them at T = 1 instead would make any
    other temperature off-policy (TRL divides by the temperature the same way). Position ids come
    from the mask, as in generation, so left padding changes nothing.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 to score samples, got {temperature}")
    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, use_cache=False, output_hidden_states=hidden)
    logits = out.logits[:, -n_completion - 1 : -1, :].float() / temperature
    targets = input_ids[:, -n_completion:]
    logp = torch.log_softmax(logits, dim=-1).gather(2, targets.unsqueeze(2)).squeeze(2)
    states = out.hidden_states[-1][:, -n_completion - 1 : -1, :] if hidden else None
    return logp, states


@torch.no_grad()
def batched_logprobs(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, n_completion: int, chunk: int, temperature: float = 1.0
) -> torch.Tensor:
    """``forward_logprobs`` without gradients, ``chunk`` sequences at a time (bounds the logits' memory)."""
    parts = [
        forward_logprobs(model, input_ids[lo : lo + chunk], attention_mask[lo : lo + chunk], n_completion, temperature=temperature)[0]
        for lo in range(0, input_ids.shape[0], chunk)
    ]
    return torch.cat(parts)


def frozen_reference(model: Any) -> Any | None:
    """π_ref: None for a LoRA model (its adapter is switched off instead), else a frozen copy."""
    from x1.training.model_io import is_peft

    if is_peft(model):
        return None
    ref = copy.deepcopy(model).eval()
    ref.requires_grad_(False)
    return ref


def reference_context(model: Any, ref: Any | None) -> tuple[Any, AbstractContextManager[Any]]:
    """(model to run, context) that evaluates π_ref: the frozen copy, or the LoRA model with adapters off."""
    if ref is not None:
        return ref, nullcontext()
    return model, model.disable_adapter()
