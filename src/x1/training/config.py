"""Typed configs for every trainer, loadable from YAML so that a bad field fails before any model loads.

One base class holds what all trainers share (model, output folder, optimiser, LoRA, ``<eois>``,
seed, device); each trainer adds its own knobs with the defaults the blueprint or its source
paper uses. Every default that picks one of several known variants says which one in a comment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from x1.config import DEFAULT_MODEL, load_yaml


class LoRAConfig(BaseModel):
    """Low-rank adapters (PEFT). Off by default: the bundled policies are small enough to train fully."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    r: int = Field(16, gt=0)
    alpha: int = Field(32, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | str = "all-linear"
    # The adapter is always saved (megabytes). Also write a merged copy, in the base model's dtype,
    # that any transformers loader (and so x1's TransformersBackend, x1 solve -m DIR) opens: the merged
    # model goes to output_dir and the adapter to output_dir/adapter. Off: output_dir is the adapter.
    merge_on_save: bool = False


class TrainConfig(BaseModel):
    """What every trainer needs. ``model`` is a transformers folder, a .gguf file, or a bundled name."""

    model_config = ConfigDict(extra="forbid")

    model: str = DEFAULT_MODEL  # the model every command uses by default (x1.config)
    gguf_file: str | None = None  # the file inside ``model`` when that is a folder holding GGUFs
    output_dir: str = "runs/train"
    learning_rate: float = Field(1e-5, gt=0)
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, gt=0)  # overrides epochs when set
    batch_size: int = Field(4, gt=0)
    grad_accum: int = Field(1, gt=0)
    max_length: int = Field(1024, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: float = Field(0, ge=0)  # whole steps, or a fraction (< 1) of all steps
    lr_scheduler: str = "linear"  # any transformers scheduler name ("constant", "cosine", ...)
    max_grad_norm: float = Field(1.0, gt=0)
    lora: LoRAConfig = Field(default_factory=LoRAConfig)
    eois_token: bool = False  # add "<eois>" as one new token and resize the embeddings
    step_delimiter: str = "\n\n"  # how steps are separated in text; replaced by <eois> when eois_token
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 autocast on CUDA that has it, else fp32
    gradient_checkpointing: bool = False
    logging_steps: int = Field(1, gt=0)
    # where per-step metrics go, for TRL's trainers and x1's own loops alike; off unless asked for
    report_to: Literal["none", "tensorboard", "wandb", "trackio"] = "none"
    progress: bool = True  # TRL's progress bars, and a line per logged step of x1's own loops, on stderr
    save: bool = True  # write the trained model to output_dir at the end (and checkpoints on the way)
    # checkpoint every this many optimiser steps (iterations for PPO and process GRPO), or, below 1, this
    # fraction of the run; a re-run of the same command resumes from the newest complete checkpoint
    save_steps: float = Field(0.1, gt=0)
    save_total_limit: int = Field(2, gt=0)  # checkpoints kept (the newest)

    @field_validator("save_steps")
    @classmethod
    def _whole_save_steps(cls, value: float) -> float:
        if value >= 1 and value != int(value):
            raise ValueError(f"{value} is neither a whole number of steps nor a fraction below 1 of the run")
        return value

    @classmethod
    def from_yaml(cls, path: str | Path) -> Self:
        return load_yaml(cls, path)


class SFTTrainConfig(TrainConfig):
    learning_rate: float = Field(2e-5, gt=0)
    completion_only_loss: bool = True  # loss on the completion tokens only, never on the prompt


class RejectionSamplingConfig(SFTTrainConfig):
    """Sample ``n`` solutions per task, keep the verified ones, fine-tune on them."""

    n: int = Field(8, gt=0)
    min_score: float = Field(1.0, ge=0, le=1)  # verifier score a sample needs to be kept
    max_per_task: int | None = Field(None, gt=0)  # cap kept samples per task (keeps easy tasks from dominating)
    dedupe: bool = True  # identical completions for one task are kept once


class DPOTrainConfig(TrainConfig):
    learning_rate: float = Field(5e-6, gt=0)
    beta: float = Field(0.1, gt=0)  # the DPO temperature β
    loss_type: str = "sigmoid"  # the paper's −log σ(β·margin); TRL also offers "ipo", "hinge", ...
    chat_template: bool = False  # wrap prompt/chosen/rejected as user/assistant messages


class GRPOTrainConfig(TrainConfig):
    learning_rate: float = Field(1e-6, gt=0)
    group_size: int = Field(8, gt=1)  # G: completions sampled per prompt
    prompts_per_step: int = Field(1, gt=0)  # prompts whose groups make one optimiser step
    beta: float = Field(0.04, ge=0)  # KL weight (DeepSeekMath's 0.04; 0 drops the reference model)
    epsilon: float = Field(0.2, gt=0)  # PPO clip range
    num_iterations: int = Field(1, gt=0)  # μ: optimiser steps on each batch of samples
    max_completion_length: int = Field(256, gt=0)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    # "grpo": mean over a sequence's tokens, then over sequences (the GRPO paper's formula);
    # TRL also has "dapo" (mean over all tokens of the batch) and "dr_grpo".
    loss_type: str = "grpo"
    scale_rewards: bool = True  # divide by the group's std (the paper); False is Dr. GRPO's choice


class ProcessGRPOConfig(GRPOTrainConfig):
    """GRPO where every step is rewarded by a process reward model (the custom loop in grpo.py)."""

    # "return": a token's advantage is the sum of the normalised rewards of its step and all later
    # steps (DeepSeekMath's process supervision); "step": only its own step's normalised reward.
    process_advantage: Literal["return", "step"] = "return"
    outcome_weight: float = Field(0.0, ge=0)  # add this × the verifier's score to the last step's reward
    iterations: int = Field(1, gt=0)  # rounds of sample → μ updates


class PPOTrainConfig(TrainConfig):
    learning_rate: float = Field(1e-6, gt=0)
    iterations: int = Field(1, gt=0)  # rounds of rollout → ppo_epochs of updates
    prompts_per_iteration: int = Field(4, gt=0)
    samples_per_prompt: int = Field(1, gt=0)
    ppo_epochs: int = Field(4, gt=0)
    minibatch_size: int | None = Field(None, gt=0)  # None: the whole rollout batch at once
    max_new_tokens: int = Field(256, gt=0)
    temperature: float = Field(1.0, gt=0)
    clip_epsilon: float = Field(0.2, gt=0)  # ε of the clipped ratio
    value_clip: float | None = Field(0.2, gt=0)  # clip the value update like the ratio; None disables
    vf_coef: float = Field(0.5, ge=0)
    kl_coef: float = Field(0.05, ge=0)  # λ_KL: KL(π‖π_ref) in the loss (unbiased k3 estimator)
    entropy_coef: float = Field(0.0, ge=0)  # λ_H
    gamma: float = Field(1.0, gt=0, le=1)  # token-level discount for GAE
    lam: float = Field(0.95, ge=0, le=1)  # GAE λ
    whiten_advantages: bool = True


class ValueTrainConfig(TrainConfig):
    """Value-model regression on Monte-Carlo targets, or PRM fitting on step labels."""

    learning_rate: float = Field(1e-5, gt=0)
    # "mse": (v − target)² with targets in [−1, 1] (the blueprint's value refit);
    # "bce": cross-entropy of p = (v + 1) / 2 against labels in [0, 1] (Math-Shepherd's soft labels).
    loss: Literal["mse", "bce"] = "mse"

    @model_validator(mode="after")
    def _lora_keeps_embeddings(self) -> Self:
        if self.lora.enabled and self.eois_token:
            raise ValueError("a LoRA evaluator keeps the base's embeddings frozen, so a new <eois> row would never be "
                             "trained; fix: drop eois_token or train the backbone fully (no --lora)")
        if self.lora.enabled and self.lora.merge_on_save:
            raise ValueError("an evaluator's adapter is merged when it is loaded, not when it is saved; fix: drop --merge")
        return self
