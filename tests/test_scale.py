"""The scaling study: budget templates, checks before work, a resumable grid, paired intervals, the report."""

import json
import re

import pytest
import yaml
from helpers import number_task, trace_record
from typer.testing import CliRunner

from x1.cli import app
from x1.config import ConfigError
from x1.models.fake import FakeBackend
from x1.pipelines.scale import ScaleConfig, grid, load_study_tasks, params_for_budget, run_study
from x1.pipelines.scale_report import paired_bootstrap
from x1.trace import TRACE_VERSION

STUDY = {
    "task": "samples",
    "n": 6,
    "model": {"name": "fake"},
    "budgets": [1, 2],
    "baseline": "majority",
    "reference": "greedy",
    "arms": [
        {"name": "greedy", "strategy": "cot", "budgets": [1]},
        {"name": "majority", "strategy": "best_of_n", "params": {"n": "{N}", "voting": "majority"}},
        {"name": "weighted", "strategy": "best_of_n", "params": {"n": "{N}", "voting": "weighted", "evaluator": "confidence"}},
        {"name": "beam", "strategy": "beam", "params": {"width": "{max(1, N // 2)}", "branch": 2, "max_depth": 4}},
    ],
}


def test_budget_templates_fill_n_and_refuse_code():
    filled = params_for_budget({"n": "{N}", "width": "{max(1, N // 4)}", "voting": "majority"}, 16)
    assert filled == {"n": 16, "width": 4, "voting": "majority"}
    assert params_for_budget({"width": "{max(1, N // 4)}"}, 1) == {"width": 1}
    assert params_for_budget({"iterations": "{N * 2 + 1}"}, 4) == {"iterations": 9}
    with pytest.raises(ConfigError, match="only N"):
        params_for_budget({"n": "{__import__('os').getpid()}"}, 4)
    with pytest.raises(ConfigError, match="expression in N"):
        params_for_budget({"n": "{N +}"}, 4)


def test_study_is_checked_before_any_model_loads():
    bad = {**STUDY, "arms": STUDY["arms"] + [{"name": "broken", "strategy": "best_of_n", "params": {"n": "{N - 1}"}}]}
    with pytest.raises(ConfigError, match=r"arm 'broken' at N=1: .*n=0 is out of range"):
        ScaleConfig.model_validate(bad).check()
    with pytest.raises(ConfigError, match="no arm is named 'nosuch'"):
        ScaleConfig.model_validate({**STUDY, "baseline": "nosuch"}).check()
    with pytest.raises(ConfigError, match="unique"):
        ScaleConfig.model_validate({**STUDY, "arms": STUDY["arms"] + [STUDY["arms"][0]]}).check()


def test_training_questions_are_left_out_of_the_evaluation(tmp_path):
    study = ScaleConfig.model_validate({**STUDY, "n": 5})
    tasks, dropped = load_study_tasks(study)
    assert len(tasks) == 5 and dropped == 0
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"trace_version": TRACE_VERSION, "task_id": "x", "question": q}) + "\n"
                             for q in (tasks[0].question, "  " + tasks[2].question + " ")))
    study.exclude_traces = [train]
    kept, dropped = load_study_tasks(study)
    assert dropped == 2 and len(kept) == 5
    assert not {tasks[0].question, tasks[2].question} & {t.question for t in kept}
    study.exclude_traces = [tmp_path / "missing.jsonl"]
    with pytest.raises(ConfigError, match="does not exist"):
        load_study_tasks(study)


def test_grid_runs_cheap_budgets_of_every_arm_first():
    study = ScaleConfig.model_validate(STUDY)
    assert [(a.name, b) for a, b in grid(study)] == [
        ("greedy", 1), ("majority", 1), ("weighted", 1), ("beam", 1), ("majority", 2), ("weighted", 2), ("beam", 2)]


def test_paired_bootstrap():
    assert paired_bootstrap([1.0, 0.0, 1.0], [1.0, 0.0, 1.0]) == (0.0, 0.0, 0.0)
    assert paired_bootstrap([1.0] * 5, [0.0] * 5) == (1.0, 1.0, 1.0)
    diff, lo, hi = paired_bootstrap([1.0] * 30 + [0.0] * 10, [1.0] * 20 + [0.0] * 20)
    assert diff == pytest.approx(0.25) and 0.0 < lo < 0.25 < hi
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [])


