"""Graph of Operations (Besta et al. 2024, Graph of Thoughts): a user-composed operator schedule.

The schedule is a list of plain dicts, so it loads from YAML or ``--param ops=[...]``::

    GraphOfOperations(ops=[{"op": "generate", "n": 4}, {"op": "score"}, {"op": "keep_best", "k": 2},
                           {"op": "aggregate"}, {"op": "refine"}, {"op": "keep_best", "k": 1}])

Operations act on a *working set* of thought ids (initially the root), in order:

- ``generate`` (n, temperature, max_tokens): n whole solutions (``stop=[]``) from each working thought;
  the new thoughts become the working set.
- ``score`` (evaluator): score the working set with a named evaluator (default: ``evaluator``).
- ``keep_best`` (k, evaluator): keep the k best-scored (by the last ``score``'s evaluator unless
  named), prune the rest. Needs no model.
- ``aggregate`` (n, temperature, max_tokens): merge the working set into n thoughts with all of
  them as parents; skipped when fewer than two are working.
- ``refine`` (n, feedback, temperature, max_tokens, keep_original): rewrite each working thought;
  the rewrites (plus the originals with ``keep_original``) become the working set.

Each operation that needs a model takes one engine tick (batched with every other problem);
``keep_best`` and skipped operations run without a tick, in ``start`` and ``tell`` (which move on
through every model-free operation, so ``ask`` only reads). ``log`` records the operations in the
order they ran. The answer is the best-scored thought of the final working set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from x1.graph import ROOT_ID, Thought
from x1.operators.aggregate import aggregate_request, attach_aggregate
from x1.operators.prune import keep_best
from x1.operators.refine import DEFAULT_FEEDBACK, attach_refined, refine_request
from x1.strategies.base import Evaluate, Expand, Problem, Reply, Request, Strategy, read_state, save_state, scored_by

OPS: dict[str, set[str]] = {
    "generate": {"n", "temperature", "max_tokens"},
    "score": {"evaluator"},
    "keep_best": {"k", "evaluator"},
    "aggregate": {"n", "temperature", "max_tokens"},
    "refine": {"n", "temperature", "max_tokens", "feedback", "keep_original"},
}
DEFAULT_OPS: list[dict[str, Any]] = [
    {"op": "generate", "n": 4},
    {"op": "score"},
    {"op": "keep_best", "k": 2},
    {"op": "aggregate"},
    {"op": "refine"},
    {"op": "score"},
    {"op": "keep_best", "k": 1},
]


@dataclass
class OperationsState:
    op_index: int = 0  # the operation to run next
    working: list[int] = field(default_factory=lambda: [ROOT_ID])  # the working set of thought ids
    log: list[str] = field(default_factory=list)  # operations in the order they ran
    scored_by: str = "confidence"  # the evaluator of the last score operation


@dataclass
class GraphOfOperations(Strategy):
    ops: list[dict[str, Any]] = field(default_factory=lambda: [dict(op) for op in DEFAULT_OPS])
    evaluator: str = "confidence"
    temperature: float = 0.8
    max_tokens: int = 512  # whole solutions, not single steps
    name: str = "graph_of_operations"

    def __post_init__(self) -> None:
        for i, op in enumerate(self.ops):
            if not isinstance(op, dict) or op.get("op") not in OPS:
                raise ValueError(f"graph_of_operations: ops[{i}] = {op!r} must be a dict whose 'op' is one of {', '.join(OPS)}")
            unknown = set(op) - OPS[op["op"]] - {"op"}
            if unknown:
                raise ValueError(
                    f"graph_of_operations: ops[{i}] ({op['op']}) has no option(s) {sorted(unknown)}; "
                    f"it takes: {', '.join(sorted(OPS[op['op']])) or 'nothing'}"
                )

    def start(self, problem: Problem) -> None:
        state = OperationsState(scored_by=self.evaluator)
        self._advance(problem, state)
        save_state(problem, state)

    # -- helpers --------------------------------------------------------------------------
    @staticmethod
    def _working(state: OperationsState) -> list[int]:
        return [t for t in state.working if t != ROOT_ID]

    def _sampling(self, op: dict[str, Any]) -> dict[str, Any]:
        return {
            "n": int(op.get("n", 1)),
            "temperature": op.get("temperature", self.temperature),
            "max_tokens": op.get("max_tokens", self.max_tokens),
            "stop": [],
        }

    def _requests(self, problem: Problem, state: OperationsState, op: dict[str, Any]) -> list[Request]:
        """The model work for ``op``; an empty list means it runs locally (or has nothing to do)."""
        graph, kind, working = problem.graph, op["op"], self._working(state)
        if kind == "generate":
            return [Expand(t, tag="generate", **self._sampling(op)) for t in state.working]
        if kind == "score":
            return [Evaluate(working, op.get("evaluator", self.evaluator))] if working else []
        if kind == "keep_best":
            return []
        if kind == "aggregate":
            return [aggregate_request(graph, working, **self._sampling(op))] if len(working) >= 2 else []
        # refine: whole solutions, so no preceding path as context
        feedback = op.get("feedback", DEFAULT_FEEDBACK)
        return [refine_request(graph, t, feedback, context="", **self._sampling(op)) for t in working]

    def _needs_model(self, state: OperationsState, op: dict[str, Any]) -> bool:
        """Whether ``_requests`` would ask for anything, without building the prompts."""
        working = self._working(state)
        return {"generate": bool(state.working), "score": bool(working), "keep_best": False,
                "aggregate": len(working) >= 2, "refine": bool(working)}[op["op"]]

    def _advance(self, problem: Problem, state: OperationsState) -> None:
        """Run every operation that needs no model, up to the next one that does (or the end)."""
        graph = problem.graph
        while state.op_index < len(self.ops):
            op = self.ops[state.op_index]
            if self._needs_model(state, op):
                return
            if op["op"] == "score":
                state.scored_by = op.get("evaluator", self.evaluator)
            elif op["op"] == "keep_best":
                working = [graph[t] for t in self._working(state)]
                kept = keep_best(graph, working, int(op.get("k", 1)), scored_by(op.get("evaluator", state.scored_by)))
                state.working = [t.id for t in kept]
            state.log.append(op["op"])
            state.op_index += 1

    # -- ask / tell -----------------------------------------------------------------------
    def ask(self, problem: Problem) -> list[Request]:
        state = read_state(problem, OperationsState)
        return self._requests(problem, state, self.ops[state.op_index]) if state.op_index < len(self.ops) else []

    def tell(self, problem: Problem, replies: list[Reply]) -> None:
        graph, state = problem.graph, read_state(problem, OperationsState)
        op = self.ops[state.op_index]
        kind = op["op"]
        if kind == "generate":
            state.working = [c for r in replies for c in r.thought_ids]
        elif kind == "score":
            state.scored_by = op.get("evaluator", self.evaluator)
        elif kind == "aggregate":
            sources = self._working(state)
            state.working = [t.id for r in replies for t in attach_aggregate(graph, problem.task, sources, r.completions)]
        elif kind == "refine":
            refined = []
            for r in replies:
                assert isinstance(r.request, Expand)
                refined.extend(t.id for t in attach_refined(graph, problem.task, r.request.thought_id, r.completions))
            state.working = (self._working(state) if op.get("keep_original") else []) + refined
        state.log.append(kind)
        state.op_index += 1
        self._advance(problem, state)
        save_state(problem, state)

    def answer(self, problem: Problem) -> Thought | None:
        state = read_state(problem, OperationsState)
        working = [problem.graph[t] for t in self._working(state)]
        score = scored_by(state.scored_by)
        return min(working, key=lambda t: (-score(t), t.id)) if working else None
