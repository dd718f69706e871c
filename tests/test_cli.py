"""The `x1` command as a user runs it."""

import re

import pytest
from helpers import trace_record
from typer.testing import CliRunner

from x1.cli import app

runner = CliRunner()


def test_models_and_strategies_and_tasks_list():
    assert "smollm2" in runner.invoke(app, ["models"]).output
    out = runner.invoke(app, ["strategies"]).output
    assert "mcts" in out and "beam" in out
    assert "rg:NAME" in runner.invoke(app, ["tasks"]).output


def test_bad_input_gives_one_line_errors(tmp_path):
    result = runner.invoke(app, ["solve", "1+1?", "--model", "nosuchmodel"])
    assert result.exit_code == 2 and "x1 models" in result.output
    result = runner.invoke(app, ["solve", "1+1?", "--model", "fake", "--strategy", "alphazero"])
    assert result.exit_code == 2 and "choose one of" in result.output
    result = runner.invoke(app, ["solve", "1+1?", "--model", "fake", "--param", "iterations"])
    assert result.exit_code == 2 and "key=value" in result.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "1"}\n{oops\n')
    result = runner.invoke(app, ["eval", "--task", f"jsonl:{bad}", "--model", "fake", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "line 2" in result.output


def test_solve_with_fake_model_writes_a_trace(tmp_path):
    trace = tmp_path / "t.jsonl"
    result = runner.invoke(app, ["solve", "What is 1+1?", "--model", "fake", "--gold", "2", "--trace", str(trace), "-s", "mcts"])
    assert result.exit_code == 0, result.output
    record = trace_record(trace.read_text().splitlines()[0])
    assert record["strategy"] == "mcts" and record["graph"]["schema_version"] == 1


@pytest.mark.model
def test_demo_runs_a_tree_search_on_a_real_model(tmp_path):
    trace = tmp_path / "demo.jsonl"
    result = runner.invoke(app, ["demo", "--model", "smollm2", "--n", "2", "-p", "iterations=2", "--trace", str(trace)])
    assert result.exit_code == 0, result.output
    assert "right" in result.output
    records = [trace_record(line) for line in trace.read_text().splitlines()]
    assert len(records) == 2
    assert all(len(r["graph"]["thoughts"]) > 2 for r in records)  # a tree, not a single chain


def test_eval_max_live_reaches_the_engine_and_zero_is_refused(tmp_path, monkeypatch):
    from x1 import engine as engine_module

    seen: list[int] = []
    original = engine_module.Engine.live_target

    def spy(self):
        seen.append(self.max_live)
        return original(self)

    monkeypatch.setattr(engine_module.Engine, "live_target", spy)
    data = tmp_path / "d.jsonl"
    data.write_text('{"question": "q1", "answer": "1"}\n{"question": "q2", "answer": "2"}\n')
    result = runner.invoke(app, ["eval", "--task", f"jsonl:{data}", "--model", "fake", "-s", "mcts", "--max-live", "3",
                                 "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert seen == [3]
    assert re.search(r"^\[\d\d:\d\d:\d\d\] mcts · jsonl:\S+: 2/2 \(100%\) · \d/2 right · ", result.output, re.M), result.output
    result = runner.invoke(app, ["eval", "--task", f"jsonl:{data}", "--model", "fake", "--max-live", "0", "--out", str(tmp_path / "s")])
    assert result.exit_code == 2 and "max-live" in result.output


def test_doctor_names_the_build_to_switch_to_and_whether_bf16_is_native(monkeypatch: pytest.MonkeyPatch) -> None:
    from x1.models.hf_loading import native_bf16_flags
    from x1.models.llama_cpp import build, check

    monkeypatch.setattr(build, "choose_features", lambda mode: build.Choice(["sse42", "avx", "avx2", "avx512"], {}))
    monkeypatch.setattr(build, "read_build_record", lambda: {"features": ["sse42", "avx", "avx2"]})
    monkeypatch.setattr(build, "unsupported_build_features", lambda: [])
    monkeypatch.setattr(check, "self_check", lambda model: f"llama.cpp self-check ok: {model}")
    monkeypatch.setenv("X1_CPU_FLAGS", "avx,avx2,avx512f")
    native_bf16_flags.cache_clear()  # the flags are read once per process
    out = " ".join(runner.invoke(app, ["doctor"]).output.split())
    assert "this environment's build: sse42 avx avx2" in out and "`scripts/setup.sh` switches" in out
    assert "emulated on this CPU (about 8x slower): keep float32" in out and "self-check ok: smollm2" in out
    monkeypatch.setenv("X1_CPU_FLAGS", "avx,avx2,avx512f,avx512_bf16")
    native_bf16_flags.cache_clear()  # the flags are read once per process
    monkeypatch.setattr(build, "read_build_record", lambda: {"features": ["sse42", "avx", "avx2", "avx512"]})
    out = " ".join(runner.invoke(app, ["doctor"]).output.split())
    assert "native (avx512_bf16)" in out and "switches" not in out
    monkeypatch.undo()
    native_bf16_flags.cache_clear()  # later tests read this CPU's own flags