def tasks_with_answers(k: int = 6):
    """The fake backend answers 0-3, so these golds make some arms right and some wrong."""
    return [number_task(f"t{i}", gold=str(i % 4), question=f"q{i}") for i in range(k)]


def without_wall(cells):
    return [{**c, "summary": {k: v for k, v in c["summary"].items() if k not in ("wall_s", "cpu_s")}} for c in cells]


def test_study_runs_resumes_and_reports(tmp_path):
    study = ScaleConfig.model_validate(STUDY)
    tasks = tasks_with_answers()
    fake = FakeBackend.preset("arithmetic")
    result = run_study(study, tmp_path, tasks, policies={"fake": fake})
    assert len(result["cells"]) == 7 and all(c["summary"]["n"] == 6 for c in result["cells"])
    assert 0 < sum(c["summary"]["correct"] for c in result["cells"]) < 7 * 6
    cells = {(c["arm"], c["budget"]): c for c in result["cells"]}
    assert cells[("majority", 2)]["generated_tokens"] > cells[("majority", 1)]["generated_tokens"]
    # coverage: no vote over a cell's chains beats "some chain is right", and two samples cover at least what one does
    for c in result["cells"]:
        assert c["summary"]["accuracy"] <= c["coverage"] <= 1.0 and c["distinct_answers"] <= 2
    assert cells[("majority", 2)]["coverage"] >= cells[("majority", 1)]["coverage"] > 0
    kinds = {(d["arm"], d["budget"], d["against"]) for d in result["comparisons"]}
    assert ("weighted", 2, "majority") in kinds and ("beam", 2, "greedy") in kinds and ("greedy", 1, "majority") in kinds
    for d in result["comparisons"]:
        assert d["n"] == 6 and d["ci_low"] <= d["difference"] <= d["ci_high"]
    report = (tmp_path / "scaling.md").read_text()
    assert "| majority | best_of_n | fake | 2 | 6 |" in report and "Paired differences" in report
    assert "| wall | CPU |" in report and all(c["summary"]["cpu_s"] is not None for c in result["cells"])
    assert "| accuracy [95% CI] | coverage | answers |" in report
    assert (tmp_path / "scaling.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "results.json").read_text())["cells"] == result["cells"]
    # Resume: every cell finished, so nothing runs again, the report is the same, and no cell's own files are rewritten.
    written = {p: p.read_bytes() for p in (tmp_path / "runs").glob("*/*.json")}
    again = FakeBackend.preset("arithmetic")
    assert without_wall(run_study(study, tmp_path, tasks, policies={"fake": again})["cells"]) == without_wall(result["cells"])
    assert again.stats.calls == 0
    assert {p: p.read_bytes() for p in (tmp_path / "runs").glob("*/*.json")} == written


def test_interrupted_cell_resumes_where_it_stopped(tmp_path):
    study = ScaleConfig.model_validate({**STUDY, "arms": STUDY["arms"][:2], "budgets": [2]})
    tasks = tasks_with_answers()
    run_study(study, tmp_path, tasks[:3], policies={"fake": FakeBackend.preset("arithmetic")})
    (tmp_path / "runs" / "majority-N2" / "results.json").unlink()  # as if killed before the cell's summary
    result = run_study(study, tmp_path, tasks, policies={"fake": FakeBackend.preset("arithmetic")})
    lines = (tmp_path / "runs" / "majority-N2" / "traces.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["task_id"] for x in lines) == sorted(t.id for t in tasks)  # none twice
    assert {c["summary"]["n"] for c in result["cells"]} == {6}


def test_cli_scale_runs_a_pilot_and_reports_bad_input(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(STUDY))
    runner = CliRunner()
    res = runner.invoke(app, ["scale", str(path), "--out", str(tmp_path / "out"), "--n", "3", "--arms", "greedy,majority"])
    assert res.exit_code == 0, res.output
    assert "| greedy | cot | fake | 1 | 3 |" in res.output
    # off a terminal (a study in the background, logging to a file) progress comes as dated lines, each cell's own
    assert re.search(r"^\[\d\d:\d\d:\d\d\] cell 3/3: majority N=2: 0/3 \(0%\)", res.output, re.M), res.output
    assert re.search(r"^\[\d\d:\d\d:\d\d\] cell 3/3: majority N=2: 3/3 \(100%\) · \d/3 right in this run", res.output, re.M)
    assert (tmp_path / "out" / "runs" / "majority-N2").is_dir() and not (tmp_path / "out" / "runs" / "beam-N1").exists()
    # a re-vote alone: it needs its source's chains, so the source comes along, and its finished cells do not run again
    revote = {"name": "reweighted", "strategy": "best_of_n", "revote": "majority",
              "params": {"n": "{N}", "voting": "weighted", "evaluator": "confidence"}}
    path.write_text(yaml.safe_dump({**STUDY, "arms": [*STUDY["arms"], revote]}))
    before = (tmp_path / "out" / "runs" / "majority-N2" / "traces.jsonl").read_bytes()
    res = runner.invoke(app, ["scale", str(path), "--out", str(tmp_path / "out"), "--n", "3", "--arms", "reweighted"])
    assert res.exit_code == 0, res.output
    assert "re-votes read the chains of majority" in res.output and "| reweighted | best_of_n | fake | 2 | 3 |" in res.output
    assert (tmp_path / "out" / "runs" / "majority-N2" / "traces.jsonl").read_bytes() == before
    assert [a["name"] for a in json.loads((tmp_path / "out" / "study.json").read_text())["arms"]][-1] == "reweighted"
    res = runner.invoke(app, ["scale", str(path), "--out", str(tmp_path / "out"), "--n", "3", "--budgets", "2", "--arms", "greedy"])
    assert res.exit_code == 2 and "leave no cell to run" in res.output  # greedy has budget 1 only
    res = runner.invoke(app, ["scale", str(path), "--out", str(tmp_path / "out"), "--n", "3", "--budgets", "1"])
    assert res.exit_code == 0, res.output
    assert "| reweighted | best_of_n | fake | 2 | 3 |" in res.output and "| beam | beam | fake | 1 | 3 |" in res.output
    assert not (tmp_path / "out" / "runs" / "beam-N2").exists()  # budget 2 was not run, yet the report covers it
    res = runner.invoke(app, ["scale", str(path), "--out", str(tmp_path / "out"), "--arms", "nosuch"])
    assert res.exit_code == 2 and "unknown arm" in res.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**STUDY, "budgets": [0, 4]}))
    res = runner.invoke(app, ["scale", str(bad)])
    assert res.exit_code == 2 and "budgets" in res.output


