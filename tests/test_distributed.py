"""`x1 eval --workers N`: Ray actors give the records of the in-process run, resume, and clear errors.

The deterministic fake backend makes "the same results" exact: every sampling seed comes from
the task id, so which actor and which batch a problem lands in must change nothing.
"""

import json
import sys

import pytest
from helpers import trace_record
from typer.testing import CliRunner

from x1.cli import app
from x1.config import RunConfig
from x1.pipelines.evaluate import EvalError, evaluate

runner = CliRunner()
N = 8


def data_set(tmp_path):
    """Questions whose gold answers (0..3) the fake policy's answers hit now and then."""
    path = tmp_path / "problems.jsonl"
    path.write_text("".join(json.dumps({"id": i, "question": f"What is {i} mod 4?", "answer": str(i % 4)}) + "\n" for i in range(N)))
    return f"jsonl:{path}"


def records(run_dir) -> dict[str, dict]:
    """Task id → trace record, less the wall time (the one field that measures rather than decides)."""
    out = {}
    for line in (run_dir / "traces.jsonl").read_text().splitlines():
        record = trace_record(line)
        record.pop("wall_s")
        out[record["task_id"]] = record
    return out


def results(run_dir) -> dict:
    saved = json.loads((run_dir / "results.json").read_text())
    saved.pop("wall_s")
    saved.pop("cpu_s")  # the in-process run counts its CPU seconds; the driver of Ray workers cannot
    return saved


def eval_args(spec, out, *extra):
    return ["eval", "--task", spec, "--model", "fake", "-s", "mcts", "-p", "iterations=4", "-p", "expand=2", "--n", str(N),
            "--out", str(out), *extra]


def test_two_ray_workers_give_the_in_process_records(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'x1[ray]')")
    spec = data_set(tmp_path)
    local = runner.invoke(app, eval_args(spec, tmp_path / "local"))
    assert local.exit_code == 0, local.output
    remote = runner.invoke(app, eval_args(spec, tmp_path / "ray", "--workers", "2"))
    assert remote.exit_code == 0, remote.output
    mine, theirs = records(tmp_path / "local"), records(tmp_path / "ray")
    assert len(mine) == N and mine.keys() == theirs.keys()
    for task_id in mine:  # answer, verdict, compute and the whole search graph
        assert theirs[task_id] == mine[task_id], task_id
    assert 0 < sum(r["correct"] for r in mine.values()) < N  # a run that tells right from wrong
    assert results(tmp_path / "ray") == results(tmp_path / "local")  # accuracy, interval, tokens, calls


def test_distributed_resume_runs_only_unfinished_problems(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'x1[ray]')")
    from x1.pipelines.distributed import evaluate_distributed
    from x1.tasks.registry import load_tasks

    tasks = load_tasks(data_set(tmp_path), n=N)
    cfg = RunConfig()
    cfg.model.name = "fake"
    cfg.search.strategy = "best_of_n"
    cfg.search.params = {"n": 3}
    out = tmp_path / "run"
    evaluate(tasks[:3], cfg, out, "jsonl")
    first = (out / "traces.jsonl").read_text()
    with pytest.raises(EvalError, match="--resume"):
        evaluate_distributed(tasks, cfg, out, "jsonl", workers=2)
    ran, skipped = [], []
    result = evaluate_distributed(tasks, cfg, out, "jsonl", workers=2, resume=True, on_done=lambda r: ran.append(r["task_id"]),
                                  on_skip=skipped.append)
    assert skipped == [3] and result.resumed == 3 and result.n == N
    assert sorted(ran) == sorted(t.id for t in tasks[3:])  # the finished three were not run again
    assert (out / "traces.jsonl").read_text().startswith(first)  # and their records were left as they were
    whole = evaluate(tasks, cfg, tmp_path / "whole", "jsonl")
    assert records(out) == records(tmp_path / "whole") and result.correct == whole.correct


def test_bad_address_names_it_and_the_fix(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'x1[ray]')")
    spec = data_set(tmp_path)
    for address in ("ray://127.0.0.1:1", "127.0.0.1:1"):  # a Ray client address, a cluster's GCS address
        result = runner.invoke(app, eval_args(spec, tmp_path / "r", "--workers", "2", "--address", address))
        assert result.exit_code == 2
        assert f"--address {address!r}" in result.output and "fix:" in result.output, result.output
    assert "ray start --head" in result.output  # nothing listens at 127.0.0.1:1


