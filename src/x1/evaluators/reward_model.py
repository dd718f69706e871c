"""Reward models on the value model's architecture: outcome (ORM) and process (PRM).

The ORM scores a whole solution, σ(head(h_last)) ∈ [0, 1]; trained Bradley–Terry style, its raw
``last_logits`` are the rewards r(x, y). The PRM scores every step: σ(head(h)) at the last token
of each step. Prompt and steps are tokenized piece by piece and concatenated, so the step-end
positions are exact and training (``encode_steps``) and inference read the same positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from x1.evaluators.aggregate import aggregate_steps
from x1.evaluators.base import EvalItem
from x1.evaluators.kv_memo import KVMemo
from x1.evaluators.value_model import HEAD_CONFIG, HeadedLM, ValueModel, ValueModelEvaluator
from x1.models.base import BackendError


class OutcomeRewardModel(HeadedLM):
    """P(correct | whole solution) = σ(w·h_last + b)."""

    kind: ClassVar[str] = "orm"

    def activation(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)


class ProcessRewardModel(HeadedLM):
    """P(step is on a path to success) = σ(w·h + b) at each step's last token."""

    kind: ClassVar[str] = "prm"

    def __init__(self, *args: Any, step_separator: str = "\n\n", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.step_separator = step_separator  # each step is read as step.strip() + step_separator

    def _extra_config(self) -> dict[str, Any]:
        return {"step_separator": self.step_separator}

    def activation(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """Per-position step scores [batch, length]; read them at ``encode_steps``' end positions."""
        return self.activation(self.token_logits(input_ids, attention_mask))

    def encode_steps(self, prompt: str, steps: list[str]) -> tuple[list[int], list[int]]:
        """(token ids, index of each step's last token); left-truncated to ``max_length``.

        Steps are normalised to ``step.strip() + step_separator``, so raw thought texts (which keep
        their delimiter), ``ProcessLabel`` steps and stripped EOIS-split steps all read the same.
        A step whose end was cut away reads the first position left (the earliest context there is).
        """
        ids = self.encode(prompt) if prompt else []
        ends = []
        for step in steps:
            piece = list(self.tokenizer(step.strip() + self.step_separator, add_special_tokens=not ids)["input_ids"])
            ids += piece or [self.pad_id]
            ends.append(len(ids) - 1)
        ids, cut = self._truncate(ids)
        return ids, [max(0, e - cut) for e in ends]

    def predict_steps(self, prompts: list[str], steps: list[list[str]], batch_size: int | None = None) -> list[list[float]]:
        """A score in [0, 1] per step of each (prompt, steps) pair, batched and padding-independent."""
        if len(prompts) != len(steps):
            raise ValueError(f"predict_steps got {len(prompts)} prompts but {len(steps)} step lists")
        encoded = [self.encode_steps(p, s) for p, s in zip(prompts, steps, strict=True)]
        seqs = [ids or [self.pad_id] for ids, _ in encoded]
        logits = self.position_logits(seqs, batch_size)
        return [[float(v) for v in self.activation(row[ends]).tolist()] for row, (_, ends) in zip(logits, encoded, strict=True)]


@dataclass
class PRMEvaluator:
    """A process reward model as an Evaluator: step scores along the path, aggregated to [0, 1]."""

    model: ProcessRewardModel
    name: str = "prm"
    aggregate: str = "min"
    batch_size: int | None = None
    model_calls: int = 0

    @property
    def model_tokens(self) -> int:
        return self.model.positions_run

    def __post_init__(self) -> None:
        aggregate_steps([], self.aggregate)  # fail at construction on an unknown aggregation

    def evaluate(self, items: list[EvalItem]) -> list[float]:
        return [aggregate_steps(s, self.aggregate) for s in self.step_scores(items)]

    def step_scores(self, items: list[EvalItem]) -> list[list[float]]:
        """Each item's score per step, before aggregation: kept, they give every other aggregation without the model."""
        if not items:
            return []
        self.model_calls += 1
        return self.model.predict_steps([item.prefix for item in items], [item.steps for item in items], self.batch_size)

    def score_paths(self, prompts: list[str], steps: list[list[str]]) -> list[float]:
        """One aggregated score per (prompt, steps) path: what ``evaluate`` computes, and what ``x1 serve value`` answers."""
        return [aggregate_steps(s, self.aggregate) for s in self.model.predict_steps(prompts, steps, self.batch_size)]


@dataclass
class OutcomeRewardEvaluator(ValueModelEvaluator):
    """An outcome reward model as an Evaluator: σ at the last token of prefix + path."""

    name: str = "orm"


def load_evaluator(directory: str | Path, name: str | None = None, **options: Any) -> Any:
    """The right Evaluator for a folder written by ``save()``: value, orm or prm (by its head config)."""
    import json

    config_path = Path(directory) / HEAD_CONFIG
    if not config_path.exists():
        raise BackendError(f"{directory} holds no {HEAD_CONFIG}; fix: point at a folder written by a value or reward model's save()")
    kind = json.loads(config_path.read_text()).get("kind")
    aggregate = options.pop("aggregate", "min")
    cache_mb = options.pop("cache_mb", None)
    if kind == "value":
        evaluator: Any = ValueModelEvaluator(ValueModel.load(directory, **options), name=name or "value")
    elif kind == "orm":
        evaluator = OutcomeRewardEvaluator(OutcomeRewardModel.load(directory, **options), name=name or "orm")
    elif kind == "prm":
        evaluator = PRMEvaluator(ProcessRewardModel.load(directory, **options), name=name or "prm", aggregate=aggregate)
    else:
        raise BackendError(f"{directory}: unknown model kind {kind!r} (expected value, orm or prm)")
    if cache_mb is not None:
        evaluator.model.kv_memo = KVMemo(int(cache_mb) << 20) if int(cache_mb) else None
    return evaluator