def test_evaluator_auc_on_held_out_chains(tmp_path):
    """A verifier-as-evaluator separates right from wrong chains perfectly; the report carries its AUC."""
    study = ScaleConfig.model_validate({**STUDY, "arms": STUDY["arms"][:2], "budgets": [4], "auc": ["verifier"]})
    tasks = tasks_with_answers(8)
    announced: list[tuple[str, str, int]] = []
    result = run_study(study, tmp_path, tasks, policies={"fake": FakeBackend.preset("arithmetic")},
                       on_scoring=lambda *said: announced.append(said))
    (measured,) = result["evaluator_auc"]
    assert measured["cell"] == "majority-N4" and measured["chains"] >= 8 * 3
    assert announced == [("verifier", "majority-N4", measured["chains"])]  # scoring thousands of chains says so first
    assert 0 < measured["positives"] < measured["chains"]
    assert measured["auc"] == 1.0 and measured["ci_low"] == 1.0
    assert measured["within_auc"] in (1.0, None)  # 1.0 wherever a problem has a right and a wrong chain
    assert "| `verifier` | majority-N4 |" in (tmp_path / "scaling.md").read_text()
    confidence = auc_of("confidence", tmp_path, tasks)
    assert confidence.auc is not None and confidence.ci_low <= confidence.auc <= confidence.ci_high


