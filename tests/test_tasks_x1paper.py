"""The x1 paper's benchmark files: loading (plain, bz2, by content), filters, verifiers, bad input, results by level."""

import bz2
import json
import pickle
import random

import pytest
from typer.testing import CliRunner
from x1paper_records import make_records, right_answers, write_benchmark, wrong_answers

from x1.tasks import TaskError, load_tasks
from x1.tasks.answers import read_truth
from x1.tasks.cnf import parse_assignment, parse_formula, score_assignment
from x1.tasks.registry import list_task_sources
from x1.tasks.synthetic import sat
from x1.trace import read_traces

LEVELS = (1, 4, 7, 10)


@pytest.fixture(scope="module")
def pairs():
    return make_records(levels=LEVELS, per_level=2, seed=3)


@pytest.fixture
def bench(tmp_path, pairs):
    return write_benchmark(tmp_path / "bench.json.bz2", [r for r, _ in pairs])


# --- answers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["SAT", "Knapsack", "Einstein", "ProntoQA"])
def test_gold_like_answers_pass_and_wrong_ones_fail(bench, pairs, kind):
    tasks = load_tasks(str(bench), n=None)
    rng = random.Random(0)
    checked = 0
    for (record, truth), task in zip(pairs, tasks, strict=True):
        if record["type"] != kind:
            continue
        for text in right_answers(record, truth):
            answer, verdict = task.check_solution(text)
            assert verdict.correct, (task.id, text[-120:], answer, verdict.reason)
        for text in wrong_answers(record, truth, rng):
            answer, verdict = task.check_solution(text)
            assert not verdict.correct, (task.id, text[-120:], answer, verdict.reason)
            if kind == "SAT":
                assert verdict.score <= 0.5
        checked += 1
    assert checked == 2 * len(LEVELS)


def test_sat_with_twenty_variables_scores_like_synthetic_sat(pairs):
    record, planted = next(p for p in pairs if p[0]["type"] == "SAT" and p[0]["level"] == 10)
    clauses = parse_formula(record["solution"])
    assert max(abs(lit) for c in clauses for lit in c) == 20 and len(planted) == 20
    assert score_assignment(clauses, ", ".join(f"x_{i} = {v}" for i, v in enumerate(planted, 1))).correct
    flipped = [not v for v in planted]
    answer = ", ".join(f"x{i}={'T' if v else 'F'}" for i, v in enumerate(flipped, 1))
    instance = sat.SatInstance(20, clauses, tuple(planted))
    ours, theirs = score_assignment(clauses, answer), sat.verify(instance, answer)
    satisfied = sum(any(flipped[abs(lit) - 1] == (lit > 0) for lit in c) for c in clauses)
    assert ours == theirs
    assert ours.score == pytest.approx(0.5 * satisfied / len(clauses)) and ours.score < 0.5


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("x_1 = True, x_2 = False", {1: True, 2: False}),
        ("x1=T x2=F", {1: True, 2: False}),
        ("x_1: false; x_2: TRUE", {1: False, 2: True}),
        ("x_1 = 1, x_2 = 0", {1: True, 2: False}),
        ("x_1 is true and x_2 is false", {1: True, 2: False}),
        ("x_1 -> F, x_2 → T", {1: False, 2: True}),
        ("[True, False, True]", {1: True, 2: False, 3: True}),
        ("True, False", {1: True, 2: False}),
        ("x_1, NOT x_2, ¬x3, ~x_4", {1: True, 2: False, 3: False, 4: False}),
        ("x_1 AND not x_2", {1: True, 2: False}),
        ("$x_{1} = \\text{True}$, **x_2** = **False**", {1: True, 2: False}),
        ("(x_1 OR NOT x_2) AND (x_3)", {}),  # a formula is not an assignment
        ("clause (1) holds", {}),
    ],
)
def test_assignment_spellings(answer, expected):
    assert parse_assignment(answer) == (expected, [])


def test_a_variable_given_both_values_scores_zero():
    assert parse_assignment("x_1 = True, x_1 = False")[1] == [1]
    assert score_assignment(((1, 2),), "x_1 = True, x_1 = False").score == 0.0


def test_formula_parsing_and_its_errors():
    assert parse_formula("(NOT x_2 OR x_1 OR NOT x_5) AND (x_4 OR x_2) ") == ((-2, 1, -5), (4, 2))
    assert parse_formula("(¬x1 ∨ x2) ∧ (x3)") == ((-1, 2), (3,))
    for bad in ("", "(x_1 OR banana)", "(x_1 OR x_2) AND ()"):
        with pytest.raises(ValueError):
            parse_formula(bad)


