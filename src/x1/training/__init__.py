"""Training x1's policy and evaluators: SFT, rejection sampling, DPO, GRPO, PPO, value and PRM fitting.

Configs import cheaply; the trainers (torch, transformers, TRL, PEFT: ``pip install 'x1[train]'``)
load on first use, so ``import x1.training`` works without them.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from x1.training.config import (
    DPOTrainConfig,
    GRPOTrainConfig,
    LoRAConfig,
    PPOTrainConfig,
    ProcessGRPOConfig,
    RejectionSamplingConfig,
    SFTTrainConfig,
    TrainConfig,
    ValueTrainConfig,
)

_LAZY = {
    "TrainResult": "x1.training._common",
    "Policy": "x1.training.model_io",
    "load_policy": "x1.training.model_io",
    "save_policy": "x1.training.model_io",
    "add_eois": "x1.training.model_io",
    "train_sft": "x1.training.sft",
    "rejection_sampling_round": "x1.training.rejection_sampling",
    "backend_sampler": "x1.training.rejection_sampling",
    "train_dpo": "x1.training.dpo",
    "train_grpo": "x1.training.grpo",
    "train_grpo_process": "x1.training.grpo",
    "verifier_reward": "x1.training.grpo",
    "train_ppo": "x1.training.ppo",
    "train_value": "x1.training.value",
    "train_prm": "x1.training.value",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'x1.training' has no attribute {name!r}")


__all__ = [
    "DPOTrainConfig",
    "GRPOTrainConfig",
    "LoRAConfig",
    "PPOTrainConfig",
    "ProcessGRPOConfig",
    "RejectionSamplingConfig",
    "SFTTrainConfig",
    "TrainConfig",
    "ValueTrainConfig",
    *_LAZY,
]