def test_auc_reads_the_scores_a_revote_of_the_same_chains_wrote(tmp_path, monkeypatch):
    """The AUC's evaluator already scored majority's chains in the re-vote: nothing is scored twice, the AUC is the same."""
    import x1.evaluators.spec
    from x1.pipelines.scale_report import evaluator_aucs, read_cells

    arms = [STUDY["arms"][1], {"name": "confidence-vote", "strategy": "best_of_n", "revote": "majority",
                               "params": {"n": "{N}", "voting": "weighted", "evaluator": "confidence"}}]
    study = ScaleConfig.model_validate({**STUDY, "arms": arms, "budgets": [4], "reference": None, "auc": ["confidence"]})
    tasks = tasks_with_answers(8)
    run_study(study, tmp_path, tasks, policies={"fake": FakeBackend.preset("arithmetic")})
    scored_afresh = auc_of("confidence", tmp_path, tasks)
    (tmp_path / "auc.json").unlink()
    monkeypatch.setattr(x1.evaluators.spec, "build_evaluator", lambda *a, **k: pytest.fail("scored a chain again"))
    (reused,) = evaluator_aucs(study, tmp_path, tasks, read_cells(study, tmp_path, tasks))
    assert (reused.chains, reused.auc, reused.ci_low, reused.ci_high) == (
        scored_afresh.chains, scored_afresh.auc, scored_afresh.ci_low, scored_afresh.ci_high)
    assert scored_afresh.chains >= 8 * 3


def test_within_problem_auc_is_blind_to_problem_difficulty():
    """Scores that only say how easy a problem is rank chains well pooled, and at chance within a problem."""
    from x1.pipelines.recipe.metrics import auc
    from x1.pipelines.scale_auc import bootstrap_within_auc

    easy = {f"easy{i}": [(0.9, True), (0.9, True), (0.9, False)] for i in range(10)}
    hard = {f"hard{i}": [(0.1, True), (0.1, False), (0.1, False)] for i in range(10)}
    difficulty = {**easy, **hard}
    pooled = auc([s for pairs in difficulty.values() for s, _ in pairs], [label for pairs in difficulty.values() for _, label in pairs])
    assert pooled is not None and pooled > 0.65
    assert bootstrap_within_auc(difficulty)[0] == 0.5 and bootstrap_within_auc(difficulty)[3] == 20
    # and the other way round: each problem's right chain just above its wrong ones, problems far apart
    ranked = {f"p{i}": [(i + 0.2, True), (i + 0.1, False), (i + 0.1, False)] for i in range(10)}
    within, lo, hi, mixed = bootstrap_within_auc(ranked)
    assert (within, lo, hi, mixed) == (1.0, 1.0, 1.0, 10)
    assert bootstrap_within_auc({"all right": [(0.5, True)], "all wrong": [(0.4, False)]}) == (None, None, None, 0)


def auc_of(spec, out_dir, tasks):
    from x1.pipelines.scale import read_cell
    from x1.pipelines.scale_auc import evaluator_auc

    return evaluator_auc(spec, "majority-N4", list(read_cell(out_dir, "majority", 4).values()), tasks)