@pytest.mark.parametrize(
    ("answer", "yes_no", "expected"),
    [
        ("False.", False, False),
        ("**True**", False, True),
        ("the statement is false", False, False),
        ("It is not true.", False, False),
        ("t", False, True),
        ("Yes", False, None),  # yes/no only where the question is a yes/no one (knapsack)
        ("Yes, it can.", True, True),
        ("No.", True, False),
        ("I am not sure", False, None),
    ],
)
def test_truth_phrasings(answer, yes_no, expected):
    assert read_truth(answer, yes_no) is expected


# --- loading and filters ------------------------------------------------------------------------


def test_plain_and_bz2_files_load_the_same_tasks(tmp_path, pairs):
    records = [r for r, _ in pairs]
    plain = load_tasks(f"x1paper:{write_benchmark(tmp_path / 'b.json', records)}", n=None)
    packed = load_tasks(str(write_benchmark(tmp_path / "b.json.bz2", records)), n=None)  # a bare path, told by content
    misnamed = tmp_path / "c.json"  # bz2 bytes under a plain name still read
    misnamed.write_bytes(bz2.compress(json.dumps({"version": 1.0, "data": records}).encode()))
    for tasks in (packed, load_tasks(str(misnamed), n=None)):
        assert [(t.question, t.gold, t.meta["level"], t.meta["type"]) for t in tasks] == [
            (t.question, t.gold, t.meta["level"], t.meta["type"]) for t in plain
        ]
    assert len(plain) == len(records)
    assert {t.gold for t in plain if t.meta["type"] in ("ProntoQA", "Knapsack")} <= {"True", "False"}
    task = plain[0]
    assert pickle.loads(pickle.dumps((task.verifier, task.extractor)))  # Ray workers get tasks pickled


def test_level_and_type_filters(bench):
    def picked(**options):
        return sorted({(t.meta["type"], t.meta["level"]) for t in load_tasks(f"x1paper:{bench}", n=None, **options)})

    assert {lv for _, lv in picked(level=4)} == {4}
    assert {lv for _, lv in picked(levels="1-4")} == {1, 4}
    assert {lv for _, lv in picked(levels="1,7,10")} == {1, 7, 10}
    assert {lv for _, lv in picked(levels=[4, 10])} == {4, 10}
    assert {k for k, _ in picked(type="SAT")} == {"SAT"} == {k for k, _ in picked(type="sat")}
    assert {k for k, _ in picked(type="einstein")} == {"Einstein"} == {k for k, _ in picked(type="zebra")}
    assert picked(type="prontoqa,knapsack", level=7) == [("Knapsack", 7), ("ProntoQA", 7)]
    assert len(load_tasks(f"x1paper:{bench}", n=None, type="SAT", levels="7-10")) == 4


def test_a_small_n_is_spread_over_the_levels(bench):
    one_each = load_tasks(f"x1paper:{bench}", n=16)
    assert len({(t.meta["type"], t.meta["level"]) for t in one_each}) == 16
    four = load_tasks(f"x1paper:{bench}", n=4)
    assert {t.meta["type"] for t in four} == {"SAT", "Knapsack", "Einstein", "ProntoQA"}
    assert {t.meta["level"] for t in four} == set(LEVELS)
    sat_four = load_tasks(f"x1paper:{bench}", n=4, type="sat")
    assert [t.meta["level"] for t in sat_four] == list(LEVELS)
    ids = [t.id for t in load_tasks(f"x1paper:{bench}", n=None)]
    assert len(set(ids)) == len(ids) and {t.id for t in one_each} <= set(ids)  # ids do not depend on n


def test_listed_in_x1_tasks():
    assert any(spec == "x1paper:PATH" for spec, _ in list_task_sources())


# --- bad input ----------------------------------------------------------------------------------


