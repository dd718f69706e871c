"""Rejection sampling: sample n solutions per task, keep the verified ones, fine-tune on them.

The cheapest policy improvement in the blueprint (and the way to keep training data close to
the model's own distribution): the samples come from the policy being trained, the filter is
the task's verifier, the update is ``train_sft``. ``sample_fn`` is any callable that returns n
completions per task — x1's engine (a search strategy) or plain sampling from a backend
(``backend_sampler``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from x1.tasks.base import Task
from x1.training._common import TrainResult
from x1.training.config import RejectionSamplingConfig
from x1.training.model_io import EOIS
from x1.training.sft import train_sft

SampleFn = Callable[[Sequence[Task], int], list[list[str]]]  # tasks, n → n completions per task


@dataclass
class RejectionRound:
    """What one round sampled, kept and trained; ``result`` is None when nothing passed the verifier."""

    examples: list[Any]
    sampled: int
    accepted: int
    accepted_per_task: dict[str, int] = field(default_factory=dict)
    result: TrainResult | None = None

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.sampled if self.sampled else 0.0

    @property
    def policy_path(self) -> str | None:
        return self.result.output_dir if self.result else None


def _example(messages: list[dict[str, str]], completion: str, task_id: str) -> Any:
    try:
        from x1.data import SFTExample
    except ImportError:  # pragma: no cover - the sibling package is normally present
        return {"prompt_messages": messages, "completion": completion, "task_id": task_id, "source": "rejection_sampling"}
    return SFTExample(messages, completion, task_id, "rejection_sampling")


def select_verified(tasks: Sequence[Task], completions: Sequence[Sequence[str]], cfg: RejectionSamplingConfig) -> RejectionRound:
    """Keep completions whose verifier score reaches ``cfg.min_score`` (deduped, capped per task)."""
    if len(completions) != len(tasks):
        raise ValueError(f"sample_fn returned completions for {len(completions)} tasks, expected {len(tasks)}")
    examples: list[Any] = []
    per_task: dict[str, int] = {}
    sampled = 0
    for task, outs in zip(tasks, completions, strict=True):
        seen: set[str] = set()
        kept = 0
        for text in outs:
            sampled += 1
            _, verdict = task.check_solution(text.replace(EOIS, cfg.step_delimiter or "\n\n"))
            if verdict.score < cfg.min_score - 1e-9 or not text.strip():
                continue
            key = text.strip()
            if cfg.dedupe and key in seen:
                continue
            if cfg.max_per_task is not None and kept >= cfg.max_per_task:
                break
            seen.add(key)
            kept += 1
            examples.append(_example(task.messages(), text, task.id))
        per_task[task.id] = kept
    return RejectionRound(examples, sampled, len(examples), per_task)


def rejection_sampling_round(
    policy_path: str | Path,
    tasks: Sequence[Task],
    sample_fn: SampleFn,
    n: int | None = None,
    cfg: RejectionSamplingConfig | None = None,
    output_dir: str | Path | None = None,
) -> RejectionRound:
    """Sample ``n`` per task with ``sample_fn``, keep verified samples, SFT ``policy_path`` on them.

    The fine-tuned policy goes to ``output_dir`` (default ``cfg.output_dir``); chain rounds by
    passing ``round.policy_path`` (and a sampler over that policy) to the next call.
    """
    cfg = (cfg or RejectionSamplingConfig()).model_copy(
        update={"model": str(policy_path), **({"output_dir": str(output_dir)} if output_dir else {})}
    )
    count = n or cfg.n
    completions = sample_fn(tasks, count)
    round_ = select_verified(tasks, completions, cfg)
    if round_.examples:
        round_.result = train_sft(cfg, round_.examples)
    return round_


def backend_sampler(backend: Any, max_tokens: int = 512, temperature: float = 0.8, top_p: float = 1.0, seed: int | None = 0) -> SampleFn:
    """A ``SampleFn`` over any x1 backend: n plain samples of each task's chat prompt."""
    from x1.models.base import GenerationRequest

    def sample_fn(tasks: Sequence[Task], n: int) -> list[list[str]]:
        options = {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p, "seed": seed}
        requests = [GenerationRequest(backend.format_chat(t.messages()), n=n, **options) for t in tasks]
        return [[c.text for c in outs] for outs in backend.generate(requests)]

    return sample_fn