def test_revote_reuses_the_sampled_chains(tmp_path):
    """A re-voted arm samples nothing: same chains and tokens as its source; a verifier-weighted vote is never worse."""
    arms = [STUDY["arms"][1], {"name": "oracle-vote", "strategy": "best_of_n", "revote": "majority",
                               "params": {"n": "{N}", "voting": "weighted", "evaluator": "verifier"}}]
    study = ScaleConfig.model_validate({**STUDY, "arms": arms, "budgets": [4], "reference": None})
    tasks = tasks_with_answers(8)
    run_study(study, tmp_path, tasks[:5], policies={"fake": FakeBackend.preset("arithmetic")})
    fake = FakeBackend.preset("arithmetic")
    result = run_study(study, tmp_path, tasks, policies={"fake": fake})  # majority resumes; the re-vote catches up
    cells = {c["arm"]: c for c in result["cells"]}
    assert cells["oracle-vote"]["summary"]["n"] == cells["majority"]["summary"]["n"] == 8
    assert cells["oracle-vote"]["generated_tokens"] == cells["majority"]["generated_tokens"]
    assert cells["oracle-vote"]["summary"]["correct"] >= cells["majority"]["summary"]["correct"]
    lines = (tmp_path / "runs" / "oracle-vote-N4" / "traces.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["task_id"] for x in lines) == sorted(t.id for t in tasks)
    bad = {**STUDY, "arms": [arms[1], arms[0]], "budgets": [4], "reference": None}
    with pytest.raises(ConfigError, match="revote needs an arm listed before it"):
        ScaleConfig.model_validate(bad).check()
    as_beam = {**STUDY, "arms": [arms[0], {**arms[1], "strategy": "beam", "params": {"width": 1}}], "budgets": [4], "reference": None}
    with pytest.raises(ConfigError, match="must be best_of_n itself"):
        ScaleConfig.model_validate(as_beam).check()


def test_a_search_arms_trees_are_revoted_over_their_terminals(tmp_path):
    """MCTS answers with its best-valued terminal; a re-vote of its trees votes over all their terminals instead."""
    arms = [STUDY["arms"][1],
            {"name": "mcts", "strategy": "mcts", "params": {"iterations": "{2 * N}", "expand": 2}},
            {"name": "mcts-vote", "strategy": "best_of_n", "revote": "mcts", "params": {"n": "{N}", "voting": "weighted",
                                                                                         "evaluator": "verifier"}}]
    study = ScaleConfig.model_validate({**STUDY, "arms": arms, "budgets": [1, 4], "reference": None})
    tasks = tasks_with_answers(6)
    result = run_study(study, tmp_path, tasks, policies={"fake": FakeBackend.preset("arithmetic")})
    cells = {(c["arm"], c["budget"]): c for c in result["cells"]}
    vote4, mcts4 = cells[("mcts-vote", 4)], cells[("mcts", 4)]
    assert vote4["summary"]["n"] == 6 and vote4["generated_tokens"] == mcts4["generated_tokens"]
    assert vote4["summary"]["correct"] > mcts4["summary"]["correct"]  # right terminals MCTS passed over
    by_id, unfinished = {t.id: t for t in tasks}, 0
    for budget in (1, 4):
        runs = tmp_path / "runs"
        trees = {r["task_id"]: r for r in map(trace_record, (runs / f"mcts-N{budget}" / "traces.jsonl").read_text().splitlines())}
        for record in map(trace_record, (runs / f"mcts-vote-N{budget}" / "traces.jsonl").read_text().splitlines()):
            tree, task = trees[record["task_id"]], by_id[record["task_id"]]
            assert len(record["graph"]["thoughts"]) == len(tree["graph"]["thoughts"])  # the same tree, nothing sampled
            terminals = [t for t in record["graph"]["thoughts"] if t["terminal"]]
            if terminals:  # the verifier-weighted vote finds a right terminal wherever the tree has one
                assert record["correct"] == any(task.verify(t["answer"]).score == 1 for t in terminals)
            else:  # a tree that finished nothing keeps the search's own answer (MCTS's best leaf)
                unfinished += 1
                assert (record["answer"], record["correct"]) == (tree["answer"], tree["correct"])
    assert unfinished  # two iterations leave some trees with no finished chain

def test_report_answers_the_two_questions(tmp_path):
    arms = [STUDY["arms"][0], STUDY["arms"][1], {"name": "oracle-vote", "strategy": "best_of_n", "revote": "majority",
                                                 "params": {"n": "{N}", "voting": "weighted", "evaluator": "verifier"}}]
    study = ScaleConfig.model_validate({**STUDY, "arms": arms, "budgets": [1, 4]})
    run_study(study, tmp_path, tasks_with_answers(8), policies={"fake": FakeBackend.preset("arithmetic")})
    report = (tmp_path / "scaling.md").read_text()
    assert "(a) N=4: the best evaluator-guided arm, oracle-vote, against majority: +" in report
    assert "(b) The policy's best cell, " in report and "against greedy" in report


def test_a_cell_still_running_does_not_answer_where_a_finished_one_can():
    """A running cell has its quick problems only (often the easy ones): 80% on 5 must not beat 50% on 200."""
    from x1.pipelines.evaluate import summarize
    from x1.pipelines.scale_report import Cell, answers

    def cell(arm, right, n):
        records = [{"correct": i < right, "score": float(i < right), "compute": {"prompt_tokens": 1, "generated_tokens": 10,
                                                                               "policy_calls": 1}} for i in range(n)]
        return Cell(arm, 4, summarize(records, "samples", "best_of_n", "fake", 0.0, 0), 10.0, 1.0)

    guided = {"strategy": "best_of_n", "params": {"n": "{N}", "voting": "weighted", "evaluator": "judge"}}
    study = ScaleConfig.model_validate({**STUDY, "arms": [STUDY["arms"][0], STUDY["arms"][1], {"name": "weighted", **guided},
                                                          {"name": "searching", **guided}]})
    lines = answers(study, [cell("majority", 80, 200), cell("weighted", 100, 200), cell("searching", 4, 5)], [])
    assert "(a) N=4: the best evaluator-guided arm, weighted, against majority: no shared problems yet, 10 vs 10 generated tokens." in lines
    assert "(b) The policy's best cell, weighted at N=4, against greedy: no shared problems yet." in lines
    assert lines[-1] == "Still running, and left out of the answers where a finished cell exists: searching at N=4 (5 of 200)."


def test_a_revote_charges_its_evaluators_positions_and_an_old_count_stays_unknown(tmp_path, monkeypatch):
    from x1.evaluators import spec as spec_module
    from x1.pipelines.evaluate import summarize

    class Counting:
        """An evaluator with a model: 10 positions per scored chain."""

        name, model_calls, model_tokens = "counting", 0, 0

        def evaluate(self, items):
            self.model_calls += 1
            self.model_tokens += 10 * len(items)
            return [0.5] * len(items)

    arms = [STUDY["arms"][1], {"name": "counted", "strategy": "best_of_n", "revote": "majority",
                               "params": {"n": "{N}", "voting": "weighted", "evaluator": "verifier"}}]
    study = ScaleConfig.model_validate({**STUDY, "arms": arms, "budgets": [4], "reference": None})
    monkeypatch.setattr(spec_module, "build_evaluator", lambda spec, policy=None, **kw: Counting())
    result = run_study(study, tmp_path, tasks_with_answers(5), policies={"fake": FakeBackend.preset("arithmetic")})
    cells = {c["arm"]: c["summary"] for c in result["cells"]}
    records = [trace_record(x) for x in (tmp_path / "runs" / "counted-N4").joinpath("traces.jsonl").read_text().splitlines()]
    chains = [len([t for t in r["graph"]["thoughts"] if t["terminal"]]) for r in records]
    assert [r["compute"]["evaluator_tokens"] for r in records] == [10 * n for n in chains]
    assert cells["counted"]["evaluator_tokens"] == 10 * sum(chains) and cells["majority"]["evaluator_tokens"] == 0
    assert "| evaluator tok |" in (tmp_path / "scaling.md").read_text()
    # records written before the count: known to be 0 where no evaluator was called, unknown where one was
    old = [{"correct": True, "score": 1.0, "compute": {"prompt_tokens": 1, "generated_tokens": 1, "policy_calls": 1,
                                                      "evaluator_calls": calls}} for calls in (0, 3)]
    assert summarize(old[:1], "t", "s", "m", 0.0, 0).evaluator_tokens == 0
    assert summarize(old, "t", "s", "m", 0.0, 0).evaluator_tokens is None


def test_an_evaluators_positions_are_shared_by_item_count_and_sum_exactly():
    from x1.engine import _shares

    assert _shares(100, [0, 0, 1]) == {0: 67, 1: 33}
    assert sum(_shares(7, [3, 1, 2, 1, 3]).values()) == 7


def test_a_revote_takes_scores_its_source_or_a_sibling_already_wrote(tmp_path, monkeypatch):
    """value-best then value-weighted score the same chains with the same model: the second computes nothing, is
    charged what the first paid, and votes on the very same scores; MCTS's trees already hold its evaluator's scores."""
    from x1.evaluators import spec as spec_module

    built = []

    class Counting:
        name, model_calls, model_tokens = "counting", 0, 0

        def evaluate(self, items):
            self.model_calls += 1
            self.model_tokens += 10 * len(items)
            return [0.1 * (item.thought_id % 7) for item in items]

    def build(spec, policy=None, **kw):
        built.append(spec)
        return Counting()

    arms = [STUDY["arms"][1],
            {"name": "best", "strategy": "best_of_n", "revote": "majority",
             "params": {"n": "{N}", "voting": "reward", "evaluator": "judge"}},
            {"name": "weighted", "strategy": "best_of_n", "revote": "majority",
             "params": {"n": "{N}", "voting": "weighted", "evaluator": "judge"}},
            {"name": "mcts", "strategy": "mcts", "params": {"iterations": "{2 * N}", "expand": 2, "evaluator": "confidence"}},
            {"name": "mcts-weighted", "strategy": "best_of_n", "revote": "mcts",
             "params": {"n": "{N}", "voting": "weighted", "evaluator": "confidence"}}]
    study = ScaleConfig.model_validate({**STUDY, "arms": arms, "budgets": [4], "reference": None})
    tasks = tasks_with_answers(6)
    monkeypatch.setattr(spec_module, "build_evaluator", build)
    run_study(study, tmp_path, tasks, policies={"fake": FakeBackend.preset("arithmetic")})
    # built for the first re-vote of majority's chains and for the MCTS search itself; the other two re-votes reuse
    assert [s.text for s in built] == ["judge", "confidence"]

    def records(cell):
        return {r["task_id"]: r for r in map(trace_record, (tmp_path / "runs" / cell / "traces.jsonl").read_text().splitlines())}

    best, weighted = records("best-N4"), records("weighted-N4")
    for task_id, record in weighted.items():
        assert record["compute"]["evaluator_calls"] == best[task_id]["compute"]["evaluator_calls"] == 1
        assert record["compute"]["evaluator_tokens"] == best[task_id]["compute"]["evaluator_tokens"] > 0
        scored = {t["id"]: t["scores"]["judge"] for t in record["graph"]["thoughts"] if t["terminal"]}
        assert scored == {t["id"]: t["scores"]["judge"] for t in best[task_id]["graph"]["thoughts"] if t["terminal"]}
    trees, revoted = records("mcts-N4"), records("mcts-weighted-N4")
    for task_id, record in revoted.items():
        assert record["compute"] == trees[task_id]["compute"]  # the search's own scores: nothing more to pay
    # without the sibling, the scores are computed afresh: the same votes
    (tmp_path / "runs" / "weighted-N4" / "traces.jsonl").unlink()
    built.clear()
    alone = ScaleConfig.model_validate({**STUDY, "arms": [arms[0], arms[2]], "budgets": [4], "reference": None})
    run_study(alone, tmp_path, tasks, policies={"fake": FakeBackend.preset("arithmetic")})
    assert [s.text for s in built] == ["judge"]
    assert {k: r["answer"] for k, r in records("weighted-N4").items()} == {k: r["answer"] for k, r in weighted.items()}


def test_a_prms_step_scores_are_kept_and_give_every_other_aggregation(tmp_path, monkeypatch):
    """A PRM re-vote keeps each chain's step scores: a re-vote or an AUC with another aggregation needs no model."""
    from test_evaluator_loop import head_folder

    from x1.evaluators import spec as spec_module
    from x1.evaluators.aggregate import aggregate_steps
    from x1.pipelines.scale_auc import scores_given

    built = []

    class SteppedPRM:
        name, model_calls, model_tokens = "prm", 0, 0

        def __init__(self, aggregate):
            self.aggregate = aggregate

        def step_scores(self, items):
            self.model_calls += 1
            self.model_tokens += 10 * len(items)
            return [[0.1 * ((item.thought_id + k) % 9) for k in range(len(item.steps))] for item in items]

    def build(spec, policy=None, **kw):
        built.append(spec.text)
        return SteppedPRM(spec.aggregate)

    folder = head_folder(tmp_path, "prm")
    last, least = f"prm:{folder}?aggregate=last", f"prm:{folder}"
    arms = [STUDY["arms"][1]] + [{"name": name, "strategy": "best_of_n", "revote": "majority",
                                  "params": {"n": "{N}", "voting": "weighted", "evaluator": spec}}
                                 for name, spec in (("prm-last", last), ("prm-min", least))]
    study = ScaleConfig.model_validate({**STUDY, "arms": arms, "budgets": [4], "reference": None})
    monkeypatch.setattr(spec_module, "build_evaluator", build)
    run_study(study, tmp_path / "out", tasks_with_answers(5), policies={"fake": FakeBackend.preset("arithmetic")})
    assert built == [last]  # the min re-vote aggregated the kept step scores
    runs = tmp_path / "out" / "runs"
    kept, by_min = ([trace_record(x) for x in (runs / cell / "traces.jsonl").read_text().splitlines()]
                    for cell in ("prm-last-N4", "prm-min-N4"))
    mins = {(r["task_id"], t["id"]): t["scores"][least] for r in by_min for t in r["graph"]["thoughts"] if t["terminal"]}
    assert mins and scores_given(least, kept) == mins
    for record in kept:
        for t in (t for t in record["graph"]["thoughts"] if t["terminal"]):
            steps = t["meta"]["step_scores"][last]
            assert t["scores"][last] == aggregate_steps(steps, "last")
            assert mins[(record["task_id"], t["id"])] == aggregate_steps(steps, "min")
