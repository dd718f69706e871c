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
``keep_best`` and skipped operations run inside ``ask`` without a tick. ``meta["log"]`` records
the operations in the order they ran. The answer is the best-scored thought of the final working set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from x1.graph import ROOT_ID, Thought
from x1.operators.aggregate import aggregate_request, attach_aggregate
from x1.operators.prune import keep_best
from x1.operators.refine import DEFAULT_FEEDBACK, attach_refined, refine_request
from x1.strategies.base import Evaluate, Expand, Problem, Reply, Request, Strategy

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
        problem.meta.update(op_index=0, working=[ROOT_ID], log=[], scored_by=self.evaluator)

    # -- helpers --------------------------------------------------------------------------
    def _working(self, problem: Problem) -> list[int]:
        return [t for t in problem.meta["working"] if t != ROOT_ID]

    def _sampling(self, op: dict[str, Any]) -> dict[str, Any]:
        return {
            "n": int(op.get("n", 1)),
            "temperature": op.get("temperature", self.temperature),
            "max_tokens": op.get("max_tokens", self.max_tokens),
            "stop": [],
        }

    def _requests(self, problem: Problem, op: dict[str, Any]) -> list[Request]:
        """The model work for ``op``; an empty list means it ran locally (or had nothing to do)."""
        graph, kind, working = problem.graph, op["op"], self._working(problem)
        if kind == "generate":
            s = self._sampling(op)
            return [Expand(t, tag="generate", **s) for t in problem.meta["working"]]
        if kind == "score":
            problem.meta["scored_by"] = op.get("evaluator", self.evaluator)
            return [Evaluate(working, problem.meta["scored_by"])] if working else []
        if kind == "keep_best":
            name = op.get("evaluator", problem.meta["scored_by"])
            kept = keep_best(graph, [graph[t] for t in working], int(op.get("k", 1)), lambda t: t.scores.get(name, 0.0))
            problem.meta["working"] = [t.id for t in kept]
            return []
        if kind == "aggregate":
            return [aggregate_request(graph, working, **self._sampling(op))] if len(working) >= 2 else []
        # refine: whole solutions, so no preceding path as context
        feedback = op.get("feedback", DEFAULT_FEEDBACK)
        return [refine_request(graph, t, feedback, context="", **self._sampling(op)) for t in working]

    # -- ask / tell -----------------------------------------------------------------------
    def ask(self, problem: Problem) -> list[Request]:
        meta = problem.meta
        while meta["op_index"] < len(self.ops):
            op = self.ops[meta["op_index"]]
            requests = self._requests(problem, op)
            if requests:
                return requests
            meta["log"].append(op["op"])
            meta["op_index"] += 1
        return []

    def tell(self, problem: Problem, replies: list[Reply]) -> None:
        graph, meta = problem.graph, problem.meta
        op = self.ops[meta["op_index"]]
        kind = op["op"]
        if kind == "generate":
            meta["working"] = [c for r in replies for c in r.thought_ids]
        elif kind == "aggregate":
            sources = self._working(problem)
            merged = [t.id for r in replies for t in attach_aggregate(graph, problem.task, sources, r.completions)]
            meta["working"] = merged
        elif kind == "refine":
            refined = []
            for r in replies:
                assert isinstance(r.request, Expand)
                refined.extend(t.id for t in attach_refined(graph, problem.task, r.request.thought_id, r.completions))
            meta["working"] = (self._working(problem) if op.get("keep_original") else []) + refined
        meta["log"].append(kind)
        meta["op_index"] += 1

    def answer(self, problem: Problem) -> Thought | None:
        working = [problem.graph[t] for t in self._working(problem)]
        name = problem.meta.get("scored_by", self.evaluator)
        return min(working, key=lambda t: (-t.scores.get(name, 0.0), t.id)) if working else None
