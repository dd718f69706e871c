"""ToT BFS/DFS, DVTS, graph of operations, nested and adaptive branching on the scripted fake.

Every expected id, order and answer below is worked out by hand from the script: the fake
answers by the longest key the prompt ends with (cycling), and ``Scripted`` scores a thought by
its text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from x1.engine import Budget, Engine
from x1.evaluators.base import EvalItem
from x1.graph import ROOT_ID, ReasoningGraph, Thought
from x1.models.base import Completion, GenerationRequest
from x1.models.fake import FakeBackend
from x1.strategies import STRATEGIES, build_strategy
from x1.strategies.adaptive import AdaptiveBranching
from x1.strategies.base import Problem
from x1.strategies.dvts import DVTS
from x1.strategies.graph_of_operations import GraphOfOperations
from x1.strategies.nested import Nested
from x1.strategies.tot import TreeOfThoughtsBFS, TreeOfThoughtsDFS
from x1.tasks.answers import numbers_equal
from x1.tasks.base import Task, Verification


def make_task(gold: str, task_id: str = "t") -> Task:
    return Task(id=task_id, question="q", gold=gold, verifier=lambda a, g: Verification(1.0 if numbers_equal(a, g) else 0.0))


@dataclass
class Scripted:
    """A tiny evaluator: the score of a thought is looked up by its (stripped) text."""

    scores: dict[str, float]
    default: float = 0.5
    name: str = "scripted"
    model_calls: int = 0
    seen: list[str] = field(default_factory=list)

    def evaluate(self, items: list[EvalItem]) -> list[float]:
        texts = [item.thought.text.strip() for item in items]
        self.seen.extend(texts)
        return [self.scores.get(t, self.default) for t in texts]


class RecordingFake(FakeBackend):
    """The scripted fake, remembering every prompt; with ``entropy``, it reports token signals by text."""

    def __init__(self, responses: dict[str, list[str]], entropy: dict[str, float] | None = None) -> None:
        super().__init__(responses)
        self.entropy = entropy or {}
        self.prompts: list[str] = []

    def generate(self, requests: list[GenerationRequest]) -> list[list[Completion]]:
        self.prompts.extend(r.prompt for r in requests)
        out = super().generate(requests)
        for req, group in zip(requests, out, strict=True):
            for c in group:
                if req.signals:
                    c.signals = [{"entropy": self.entropy.get(c.text.strip(), 0.1), "varentropy": 0.0}]
        return out


def texts(graph: ReasoningGraph, ids: list[int]) -> list[str]:
    return [graph[i].text.strip() for i in ids]


# -- registry -------------------------------------------------------------------------------
def test_new_strategies_are_registered_and_build_by_name() -> None:
    for name in ("tot_bfs", "tot_dfs", "dvts", "graph_of_operations", "nested", "adaptive"):
        assert name in STRATEGIES
        assert build_strategy(name).name == name
    assert build_strategy("tot_dfs", threshold=0.7).threshold == 0.7
    with pytest.raises(ValueError, match="no parameter"):
        build_strategy("dvts", beam=3)


# -- ToT depth-first ------------------------------------------------------------------------
DFS_SCRIPT = {
    "": ["A\n\n", "B\n\n"],
    "A\n\n": ["A1\n\n", "A2\n\n"],
    "A1\n\n": ["The answer is 3.<eos>", "A1b\n\n"],  # a dead end: a wrong terminal and a weak step
    "B\n\n": ["The answer is 4.<eos>", "B2\n\n"],
}
DFS_SCORES = {"A": 0.9, "B": 0.6, "A1": 0.6, "A2": 0.3, "The answer is 3.": 0.1, "A1b": 0.2, "The answer is 4.": 0.8, "B2": 0.7}


def test_dfs_backtracks_out_of_a_dead_end() -> None:
    fake = RecordingFake(DFS_SCRIPT)
    engine = Engine(fake, {"scripted": Scripted(DFS_SCORES)})
    (out,) = engine.run([make_task("4")], TreeOfThoughtsDFS(branch=2, threshold=0.5, evaluator="scripted"))
    g = out.graph
    # ids: A=1 B=2 | A1=3 A2=4 | "answer 3"=5 A1b=6 | "answer 4"=7 B2=8
    assert texts(g, [1, 2, 3, 4, 5, 6, 7, 8]) == ["A", "B", "A1", "A2", "The answer is 3.", "A1b", "The answer is 4.", "B2"]
    # root → A (best) → A1 (only survivor) → dead end → back past A to the root's next-best child B
    assert g.meta["visited"] == [ROOT_ID, 1, 3, 2]
    assert g.meta["found"] == 7
    assert {t.id for t in g if t.pruned} == {4, 5, 6}  # below threshold, including the wrong terminal
    assert g[8].children == [] and not g[8].pruned  # never needed
    assert out.answer == "4" and out.correct and engine.ticks == 4


def test_dfs_stops_at_max_nodes() -> None:
    engine = Engine(RecordingFake(DFS_SCRIPT), {"scripted": Scripted(DFS_SCORES)})
    (out,) = engine.run([make_task("4")], TreeOfThoughtsDFS(branch=2, evaluator="scripted", max_nodes=5))
    assert len(out.graph) == 5 and out.graph.meta["visited"] == [ROOT_ID, 1]
    assert out.answer_thought is None and out.stop_reason == "finished"


def test_dfs_with_every_branch_dead_finishes_without_answer() -> None:
    scores = dict(DFS_SCORES, B=0.1)
    engine = Engine(RecordingFake(DFS_SCRIPT), {"scripted": Scripted(scores)})
    (out,) = engine.run([make_task("4")], TreeOfThoughtsDFS(branch=2, evaluator="scripted"))
    assert out.graph.meta["visited"] == [ROOT_ID, 1, 3]
    assert out.graph.meta["current"] is None and out.graph.meta["found"] is None
    assert out.answer == "3"  # the best-scored terminal seen, though the evaluator rejected it


# -- ToT breadth-first ----------------------------------------------------------------------
BFS_SCRIPT = {
    "": ["a\n\n", "b\n\n", "c\n\n"],
    "a\n\n": ["a1\n\n", "a2\n\n", "The answer is 1.<eos>"],
    "c\n\n": ["c1\n\n", "The answer is 2.<eos>", "c3\n\n"],
    "a2\n\n": ["The answer is 5.<eos>", "The answer is 2.<eos>", "a2x\n\n"],
}
BFS_SCORES = {
    "a": 0.9, "b": 0.5, "c": 0.7,
    "a1": 0.4, "a2": 0.8, "The answer is 1.": 0.6, "c1": 0.3, "The answer is 2.": 0.95, "c3": 0.1,
    "The answer is 5.": 0.2, "a2x": 0.5,
}


def test_bfs_keeps_exactly_breadth_per_level() -> None:
    engine = Engine(RecordingFake(BFS_SCRIPT), {"scripted": Scripted(BFS_SCORES)})
    strategy = TreeOfThoughtsBFS(branch=3, breadth=2, evaluator="scripted", max_depth=3)
    (out,) = engine.run([make_task("2")], strategy)
    g = out.graph
    # level 1: a=1 b=2 c=3 → keep a, c
    # level 2: a1=4 a2=5 "1"=6 | c1=7 "2"=8 c3=9 → keep "2" (.95), a2 (.8)
    # level 3: "5"=10 "2"=11 a2x=12 → keep "2" (.95), a2x (.5, at max_depth: completed)
    assert g.meta["levels"] == [[1, 3], [8, 5], [11, 12]]
    assert all(len(level) == 2 for level in g.meta["levels"])
    assert {t.id for t in g if t.pruned} == {2, 4, 6, 7, 9, 10}
    assert g[2].children == []  # b was cut at level 1 and never expanded
    assert [len(g[t].children) for t in (ROOT_ID, 1, 3, 5)] == [3, 3, 3, 3]
    assert g.meta["completed"] == [8, 11, 12] and g.meta["frontier"] == []
    assert out.answer_thought is not None and out.answer_thought.id == 8
    assert out.answer == "2" and engine.ticks == 3


# -- DVTS -----------------------------------------------------------------------------------
DVTS_SCRIPT = {
    "": ["a\n\n", "b\n\n", "c\n\n", "d\n\n", "e\n\n", "f\n\n"],
    "a\n\n": ["a: the answer is 7.<eos>", "a: the answer is 9.<eos>"],
    "c\n\n": ["c: the answer is 8.<eos>", "c: the answer is 7.<eos>"],
    "e\n\n": ["e: the answer is 8.<eos>", "e: the answer is 1.<eos>"],
}
DVTS_SCORES = {
    "a": 0.9, "b": 0.8, "c": 0.3, "d": 0.2, "e": 0.35, "f": 0.1,
    "a: the answer is 7.": 0.6, "a: the answer is 9.": 0.4,
    "c: the answer is 8.": 0.5, "c: the answer is 7.": 0.3,
    "e: the answer is 8.": 0.45, "e: the answer is 1.": 0.2,
}


def test_dvts_subtrees_are_independent_and_vote() -> None:
    engine = Engine(RecordingFake(DVTS_SCRIPT), {"scripted": Scripted(DVTS_SCORES)})
    (out,) = engine.run([make_task("8")], DVTS(n=6, width=2, evaluator="scripted", voting="weighted"))
    g = out.graph
    # subtree 0 gets a=1 b=2, subtree 1 c=3 d=4, subtree 2 e=5 f=6; each keeps its own best,
    # so c (.3) and e (.35) survive although b (.8) outscores them: a shared beam would keep a, b
    assert [g[t].meta["subtree"] for t in range(1, 7)] == [0, 0, 1, 1, 2, 2]
    assert {t.id for t in g if t.pruned} == {2, 4, 6, 8, 10, 12}
    assert [len(g[t].children) for t in (1, 3, 5)] == [2, 2, 2]
    assert g.meta["tips"] == [7, 9, 11]
    for t in g:
        if t.id != ROOT_ID and t.parents[0] != ROOT_ID:
            assert t.meta["subtree"] == g[t.parents[0]].meta["subtree"]
    # weighted vote: 7 → .6, 8 → .5 + .45 = .95; the single best chain (reward) would say 7
    assert out.answer == "8" and out.correct and engine.ticks == 2
    reward = DVTS(n=6, width=2, evaluator="scripted", voting="reward").answer(Problem(make_task("8"), g))
    assert reward is not None and reward.answer == "7"


def test_dvts_rejects_width_above_n() -> None:
    with pytest.raises(ValueError, match="width"):
        DVTS(n=2, width=4)


# -- graph of operations --------------------------------------------------------------------
GOO_SCRIPT = {
    "": ["S1 The answer is 1.<eos>", "S2 The answer is 2.<eos>", "S3 The answer is 3.<eos>", "S4 The answer is 4.<eos>"],
    "Combined solution:\n": ["M The answer is 5.<eos>"],
    "Rewritten version:\n": ["R The answer is 6.<eos>"],
}
GOO_SCORES = {"S1 The answer is 1.": 0.2, "S2 The answer is 2.": 0.9, "S3 The answer is 3.": 0.7, "S4 The answer is 4.": 0.1}


def test_graph_of_operations_runs_its_schedule_in_order() -> None:
    fake = RecordingFake(GOO_SCRIPT)
    engine = Engine(fake, {"scripted": Scripted(GOO_SCORES)})
    ops = [{"op": "generate", "n": 4}, {"op": "score"}, {"op": "keep_best", "k": 2}, {"op": "aggregate"},
           {"op": "refine"}, {"op": "keep_best", "k": 1}]
    (out,) = engine.run([make_task("6")], build_strategy("graph_of_operations", ops=ops, evaluator="scripted"))
    g = out.graph
    g.validate()
    assert g.meta["log"] == ["generate", "score", "keep_best", "aggregate", "refine", "keep_best"]
    # generate: 1..4 whole solutions; keep S2, S3; aggregate → 5 below both; refine 5 → 6 beside it
    assert {t.id for t in g if t.pruned} == {1, 4}
    assert g[5].parents == [2, 3] and g[5].text == "M The answer is 5."
    assert g[6].parents == [2, 3] and g[6].meta["refines"] == 5 and g[6].text == "R The answer is 6."
    assert g.meta["working"] == [6] and out.answer == "6" and out.correct
    # 4 ticks (generate, score, aggregate, refine); 3 of them call the policy
    assert engine.ticks == 4 and fake.stats.calls == 3
    prefix = g.meta["prefix"]
    assert len(fake.prompts) == 3  # generate (one request, n=4), aggregate, refine
    assert fake.prompts[1] == (
        prefix + "Here are 2 attempts at this problem.\n\nAttempt 1:\nS2 The answer is 2.\n\n"
        "Attempt 2:\nS3 The answer is 3.\n\nCombine their strengths into one correct solution. Combined solution:\n"
    )
    assert fake.prompts[2] == (
        prefix + "Here is a draft:\nM The answer is 5.\n\nFeedback on the draft: Check it for mistakes and fix "
        "any you find.\n\nRewrite the draft so that it is correct. Rewritten version:\n"
    )


def test_graph_of_operations_validates_its_schedule() -> None:
    with pytest.raises(ValueError, match=r"ops\[1\].*one of"):
        GraphOfOperations(ops=[{"op": "generate"}, {"op": "frobnicate"}])
    with pytest.raises(ValueError, match=r"keep_best.*\['kk'\]"):
        GraphOfOperations(ops=[{"op": "keep_best", "kk": 1}])


# -- nested ---------------------------------------------------------------------------------
NESTED_SCRIPT = {
    "": ["Sub: find x.\n\n"],
    "Sub: find x.\n\n": ["x = 3<eos>", "x = 5<eos>", "x = 3<eos>"],
    "x = 3\n\n": ["The answer is 6.<eos>"],
}


def test_nested_solves_a_step_with_an_inner_strategy_in_shared_batches() -> None:
    fake = RecordingFake(NESTED_SCRIPT)
    engine = Engine(fake)
    strategy = Nested(inner="best_of_n", inner_params={"n": 3}, max_substeps=1)
    outs = engine.run([make_task("6", "t1"), make_task("6", "t2")], strategy)
    # tick 1: outer proposals; tick 2: the inner best-of-3 (both problems); tick 3: the final step
    assert engine.ticks == 3 and fake.stats.calls == 3  # one batched policy call per tick
    for out in outs:
        g = out.graph
        g.validate()
        step, result, final = g[1], g[2], g[3]
        assert step.text == "Sub: find x.\n\n" and isinstance(step.nested, ReasoningGraph)
        inner = step.nested
        assert inner.meta["prefix"] == g.meta["prefix"] + "Sub: find x.\n\n"
        assert [t.text for t in inner if t.id != ROOT_ID] == ["x = 3", "x = 5", "x = 3"]
        assert [t.answer for t in inner if t.id != ROOT_ID] == ["3", "5", "3"]
        # majority of the inner chains → the first "x = 3", attached as one outer step
        assert result.text == "x = 3\n\n" and result.parents == [1] and result.meta["nested_answer"] == "3"
        assert final.terminal and out.answer == "6" and out.correct
        # nothing counted twice: 3 + 3·3 + 4 generated words
        assert g.total_compute().generated_tokens == 16
        # the inner graph survives a checkpoint round trip
        again = ReasoningGraph.from_json(g.to_json())
        assert again[1].nested is not None and again[1].nested.path_text(1) == "x = 3"
    inner_prompts = [p for p in fake.prompts if p.endswith("Sub: find x.\n\n")]
    assert len(inner_prompts) == 2


def test_nested_refuses_an_inner_strategy_with_an_evaluator() -> None:
    with pytest.raises(ValueError, match="evaluator"):
        Nested(inner="beam")


# -- adaptive branching ---------------------------------------------------------------------
ADAPTIVE_SCRIPT = {
    "": ["A\n\n"],
    "A\n\n": ["B\n\n", "C\n\n", "D\n\n"],
    "B\n\n": ["The answer is 5.<eos>"],
    "C\n\n": ["The answer is 5.<eos>"],
    "D\n\n": ["The answer is 6.<eos>"],
}


def test_adaptive_branches_only_where_the_signals_are_high() -> None:
    fake = RecordingFake(ADAPTIVE_SCRIPT, entropy={"B": 2.0})  # every other step: entropy 0.1
    engine = Engine(fake)
    (out,) = engine.run([make_task("5")], AdaptiveBranching(branch=3, entropy_threshold=1.5))
    g = out.graph
    # A=1 (calm), B=2 (uncertain: fork at A), "5" after B=3, C=4 and D=5 sampled at A, then "5"=6, "6"=7
    assert g.meta["forks"] == [1]
    assert g.root.children == [1] and g[1].children == [2, 4, 5]
    assert [g[t].meta.get("fork") for t in (2, 4, 5)] == [None, 1, 1]
    assert g[2].signals["entropy_mean"] == 2.0 and g[1].signals["entropy_mean"] == 0.1
    assert sorted(g.meta["tips"]) == [3, 6, 7]
    assert out.answer == "5" and out.correct  # majority of 5, 5, 6
    assert engine.ticks == 4 and fake.stats.calls == 4


def test_adaptive_stays_a_single_chain_when_calm_or_capped() -> None:
    for strategy in (AdaptiveBranching(branch=3, entropy_threshold=5.0), AdaptiveBranching(branch=3, max_paths=2)):
        fake = RecordingFake(ADAPTIVE_SCRIPT, entropy={"B": 2.0})
        (out,) = Engine(fake).run([make_task("5")], strategy)
        assert out.graph.meta["forks"] == []
        assert [t.text for t in out.graph.path(out.answer_thought.id)] == ["A\n\n", "B\n\n", "The answer is 5."]


def test_adaptive_reads_varentropy_and_the_surprisal_fallback() -> None:
    s = AdaptiveBranching(entropy_threshold=1.0, varentropy_threshold=2.0)
    assert s.uncertain(Thought(id=1, signals={"entropy_mean": 0.2, "varentropy_max": 2.5}))
    assert not s.uncertain(Thought(id=1, signals={"entropy_mean": 0.2, "varentropy_max": 1.5}))
    no_signals = Thought(id=1, logprobs=[-2.0, -1.0])  # mean surprisal 1.5
    assert not s.uncertain(no_signals)
    assert AdaptiveBranching(entropy_threshold=1.0, surprisal_fallback=True).uncertain(no_signals)


def test_strategies_respect_an_engine_budget() -> None:
    engine = Engine(RecordingFake(BFS_SCRIPT), {"scripted": Scripted(BFS_SCORES)}, budget=Budget(max_nodes=4))
    (out,) = engine.run([make_task("2")], TreeOfThoughtsBFS(branch=3, breadth=2, evaluator="scripted"))
    assert out.stop_reason == "node budget" and out.answer_thought is not None and out.answer_thought.id == 1
