"""Supervised fine-tuning on (prompt messages, completion) pairs — phase 1 of the blueprint's recipe.

A thin layer over TRL's ``SFTTrainer``: each example becomes a conversational prompt-completion
row, TRL renders it with the tokenizer's chat template and, with ``completion_only_loss``, sets
the labels of every prompt token to -100, so only the solution is learned. With ``eois_token``
the completion is written in the blueprint's step format ``step₁<eois>step₂<eois>…stepₜ<eos>``
(the chat template's end-of-turn token plays the role of eos).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from x1.training._common import TrainResult, result_from_trainer, save_final_policy, train_resumable, trl_args
from x1.training.config import SFTTrainConfig
from x1.training.model_io import EOIS, Policy, policy_from_config


def field_of(record: Any, name: str, default: Any = None) -> Any:
    """Read a field from a dataclass/pydantic record or a plain dict alike."""
    if isinstance(record, dict):
        return record.get(name, default)
    return getattr(record, name, default)


def format_steps(text: str, eois: bool, delimiter: str = "\n\n") -> str:
    """Put a completion in the policy's step format.

    With ``eois``: stripped steps joined by ``<eois>`` (text split at ``<eois>`` if it has any,
    else at ``delimiter``). Without: ``<eois>`` markers become ``delimiter``; other text is
    left exactly as it is. So records written with or without ``step_format`` both work.
    """
    if not eois and EOIS not in text:
        return text
    pieces = text.split(EOIS) if EOIS in text else text.split(delimiter) if delimiter else [text]
    steps = [s.strip() for s in pieces if s.strip()]
    return (EOIS if eois else delimiter).join(steps)


def sft_rows(examples: Iterable[Any], cfg: SFTTrainConfig) -> list[dict[str, Any]]:
    """``SFTExample``s (or dicts with the same fields) → TRL conversational prompt-completion rows.

    Rows already in a TRL shape (``prompt``/``completion``, ``messages`` or ``text``, as
    ``x1.data.formats`` reads them) pass through unchanged: TRL renders and masks them itself.
    """
    rows = []
    for ex in examples:
        if isinstance(ex, dict) and "prompt_messages" not in ex:
            rows.append(ex)
            continue
        messages = [{"role": m["role"], "content": m["content"]} for m in field_of(ex, "prompt_messages")]
        completion = format_steps(field_of(ex, "completion"), cfg.eois_token, cfg.step_delimiter)
        rows.append({"prompt": messages, "completion": [{"role": "assistant", "content": completion}]})
    if not rows:
        raise ValueError("SFT got no examples")
    return rows


def build_sft_trainer(cfg: SFTTrainConfig, examples: Iterable[Any], policy: Policy | None = None) -> tuple[Any, Policy]:
    """The configured TRL trainer (not yet run), so that tests and callers can inspect its dataset."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    policy = policy or policy_from_config(cfg)
    args = SFTConfig(
        **trl_args(cfg),
        max_length=cfg.max_length,
        completion_only_loss=cfg.completion_only_loss,
        packing=False,
        dataset_num_proc=None,
    )
    trainer = SFTTrainer(
        model=policy.model,
        args=args,
        train_dataset=Dataset.from_list(sft_rows(examples, cfg)),
        processing_class=policy.tokenizer,
    )
    return trainer, policy


def train_sft(cfg: SFTTrainConfig, examples: Iterable[Any], policy: Policy | None = None) -> TrainResult:
    """Fine-tune the policy on the completions; saves to ``cfg.output_dir`` when ``cfg.save``."""
    trainer, policy = build_sft_trainer(cfg, examples, policy)
    train_resumable(trainer, cfg)
    policy.model = trainer.model
    if cfg.save:
        policy.model = save_final_policy(policy, cfg)
    return result_from_trainer(trainer, cfg.output_dir)
