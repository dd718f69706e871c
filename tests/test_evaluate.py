"""The evaluation harness: intervals, traces, resume without re-running, clear errors."""

import json

import pytest
from helpers import number_task, trace_record

from x1.config import RunConfig
from x1.models.fake import FakeBackend
from x1.pipelines.evaluate import EvalError, bootstrap_ci, evaluate


def config(strategy="best_of_n", **params):
    cfg = RunConfig()
    cfg.model.name = "fake"
    cfg.search.strategy = strategy
    cfg.search.params = params
    return cfg


def test_bootstrap_interval_brackets_the_mean():
    values = [1.0] * 30 + [0.0] * 70
    lo, hi = bootstrap_ci(values)
    assert lo < 0.3 < hi
    assert lo > 0.18 and hi < 0.42
    assert bootstrap_ci([1.0] * 10) == (1.0, 1.0)
    assert bootstrap_ci([]) == (0.0, 0.0)


def test_eval_writes_traces_and_results(tmp_path):
    tasks = [number_task(f"t{i}", gold=str(i % 4), question=f"q{i}") for i in range(6)]
    result = evaluate(tasks, config(n=3), tmp_path / "run", "scripted", policy=FakeBackend())
    lines = (tmp_path / "run" / "traces.jsonl").read_text().splitlines()
    assert len(lines) == 6 and result.n == 6
    record = trace_record(lines[0])
    assert record["strategy"] == "best_of_n" and "graph" in record and record["compute"]["generated_tokens"] > 0
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["n"] == 6 and saved["correct"] == result.correct
    assert result.ci_low <= result.accuracy <= result.ci_high


def test_resume_runs_only_unfinished_problems(tmp_path):
    tasks = [number_task(f"t{i}", question=f"q{i}") for i in range(6)]
    out = tmp_path / "run"
    evaluate(tasks[:4], config(n=2), out, "scripted", policy=FakeBackend())
    with pytest.raises(EvalError, match="--resume"):
        evaluate(tasks, config(n=2), out, "scripted", policy=FakeBackend())
    fake = FakeBackend()
    result = evaluate(tasks, config(n=2), out, "scripted", resume=True, policy=fake)
    ids = [json.loads(line)["task_id"] for line in (out / "traces.jsonl").read_text().splitlines()]
    assert sorted(ids) == [f"t{i}" for i in range(6)]  # none twice
    assert result.resumed == 4 and result.n == 6
    assert fake.stats.calls > 0
    # a finished run resumed again runs nothing and leaves its summary and clock as they were
    written = {p.name: p.read_bytes() for p in out.glob("*.json")}
    again = FakeBackend()
    assert evaluate(tasks, config(n=2), out, "scripted", resume=True, policy=again) == result
    assert again.stats.calls == 0 and {p.name: p.read_bytes() for p in out.glob("*.json")} == written
    with pytest.raises(EvalError, match="strategy"):
        evaluate(tasks, config("cot"), out, "scripted", resume=True, policy=FakeBackend())


def test_resume_drops_a_record_torn_by_a_kill(tmp_path):
    tasks = [number_task(f"t{i}", question=f"q{i}") for i in range(4)]
    out = tmp_path / "run"
    evaluate(tasks[:3], config(n=2), out, "scripted", policy=FakeBackend())
    trace = out / "traces.jsonl"
    lines = trace.read_text().splitlines(keepends=True)
    trace.write_text("".join(lines[:2]) + lines[2][:40])  # killed in the middle of writing t2
    result = evaluate(tasks, config(n=2), out, "scripted", resume=True, policy=FakeBackend())
    ids = [json.loads(line)["task_id"] for line in trace.read_text().splitlines()]
    assert sorted(ids) == ["t0", "t1", "t2", "t3"]
    assert result.resumed == 2 and result.n == 4


def test_wall_time_counts_the_interrupted_sessions_too(tmp_path):
    tasks = [number_task(f"t{i}", question=f"q{i}") for i in range(4)]
    out = tmp_path / "run"
    evaluate(tasks[:2], config(n=2), out, "scripted", policy=FakeBackend())
    assert json.loads((out / "elapsed.json").read_text())["wall_s"] >= 0
    (out / "elapsed.json").write_text(json.dumps({"wall_s": 100.0}))  # as left by a run killed after 100 s
    result = evaluate(tasks, config(n=2), out, "scripted", resume=True, policy=FakeBackend())
    assert 100.0 <= result.wall_s < 160.0
    assert json.loads((out / "results.json").read_text())["wall_s"] == result.wall_s
    assert result.cpu_s is None  # the killed session's CPU seconds were not recorded, so the total is unknown


def test_results_give_the_runs_own_cpu_seconds(tmp_path):
    out = tmp_path / "run"
    result = evaluate([number_task("t0", question="q0")], config(n=2), out, "scripted", policy=FakeBackend())
    assert result.cpu_s is not None and result.cpu_s >= 0.0
    assert json.loads((out / "elapsed.json").read_text())["cpu_s"] == result.cpu_s
