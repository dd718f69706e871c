"""x1 view and x1 report without a browser: layout, verdicts, embedding, bad input, the report's files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers import trace_record
from typer.testing import CliRunner

from x1.cli import app
from x1.graph import ReasoningGraph
from x1.signals import token_series
from x1.view.page import embed_json, render_page
from x1.view.scene import ancestors, graph_data, layout, problem_data, verdict

runner = CliRunner()


def aggregate_graph() -> ReasoningGraph:
    """root → a, b, c; a → a1, a2; merge(a1, b) is an aggregate; c pruned."""
    g = ReasoningGraph(problem="p")
    a = g.add(0, "a")
    b = g.add(0, "b")
    c = g.add(0, "c", pruned=True)
    a1 = g.add(a.id, "a1")
    g.add(a.id, "a2")
    g.add([a1.id, b.id], "merged. The answer is 2", terminal=True, answer="2")
    assert c.pruned
    return g


def test_layout_puts_an_aggregate_below_all_its_parents_and_never_two_thoughts_on_one_spot():
    g = aggregate_graph()
    pos = layout(g)
    merged = next(t for t in g if len(t.parents) > 1)
    assert pos[merged.id][1] == 1 + max(pos[p][1] for p in merged.parents)
    assert len(set(pos.values())) == len(g)
    for t in g:  # a parent sits within its first-parent subtree's span
        kids = [k for k in t.children if g[k].parents[0] == t.id]
        if kids:
            assert min(pos[k][0] for k in kids) <= pos[t.id][0] <= max(pos[k][0] for k in kids)


def test_layout_of_a_deep_chain_needs_no_recursion():
    g = ReasoningGraph()
    tip = 0
    for i in range(3000):
        tip = g.add(tip, f"s{i}").id
    assert layout(g)[tip] == (0.0, 3000)


def test_the_answer_path_includes_every_source_of_an_aggregate():
    g = aggregate_graph()
    merged = next(t for t in g if len(t.parents) > 1)
    assert ancestors(g, merged.id) == {0, 1, 2, 4, merged.id}


def test_verdict_uses_reward_then_the_chosen_answer_then_gold():
    g = aggregate_graph()
    t = next(t for t in g if t.terminal)
    assert verdict(t, "3", None, None) == "wrong"
    assert verdict(t, "2.0", None, None) == "right"
    assert verdict(t, "3", "2", True) == "right"  # same answer as a chosen answer the task's verifier accepted
    t.reward = -1.0
    assert verdict(t, "2", "2", True) == "wrong"
    assert verdict(g[1], "2", None, None) is None  # not a terminal
    t.reward = None
    assert verdict(t, None, None, None) is None


def test_graph_data_marks_path_status_and_token_series():
    g = aggregate_graph()
    merged = next(t for t in g if len(t.parents) > 1)
    merged.meta["token_signals"] = token_series([{"entropy": 0.51234, "varentropy": 1.0}, {"entropy": 2.0, "varentropy": 0.25}])
    merged.logprobs = [-0.5, -1.25]
    data = graph_data(g, merged.id, gold="2", correct=True)
    nodes = {n["id"]: n for n in data["nodes"]}
    assert [n["id"] for n in data["nodes"] if n["path"]] == [0, 1, 2, 4, merged.id]
    assert nodes[merged.id]["status"] == "right"
    assert nodes[merged.id]["tokens"] == {"entropy": [0.512, 2.0], "varentropy": [1.0, 0.25]}
    assert nodes[merged.id]["surprisal"] == [0.5, 1.25]
    assert "token_signals" not in nodes[merged.id]["meta"]
    assert nodes[3]["pruned"]


def test_token_series_needs_the_signal_at_every_position():
    assert token_series([]) == {}
    assert token_series([{"entropy": 1.0}, {"entropy": 2.0, "varentropy": 1.0}]) == {"entropy": [1.0, 2.0]}


def test_embedded_json_cannot_close_the_script_tag():
    text = embed_json({"text": "</script><script>alert(1)</script> <!-- & "})
    assert "</" not in text and "<!--" not in text
    assert json.loads(text) == {"text": "</script><script>alert(1)</script> <!-- & "}


def test_the_page_is_self_contained():
    record = {"task_id": "t", "question": "q", "graph": aggregate_graph().to_dict(), "answer_thought": 6, "correct": True, "gold": "2"}
    html = render_page([problem_data(record)], "title <x>")
    assert "/*X1_JS*/" not in html and "X1_DATA" not in html and "/*X1_CSS*/" not in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing fetched from the network
    assert "<title>title &lt;x&gt;</title>" in html


@pytest.fixture(scope="module")
def mcts_trace(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("mcts")
    trace = folder / "trace.jsonl"
    result = runner.invoke(app, ["solve", "What is 1+1?", "--model", "fake", "--gold", "2", "--trace", str(trace), "-s", "mcts",
                                 "-p", "iterations=6"])
    assert result.exit_code == 0, result.output
    return trace


def test_view_writes_a_page_with_every_thought(mcts_trace, tmp_path):
    out = tmp_path / "tree.html"
    result = runner.invoke(app, ["view", str(mcts_trace), "--out", str(out), "--problem", "question"])
    assert result.exit_code == 0, result.output
    record = trace_record(mcts_trace.read_text())
    data = json.loads(re.search(r'id="x1-data">(.*?)</script>', out.read_text()).group(1))
    assert len(data["problems"][0]["graph"]["nodes"]) == len(record["graph"]["thoughts"])


def test_view_reads_a_bare_graph(tmp_path):
    graph = tmp_path / "graph.json"
    graph.write_text(aggregate_graph().to_json())
    result = runner.invoke(app, ["view", str(graph), "--out", str(tmp_path / "g.html")])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("make", "args", "message"),
    [
        (None, [], "does not exist"),
        ('{"not": "a trace"}', [], "is not an x1 trace or graph"),
        ("not json at all\n", [], "is not an x1 trace or graph"),
        ("MCTS", ["--problem", "nope"], "no problem 'nope'"),
    ],
)
def test_view_bad_input_is_one_line_and_exit_2(mcts_trace, tmp_path, make, args, message):
    source = tmp_path / "input.jsonl"
    if make == "MCTS":
        source = mcts_trace
    elif make is not None:
        source.write_text(make)
    result = runner.invoke(app, ["view", str(source), "--out", str(tmp_path / "x.html"), *args])
    assert result.exit_code == 2
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "x.html").exists()


def test_view_of_a_trace_with_a_broken_graph_is_one_line(tmp_path):
    record = {"trace_version": 1, "task_id": "t", "graph": {"schema_version": 1, "thoughts": [{"id": 0, "parents": [5]}]}}
    source = tmp_path / "t.jsonl"
    source.write_text(json.dumps(record) + "\n")
    result = runner.invoke(app, ["view", str(source), "--out", str(tmp_path / "x.html")])
    assert result.exit_code == 2 and "not readable" in result.output


def test_strategies_shows_default_factory_values():
    result = runner.invoke(app, ["strategies"])
    assert result.exit_code == 0
    assert "MISSING" not in result.output
    flat = "".join(result.output.split())  # the table wraps cells: compare without whitespace
    assert "ops=[{'op':'generate'," in flat
    assert "inner_params={'n':3}" in flat


# -- x1 report ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def eval_runs(tmp_path_factory) -> list[Path]:
    """Two fake-backend eval runs of different compute."""
    folder = tmp_path_factory.mktemp("runs")
    runs = []
    for strategy, params in (("cot", []), ("mcts", ["-p", "iterations=4"])):
        out = folder / f"eval-{strategy}"
        result = runner.invoke(app, ["eval", "--task", "samples", "--model", "fake", "--strategy", strategy, "--n", "4", "--out", str(out),
                                     *params])
        assert result.exit_code == 0, result.output
        runs.append(out)
    return runs


def test_report_writes_plots_and_a_viewer_page_per_problem(eval_runs, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "report.html"
    result = runner.invoke(app, ["report", *map(str, eval_runs), "--out", str(out)])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    for name in ("accuracy.png", "compute.png", "tokens.png"):
        png = tmp_path / "report_files" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"report_files/{name}" in page
    links = re.findall(r'href="([^"]+\.html)"', page)
    assert len(links) == 8  # 4 problems × 2 runs, right and wrong alike
    assert all((tmp_path / link).exists() for link in links)
    results = json.loads((eval_runs[0] / "results.json").read_text())
    assert f"{results['accuracy']:.1%}" in page


def test_report_of_one_run_has_no_compute_plot(eval_runs, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "one.html"
    assert runner.invoke(app, ["report", str(eval_runs[0]), "--out", str(out)]).exit_code == 0
    assert not (tmp_path / "one_files" / "compute.png").exists()
    assert (tmp_path / "one_files" / "accuracy.png").exists()


def test_report_bad_run_directory_is_one_line(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path / "missing"), "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 2 and "is not a directory" in result.output
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["report", str(tmp_path / "empty"), "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 2 and "has no traces.jsonl" in result.output
