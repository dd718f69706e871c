"""Settings that are honoured: a given temperature wins over the strategy's default, every command has the
same defaults, the help lists every strategy, and --threads reaches the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import trace_record
from typer.testing import CliRunner

from x1.cli import app
from x1.cli.options import build_config
from x1.config import DEFAULT_MODEL, DEFAULT_STRATEGY, ConfigError, RunConfig
from x1.models.registry import ModelSpec
from x1.strategies import STRATEGIES
from x1.training.config import TrainConfig

runner = CliRunner()


def solve(tmp_path: Path, *args: str) -> dict[str, Any]:
    trace = tmp_path / "t.jsonl"
    trace.unlink(missing_ok=True)
    result = runner.invoke(app, ["solve", "What is 2+2?", "-m", "fake", "--trace", str(trace), *args])
    assert result.exit_code == 0, result.output
    return trace_record(trace.read_text().splitlines()[-1])


def test_a_given_temperature_wins_over_the_strategy_default(tmp_path: Path) -> None:
    assert solve(tmp_path, "-s", "cot")["strategy_config"]["temperature"] == 0.0  # cot's own default: greedy
    assert solve(tmp_path, "-s", "cot", "--temperature", "1.5")["strategy_config"]["temperature"] == 1.5
    assert solve(tmp_path, "-s", "mcts", "-p", "iterations=2", "--temperature", "0.3")["strategy_config"]["temperature"] == 0.3
    config = tmp_path / "run.yaml"
    config.write_text("search:\n  strategy: beam\n  temperature: 1.2\n")
    assert solve(tmp_path, "--config", str(config))["strategy_config"]["temperature"] == 1.2
    result = runner.invoke(app, ["solve", "q", "-m", "fake", "-s", "cot", "--temperature", "1.5", "-p", "temperature=0.2"])
    assert result.exit_code == 2 and "disagree" in result.output
    with pytest.raises(ConfigError, match="give one of them"):
        build_config("fake", "cot", ["temperature=0.2"], None, 1.5, None)


def test_solve_eval_and_fit_share_their_defaults(tmp_path: Path) -> None:
    assert solve(tmp_path)["strategy"] == DEFAULT_STRATEGY
    out = tmp_path / "eval"
    result = runner.invoke(app, ["eval", "-t", "samples", "--n", "1", "-m", "fake", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert trace_record((out / "traces.jsonl").read_text().splitlines()[0])["strategy"] == DEFAULT_STRATEGY
    assert RunConfig().model.name == DEFAULT_MODEL == TrainConfig().model


@pytest.mark.parametrize("command", ["solve", "eval", "demo"])
def test_help_lists_every_strategy_and_threads(command: str) -> None:
    text = " ".join(runner.invoke(app, [command, "--help"], env={"COLUMNS": "400"}).output.split())
    assert "--threads" in text
    if command != "demo":
        assert all(name in text for name in STRATEGIES)


def test_threads_reach_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    import x1.pipelines.solve as solve_mod

    seen: dict[str, Any] = {}
    monkeypatch.setattr(solve_mod, "resolve_model", lambda name, model_name=None: ModelSpec("llamacpp", "m.gguf", "m"))
    monkeypatch.setattr(solve_mod, "load_backend", lambda spec, **options: seen.update(options))
    solve_mod.open_policy(build_config("default", "cot", None, None, None, None, threads=3))
    assert seen["n_threads"] == 3
    seen.clear()
    solve_mod.open_policy(build_config("default", "cot", None, None, None, None))
    assert "n_threads" not in seen  # all cores unless asked
    result = runner.invoke(app, ["eval", "-t", "samples", "-m", "fake", "--threads", "0"])
    assert result.exit_code == 2


def test_kv_stream_cells_reach_the_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``model.kv_stream_cells``: one KV stream per slot, n_seq_max x cells in all; absent, one unified cache."""
    import x1.pipelines.solve as solve_mod

    seen: dict[str, Any] = {}
    monkeypatch.setattr(solve_mod, "resolve_model", lambda name, model_name=None: ModelSpec("llamacpp", "m.gguf", "m"))
    monkeypatch.setattr(solve_mod, "load_backend", lambda spec, **options: seen.update(options))
    config = tmp_path / "run.yaml"
    config.write_text("model: {name: default, n_seq_max: 128, kv_stream_cells: 2048}\n")
    solve_mod.open_policy(build_config(None, "cot", None, None, None, config))
    assert seen["kv_streams"] is True and seen["n_ctx"] == 128 * 2048
    seen.clear()
    solve_mod.open_policy(build_config("default", "cot", None, None, None, None))
    assert "kv_streams" not in seen and seen["n_ctx"] == 32768
    config.write_text("model: {kv_stream_cells: 0}\n")
    with pytest.raises(ConfigError, match="kv_stream_cells"):
        build_config(None, "cot", None, None, None, config)


def test_the_rule_survives_a_config_round_trip() -> None:
    """Ray workers and results.json get the config as a dict: an unset temperature must stay unset there."""
    from x1.pipelines.solve import check_search

    again = RunConfig.model_validate(build_config("fake", "mcts", None, None, None, None).model_dump())
    assert check_search(again).temperature == 0.8  # mcts's own, not a default posing as a given value
    given = RunConfig.model_validate(build_config("fake", "mcts", None, None, 0.2, None).model_dump())
    assert check_search(given).temperature == 0.2
