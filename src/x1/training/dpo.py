"""Direct preference optimisation on (prompt, chosen, rejected) — the policy update of phase 2.

    L = −log σ(β·[log π_θ(y_w|x)/π_ref(y_w|x) − log π_θ(y_l|x)/π_ref(y_l|x)])

A thin layer over TRL's ``DPOTrainer``. At step level (the blueprint's use), ``prompt`` is the
question plus the steps so far and ``chosen``/``rejected`` are sibling steps with higher and
lower q. The reference π_ref is the policy as it was at the start: with LoRA it is implicit
(the base with the adapter switched off, no second copy in memory); without LoRA it is a frozen
deep copy — TRL would otherwise reload it from the model's path, which fails for GGUF sources
and would miss an added ``<eois>`` row.

TRL (1.16, ``DPOTrainer._prepare_dataset``) appends EOS to every plain-text ``chosen`` and
``rejected``, and the EOS token then enters both log-probabilities of the margin. For a step-level
pair of intermediate steps that teaches the policy to end the solution after the step (raising
p(EOS) on the chosen side); TRL has no option to leave it out. So after TRL tokenises the rows,
the trailing EOS is dropped from each side whose pair says it is not final (``chosen_final`` /
``rejected_final``; rows without them count as final, TRL's behaviour). With ``chat_template``
the rows are assistant turns and end with the template's end-of-turn tokens, which this does not
touch (kept: use plain-text rows for step-level pairs).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from x1.training._common import TrainResult, result_from_trainer, save_final_policy, train_resumable, trl_args
from x1.training.config import DPOTrainConfig
from x1.training.model_io import Policy, is_peft, policy_from_config
from x1.training.sft import field_of


def dpo_rows(pairs: Iterable[Any], cfg: DPOTrainConfig) -> list[dict[str, Any]]:
    """``PreferencePair``s (or dicts with the same fields) → TRL preference rows."""
    rows = []
    for pair in pairs:
        prompt, chosen, rejected = field_of(pair, "prompt"), field_of(pair, "chosen"), field_of(pair, "rejected")
        if isinstance(prompt, list):  # a conversational TRL row: TRL applies the chat template itself
            rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
        elif cfg.chat_template:
            rows.append(
                {
                    "prompt": [{"role": "user", "content": prompt}],
                    "chosen": [{"role": "assistant", "content": chosen}],
                    "rejected": [{"role": "assistant", "content": rejected}],
                }
            )
        else:
            rows.append(
                {
                    "prompt": prompt,
                    "chosen": chosen,
                    "rejected": rejected,
                    "chosen_final": bool(field_of(pair, "chosen_final", True)),
                    "rejected_final": bool(field_of(pair, "rejected_final", True)),
                }
            )
    if not rows:
        raise ValueError("DPO got no preference pairs")
    return rows


def build_dpo_trainer(cfg: DPOTrainConfig, pairs: Iterable[Any], policy: Policy | None = None) -> tuple[Any, Policy]:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    policy = policy or policy_from_config(cfg)
    ref_model = None
    if not is_peft(policy.model):
        ref_model = copy.deepcopy(policy.model).eval()
        ref_model.requires_grad_(False)
    args = DPOConfig(
        **trl_args(cfg),
        beta=cfg.beta,
        loss_type=[cfg.loss_type],
        max_length=cfg.max_length,
        dataset_num_proc=None,
    )
    trainer = DPOTrainer(
        model=policy.model,
        ref_model=ref_model,
        args=args,
        train_dataset=Dataset.from_list(dpo_rows(pairs, cfg)),
        processing_class=policy.tokenizer,
    )
    if not cfg.chat_template:
        trainer.train_dataset = trainer.train_dataset.map(drop_intermediate_eos, fn_kwargs={"eos_id": policy.tokenizer.eos_token_id})
    return trainer, policy


def drop_intermediate_eos(row: dict[str, Any], eos_id: int) -> dict[str, Any]:
    """A tokenised TRL row without the EOS TRL appended to a side that is not a final step."""
    for side in ("chosen", "rejected"):
        ids = row[f"{side}_ids"]
        if not row[f"{side}_final"] and ids and ids[-1] == eos_id:
            row[f"{side}_ids"] = ids[:-1]
    return row


def train_dpo(cfg: DPOTrainConfig, pairs: Iterable[Any], policy: Policy | None = None) -> TrainResult:
    """Run DPO; the result's metrics carry TRL's reward margins and accuracies per step."""
    trainer, policy = build_dpo_trainer(cfg, pairs, policy)
    train_resumable(trainer, cfg)
    policy.model = trainer.model
    if cfg.save:
        policy.model = save_final_policy(policy, cfg)
    return result_from_trainer(trainer, cfg.output_dir, ("rewards/margins", "rewards/accuracies"))
