"""Progress feedback and report_to: step lines with an ETA, trackers, TRL's arguments, the fit flag."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from helpers import one_torch_thread, save_tiny_llama
from typer.testing import CliRunner

from x1.cli import app
from x1.training.config import TrainConfig, ValueTrainConfig
from x1.training.progress import StepLog, Tracker, eta_text

runner = CliRunner()


def test_eta_text():
    assert [eta_text(s) for s in (0, 44.6, 185, 7620)] == ["0s", "45s", "3m05s", "2h07m"]


def test_step_log_prints_every_logging_steps_with_an_eta(tmp_path):
    out = io.StringIO()
    log = StepLog(TrainConfig(output_dir=str(tmp_path), logging_steps=2), "value", total=5, stream=out)
    for k in range(5):
        log.step(loss=1.0 / (k + 1))
    log.close()
    lines = out.getvalue().splitlines()
    assert [line.split(" · ")[0] for line in lines] == ["value step 2/5", "value step 4/5", "value step 5/5"]
    assert "loss 0.5" in lines[0] and "ETA" in lines[0] and "s/step" in lines[0]


def test_step_log_is_quiet_without_progress(tmp_path):
    out = io.StringIO()
    log = StepLog(TrainConfig(output_dir=str(tmp_path), progress=False), "ppo", total=None, stream=out)
    log.step(loss=1.0)
    assert out.getvalue() == "" and log.steps == 1


def test_unknown_or_missing_tracker_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="choose one of none, tensorboard, wandb, trackio"):
        Tracker("mlflow", str(tmp_path), "run", {})
    try:
        import wandb  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="pip install wandb"):
            Tracker("wandb", str(tmp_path), "run", {})


def test_tensorboard_tracker_writes_events(tmp_path):
    pytest.importorskip("tensorboard")
    log = StepLog(TrainConfig(output_dir=str(tmp_path), report_to="tensorboard"), "prm", total=3, stream=io.StringIO())
    for k in range(3):
        log.step(loss=float(k))
    log.close()
    assert list((tmp_path / "runs" / "prm").glob("events.out.tfevents.*"))


def test_trl_arguments_follow_report_to_and_progress(tmp_path):
    pytest.importorskip("transformers")
    from x1.training._common import trl_args

    default = trl_args(TrainConfig(output_dir=str(tmp_path), device="cpu"))
    assert default["report_to"] == "none" and default["disable_tqdm"] is False
    chosen = trl_args(TrainConfig(output_dir=str(tmp_path), device="cpu", report_to="tensorboard", progress=False))
    assert chosen["report_to"] == "tensorboard" and chosen["disable_tqdm"] is True


def test_fit_rejects_an_unknown_report_to_as_one_line(tmp_path):
    result = runner.invoke(app, ["fit", "value", "--data", str(tmp_path / "v.jsonl"), "--report-to", "mlflow"])
    assert result.exit_code == 2
    assert "--report-to" in result.output and len(result.output.strip().splitlines()) == 1


def test_value_fit_reports_the_loss_of_every_step(tmp_path, capsys):
    pytest.importorskip("torch")
    from x1.training.value import train_value

    with one_torch_thread():
        tiny = save_tiny_llama(tmp_path / "tiny")
        targets = [{"prompt": "Q\n", "partial_solution": f"step {i}", "target": 1.0 if i % 2 else -1.0} for i in range(4)]
        cfg = ValueTrainConfig(model=tiny, output_dir=str(tmp_path / "out"), batch_size=2, max_steps=3, save=False, report_to="tensorboard")
        if not _has("tensorboard"):
            cfg.report_to = "none"
        result = train_value(cfg, targets)
    err = capsys.readouterr().err
    for k, loss in enumerate(result.losses, 1):
        assert f"value step {k}/3 · loss {loss:.4g}" in err
    if cfg.report_to == "tensorboard":
        assert list(Path(cfg.output_dir, "runs", "value").glob("events.out.tfevents.*"))


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
