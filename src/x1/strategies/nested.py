"""Nested reasoning: a step of the outer chain is solved by a whole inner search.

The outer level is a chain: the policy proposes the next step (a sub-step such as "First find
how many apples Tom has."). For each of the first ``max_substeps`` non-terminal proposals S, an
inner strategy (any registered one, by name with ``inner_params``) searches on a fresh graph
stored in ``S.nested``; its prompt is the outer prefix and path up to S, then the inner path.
When the inner strategy finishes, its answer path is attached below S as one outer step R
(``meta["nested_answer"]``), and the outer chain continues from R. Later steps are plain chain
steps; the outer search ends at a terminal step.

The engine only knows the outer graph, so the inner strategy's requests are wrapped: each inner
Expand becomes a :class:`NestedExpand` on S with an explicit ``prompt`` and ``attach=False``;
the engine serves it in the same batched call as every other request, and ``tell`` attaches
the completions to the inner graph and hands the inner strategy its replies. The engine charges
the call to S, so inner thoughts carry no compute of their own (nothing counts twice).

Limitation: evaluators score thoughts of the outer graph only, so the inner strategy may not
use one (no Evaluate, no ``Expand.evaluator``): use cot, best_of_n (majority voting) or adaptive
inside. All state lives in the outer and inner graphs, so checkpoints resume mid-search.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from x1.graph import ROOT_ID, ReasoningGraph, Thought
from x1.operators.generate import attach_children, is_final_step
from x1.strategies.base import Evaluate, Expand, Problem, Reply, Request, Strategy, read_state, save_state


@dataclass
class NestedExpand(Expand):
    """An inner strategy's Expand, carried on the outer step it serves."""

    inner: Expand | None = None


@dataclass
class NestedState:
    tip: int = ROOT_ID  # the end of the outer chain
    solving: int | None = None  # the outer step whose inner search is running
    substeps: int = 0  # outer steps handed to an inner search so far


@dataclass
class Nested(Strategy):
    inner: str = "best_of_n"
    inner_params: dict[str, Any] = field(default_factory=lambda: {"n": 3})
    max_substeps: int = 3
    temperature: float = 0.0  # outer proposals
    name: str = "nested"

    def __post_init__(self) -> None:
        from x1.strategies import build_strategy  # here: the registry imports this module

        self._inner = build_strategy(self.inner, **self.inner_params)
        if getattr(self._inner, "evaluator", None):
            raise ValueError(
                f"nested: inner strategy {self.inner!r} uses evaluator {self._inner.evaluator!r}, but evaluators "
                "score the outer graph only; use an inner strategy without one (cot, best_of_n, adaptive)"
            )

    def start(self, problem: Problem) -> None:
        save_state(problem, NestedState())

    # -- the inner problem ----------------------------------------------------------------
    def _sub_problem(self, problem: Problem, step: Thought) -> Problem:
        assert step.nested is not None
        return Problem(task=problem.task, graph=step.nested, seed=problem.seed)

    def _open(self, problem: Problem, state: NestedState, step: Thought) -> None:
        """Give the proposed step its own graph and start the inner strategy on it."""
        prefix = problem.meta["prefix"] + problem.graph.path_text(step.id)
        step.nested = ReasoningGraph(problem=step.text.strip(), meta={"prefix": prefix, "outer_step": step.id})
        self._inner.start(self._sub_problem(problem, step))
        state.solving = step.id
        state.substeps += 1

    def _wrap(self, step: Thought, request: Request) -> NestedExpand:
        if isinstance(request, Evaluate) or request.evaluator:
            raise ValueError(f"nested: inner strategy {self.inner!r} asked for an evaluator, which nested cannot serve")
        inner_graph = step.nested
        assert inner_graph is not None
        prompt = request.prompt
        if prompt is None:
            prompt = inner_graph.meta["prefix"] + inner_graph.path_text(request.thought_id)
        return NestedExpand(
            step.id,
            n=request.n,
            temperature=request.temperature,
            max_tokens=request.max_tokens,
            stop=request.stop,
            attach=False,
            prompt=prompt,
            signals=request.signals,
            tag="nested",
            inner=request,
        )

    def _close(self, problem: Problem, state: NestedState, step: Thought) -> None:
        """Attach the inner answer's path below the step as one outer step, and resume the outer chain."""
        sub = self._sub_problem(problem, step)
        best = self._inner.answer(sub)
        state.solving = None
        state.tip = step.id
        if best is None or step.nested is None:
            return
        text = step.nested.path_text(best.id)
        delimiter = problem.task.step_format.delimiter
        if delimiter and not text.endswith(delimiter):
            text += delimiter
        result = problem.graph.add(step.id, text, meta={"tag": "nested_result", "nested_answer": best.answer})
        depth = problem.graph.depth(result.id)
        result.terminal = is_final_step(text) or depth >= problem.task.step_format.max_steps
        if result.terminal:
            result.answer = problem.task.extract_answer(problem.graph.path_text(result.id))
        state.tip = result.id

    # -- ask / tell -----------------------------------------------------------------------
    def ask(self, problem: Problem) -> list[Request]:
        graph, state = problem.graph, read_state(problem, NestedState)
        if state.solving is not None:  # tell closes a finished inner search, so this one still has work
            step = graph[state.solving]
            return [self._wrap(step, r) for r in self._inner.ask(self._sub_problem(problem, step))]
        tip = graph[state.tip]
        if tip.terminal:
            return []
        return [Expand(tip.id, n=1, temperature=self.temperature, tag="propose")]

    def tell(self, problem: Problem, replies: list[Reply]) -> None:
        graph, state = problem.graph, read_state(problem, NestedState)
        inner_replies: list[Reply] = []
        for reply in replies:
            request = reply.request
            if isinstance(request, NestedExpand) and request.inner is not None:
                inner = request.inner
                step = graph[request.thought_id]
                assert step.nested is not None
                if inner.attach:
                    # the engine charged this call to the outer step, so the inner thoughts carry no compute
                    kids = attach_children(step.nested, problem.task, inner.thought_id, reply.completions, inner.tag, charged=False)
                    inner_replies.append(Reply(inner, thought_ids=[k.id for k in kids]))
                else:
                    inner_replies.append(Reply(inner, completions=reply.completions))
            else:
                proposed = graph[reply.thought_ids[0]]
                if proposed.terminal or state.substeps >= self.max_substeps:
                    state.tip = proposed.id
                else:
                    self._open(problem, state, proposed)
        if state.solving is not None:
            step = graph[state.solving]
            sub = self._sub_problem(problem, step)
            if inner_replies:
                self._inner.tell(sub, inner_replies)
            if not self._inner.ask(sub):  # the inner search is finished: its answer becomes an outer step
                self._close(problem, state, step)
        save_state(problem, state)

    def answer(self, problem: Problem) -> Thought | None:
        tip = read_state(problem, NestedState).tip
        return problem.graph[tip] if tip != ROOT_ID else None
