"""Small builders shared by the tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from x1.evaluators.base import EvalItem
from x1.tasks.answers import numbers_equal
from x1.tasks.base import StepFormat, Task, Verification


def number_task(task_id: str = "t0", gold: str = "2", question: str = "q", delimiter: str = "\n\n", max_steps: int = 12) -> Task:
    return Task(
        id=task_id,
        question=question,
        gold=gold,
        verifier=lambda a, g: Verification(1.0 if numbers_equal(a, g) else 0.0, ""),
        step_format=StepFormat(delimiter=delimiter, max_steps=max_steps),
    )


@dataclass
class ScriptedEvaluator:
    """Scores a thought by its stripped text; unknown texts get ``default``."""

    scores: dict[str, float]
    name: str = "scripted"
    default: float = 0.5
    model_calls: int = 0

    def evaluate(self, items: list[EvalItem]) -> list[float]:
        self.model_calls += 1
        return [self.scores.get(item.thought.text.strip(), self.default) for item in items]


def smollm2_tokenizer_dir() -> Path:
    """SmolLM2's tokenizer as a folder, read from the bundled GGUF once and cached (the GGUF read takes seconds).

    Skips the calling test when the bundled model is not installed.
    """
    import pytest

    from x1.models.registry import BackendError, cache_dir, smollm2_path

    try:
        gguf = smollm2_path()
    except BackendError as err:
        pytest.skip(str(err))
    folder = cache_dir().parent / "test-assets" / f"smollm2-tokenizer-{gguf.stat().st_size}"
    if not (folder / "tokenizer.json").exists():
        from x1.training.model_io import load_tokenizer

        load_tokenizer(gguf.parent, gguf.name).save_pretrained(str(folder))
    return folder


def save_tiny_llama(folder: Path, max_positions: int = 512) -> str:
    """A 2-layer, 32-wide random Llama with SmolLM2's vocabulary and tied embeddings, saved as a transformers folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from x1.training.model_io import load_tokenizer

    tok = load_tokenizer(smollm2_tokenizer_dir())
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=64,
        vocab_size=len(tok),
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return str(folder)


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Two threads on a shared two-core machine run several times slower than one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def trace_record(line: str) -> dict:
    """One trace line as readers see it (JSON fields parsed, sentinels back to None), like ``read_traces``."""
    import json

    from x1.trace import decode_record

    return decode_record(json.loads(line))
