"""What every trainer shares: the result record, TRL argument plumbing, and torch helpers."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from x1.training.config import TrainConfig
from x1.training.model_io import mixed_precision, pick_device


@dataclass
class TrainResult:
    """Where the model went, the loss of every logged optimiser step, and how many steps ran."""

    output_dir: str
    losses: list[float]
    steps: int
    metrics: dict[str, list[float]] = field(default_factory=dict)  # other per-step logs (rewards, kl, ...)


def trl_args(cfg: TrainConfig) -> dict[str, Any]:
    """TrainingArguments shared by the TRL trainers, translated from an x1 config.

    TRL checkpoints every ``save_steps`` (a fraction below 1 is TRL's own "ratio of the run") into
    ``output_dir/checkpoint-N`` and keeps ``save_total_limit`` of them, for :func:`train_resumable`;
    x1 saves the final model itself, in the format its backends load. Reporting goes where
    ``report_to`` says (nowhere by default), progress bars follow
    ``progress``, one log per step so that ``TrainResult.losses`` is per step.
    """
    device = pick_device(cfg.device)
    bf16, fp16 = mixed_precision(cfg.precision, device)
    return {
        "output_dir": cfg.output_dir,
        "learning_rate": cfg.learning_rate,
        "num_train_epochs": cfg.epochs,
        "max_steps": cfg.max_steps or -1,
        "per_device_train_batch_size": cfg.batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "weight_decay": cfg.weight_decay,
        "warmup_steps": cfg.warmup_steps,
        "lr_scheduler_type": cfg.lr_scheduler,
        "max_grad_norm": cfg.max_grad_norm,
        "logging_steps": cfg.logging_steps,
        "save_strategy": "steps" if cfg.save else "no",
        "save_steps": cfg.save_steps if cfg.save_steps < 1 else int(cfg.save_steps),
        "save_total_limit": cfg.save_total_limit,
        "report_to": cfg.report_to,
        "disable_tqdm": not cfg.progress,
        "seed": cfg.seed,
        "data_seed": cfg.seed,
        "use_cpu": device.type == "cpu",
        "bf16": bf16,
        "fp16": fp16,
        _checkpointing_key(): cfg.gradient_checkpointing,
        "optim": "adamw_torch",
    }


def train_resumable(trainer: Any, cfg: TrainConfig) -> None:
    """``trainer.train()``, resumed from the newest complete checkpoint in ``output_dir`` when there is one."""
    from x1.training.checkpoint import trl_resume_point

    trainer.train(resume_from_checkpoint=trl_resume_point(cfg))


def save_final_policy(policy: Any, cfg: TrainConfig) -> Any:
    """Save the trained policy to ``output_dir`` atomically (staged, then swapped in); returns the saved model."""
    from x1.training.checkpoint import final_folder
    from x1.training.model_io import save_from_config

    with final_folder(cfg.output_dir) as staging:
        return save_from_config(policy, cfg, staging)


def _checkpointing_key() -> str:
    """transformers 5 renamed gradient_checkpointing to activation_checkpointing (old name warns)."""
    from transformers import TrainingArguments

    fields = TrainingArguments.__dataclass_fields__
    return "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"


def logged(trainer: Any, key: str = "loss") -> list[float]:
    """Every value of ``key`` the trainer logged during training, in order."""
    return [float(entry[key]) for entry in trainer.state.log_history if key in entry and "train_runtime" not in entry]


def result_from_trainer(trainer: Any, output_dir: str | Path, extra_keys: tuple[str, ...] = ()) -> TrainResult:
    metrics = {k: logged(trainer, k) for k in extra_keys}
    return TrainResult(str(output_dir), logged(trainer), int(trainer.state.global_step), {k: v for k, v in metrics.items() if v})


def autocast(cfg: TrainConfig, device: torch.device) -> AbstractContextManager[Any]:
    """bf16 autocast for x1's own loops when the precision asks for it (weights stay fp32).

    fp16 runs in fp32 there: without a gradient scaler its small gradients would underflow.
    """
    bf16, _ = mixed_precision(cfg.precision, device)
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean over the positions where ``mask`` is 1 (all of them, or along ``dim``)."""
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1.0)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)