def _bad(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


def _doc(records, version=1):
    return json.dumps({"version": version, "data": records})


GOOD = {"type": "ProntoQA", "level": 2, "problem": "True or false: Max is red.", "unique_solution": True, "solution": "True"}


@pytest.mark.parametrize(
    ("name", "content", "options", "expected"),
    [
        ("jsonl.json", json.dumps(GOOD) + "\n" + json.dumps(GOOD) + "\n", {}, "jsonl:PATH"),
        ("list.json", json.dumps([GOOD]), {}, 'expected {"version": 1'),
        ("keys.json", json.dumps({"rows": [GOOD]}), {}, "keys rows"),
        ("v2.json", _doc([GOOD], version=2), {}, "version 2"),
        ("broken.json.bz2", b"BZh91AY&SYgarbage", {}, "damaged bz2"),
        ("missing.json", _doc([GOOD, {k: v for k, v in GOOD.items() if k != "solution"}]), {}, "record 1: no field 'solution'"),
        ("kind.json", _doc([{**GOOD, "type": "Sudoku"}]), {}, "unknown type 'Sudoku'"),
        ("level.json", _doc([{**GOOD, "level": "hard"}]), {}, "level 'hard'"),
        ("einstein.json", _doc([{**GOOD, "type": "Einstein", "solution": "the red one"}]), {}, "not a house number"),
        ("sat.json", _doc([{**GOOD, "type": "SAT", "solution": "no formula here"}]), {}, "not a CNF formula"),
        ("truth.json", _doc([{**GOOD, "solution": "maybe"}]), {}, "neither true nor false"),
        ("empty.json", _doc([GOOD]), {"level": 9}, "no record left after level=9; the file has types ProntoQA and levels 2"),
        ("range.json", _doc([GOOD]), {"levels": "hard"}, "a range (1-4)"),
        ("both.json", _doc([GOOD]), {"level": 1, "levels": "1-2"}, "not both"),
        ("type.json", _doc([GOOD]), {"type": "sudoku"}, "choose from sat, knapsack, einstein, prontoqa"),
        ("option.json", _doc([GOOD]), {"difficulty": 0.5}, "unknown option(s) difficulty"),
    ],
)
def test_bad_input_gets_one_clear_line(tmp_path, name, content, options, expected):
    with pytest.raises(TaskError) as err:
        load_tasks(_bad(tmp_path, name, content), n=None, **options)
    message = str(err.value)
    assert expected in message and "\n" not in message
    assert name in message or name.split(".")[0] in message


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(TaskError, match="no such file .*nowhere.json.bz2"):
        load_tasks(f"x1paper:{tmp_path / 'nowhere.json.bz2'}")


# --- x1 eval, end to end ------------------------------------------------------------------------


def test_eval_reports_accuracy_by_level_and_type(tmp_path, monkeypatch):
    """A scripted fake model answers right on level 1, on one of two level-4 records, never on level 7."""
    from x1.cli import app
    from x1.models.fake import EOS, FakeBackend

    pairs = make_records(levels=(1, 4, 7), per_level=2, seed=5)
    rng = random.Random(0)
    replies = {}
    for k, (record, truth) in enumerate(pairs):
        right = record["level"] == 1 or (record["level"] == 4 and k % 2 == 0)
        replies[record["problem"]] = (right_answers(record, truth) if right else wrong_answers(record, truth, rng))[0]

    def reply(prompt: str, index: int) -> str:
        """The rest of the scripted solution: the engine asks one step (up to a blank line) at a time."""
        text = next(text for problem, text in replies.items() if problem in prompt)
        written = prompt.rsplit("<|assistant|>\n", 1)[-1]  # the steps so far, after the fake's chat prefix
        return text[len(written) :] + EOS

    monkeypatch.setattr(FakeBackend, "preset", classmethod(lambda cls, kind="arithmetic", **o: cls(responder=reply)))
    bench = write_benchmark(tmp_path / "mixed.json.bz2", [r for r, _ in pairs])
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["eval", "--task", str(bench), "--model", "fake", "-s", "cot", "--n", "24", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "accuracy by level" in result.output

    saved = json.loads((out / "results.json").read_text())
    rows = {(g["type"], g["level"]): (g["correct"], g["n"]) for g in saved["by_level"]}
    assert rows[(None, 1)] == (8, 8) and rows[(None, 4)] == (4, 8) and rows[(None, 7)] == (0, 8)
    for kind in ("SAT", "Knapsack", "Einstein", "ProntoQA"):
        assert rows[(kind, None)] == (3, 6) and rows[(kind, 1)] == (2, 2) and rows[(kind, 7)] == (0, 2)
    assert saved["correct"] == 12 and saved["n"] == 24

    traces = list(read_traces(out / "traces.jsonl"))
    assert {(t["type"], t["level"]) for t in traces} == {(k, lv) for k in ("SAT", "Knapsack", "Einstein", "ProntoQA") for lv in (1, 4, 7)}
    from_traces = sum(t["correct"] for t in traces if t["level"] == 4)
    assert from_traces == 4


def test_by_level_rows_only_where_tasks_carry_a_level():
    from helpers import number_task

    from x1.pipelines.evaluate import by_level

    plain = [number_task(f"p{i}") for i in range(3)]
    assert by_level([{"task_id": t.id, "correct": True} for t in plain], plain) == []
    leveled = [number_task(f"l{i}") for i in range(4)]
    for i, task in enumerate(leveled):
        task.meta = {"type": "SAT", "level": 1 + i // 2}
    records = [{"task_id": t.id, "correct": i != 1} for i, t in enumerate(leveled)]
    rows = [(g.type, g.level, g.n, g.correct) for g in by_level(records, leveled + plain)]
    assert rows == [(None, 1, 2, 1), (None, 2, 2, 2)]  # one type: no per-type rows
