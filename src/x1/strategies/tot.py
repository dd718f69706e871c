"""Tree of Thoughts (Yao et al. 2023): breadth-first and depth-first search over steps.

BFS: every level expands each frontier thought by ``branch``, scores the children with the
evaluator in the same tick, and keeps exactly the ``breadth`` best of the whole level (the rest
are pruned); kept terminals are finished, the others form the next frontier.

DFS: expand the current thought, prune children scoring below ``threshold`` (a terminal below
it is an answer the evaluator calls wrong), and go to the best survivor; when none survives,
*backtrack* to the nearest ancestor with an untried child and go to its best one. It stops at
the first terminal scoring at least ``threshold``, when nothing is left, or at ``max_nodes``.
"""

from __future__ import annotations

from dataclasses import dataclass

from x1.graph import ROOT_ID, Thought
from x1.operators.backtrack import backtrack, untried_children
from x1.operators.prune import keep_best, prune_below
from x1.strategies.base import Expand, Problem, Reply, Request, Strategy


@dataclass
class TreeOfThoughtsBFS(Strategy):
    branch: int = 3
    breadth: int = 2
    temperature: float = 0.8
    evaluator: str = "confidence"
    max_depth: int = 8
    name: str = "tot_bfs"

    def start(self, problem: Problem) -> None:
        problem.meta.update(frontier=[ROOT_ID], completed=[], levels=[])

    def _score(self, t: Thought) -> float:
        return t.scores.get(self.evaluator, 0.0)

    def ask(self, problem: Problem) -> list[Request]:
        return [
            Expand(t, n=self.branch, temperature=self.temperature, evaluator=self.evaluator)
            for t in problem.meta["frontier"]
        ]

    def tell(self, problem: Problem, replies: list[Reply]) -> None:
        graph = problem.graph
        level = [graph[c] for reply in replies for c in reply.thought_ids]
        kept = keep_best(graph, level, self.breadth, self._score)
        problem.meta["levels"].append([t.id for t in kept])
        frontier = []
        for t in kept:
            if t.terminal or graph.depth(t.id) >= self.max_depth:
                problem.meta["completed"].append(t.id)
            else:
                frontier.append(t.id)
        problem.meta["frontier"] = frontier

    def answer(self, problem: Problem) -> Thought | None:
        graph = problem.graph
        pool = [graph[t] for t in problem.meta["completed"]] or [
            graph[t] for t in (problem.meta["levels"][-1] if problem.meta["levels"] else [])
        ]
        return min(pool, key=lambda t: (-self._score(t), t.id)) if pool else None


@dataclass
class TreeOfThoughtsDFS(Strategy):
    branch: int = 3
    threshold: float = 0.5
    temperature: float = 0.8
    evaluator: str = "confidence"
    max_nodes: int = 64
    max_depth: int = 12
    name: str = "tot_dfs"

    def start(self, problem: Problem) -> None:
        problem.meta.update(current=ROOT_ID, visited=[], found=None)

    def _score(self, t: Thought) -> float:
        return t.scores.get(self.evaluator, 0.0)

    def _best(self, thoughts: list[Thought]) -> Thought:
        return min(thoughts, key=lambda t: (-self._score(t), t.id))

    def ask(self, problem: Problem) -> list[Request]:
        meta = problem.meta
        if meta["found"] is not None or meta["current"] is None or len(problem.graph) >= self.max_nodes:
            return []
        return [Expand(meta["current"], n=self.branch, temperature=self.temperature, evaluator=self.evaluator)]

    def tell(self, problem: Problem, replies: list[Reply]) -> None:
        graph, meta = problem.graph, problem.meta
        current = meta["current"]
        meta["visited"].append(current)
        children = [graph[c] for reply in replies for c in reply.thought_ids]
        survivors = prune_below(graph, children, self._score, self.threshold)
        good_terminals = [t for t in survivors if t.terminal]
        if good_terminals:
            meta["found"] = self._best(good_terminals).id
            return
        for t in survivors:
            if graph.depth(t.id) >= self.max_depth:
                t.pruned = True  # cannot go deeper: a dead end like a low score
        options = untried_children(graph, current)
        if not options:
            ancestor = backtrack(graph, current)
            options = untried_children(graph, ancestor.id) if ancestor is not None else []
        meta["current"] = self._best(options).id if options else None

    def answer(self, problem: Problem) -> Thought | None:
        graph = problem.graph
        if problem.meta["found"] is not None:
            return graph[problem.meta["found"]]
        terminals = [t for t in graph if t.terminal]
        return self._best(terminals) if terminals else None
