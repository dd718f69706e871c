"""Fitting x1's value model and process reward model — the evaluator half of both training phases.

- Value model (``x1.evaluators.value_model.ValueModel``, q = tanh(z) ∈ [−1, 1]) on
  ``ValueTarget``s, reading prompt + partial_solution as the search does:
  ``mse``: L = (q − target)², the blueprint's value refit on backed-up or Monte-Carlo q;
  ``bce``: the target mapped to a probability y = (target + 1)/2 and L = BCE(σ(2z), y) — the same
  model, since (tanh(z) + 1)/2 = σ(2z), but a cross-entropy fit (computed from the logit, stably).
- Process reward model (``x1.evaluators.reward_model.ProcessRewardModel``) on ``ProcessLabel``s:
  BCE of σ(head) at each step's last token against the step's label in [0, 1] (Math-Shepherd soft
  or hard labels), using the model's own ``encode_steps`` so training reads the positions
  inference reads.
- Outcome reward model (``x1.evaluators.reward_model.OutcomeRewardModel``) on preference pairs:
  Bradley–Terry, L = −log σ(r(x, y⁺) − r(x, y⁻)) with r the head's raw output at the last token
  of prompt + solution; the evaluator then reads σ(r) as P(correct).

A small loop of its own rather than a TRL trainer: these are regression heads on a backbone,
not language-model objectives (TRL's ``RewardTrainer`` is Bradley–Terry on pairs only).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from x1.training._common import TrainResult, autocast
from x1.training.checkpoint import LoopCheckpoints, final_folder
from x1.training.config import ValueTrainConfig
from x1.training.model_io import add_eois, forget_gguf_quantizer, pick_device
from x1.training.progress import StepLog
from x1.training.sft import field_of


def _head_config(path: str | Path) -> Path:
    from x1.evaluators.value_model import HEAD_CONFIG

    return Path(path) / HEAD_CONFIG


def load_value_model(cfg: ValueTrainConfig, kind: str = "value") -> Any:
    """A saved value/PRM folder to keep training (phase-2 refits), or a fresh head on ``cfg.model``.

    Weights load in float32 (the master copy); ``precision`` decides autocast during training. With
    ``lora`` the backbone is frozen under adapters: about 4x faster per step on a CPU (no gradients or
    optimiser state for its 135M+ weights), and the saved evaluator is megabytes, not the whole backbone.
    """
    from transformers import set_seed

    from x1.evaluators.reward_model import OutcomeRewardModel, ProcessRewardModel
    from x1.evaluators.value_model import ValueModel

    set_seed(cfg.seed)  # LoRA's initial A matrices come from torch's global generator
    cls = {"value": ValueModel, "prm": ProcessRewardModel, "orm": OutcomeRewardModel}[kind]
    device = str(pick_device(cfg.device))
    if Path(cfg.model).is_dir() and _head_config(cfg.model).exists():
        model = cls.load(cfg.model, device=device, dtype="float32", trainable=True)
    else:
        model = cls.from_pretrained_lm(cfg.model, cfg.gguf_file, device=device, dtype="float32", max_length=cfg.max_length, seed=cfg.seed)
        forget_gguf_quantizer(model.backbone)  # float weights already; keeps the saved config clean
    if cfg.eois_token:
        add_eois(model.tokenizer, model.backbone, init_from=cfg.step_delimiter)
    if cfg.lora.enabled:
        model.add_lora(cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.target_modules)
    return model


def _fit(
    model: Any, items: Sequence[Any], loss_of: Callable[[Any, list[Any]], torch.Tensor], cfg: ValueTrainConfig, name: str
) -> tuple[list[float], int]:
    """AdamW over shuffled minibatches for ``epochs`` (or ``max_steps``); the loss of every step."""
    from transformers import get_scheduler

    if not items:
        raise ValueError("value training got no examples")
    device = pick_device(cfg.device)
    per_epoch = -(-len(items) // cfg.batch_size)
    total = cfg.max_steps or max(1, round(per_epoch * cfg.epochs))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    warmup = int(cfg.warmup_steps * total) if cfg.warmup_steps < 1 else int(cfg.warmup_steps)
    scheduler = get_scheduler(cfg.lr_scheduler, optimizer, num_warmup_steps=warmup, num_training_steps=total)
    ckpt = LoopCheckpoints(cfg, total, {"model": model}, optimizer, scheduler)
    start, saved = ckpt.resume()
    losses: list[float] = saved.get("losses", [])
    # the epochs' orders come from one seeded generator, replayed up to the resumed epoch: the same batches either way
    generator = torch.Generator().manual_seed(cfg.seed)
    orders: list[list[int]] = []
    log = StepLog(cfg, name, total, done=start)
    model.train()
    for step in range(start, total):
        epoch, batch_index = divmod(step, per_epoch)
        while len(orders) <= epoch:
            orders.append(torch.randperm(len(items), generator=generator).tolist())
        lo = batch_index * cfg.batch_size
        with autocast(cfg, device):
            loss = loss_of(model, [items[i] for i in orders[epoch][lo : lo + cfg.batch_size]])
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        log.step(loss=losses[-1], lr=scheduler.get_last_lr()[0])
        ckpt.maybe_save(step + 1, {"losses": losses})
    log.close()
    model.eval()
    return losses, len(losses)


# -- value model -----------------------------------------------------------------------------------
def value_loss(model: Any, batch: list[tuple[list[int], float]], kind: str) -> torch.Tensor:
    """MSE of q against targets in [−1, 1], or BCE of σ(2z) against (target + 1)/2."""
    ids, mask = model.pad([ids for ids, _ in batch])
    targets = torch.tensor([t for _, t in batch], dtype=torch.float32, device=ids.device)
    logits = model.last_logits(ids, mask).float()
    if kind == "mse":
        return F.mse_loss(torch.tanh(logits), targets)
    return F.binary_cross_entropy_with_logits(2.0 * logits, (targets + 1.0) / 2.0)


def train_value(cfg: ValueTrainConfig, targets: Iterable[Any], model: Any | None = None) -> TrainResult:
    """Fit the value model on ``ValueTarget``s (or dicts with prompt, partial_solution, target)."""
    model = model or load_value_model(cfg, "value")
    items = []
    for row in targets:
        target = float(field_of(row, "target"))
        if not -1.0 <= target <= 1.0:
            raise ValueError(f"value target {target} lies outside [-1, 1]")
        text = str(field_of(row, "prompt", "")) + str(field_of(row, "partial_solution", ""))
        ids, _ = model._truncate(model.encode(text))
        items.append((ids or [model.pad_id], target))
    losses, steps = _fit(model, items, lambda m, b: value_loss(m, b, cfg.loss), cfg, "value")
    if cfg.save:
        with final_folder(cfg.output_dir) as staging:
            model.save(staging)
    return TrainResult(cfg.output_dir, losses, steps)


# -- process reward model -------------------------------------------------------------------------
def prm_loss(model: Any, batch: list[tuple[list[int], list[int], list[float]]]) -> torch.Tensor:
    """BCE of the head's logit at each step end against the step's label, over all steps of the batch."""
    ids, mask = model.pad([ids for ids, _, _ in batch])
    logits = model.token_logits(ids, mask).float()
    width = mask.shape[1]
    rows, cols, labels = [], [], []
    for r, (seq, ends, step_labels) in enumerate(batch):
        shift = width - len(seq) if model.padding_side == "left" else 0
        for end, label in zip(ends, step_labels, strict=True):
            rows.append(r)
            cols.append(end + shift)
            labels.append(label)
    picked = logits[torch.tensor(rows, device=ids.device), torch.tensor(cols, device=ids.device)]
    return F.binary_cross_entropy_with_logits(picked, torch.tensor(labels, dtype=torch.float32, device=ids.device))


def train_prm(cfg: ValueTrainConfig, labels: Iterable[Any], model: Any | None = None) -> TrainResult:
    """Fit the process reward model on ``ProcessLabel``s (prompt, steps, labels in [0, 1])."""
    model = model or load_value_model(cfg, "prm")
    items = []
    for row in labels:
        steps, step_labels = list(field_of(row, "steps")), [float(x) for x in field_of(row, "labels")]
        if len(steps) != len(step_labels) or not steps:
            raise ValueError(f"a process label needs one label per step, got {len(steps)} steps and {len(step_labels)} labels")
        if any(not 0.0 <= x <= 1.0 for x in step_labels):
            raise ValueError(f"process labels must lie in [0, 1], got {step_labels}")
        ids, ends = model.encode_steps(str(field_of(row, "prompt", "")), steps)
        items.append((ids, ends, step_labels))
    losses, steps_run = _fit(model, items, prm_loss, cfg, "prm")
    if cfg.save:
        with final_folder(cfg.output_dir) as staging:
            model.save(staging)
    return TrainResult(cfg.output_dir, losses, steps_run)


# -- outcome reward model ------------------------------------------------------------------------
def orm_loss(model: Any, batch: list[tuple[list[int], list[int]]]) -> torch.Tensor:
    """Bradley–Terry: mean of −log σ(r(chosen) − r(rejected)) over the pairs of the batch."""
    ids, mask = model.pad([chosen for chosen, _ in batch] + [rejected for _, rejected in batch])
    rewards = model.last_logits(ids, mask).float()
    n = len(batch)
    return -F.logsigmoid(rewards[:n] - rewards[n:]).mean()


def train_orm(cfg: ValueTrainConfig, pairs: Iterable[Any], model: Any | None = None) -> TrainResult:
    """Fit the outcome reward model on ``PreferencePair``s (prompt, chosen, rejected), Bradley–Terry style."""
    model = model or load_value_model(cfg, "orm")
    items = []
    for row in pairs:
        prompt = str(field_of(row, "prompt", ""))
        chosen, rejected = str(field_of(row, "chosen")), str(field_of(row, "rejected"))
        items.append(tuple(model._truncate(model.encode(prompt + text))[0] or [model.pad_id] for text in (chosen, rejected)))
    losses, steps = _fit(model, items, orm_loss, cfg, "orm")
    if cfg.save:
        with final_folder(cfg.output_dir) as staging:
            model.save(staging)
    return TrainResult(cfg.output_dir, losses, steps)
