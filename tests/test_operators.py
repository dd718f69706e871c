"""Operators refine, aggregate, restructure and backtrack: exact prompts, links and chain text."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from x1.engine import Engine
from x1.graph import ROOT_ID, ReasoningGraph, Thought
from x1.models.base import Completion, GenerationRequest
from x1.models.fake import FakeBackend
from x1.operators.aggregate import aggregate_prompt, aggregate_request, attach_aggregate
from x1.operators.backtrack import backtrack, untried_children
from x1.operators.refine import attach_refined, refine_prompt, refine_request
from x1.operators.restructure import BACKTRACK_TEXT, journey_steps, to_chain_graph, to_journey_chain
from x1.strategies.base import Expand, Problem, Reply, Request, Strategy
from x1.tasks.answers import numbers_equal
from x1.tasks.base import Task, Verification

W = BACKTRACK_TEXT


def make_task(gold: str = "5", task_id: str = "t") -> Task:
    return Task(id=task_id, question="q", gold=gold, verifier=lambda a, g: Verification(1.0 if numbers_equal(a, g) else 0.0))


class RecordingFake(FakeBackend):
    """The scripted fake, remembering every prompt it was sent."""

    def __init__(self, responses: dict[str, list[str]]) -> None:
        super().__init__(responses)
        self.prompts: list[str] = []

    def generate(self, requests: list[GenerationRequest]) -> list[list[Completion]]:
        self.prompts.extend(r.prompt for r in requests)
        return super().generate(requests)


@dataclass
class TwoThenOp(Strategy):
    """Test-only: generate ``n`` children of the root, then aggregate them or refine the first."""

    op: str = "aggregate"
    n: int = 2
    feedback: str = "2 is wrong."
    name: str = "two_then_op"

    def start(self, problem: Problem) -> None:
        problem.meta.update(stage=0, kids=[])

    def ask(self, problem: Problem) -> list[Request]:
        stage, kids = problem.meta["stage"], problem.meta["kids"]
        if stage == 0:
            return [Expand(ROOT_ID, n=self.n)]
        if stage == 1 and self.op == "aggregate":
            return [aggregate_request(problem.graph, kids)]
        if stage == 1:
            return [refine_request(problem.graph, kids[0], self.feedback)]
        return []

    def tell(self, problem: Problem, replies: list[Reply]) -> None:
        meta: dict[str, Any] = problem.meta
        (reply,) = replies
        if meta["stage"] == 0:
            meta["kids"] = reply.thought_ids
        elif self.op == "aggregate":
            meta["result"] = [t.id for t in attach_aggregate(problem.graph, problem.task, meta["kids"], reply.completions)]
        else:
            meta["result"] = [t.id for t in attach_refined(problem.graph, problem.task, meta["kids"][0], reply.completions, replace=True)]
        meta["stage"] += 1

    def answer(self, problem: Problem) -> Thought | None:
        result = problem.meta.get("result")
        return problem.graph[result[0]] if result else None


# -- aggregate ------------------------------------------------------------------------------
def test_aggregate_yields_a_thought_with_two_parents() -> None:
    fake = RecordingFake({"": ["x = 2\n\n", "y = 3\n\n"], "Combined solution:\n": ["x + y = 5\n\n"]})
    engine = Engine(fake)
    (out,) = engine.run([make_task()], TwoThenOp(op="aggregate"))
    g = out.graph
    g.validate()
    merged = g[3]
    assert merged.text == "x + y = 5\n\n"
    assert merged.parents == [1, 2]
    assert g[1].children == [3] and g[2].children == [3]
    assert merged.meta["aggregates"] == [1, 2] and merged.meta["tag"] == "aggregate"
    prefix = g.meta["prefix"]
    assert fake.prompts[1] == (
        prefix + "Here are 2 attempts at this problem.\n\nAttempt 1:\nx = 2\n\nAttempt 2:\ny = 3\n\n"
        "Combine their strengths into one correct solution. Combined solution:\n"
    )
    # one generate call + one aggregate call, each counted once (the merge carries no compute)
    assert g.total_compute().policy_calls == 2 and merged.compute.policy_calls == 0
    assert engine.ticks == 2


def test_aggregate_needs_two_thoughts() -> None:
    g = ReasoningGraph()
    a = g.add(ROOT_ID, "a")
    with pytest.raises(ValueError, match="at least two"):
        aggregate_request(g, [a.id])


def test_aggregate_prompt_uses_whole_paths() -> None:
    g = ReasoningGraph(meta={"prefix": "P|"})
    a = g.add(ROOT_ID, "a\n\n")
    b = g.add(a.id, "b\n\n")
    c = g.add(ROOT_ID, "c\n\n")
    assert aggregate_prompt(g, [b.id, c.id]) == (
        "P|Here are 2 attempts at this problem.\n\nAttempt 1:\na\n\nb\n\nAttempt 2:\nc\n\n"
        "Combine their strengths into one correct solution. Combined solution:\n"
    )


# -- refine ---------------------------------------------------------------------------------
def test_refine_prompt_keeps_the_path_before_the_step() -> None:
    g = ReasoningGraph(meta={"prefix": "P|"})
    a = g.add(ROOT_ID, "a\n\n")
    b = g.add(a.id, "b\n\n")
    expected = "P|a\n\nHere is a draft:\nb\n\nFeedback on the draft: fb\n\nRewrite the draft so that it is correct. Rewritten version:\n"
    assert refine_prompt(g, b.id, "fb") == expected
    req = refine_request(g, b.id, "fb", n=2)
    assert (req.thought_id, req.n, req.attach, req.tag, req.prompt) == (b.id, 2, False, "refine", expected)
    assert refine_prompt(g, b.id, "fb", context="").startswith("P|Here is a draft:\nb")


def test_refine_attaches_a_sibling_that_replaces_the_original() -> None:
    fake = RecordingFake({"": ["x = 2\n\n"], "Rewritten version:\n": ["x = 3\n\n"]})
    (out,) = Engine(fake).run([make_task("3")], TwoThenOp(op="refine", n=1))
    g = out.graph
    g.validate()
    assert g.root.children == [1, 2]  # the rewrite is a sibling, not a child
    assert g[2].text == "x = 3\n\n" and g[2].parents == [ROOT_ID]
    assert g[2].meta["refines"] == 1 and g[2].meta["tag"] == "refine"
    assert g[1].pruned and not g[2].pruned
    assert fake.prompts[1] == (
        g.meta["prefix"] + "Here is a draft:\nx = 2\n\nFeedback on the draft: 2 is wrong.\n\n"
        "Rewrite the draft so that it is correct. Rewritten version:\n"
    )


def test_refined_terminal_gets_its_answer_and_root_cannot_be_refined() -> None:
    g = ReasoningGraph()
    a = g.add(ROOT_ID, "a\n\n")
    (r,) = attach_refined(g, make_task(), a.id, [Completion(text="The answer is 5.", finish_reason="eos")])
    assert r.terminal and r.answer == "5" and r.parents == [ROOT_ID] and not a.pruned
    with pytest.raises(ValueError, match="root"):
        attach_refined(g, make_task(), ROOT_ID, [Completion(text="x")])


# -- backtrack ------------------------------------------------------------------------------
def test_backtrack_finds_the_nearest_ancestor_with_an_untried_child() -> None:
    g = ReasoningGraph()
    a = g.add(ROOT_ID, "a")  # 1
    b = g.add(ROOT_ID, "b")  # 2, untried
    a1 = g.add(a.id, "a1")  # 3
    g.add(a.id, "a2", terminal=True)  # 4: a terminal has nothing left to try
    assert untried_children(g, a.id) == [a1]
    a1x = g.add(a1.id, "a1x", pruned=True)  # 5: a1 is now expanded
    a1y = g.add(a1.id, "a1y", pruned=True)  # 6
    assert untried_children(g, a.id) == []
    # from the dead end a1y: a1 has nothing open (both children pruned), a has nothing open
    # (a1 expanded, a2 terminal), the root still has b
    assert backtrack(g, a1y.id) is g.root
    assert backtrack(g, a1x.id) is g.root
    assert [t.id for t in untried_children(g, ROOT_ID)] == [b.id]
    b.pruned = True
    assert backtrack(g, a1y.id) is None


def test_backtrack_skips_the_branch_it_comes_from() -> None:
    g = ReasoningGraph()
    a = g.add(ROOT_ID, "a")
    b = g.add(ROOT_ID, "b")
    assert backtrack(g, a.id) is g.root  # b is open
    b.pruned = True
    assert backtrack(g, a.id) is None  # a itself does not count as an alternative


# -- restructure ----------------------------------------------------------------------------
def search_tree() -> tuple[ReasoningGraph, int]:
    """root → A → {A1 (dead), A2 → answer}; root → B → {B1, B2 (wrong terminal)}."""
    g = ReasoningGraph(problem="q", meta={"prefix": "P|"})
    a = g.add(ROOT_ID, "A\n\n")  # 1
    b = g.add(ROOT_ID, "B\n\n", pruned=True)  # 2
    g.add(a.id, "A1\n\n", pruned=True)  # 3
    a2 = g.add(a.id, "A2\n\n", value=0.5)  # 4
    ans = g.add(a2.id, "The answer is 4.", terminal=True, answer="4", scores={"v": 0.9})  # 5
    g.add(b.id, "B1\n\n")  # 6
    g.add(b.id, "B2 fails.", terminal=True, answer="7")  # 7
    return g, ans.id


def test_journey_chain_keeps_dead_ends_and_backtracks() -> None:
    g, ans = search_tree()
    expected = (
        f"B\n\nB1\n\n{W}\n\nB2 fails.\n\n{W}\n\n"  # the dead subtree under the root, depth first
        f"A\n\nA1\n\n{W}\n\n"  # the dead end under A
        "A2\n\nThe answer is 4."  # the rest of the path to the answer
    )
    assert to_journey_chain(g, ans) == expected


def test_chain_graph_is_a_chain_with_the_journey_text() -> None:
    g, ans = search_tree()
    chain = to_chain_graph(g, ans)
    chain.validate()
    assert all(len(t.children) <= 1 and len(t.parents) <= 1 for t in chain)
    last = max(chain.thoughts)
    assert chain.path_text(last) == to_journey_chain(g, ans)
    assert len(chain) == 1 + 7 + 3  # root, the 7 thoughts of the tree, 3 backtrack lines
    kinds = [("bt" if t.meta.get("backtrack") else t.meta["source"]) for t in chain.path(last)]
    assert kinds == [2, 6, "bt", 7, "bt", 1, 3, "bt", 4, 5]
    assert [t.terminal for t in chain.path(last)].count(True) == 1 and chain[last].terminal
    assert chain[last].answer == "4" and chain[last].scores == {"v": 0.9}
    assert chain.meta["prefix"] == "P|" and chain.problem == "q"
    assert [t.meta.get("dead_end") for t in chain.path(last) if not t.meta.get("backtrack")] == [
        True, True, True, False, True, False, False,
    ]


def test_chain_graph_without_journey_is_the_plain_path() -> None:
    g, ans = search_tree()
    chain = to_chain_graph(g, ans, journey=False)
    assert chain.path_text(max(chain.thoughts)) == "A\n\nA2\n\nThe answer is 4."
    assert [s.source.id for s in journey_steps(g, ans, journey=False) if s.source] == [1, 4, 5]


def test_journey_reads_a_merged_thought_once() -> None:
    g = ReasoningGraph()
    a = g.add(ROOT_ID, "a\n\n")
    b = g.add(ROOT_ID, "b\n\n")
    merged = g.add([a.id, b.id], "m\n\n")
    end = g.add(merged.id, "The answer is 1.", terminal=True)
    assert to_journey_chain(g, end.id) == f"b\n\n{W}\n\na\n\nm\n\nThe answer is 1."