def test_cli_mistakes_without_ray(tmp_path, monkeypatch):
    spec = data_set(tmp_path)
    result = runner.invoke(app, eval_args(spec, tmp_path / "a", "--address", "auto"))
    assert result.exit_code == 2 and "--workers" in result.output
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    result = runner.invoke(app, eval_args(spec, tmp_path / "b", "--workers", "2"))
    assert result.exit_code == 2 and "pip install 'x1[ray]'" in result.output


def test_value_url_scores_through_the_server_as_in_process(tmp_path):
    """`--value-url`: a strategy's evaluator=value is the remote server, and the search it drives is the local one's."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from helpers import number_task

    from x1.engine import Engine, Sampling
    from x1.evaluators import build_evaluators
    from x1.models.fake import FakeBackend
    from x1.pipelines.solve import run_tasks
    from x1.serve.common import BackgroundServer
    from x1.serve.value import ScorerEvaluator, create_value_app
    from x1.strategies import build_strategy

    tasks = [number_task(f"t{i}", gold=str(i % 4), question=f"q{i}") for i in range(3)]
    cfg = RunConfig()
    cfg.model.name = "fake"
    cfg.search.strategy = "beam"
    cfg.search.params = {"evaluator": "value"}
    policy = FakeBackend()
    with BackgroundServer(create_value_app(FakeBackend())) as server:
        key = f"remote:{server.url}"  # evaluator=value with --value-url is that server, and its scores say so
        local = Engine(policy, {**build_evaluators(policy), key: ScorerEvaluator(FakeBackend(), name=key)},
                       sampling=Sampling(), seed=cfg.search.seed).run(tasks, build_strategy("beam", evaluator=key))
        cfg.search.value_url = server.url
        remote = run_tasks(tasks, cfg).outcomes
        trace = tmp_path / "solve.jsonl"
        result = runner.invoke(app, ["solve", "What is 1+1?", "--model", "fake", "-s", "beam", "-p", "evaluator=value",
                                     "--value-url", server.url, "--trace", str(trace)])
    assert [o.graph.to_dict() for o in remote] == [o.graph.to_dict() for o in local]
    assert any(key in t.scores for o in remote for t in o.graph)
    assert result.exit_code == 0, result.output
    record = trace_record(trace.read_text())
    assert record["strategy_config"]["evaluator"] == key
    assert any(key in t.get("scores", {}) for t in record["graph"]["thoughts"])


def test_a_shard_worker_sends_each_problem_as_it_finishes(tmp_path, monkeypatch):
    """The progress bar counts problems, not shards: a worker puts every trace line on the queue from the problem's on_done."""
    from x1.pipelines.distributed import ShardWorker
    from x1.pipelines.solve import run_tasks
    from x1.tasks.registry import load_tasks

    tasks = load_tasks(data_set(tmp_path), n=N)
    cfg = RunConfig()
    cfg.model.name = "fake"
    cfg.search.strategy = "mcts"
    cfg.search.params = {"iterations": 4, "expand": 2}
    worker = ShardWorker(cfg.model_dump())
    finished: list[str] = []
    real_run_tasks = run_tasks

    class Queue:
        """Records each line with how many problems had finished when it was put."""

        def __init__(self) -> None:
            self.puts: list[tuple[str, int]] = []

        def put(self, line: str) -> None:
            self.puts.append((line, len(finished)))

    def counting_run_tasks(*args, on_done=None, **kwargs):
        def done(outcome):
            finished.append(outcome.task.id)
            on_done(outcome)

        return real_run_tasks(*args, on_done=done, **kwargs)

    monkeypatch.setattr("x1.pipelines.distributed.run_tasks", counting_run_tasks)
    queue = Queue()
    sent = worker.run(tasks, queue)
    assert sent == N
    assert [json.loads(line)["task_id"] for line, _ in queue.puts] == finished  # in the order they finished
    assert [k for _, k in queue.puts] == list(range(1, N + 1))  # each sent right after its own problem, not at the end
    run_tasks(tasks, cfg, trace_path=tmp_path / "local.jsonl")
    local = {json.loads(line)["task_id"]: json.loads(line) for line in (tmp_path / "local.jsonl").read_text().splitlines()}
    for line, _ in queue.puts:
        record = json.loads(line)
        assert {**record, "wall_s": 0} == {**local[record["task_id"]], "wall_s": 0}
