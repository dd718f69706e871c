"""Every task source: gold answers pass, perturbed answers fail, ids are stable, errors are clear."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from x1.tasks import Task, TaskError, list_task_sources, load_tasks
from x1.tasks.registry import champ_gold_variants, gold_from_answer

SYNTHETIC = ["synthetic:sat", "synthetic:knapsack", "synthetic:zebra", "synthetic:prontoqa"]


def _perturb(task: Task) -> str:
    """A wrong answer for a task with a numeric gold."""
    return str(int(float(str(task.gold).replace(",", ""))) + 1)


# --- samples ------------------------------------------------------------------------------------


def test_samples_gold_passes_and_wrong_fails() -> None:
    tasks = load_tasks("samples")
    assert len(tasks) == 8 and len({t.id for t in tasks}) == 8
    for task in tasks:
        assert task.source == "samples"
        assert task.check_solution(f"Work.\n\nThe answer is: {task.gold}")[1].correct
        assert not task.verify(_perturb(task)).correct
    assert load_tasks("samples", n=3)[0].id == "samples:0"
    shuffled = load_tasks("samples", seed=3)
    assert sorted(t.id for t in shuffled) == sorted(t.id for t in tasks)


# --- synthetic ----------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SYNTHETIC)
def test_synthetic_gold_passes_and_wrong_fails(spec: str) -> None:
    tasks = load_tasks(spec, n=4, seed=1, difficulty=0.4)
    assert [t.id for t in tasks] == [f"{spec}:d0.4:seed1:{i}" for i in range(4)]
    for task in tasks:
        assert task.source == spec
        answer, result = task.check_solution(f"Let me think.\n\nThe answer is: {task.gold}")
        assert result.correct, (answer, result)
        assert task.verify("something else entirely").score < 1.0
        assert task.verify(None).score == 0.0


def test_synthetic_is_reproducible_and_picklable() -> None:
    a = load_tasks("synthetic:zebra", n=3, seed=5)
    b = load_tasks("synthetic:zebra", n=2, seed=5)
    assert [t.question for t in a[:2]] == [t.question for t in b]
    restored = pickle.loads(pickle.dumps(a[0]))
    assert restored.verify(a[0].gold).correct


def test_synthetic_extractors_without_a_marker() -> None:
    sat = load_tasks("synthetic:sat", n=1)[0]
    assert sat.check_solution(f"I tried a few.\n{sat.gold}\nDone.")[1].correct
    pronto = load_tasks("synthetic:prontoqa", n=1)[0]
    assert pronto.check_solution(f"So the claim is {pronto.gold.lower()}.")[1].correct
    zebra = load_tasks("synthetic:zebra", n=1)[0]
    assert zebra.check_solution(f"From clue 3 it must be {zebra.gold}.")[1].correct
    knap = load_tasks("synthetic:knapsack", n=1)[0]
    assert knap.check_solution(f"Taking {knap.gold} is best.")[1].correct


def test_synthetic_bad_options() -> None:
    with pytest.raises(TaskError, match="difficulty"):
        load_tasks("synthetic:sat", difficulty=2)
    with pytest.raises(TaskError, match="sat, knapsack, zebra, prontoqa"):
        load_tasks("synthetic:sudoku")
    with pytest.raises(TaskError, match="unknown option"):
        load_tasks("synthetic:sat", colour="red")


# --- JSONL --------------------------------------------------------------------------------------


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_jsonl_gsm8k_style(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "gsm.jsonl",
        [
            json.dumps({"question": "Q1?", "answer": "48/2 = 24 clips\n#### 72"}),
            "",
            json.dumps({"question": "Q2?", "answer": "#### 1,000"}),
            json.dumps({"question": "Q3?", "answer": "\\frac{1}{2}", "id": "half"}),
        ],
    )
    tasks = load_tasks(f"jsonl:{path}")
    assert [t.gold for t in tasks] == ["72", "1000", "\\frac{1}{2}"]
    assert [t.id for t in tasks] == ["jsonl:gsm.jsonl:1", "jsonl:gsm.jsonl:3", "jsonl:gsm.jsonl:half"]
    assert tasks[0].meta["solution"] == "48/2 = 24 clips"
    assert tasks[0].verify("72").correct and not tasks[0].verify("73").correct
    assert tasks[1].verify("1000").correct
    assert tasks[2].verify("0.5").correct and not tasks[2].verify("0.25").correct
    assert len(load_tasks(str(path), n=2)) == 2  # a bare .jsonl path works too


def test_jsonl_custom_fields(tmp_path: Path) -> None:
    path = _write(tmp_path / "mine.jsonl", [json.dumps({"problem": "2+2?", "solution": 4, "key": "k1"})])
    tasks = load_tasks(f"jsonl:{path}", question_field="problem", answer_field="solution", id_field="key")
    assert tasks[0].question == "2+2?" and tasks[0].id == "jsonl:mine.jsonl:k1"
    assert tasks[0].verify("4").correct and not tasks[0].verify("5").correct


def test_jsonl_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "broken.jsonl", [json.dumps({"question": "q", "answer": "1"}), '{"question": "q",'])
    with pytest.raises(TaskError) as err:
        load_tasks(f"jsonl:{path}")
    message = str(err.value)
    assert "broken.jsonl" in message and "line 2" in message and "JSON object" in message


def test_jsonl_missing_field_names_field_and_alternatives(tmp_path: Path) -> None:
    path = _write(tmp_path / "fields.jsonl", [json.dumps({"prompt": "q", "answer": "1"})])
    with pytest.raises(TaskError) as err:
        load_tasks(f"jsonl:{path}")
    message = str(err.value)
    assert "'question'" in message and "prompt" in message and "question_field" in message
    assert "line 1" in message


def test_jsonl_missing_file_and_bad_option(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match="no such file"):
        load_tasks(f"jsonl:{tmp_path / 'absent.jsonl'}")
    path = _write(tmp_path / "ok.jsonl", [json.dumps({"question": "q", "answer": "1"})])
    with pytest.raises(TaskError, match="unknown option"):
        load_tasks(f"jsonl:{path}", difficulty=0.5)


def test_gold_from_answer() -> None:
    assert gold_from_answer("work\n#### $1,234") == ("1234", "work")
    assert gold_from_answer(7) == ("7", None)
    assert gold_from_answer("#### x = 3")[0] == "x = 3"


# --- errors -------------------------------------------------------------------------------------


def test_unknown_task_source() -> None:
    with pytest.raises(TaskError) as err:
        load_tasks("gsm8k")
    message = str(err.value)
    assert isinstance(err.value, ValueError)
    assert "rg:NAME" in message and "jsonl:PATH" in message and "x1 tasks" in message
    assert "\n" not in message


def test_list_task_sources() -> None:
    sources = dict(list_task_sources())
    for spec in ["rg:NAME", "jsonl:PATH", "champ", "samples", *SYNTHETIC]:
        assert sources[spec] and "\n" not in sources[spec]


# --- reasoning-gym ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gsm_symbolic", "basic_arithmetic", "spell_backward"])
def test_reasoning_gym_gold_passes_and_wrong_fails(name: str) -> None:
    pytest.importorskip("reasoning_gym")
    tasks = load_tasks(f"rg:{name}", n=3, seed=0)
    assert [t.id for t in tasks] == [f"rg:{name}:seed0:{i}" for i in range(3)]
    for task in tasks:
        assert task.meta["entry"]["question"] == task.question
        assert task.verify(task.gold).correct
        wrong = task.verify("definitely not it 123456789")
        assert 0.0 <= wrong.score < 1.0 and "checker" in wrong.reason


def test_reasoning_gym_config_and_errors() -> None:
    pytest.importorskip("reasoning_gym")
    tasks = load_tasks("rg:basic_arithmetic", n=2, min_terms=2, max_terms=2)
    assert ":cfg" in tasks[0].id
    with pytest.raises(TaskError, match="gsm_symbolic"):
        load_tasks("rg:gsm_symbolc")
    with pytest.raises(TaskError, match="options are"):
        load_tasks("rg:basic_arithmetic", n=1, no_such_option=1)


# --- CHAMP --------------------------------------------------------------------------------------


def test_champ_all_golds_pass_and_numeric_perturbations_fail() -> None:
    pytest.importorskip("champ_dataset")
    pytest.importorskip("math_verify")
    tasks = load_tasks("champ")
    assert len(tasks) == 270 and len({t.id for t in tasks}) == 270
    for task in tasks:
        assert task.verify(task.gold).correct, (task.id, task.gold)
        assert task.verify(task.meta["gold_variants"][-1]).correct
        labels = task.meta["fws_annotations"]
        assert labels and all("first_wrong_step" in v for v in labels.values())
    numeric = [t for t in tasks if str(t.gold).strip().isdigit()]
    assert len(numeric) > 50
    for task in numeric[:60]:
        assert not task.verify(_perturb(task)).correct, task.id
    assert not tasks[0].verify("No").correct


def test_champ_gold_variants() -> None:
    assert champ_gold_variants("2*C(10, 5), or equivalently 504")[-1] == "504"
    assert champ_gold_variants("100 (i.e., all values)")[-1] == "100"
    assert champ_gold_variants("0 is the only possible value")[-1] == "0"
    assert champ_gold_variants("The limit exists and is equal to 2/3")[-1] == "2/3"


def test_reasoning_gym_seeds_give_disjoint_problem_streams() -> None:
    """reasoning-gym seeds item i with seed + i, so its seeds 0 and 1 overlap; x1's do not (a train/test split by seed is clean)."""
    pytest.importorskip("reasoning_gym")
    import reasoning_gym as rg

    raw = [[rg.create_dataset("basic_arithmetic", seed=s, size=50)[i]["question"] for i in range(50)] for s in (0, 1)]
    assert raw[0][1:] == raw[1][:-1]  # the pitfall: one stream shifted by one
    ours = [[t.question for t in load_tasks("rg:basic_arithmetic", n=50, seed=s)] for s in (0, 1)]
    assert ours[0] == raw[0]  # seed 0 keeps the problems it always had
    assert len(set(ours[0]) & set(ours[1])) <= 2  # short arithmetic repeats by chance, not by construction
