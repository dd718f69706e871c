"""`x1 fit` as a user runs it: the JSONL `x1 data` writes goes in, a model folder x1 can load comes out.

Trainers run a couple of steps on a tiny random Llama (SmolLM2's tokenizer, cached like
test_training's); the error cases stop before any model loads, so they cost nothing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import one_torch_thread, save_tiny_llama
from typer.testing import CliRunner

from x1.cli import app
from x1.data import PreferencePair, SFTExample, ValueTarget, write_jsonl

runner = CliRunner()


# -- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def torch():  # type: ignore[no-untyped-def]
    """The train extra, one thread."""
    torch = pytest.importorskip("torch")
    for name in ("transformers", "trl", "peft", "datasets"):
        pytest.importorskip(name)
    with one_torch_thread():
        yield torch


@pytest.fixture(scope="module")
def tiny(torch, tmp_path_factory: pytest.TempPathFactory) -> str:  # type: ignore[no-untyped-def]
    return save_tiny_llama(tmp_path_factory.mktemp("tiny"))


def sft_file(path: Path) -> Path:
    """Four records as `x1 data sft` writes them (step format: steps joined by <eois>)."""
    rows = [
        SFTExample([{"role": "user", "content": f"What is {a}+{a}?"}], f"{a}+{a}<eois>The answer is: {2 * a}", f"t{a}", "answer_path")
        for a in range(1, 5)
    ]
    write_jsonl(path, rows)
    return path


def fit(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["fit", *args])
    return result.exit_code, result.output


# -- training ---------------------------------------------------------------------------------------
def test_fit_sft_trains_and_writes_a_loadable_policy(tiny: str, tmp_path: Path) -> None:
    from x1.training.model_io import load_policy

    data, out = sft_file(tmp_path / "sft.jsonl"), tmp_path / "sft-out"
    config = tmp_path / "fit.yaml"
    config.write_text("batch_size: 4\nlearning_rate: 1.0e-3\nlr_scheduler: constant\n")
    code, output = fit("sft", "--data", str(data), "--model", tiny, "--out", str(out), "--config", str(config),
                       "--batch-size", "2", "--max-steps", "2", "--device", "cpu")  # fmt: skip
    assert code == 0, output
    assert "first loss" in output and "sft" in output
    policy = load_policy(str(out), device="cpu")
    assert policy.model is not None and (out / "config.json").exists()


def test_fit_value_trains_and_writes_a_loadable_value_model(tiny: str, tmp_path: Path) -> None:
    from x1.evaluators.value_model import ValueModel

    data, out = tmp_path / "values.jsonl", tmp_path / "value-out"
    write_jsonl(data, [ValueTarget("Q: 2+2?\n", f"2+2={k}", 1.0 if k == 4 else -1.0, "a") for k in (3, 4, 5, 6)])
    code, output = fit("value", "--data", str(data), "--model", tiny, "--out", str(out), "--batch-size", "2", "--max-steps", "2",
                       "--lr", "1e-3", "--device", "cpu")  # fmt: skip
    assert code == 0, output
    assert "value" in output
    model = ValueModel.load(out, device="cpu")
    assert len(model.predict(["Q: 2+2?\n2+2=4"])) == 1


# -- errors (no model is loaded) ----------------------------------------------------------------------
def test_a_bad_line_names_the_file_and_line(tmp_path: Path) -> None:
    data = sft_file(tmp_path / "sft.jsonl")
    data.write_text(data.read_text().splitlines()[0] + "\n{oops\n")
    code, output = fit("sft", "--data", str(data), "--model", "smollm2", "--out", str(tmp_path / "o"))
    assert code == 2
    assert f"{data}:2" in output and "x1 data sft" in output
    assert "Traceback" not in output


def test_a_pairs_file_is_refused_by_fit_sft(tmp_path: Path) -> None:
    data = tmp_path / "pairs.jsonl"
    write_jsonl(data, [PreferencePair("Q: 1+1?\n", "2", "3", 1.0, -1.0, "t0")])
    code, output = fit("sft", "--data", str(data), "--model", "smollm2", "--out", str(tmp_path / "o"))
    assert code == 2
    assert f"{data}:1" in output and "x1 data sft" in output and "x1 fit dpo" in output  # what it is, and what reads it


def test_missing_file_and_bad_flag_and_bad_yaml_are_one_line_errors(tmp_path: Path) -> None:
    code, output = fit("value", "--data", str(tmp_path / "nope.jsonl"))
    assert code == 2 and "no such file" in output and "x1 data values" in output
    data = sft_file(tmp_path / "sft.jsonl")
    code, output = fit("sft", "--data", str(data), "--max-steps", "0")
    assert code == 2 and "--max-steps" in output
    config = tmp_path / "bad.yaml"
    config.write_text("learning_rat: 0.1\n")
    code, output = fit("sft", "--data", str(data), "--config", str(config))
    assert code == 2 and "learning_rat" in output and str(config) in output
    code, output = fit("value", "--data", str(data), "--model", "smollm2", "--config", str(tmp_path / "missing.yaml"))
    assert code == 2 and "does not exist" in output


def test_a_missing_train_extra_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import x1.cli.fit_base

    def no_trl(name: str) -> None:
        raise ModuleNotFoundError("No module named 'trl'", name="trl")

    monkeypatch.setattr(x1.cli.fit_base, "import_module", no_trl)
    code, output = fit("sft", "--data", str(sft_file(tmp_path / "sft.jsonl")))
    assert code == 2 and "pip install 'x1[train]'" in output and "trl" in output


def test_the_x1_command_does_not_import_torch() -> None:
    """`x1 --help` must stay fast and work without the train extra: trainers load inside the fit commands."""
    code = "import sys, x1.cli, x1.cli.fit; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_flags_override_the_yaml(tmp_path: Path) -> None:
    from x1.cli.fit_base import build_config
    from x1.training.config import SFTTrainConfig

    config = tmp_path / "fit.yaml"
    config.write_text("batch_size: 8\nlearning_rate: 1.0e-3\nlora: {r: 4}\n")
    cfg = build_config(SFTTrainConfig, config, "sft", lora=True, batch_size=2, max_steps=None)
    assert (cfg.batch_size, cfg.learning_rate, cfg.max_steps) == (2, 1e-3, None)
    assert cfg.lora.enabled and cfg.lora.r == 4 and cfg.output_dir == "runs/fit-sft"
