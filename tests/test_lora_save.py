"""LoRA runs save the adapter (megabytes), and a merged copy in the base model's dtype only when asked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import one_torch_thread, save_tiny_llama
from typer.testing import CliRunner

from x1.cli import app
from x1.data import SFTExample, write_jsonl

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    for name in ("torch", "transformers", "trl", "peft"):
        pytest.importorskip(name)
    with one_torch_thread():
        yield save_tiny_llama(tmp_path_factory.mktemp("tiny"))


def fit_sft(tiny: str, tmp_path: Path, out: Path, *flags: str) -> None:
    data = tmp_path / "sft.jsonl"
    write_jsonl(data, [SFTExample([{"role": "user", "content": f"{a}+{a}?"}], str(2 * a), f"t{a}", "answer_path") for a in range(4)])
    result = runner.invoke(app, ["fit", "sft", "--data", str(data), "--model", tiny, "--out", str(out), "--max-steps", "1",
                                 "--batch-size", "2", "--device", "cpu", *flags])  # fmt: skip
    assert result.exit_code == 0, result.output


def test_lora_saves_the_adapter_alone_unless_merge_is_asked(tiny: str, tmp_path: Path) -> None:
    fit_sft(tiny, tmp_path, tmp_path / "adapter", "--lora")
    files = {p.name for p in (tmp_path / "adapter").iterdir()}
    assert "adapter_model.safetensors" in files and "model.safetensors" not in files
    fit_sft(tiny, tmp_path, tmp_path / "merged", "--lora", "--merge")
    assert (tmp_path / "merged" / "model.safetensors").exists() and (tmp_path / "merged" / "adapter" / "adapter_model.safetensors").exists()
    assert json.loads((tmp_path / "merged" / "config.json").read_text())["dtype"] == "float32"  # the tiny base's own
    result = runner.invoke(app, ["fit", "sft", "--data", str(tmp_path / "sft.jsonl"), "--merge", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "--lora" in result.output


def test_the_merged_copy_is_written_in_the_given_dtype_and_the_model_in_memory_is_kept(tiny: str, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from x1.training.config import LoRAConfig
    from x1.training.model_io import base_dtype, load_policy, save_policy

    policy = load_policy(tiny, lora=LoRAConfig(enabled=True, r=4), device="cpu")
    merged = save_policy(policy.model, policy.tokenizer, tmp_path / "run", merge=True, base=policy.base, dtype=torch.bfloat16)
    assert next(merged.parameters()).dtype == torch.float32
    back = AutoModelForCausalLM.from_pretrained(str(tmp_path / "run"))
    assert next(back.parameters()).dtype == torch.bfloat16
    assert (tmp_path / "run" / "model.safetensors").stat().st_size < 0.6 * (Path(tiny) / "model.safetensors").stat().st_size
    assert base_dtype(tiny) == torch.float32 and base_dtype(tiny, "model.Q4_1.gguf") == torch.bfloat16
