"""Crash-safe `x1 fit`: a fit stopped mid-run resumes from its newest checkpoint and ends with the weights of an
uninterrupted run; a different run in the same --out is refused; a final save cut by a kill never looks complete.

The stop is an exception injected right after step 3 (checkpoints every 2 steps, so step 3 is lost and redone);
benchmarks/faults.py does the same with kill -9 at random moments. Tiny random Llama, 4 steps, one thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import one_torch_thread, save_tiny_llama
from typer.testing import CliRunner

from x1.cli import app
from x1.data import SFTExample, ValueTarget, write_jsonl

runner = CliRunner()


class Stop(RuntimeError):
    """The injected crash."""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Any:
    pytest.importorskip("torch")
    for name in ("transformers", "trl", "datasets", "safetensors"):
        pytest.importorskip(name)
    with one_torch_thread():
        yield save_tiny_llama(tmp_path_factory.mktemp("tiny"))


def sft_data(path: Path, n: int = 4) -> Path:
    rows = [SFTExample([{"role": "user", "content": f"What is {a}+{a}?"}], f"{a}+{a}<eois>The answer is: {2 * a}", f"t{a}", "p")
            for a in range(1, n + 1)]  # fmt: skip
    write_jsonl(path, rows)
    return path


def value_data(path: Path) -> Path:
    write_jsonl(path, [ValueTarget("Q: 2+2?\n", f"2+2={k}", 1.0 if k == 4 else -1.0, "a") for k in (3, 4, 5, 6, 7)])
    return path


def fit(*args: str) -> Any:
    return runner.invoke(app, ["fit", *args])


def weights(folder: Path) -> dict[str, Any]:
    """Every tensor of every safetensors file of a saved model folder (top level), by file and name."""
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    assert files, f"no weights in {folder}"
    return {f"{f.name}:{k}": v for f in files for k, v in load_file(str(f)).items()}


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert wa[key].equal(wb[key]), f"{key} differs"  # bitwise: same seed, same batches, same RNG on one CPU thread


def test_sft_stopped_after_step_3_resumes_from_checkpoint_2_and_ends_equal(
    tiny: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import TrainerCallback

    import x1.training.sft as sft

    data = sft_data(tmp_path / "sft.jsonl")
    args = ["--data", str(data), "--model", tiny, "--batch-size", "2", "--max-steps", "4", "--save-steps", "2",
            "--lr", "1e-3", "--device", "cpu"]  # fmt: skip
    whole = fit("sft", *args, "--out", str(tmp_path / "whole"))
    assert whole.exit_code == 0, whole.output

    ran: list[int] = []

    class StopAfter3(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            ran.append(state.global_step)
            if state.global_step == 3 and len(ran) == 3:
                raise Stop("injected crash after step 3")

    original = sft.train_resumable

    def crashing(trainer: Any, cfg: Any) -> None:
        trainer.add_callback(StopAfter3())
        original(trainer, cfg)

    out = tmp_path / "cut"
    monkeypatch.setattr(sft, "train_resumable", crashing)
    cut = fit("sft", *args, "--out", str(out))
    assert isinstance(cut.exception, Stop)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    assert not (out / "config.json").exists()  # no final model yet
    resumed = fit("sft", *args, "--out", str(out))
    assert resumed.exit_code == 0, resumed.output
    assert ran == [1, 2, 3, 3, 4]  # the resumed run started after checkpoint-2: step 3 again, then 4
    assert_same_weights(tmp_path / "whole", out)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-4"] and (out / "x1_fit.json").is_file()
    again = fit("sft", *args, "--out", str(out))  # a finished fit run again resumes at its end: nothing to train, same model
    assert again.exit_code == 0, again.output
    assert_same_weights(tmp_path / "whole", out)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_value_stopped_after_step_3_resumes_and_ends_equal(
    tiny: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lora: bool
) -> None:
    from x1.training.checkpoint import LOOP_STATE, LoopCheckpoints

    data = value_data(tmp_path / "values.jsonl")  # 5 rows, batch 2: 3 batches an epoch, so step 4 opens epoch 2
    args = ["--data", str(data), "--model", tiny, "--batch-size", "2", "--max-steps", "5", "--save-steps", "2",
            "--lr", "1e-3", "--device", "cpu", *(["--lora"] if lora else [])]  # fmt: skip
    whole = fit("value", *args, "--out", str(tmp_path / "whole"))
    assert whole.exit_code == 0, whole.output

    original = LoopCheckpoints.maybe_save
    ran: list[int] = []

    def crashing(self: LoopCheckpoints, step: int, extra: dict[str, Any]) -> None:
        ran.append(step)
        original(self, step, extra)
        if ran == [1, 2, 3]:
            raise Stop("injected crash after step 3")

    out = tmp_path / "cut"
    monkeypatch.setattr(LoopCheckpoints, "maybe_save", crashing)
    cut = fit("value", *args, "--out", str(out))
    assert isinstance(cut.exception, Stop)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    if lora:  # the checkpoint holds the adapter, the head and the optimiser, not the frozen base
        import torch

        saved = torch.load(out / "checkpoint-2" / LOOP_STATE, weights_only=False)["modules"]["model"]
        assert saved and all("lora_" in name or name.startswith("head.") for name in saved)
    resumed = fit("value", *args, "--out", str(out))
    assert resumed.exit_code == 0, resumed.output
    assert ran == [1, 2, 3, 3, 4, 5]  # resumed after checkpoint-2
    assert_same_weights(tmp_path / "whole", out)
    # the table counts every step, the ones before the checkpoint included
    assert "│ 5 " in resumed.output


def test_a_changed_run_in_the_same_out_is_refused(tiny: str, tmp_path: Path) -> None:
    data, out = value_data(tmp_path / "values.jsonl"), tmp_path / "out"
    args = ["--model", tiny, "--batch-size", "2", "--max-steps", "2", "--device", "cpu", "--out", str(out)]
    assert fit("value", "--data", str(data), *args, "--lr", "1e-3").exit_code == 0
    changed = fit("value", "--data", str(data), *args, "--lr", "2e-3")
    assert changed.exit_code == 2
    assert "learning_rate=0.001, not 0.002" in changed.output and "--lr" in changed.output and "another --out" in changed.output
    other = tmp_path / "other.jsonl"
    write_jsonl(other, [ValueTarget("Q: 1+1?\n", "1+1=2", 1.0, "b")])
    refused = fit("value", "--data", str(other), *args, "--lr", "1e-3")
    assert refused.exit_code == 2 and "data_sha256" in refused.output and "--data" in refused.output
    again = fit("value", "--data", str(data), *args, "--lr", "1e-3", "--save-steps", "1")  # save cadence is not identity
    assert again.exit_code == 0, again.output


def test_a_final_save_cut_before_it_was_whole_is_dropped_and_one_cut_after_is_finished(tmp_path: Path) -> None:
    from x1.training.checkpoint import READY, final_folder, recover_output

    out = tmp_path / "run"
    (out / "checkpoint-2").mkdir(parents=True)
    (out / "x1_fit.json").write_text("{}")
    staging = tmp_path / ".run.x1-final"
    staging.mkdir()
    (staging / "config.json").write_text("{half")  # killed while saving: no READY marker
    recover_output(out)
    assert not staging.exists() and not (out / "config.json").exists() and (out / "checkpoint-2").is_dir()

    staging.mkdir()
    (staging / "config.json").write_text("{}")
    (staging / READY).write_text("ok")
    (staging / "x1_fit.json").write_text("{}")  # killed mid-commit: the identity was moved, the checkpoint not yet
    (out / "x1_fit.json").unlink()
    recover_output(out)
    assert not staging.exists() and sorted(p.name for p in out.iterdir()) == ["checkpoint-2", "config.json", "x1_fit.json"]

    with pytest.raises(Stop), final_folder(out) as folder:  # an error during the save leaves the old folder as it was
        (folder / "model.safetensors").write_text("half")
        raise Stop("killed")
    recover_output(out)
    assert not (out / "model.safetensors").exists() and (out / "config.json").exists()


def test_a_bad_save_steps_is_a_one_line_error_before_any_model_loads(tmp_path: Path) -> None:
    data = sft_data(tmp_path / "sft.jsonl")
    for value, says in (("2.5", "neither a whole number"), ("0", "greater than 0")):
        result = fit("sft", "--data", str(data), "--save-steps", value, "--out", str(tmp_path / "out"))
        assert result.exit_code == 2 and "--save-steps" in result.output and says in result.output
        assert not (tmp_path / "out").exists()


def test_ppo_stopped_after_iteration_2_resumes_and_ends_equal(tiny: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On-policy PPO: sampling, value head, optimizer and RNG all come back from the checkpoint (Python API)."""
    from x1.tasks.base import Task, Verification
    from x1.training.checkpoint import LoopCheckpoints
    from x1.training.config import PPOTrainConfig
    from x1.training.ppo import train_ppo

    tasks = [Task(id=f"t{i}", question=f"Write something ({i}).", gold=None, system=None, extractor=lambda text: text,
                  verifier=lambda answer, gold: Verification(1.0 if len(answer) % 2 == 0 else 0.0)) for i in range(3)]  # fmt: skip

    def cfg(out: str) -> PPOTrainConfig:
        return PPOTrainConfig(model=tiny, output_dir=str(tmp_path / out), learning_rate=3e-3, lr_scheduler="constant", seed=0,
                              iterations=3, prompts_per_iteration=2, max_new_tokens=6, ppo_epochs=2, device="cpu",
                              save_steps=1, progress=False)  # fmt: skip

    whole = train_ppo(cfg("whole"), tasks)
    original = LoopCheckpoints.maybe_save

    def crashing(self: LoopCheckpoints, step: int, extra: dict[str, Any]) -> None:
        original(self, step, extra)
        if step == 2:
            raise Stop("injected crash after iteration 2")

    monkeypatch.setattr(LoopCheckpoints, "maybe_save", crashing)
    with pytest.raises(Stop):
        train_ppo(cfg("cut"), tasks)
    ran: list[int] = []

    def recording(self: LoopCheckpoints, step: int, extra: dict[str, Any]) -> None:
        ran.append(step)
        original(self, step, extra)

    monkeypatch.setattr(LoopCheckpoints, "maybe_save", recording)
    resumed = train_ppo(cfg("cut"), tasks)
    assert ran == [3]  # only the third iteration ran again
    assert resumed.losses == whole.losses and resumed.metrics == whole.metrics  # iteration 1-2's losses come from the checkpoint
    assert_same_weights(tmp_path / "whole", tmp_path / "cut")  # the policy and ppo_value_head.safetensors
