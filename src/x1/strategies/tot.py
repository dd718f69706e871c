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

from dataclasses import dataclass, field

from x1.graph import ROOT_ID, Thought
from x1.operators.backtrack import backtrack, untried_children
from x1.operators.prune import keep_best, prune_below
from x1.strategies.base import Expand, Problem, Reply, Request, Strategy, read_state, save_state, scored_by


@dataclass
class BFSState:
    frontier: list[int] = field(default_factory=lambda: [ROOT_ID])  # the level to expand next
    completed: list[int] = field(default_factory=list)  # kept terminals (or thoughts at max_depth)
    levels: list[list[int]] = field(default_factory=list)  # what each level kept


@dataclass
class DFSState:
    current: int | None = ROOT_ID  # the thought to expand next (None: nothing left)
    visited: list[int] = field(default_factory=list)  # expanded thoughts, in order
    found: int | None = None  # the first terminal scoring at least the threshold


@dataclass
class TreeOfThoughtsBFS(Strategy):
    branch: int = 3
    breadth: int = 2
    temperature: float = 0.8
    evaluator: str = "confidence"
    max_depth: int = 8
    name: str = "tot_bfs"

    def start(self, problem: Problem) -> None:
        save_state(problem, BFSState())

    def ask(self, problem: Problem) -> list[Request]:
        return [
            Expand(t, n=self.branch, temperature=self.temperature, evaluator=self.evaluator)
            for t in read_state(problem, BFSState).frontier
        ]

    def tell(self, problem: Problem, replies: list[Reply]) -> None:
        graph, state = problem.graph, read_state(problem, BFSState)
        level = [graph[c] for reply in replies for c in reply.thought_ids]
        kept = keep_best(graph, level, self.breadth, scored_by(self.evaluator))
        state.levels.append([t.id for t in kept])
        state.frontier = []
        for t in kept:
            if t.terminal or graph.depth(t.id) >= self.max_depth:
                state.completed.append(t.id)
            else:
                state.frontier.append(t.id)
        save_state(problem, state)

    def answer(self, problem: Problem) -> Thought | None:
        graph, state = problem.graph, read_state(problem, BFSState)
        pool = [graph[t] for t in state.completed] or [graph[t] for t in (state.levels[-1] if state.levels else [])]
        score = scored_by(self.evaluator)
        return min(pool, key=lambda t: (-score(t), t.id)) if pool else None


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
        save_state(problem, DFSState())

    def _best(self, thoughts: list[Thought]) -> Thought:
        score = scored_by(self.evaluator)
        return min(thoughts, key=lambda t: (-score(t), t.id))

    def ask(self, problem: Problem) -> list[Request]:
        state = read_state(problem, DFSState)
        if state.found is not None or state.current is None or len(problem.graph) >= self.max_nodes:
            return []
        return [Expand(state.current, n=self.branch, temperature=self.temperature, evaluator=self.evaluator)]

    def tell(self, problem: Problem, replies: list[Reply]) -> None:
        graph, state = problem.graph, read_state(problem, DFSState)
        current = state.current
        assert current is not None
        state.visited.append(current)
        children = [graph[c] for reply in replies for c in reply.thought_ids]
        survivors = prune_below(graph, children, scored_by(self.evaluator), self.threshold)
        good_terminals = [t for t in survivors if t.terminal]
        if good_terminals:
            state.found = self._best(good_terminals).id
            save_state(problem, state)
            return
        for t in survivors:
            if graph.depth(t.id) >= self.max_depth:
                t.pruned = True  # cannot go deeper: a dead end like a low score
        options = untried_children(graph, current)
        if not options:
            ancestor = backtrack(graph, current)
            options = untried_children(graph, ancestor.id) if ancestor is not None else []
        state.current = self._best(options).id if options else None
        save_state(problem, state)

    def answer(self, problem: Problem) -> Thought | None:
        graph, found = problem.graph, read_state(problem, DFSState).found
        if found is not None:
            return graph[found]
        terminals = [t for t in graph if t.terminal]
        return self._best(terminals) if terminals else None
