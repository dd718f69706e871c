"""Extractors on hand-built graphs with known q and rewards: exact records out."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from x1.cli import app
from x1.data import (
    EOIS,
    PreferencePair,
    ProcessLabel,
    SFTExample,
    ValueTarget,
    journey_chains,
    outcome_rewards,
    preference_pairs,
    process_labels,
    read_jsonl,
    sft_examples,
    trace_samples,
    value_targets,
    write_jsonl,
)
from x1.graph import ReasoningGraph
from x1.models._sampling import render_chatml
from x1.operators.restructure import BACKTRACK_TEXT, to_journey_chain
from x1.trace import TRACE_VERSION

MESSAGES = [{"role": "system", "content": "Be careful."}, {"role": "user", "content": "What is 1+1?"}]
PREFIX = render_chatml(MESSAGES)
BT = BACKTRACK_TEXT


def mcts_graph() -> ReasoningGraph:
    """A finished training-mode MCTS tree with round q values (drawn below)."""
    # root ─ 1 "Step A" (q .5) ─ 3 ✓ (the answer)
    #      │                   └ 4 "Step C" (q −.25) ─ 5 ✓ · 6 ✗
    #      └ 2 "Step B" (q −.5, a dead end)
    g = ReasoningGraph(problem="What is 1+1?", meta={"prefix": PREFIX})
    g.root.value, g.root.visits = 0.25, 6
    a = g.add(0, "Step A\n\n", value=0.5, visits=4)
    g.add(0, "Step B\n\n", value=-0.5, visits=1)
    g.add(a.id, "The answer is: 2", terminal=True, answer="2", reward=1.0, value=1.0, visits=1)
    c = g.add(a.id, "Step C\n\n", value=-0.25, visits=2)
    g.add(c.id, "The answer is: 2", terminal=True, answer="2", reward=1.0, value=1.0, visits=1)
    g.add(c.id, "The answer is: 3", terminal=True, answer="3", reward=0.0, value=-1.0, visits=1)
    g.validate()
    return g


def as_record(graph: ReasoningGraph, answer_thought: int | None, score: float, answer: str | None = "2", task_id: str = "t1") -> dict:
    """What `x1 eval` writes (Outcome.to_record + trace version), round-tripped through JSON."""
    record = {
        "trace_version": TRACE_VERSION,
        "task_id": task_id,
        "question": graph.problem,
        "gold": "2",
        "answer": answer,
        "answer_thought": answer_thought,
        "score": score,
        "correct": score >= 1.0,
        "strategy": "mcts",
        "compute": {},
        "graph": graph.to_dict(),
    }
    return json.loads(json.dumps(record))


@pytest.fixture
def records() -> list[dict]:
    return [as_record(mcts_graph(), answer_thought=3, score=1.0)]


def test_sft_keeps_the_verified_answer_path_in_step_format(records):
    (ex,) = sft_examples(records)
    assert ex == SFTExample(MESSAGES, "Step A<eois>The answer is: 2", "t1", "answer_path")
    assert EOIS == "<eois>"
    (raw,) = sft_examples(records, step_format=False)
    assert raw.completion == "Step A\n\nThe answer is: 2"
    assert sft_examples([as_record(mcts_graph(), 6, 0.0, answer="3")]) == []


def test_sft_all_correct_paths_adds_other_correct_terminals_once(records):
    examples = sft_examples(records + records, all_correct_paths=True)
    assert [(e.completion, e.source) for e in examples] == [
        ("Step A<eois>The answer is: 2", "answer_path"),
        ("Step A<eois>Step C<eois>The answer is: 2", "correct_path"),
    ]
    # a wrong final answer still yields the correct paths the search found
    wrong = as_record(mcts_graph(), 6, 0.0, answer="3")
    assert [e.source for e in sft_examples([wrong], all_correct_paths=True)] == ["correct_path", "correct_path"]


def test_prompt_falls_back_to_system_and_question_without_a_chatml_prefix():
    g = mcts_graph()
    g.meta["prefix"] = "Q: What is 1+1?\nA:"
    (ex,) = sft_examples([as_record(g, 3, 1.0)], system="sys")
    assert ex.prompt_messages == [{"role": "system", "content": "sys"}, {"role": "user", "content": "What is 1+1?"}]


def test_preference_pairs_step_and_outcome_level(records):
    pairs = preference_pairs(records, min_gap=0.2)
    assert pairs == [
        PreferencePair(PREFIX, "Step A\n\n", "Step B\n\n", 0.5, -0.5, "t1", chosen_final=False, rejected_final=False),
        PreferencePair(PREFIX + "Step A\n\n", "The answer is: 2", "Step C\n\n", 1.0, -0.25, "t1", rejected_final=False),
        PreferencePair(PREFIX + "Step A\n\nStep C\n\n", "The answer is: 2", "The answer is: 3", 1.0, -1.0, "t1"),
        PreferencePair(PREFIX, "Step A\n\nThe answer is: 2", "Step A\n\nStep C\n\nThe answer is: 3", 1.0, -1.0, "t1"),
        PreferencePair(PREFIX, "Step A\n\nStep C\n\nThe answer is: 2", "Step A\n\nStep C\n\nThe answer is: 3", 1.0, -1.0, "t1"),
    ]
    step_only = preference_pairs(records, min_gap=1.1, outcome=False)
    assert [(p.q_chosen, p.q_rejected) for p in step_only] == [(1.0, -0.25), (1.0, -1.0)]
    assert len(preference_pairs(records, outcome=True, max_outcome_pairs=1)) == 4


def test_process_labels_are_monte_carlo_fractions(records):
    labels = process_labels(records)
    assert labels == [
        ProcessLabel(PREFIX, ["Step A\n\n", "The answer is: 2"], [2 / 3, 1.0], "t1"),
        ProcessLabel(PREFIX, ["Step A\n\n", "Step C\n\n", "The answer is: 2"], [2 / 3, 0.5, 1.0], "t1"),
        ProcessLabel(PREFIX, ["Step A\n\n", "Step C\n\n", "The answer is: 3"], [2 / 3, 0.5, 0.0], "t1"),
    ]
    assert [p.labels for p in process_labels(records, hard=True)] == [[1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]


def test_value_targets_from_mcts_q_and_from_discounted_returns(records):
    mcts = value_targets(records, source="mcts")
    assert [(v.partial_solution, v.target) for v in mcts] == [
        ("Step A\n\n", 0.5),
        ("Step B\n\n", -0.5),
        ("Step A\n\nThe answer is: 2", 1.0),
        ("Step A\n\nStep C\n\n", -0.25),
        ("Step A\n\nStep C\n\nThe answer is: 2", 1.0),
        ("Step A\n\nStep C\n\nThe answer is: 3", -1.0),
    ]
    assert all(v.prompt == PREFIX and v.task_id == "t1" for v in mcts)
    assert len(value_targets(records, source="mcts", min_visits=2)) == 5  # Step B goes; terminals stay (true reward)
    assert value_targets(records, source="mcts", include_root=True)[0].target == 0.25
    mc = {v.partial_solution: v.target for v in value_targets(records, gamma=0.5, source="mc")}
    # Step A: (0.5·1 + 0.25·1 + 0.25·(−1)) / 3; Step C: (0.5·1 + 0.5·(−1)) / 2; terminals: 2r − 1; Step B: no outcome
    assert mc == {
        "Step A\n\n": pytest.approx(0.5 / 3),
        "Step A\n\nThe answer is: 2": 1.0,
        "Step A\n\nStep C\n\n": 0.0,
        "Step A\n\nStep C\n\nThe answer is: 2": 1.0,
        "Step A\n\nStep C\n\nThe answer is: 3": -1.0,
    }
    with pytest.raises(ValueError, match="source"):
        value_targets(records, source="td")  # type: ignore[arg-type]


def test_outcomes_come_from_the_record_when_thoughts_carry_no_reward():
    """Best-of-n without training mode: the verdict labels the answer and terminals with the same answer."""
    g = ReasoningGraph(problem="What is 1+1?", meta={"prefix": PREFIX})
    a = g.add(0, "x = 1 + 1\n\n")
    g.add(a.id, "The answer is: 2", terminal=True, answer="2")
    g.add(0, "The answer is: 2.", terminal=True, answer="2")
    g.add(0, "The answer is: 5", terminal=True, answer="5")
    record = as_record(g, answer_thought=2, score=1.0)
    assert outcome_rewards(record) == {2: 1.0, 3: 1.0}
    labels = process_labels([record])
    assert [(p.steps, p.labels) for p in labels] == [
        (["x = 1 + 1\n\n", "The answer is: 2"], [1.0, 1.0]),
        (["The answer is: 2."], [1.0]),
    ]
    assert [p.rejected for p in preference_pairs([record])] == []  # nothing known to be wrong


def test_journey_chain_keeps_dead_ends_and_backtracks(records):
    (raw,) = journey_chains(records, step_format=False)
    graph = ReasoningGraph.from_dict(records[0]["graph"])
    assert raw.completion == to_journey_chain(graph, 3)
    assert raw.source == "journey" and raw.prompt_messages == MESSAGES
    (stepped,) = journey_chains(records)
    assert stepped.completion.split(EOIS) == [
        "Step B",
        BT,
        "Step A",
        "Step C",
        "The answer is: 2",
        BT,
        "The answer is: 3",
        BT,
        "The answer is: 2",
    ]


def test_trace_sample_serializes_the_whole_graph(records):
    (sample,) = trace_samples(records)
    lines = sample.completion.splitlines()
    assert lines[0] == '<step id="1" parent="0" q="+0.50" visits="4">Step A</step>'
    assert lines[5] == '<step id="6" parent="4" q="-1.00" visits="1" terminal="true">The answer is: 3</step>'
    assert lines[-1] == '<answer step="3"/>' and len(lines) == 7 and sample.source == "trace"


def test_jsonl_round_trip_and_datasets_loads_it(records, tmp_path):
    kinds = [
        (SFTExample, sft_examples(records, all_correct_paths=True)),
        (PreferencePair, preference_pairs(records)),
        (ProcessLabel, process_labels(records)),
        (ValueTarget, value_targets(records)),
    ]
    datasets = pytest.importorskip("datasets")
    for cls, items in kinds:
        path = tmp_path / f"{cls.__name__}.jsonl"
        assert write_jsonl(path, items) == len(items)
        assert read_jsonl(path, cls) == items
        loaded = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "cache"))
        assert loaded.num_rows == len(items) and loaded.column_names == list(items[0].to_dict())
    with pytest.raises(ValueError, match="not a ValueTarget"):
        read_jsonl(tmp_path / "SFTExample.jsonl", ValueTarget)


def test_cli_data_commands_say_how_many_records(records, tmp_path):
    traces = tmp_path / "traces.jsonl"
    traces.write_text("".join(json.dumps(r) + "\n" for r in records))
    runner = CliRunner()
    expected = {"sft": 1, "pairs": 5, "process": 3, "values": 6, "journey": 1}
    for command, n in expected.items():
        out = tmp_path / f"{command}.jsonl"
        result = runner.invoke(app, ["data", command, "--traces", str(traces), "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert f"wrote {n} " in result.output and len(out.read_text().splitlines()) == n
    result = runner.invoke(app, ["data", "values", "--traces", str(traces), "--out", str(tmp_path / "v.jsonl"), "--source", "td"])
    assert result.exit_code == 2 and "mcts, mc" in " ".join(result.output.split())
    result = runner.invoke(app, ["data", "sft", "--traces", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "s.jsonl")])
    assert result.exit_code == 2 and "does not exist" in " ".join(result.output.split())  # rich wraps lines
