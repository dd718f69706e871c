"""Monte Carlo Tree Search as in the x1 paper (BLUEPRINT.md, "MCTS as in x1").

One iteration: *select* a leaf by PUCT from the root → *generate* ``expand`` children → *evaluate*
each new child (value evaluator; true reward at terminals in training mode; optionally mixed
with rollouts by α) → *backpropagate* from the expanded leaf. New children start with N = 1.
``parallel`` > 1 selects several leaves per tick with virtual loss, so one problem fills a batch.

Selection changes the tree (a selected terminal is backed up and counts as an iteration), so it
runs in ``start`` and ``tell``: after folding the replies in, ``tell`` plans the next tick's
leaves (``planned``), and ``ask`` only turns the plan into requests.

Rollouts (α > 0) are sampled at the strategy's ``temperature``, like expansions, and each is kept
in its node's ``meta["rollouts"]`` (text, finish reason, steps, reward, discounted return): the
search trace shows what the value was mixed from, and no rollout becomes a thought.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import NamedTuple

from x1.graph import ROOT_ID, ReasoningGraph, Thought
from x1.operators.backpropagate import backpropagate
from x1.operators.select import puct_score, to_unit
from x1.strategies.base import Expand, Problem, Reply, Request, Strategy, read_state, save_state


class _Shadow(NamedTuple):
    """What PUCT reads of a child, with virtual loss applied."""

    value: float
    visits: int


@dataclass
class MCTSState:
    iteration: int = 0  # finished iterations (an expansion backed up, or a terminal selected again)
    pending_rollouts: list[int] = field(default_factory=list)  # new children whose rollouts are asked for next
    planned: list[int] = field(default_factory=list)  # leaves selected for the next expansion


@dataclass
class MCTS(Strategy):
    iterations: int = 16
    expand: int = 3  # m: children per expansion
    temperature: float = 0.8
    c1: float = 1.25
    c2: float = 19652.0
    puct_form: str = "muzero"  # or "paper" (√(N−1), log((N+c2)/c2))
    gamma: float = 0.96
    lam: float = 1.0
    # α: weight of rollouts in a new node's value, q = (1 − α)·v + α·mean(γ^d·r); 0 = value evaluator
    # only. Training mode only: r is the task verifier's verdict on the rollout, which search must not
    # consult at inference (it would read the gold answer). Outside training α > 0 warns and does nothing.
    alpha: float = 0.0
    rollouts: int = 1
    evaluator: str = "confidence"
    training: bool = False  # terminals get the verifier's true reward (±1)
    answer_by: str = "value"  # or "visits"
    stop_at_first_terminal: bool = False
    parallel: int = 1  # leaves selected per tick, with virtual loss
    # Progressive widening: a thought with children is expanded again (``expand`` more) while it has fewer than
    # widen · N(s)^widen_alpha of them. 0 = off: a thought is expanded once, so every chain starts with one of the
    # root's ``expand`` first steps, and the finished chains share prefixes (fewer distinct answers than as many samples).
    widen: float = 0.0
    widen_alpha: float = 0.5
    name: str = "mcts"

    def __post_init__(self) -> None:
        if self.alpha > 0 and not self.training:
            warnings.warn(
                f"MCTS alpha={self.alpha} has no effect outside training mode: a rollout's reward is the task "
                "verifier's verdict, which inference must not consult, so new nodes keep the value evaluator's "
                "estimate; fix: set training=True (phase 2 of the recipe), or alpha=0",
                UserWarning,
                stacklevel=3,
            )

    def start(self, problem: Problem) -> None:
        problem.graph.root.value = 0.0
        state = MCTSState()
        self._plan(problem, state)
        save_state(problem, state)

    # -- select ---------------------------------------------------------------------------
    def _score(self, child: Thought, parent_visits: int, vl: int) -> float:
        """PUCT of ``child`` with ``vl`` pending (virtual) visits, AlphaGo-style virtual loss.

        Each pending visit counts as a visit that lost (value −1): N' = N + vl and
        q' = (q·N − vl)/(N + vl). ``parent_visits`` must already include the pending visits of
        *all* siblings, so every child is scored against the same N(s).
        """
        if not vl:
            return puct_score(child, parent_visits, self.c1, self.c2, self.puct_form)
        q = child.value if child.value is not None else 0.0
        shadow = _Shadow((q * child.visits - vl) / (child.visits + vl), child.visits + vl)
        return puct_score(shadow, parent_visits, self.c1, self.c2, self.puct_form)  # type: ignore[arg-type]

    def select_leaf(self, graph: ReasoningGraph, virtual: dict[int, int], through: dict[int, int] | None = None) -> Thought:
        """Descend by PUCT to a leaf; ties go to the lowest id (the hot loop of the engine benchmark).

        With pending selections (``virtual``: thought id → virtual visits) the parent's count is
        N(s) + Σ vl(c) over its children, the same for every sibling. The cost is the path's
        depth times its branching, never the tree's size: the score is ``puct_score`` (and
        ``_score`` under virtual loss) inlined, with the parent's factor computed once per level,
        in the same float operations so that ties break exactly as they would there.
        ``through`` (thought id → pending selections that passed it into a child) is that Σ vl(c),
        kept by ``_plan`` so a level does not sum over its children; without it, it is summed.
        """
        thoughts = graph.thoughts
        node = graph.root
        c1, c2, paper = self.c1, self.c2, self.puct_form == "paper"
        widen, alpha = self.widen, self.widen_alpha
        if self.puct_form not in ("muzero", "paper"):
            raise ValueError(f"unknown PUCT form {self.puct_form!r}; use 'muzero' or 'paper'")
        while not node.terminal:
            if widen and node.children and len(node.children) < widen * node.visits**alpha:
                return node  # room for more children here: expand it again (progressive widening)
            parent_visits = node.visits
            if through is not None:
                parent_visits += through.get(node.id, 0)
            elif virtual:
                parent_visits += sum(virtual.get(cid, 0) for cid in node.children)
            if paper:
                root, factor = math.sqrt(max(parent_visits - 1, 0)), c1 + math.log((parent_visits + c2) / c2)
            else:
                root, factor = math.sqrt(parent_visits), c1 + math.log((parent_visits + c2 + 1) / c2)
            best: Thought | None = None
            best_score = -math.inf
            # puct_score's terms: (q + 1)/2 + c·√N(s)/(1 + N(c))·factor; its "1.0 *" is exact, so it is left out
            for cid in node.children:
                child = thoughts[cid]
                if child.pruned:
                    continue
                visits, value = child.visits, child.value
                vl = virtual.get(cid) if virtual else None
                if vl:
                    q = value if value is not None else 0.0
                    value, visits = (q * visits - vl) / (visits + vl), visits + vl
                score = (0.5 if value is None else (value + 1.0) / 2.0) + root / (1 + visits) * factor
                if score > best_score or best is None or (score == best_score and cid < best.id):
                    best, best_score = child, score
            if best is None:
                return node
            node = best
        return node

    # -- ask / tell -----------------------------------------------------------------------
    def _finished(self, problem: Problem, state: MCTSState) -> bool:
        if state.iteration >= self.iterations:
            return True
        return self.stop_at_first_terminal and any(
            t.terminal and (not self.training or (t.reward or 0) >= 1) for t in problem.graph
        )

    def _plan(self, problem: Problem, state: MCTSState) -> None:
        """Select the next tick's leaves, with virtual loss between selections; a selected terminal is backed up."""
        graph = problem.graph
        virtual: dict[int, int] = {}  # thought id → pending selections ending at or below it
        through: dict[int, int] = {}  # thought id → pending selections that went on into one of its children
        planned: list[int] = []
        guard = 0
        while len(planned) < self.parallel and not self._finished(problem, state) and guard < 4 * self.parallel + 8:
            guard += 1
            leaf = self.select_leaf(graph, virtual, through)
            if leaf.terminal:
                # A terminal cannot grow: count the visit, back its value up, and go again.
                backpropagate(graph, leaf.id, self.gamma, self.lam)
                state.iteration += 1
                continue
            if leaf.id in planned:
                break
            planned.append(leaf.id)
            node = leaf
            while node.parents:  # the leaf and its ancestors below the root, along first parents
                virtual[node.id] = virtual.get(node.id, 0) + 1
                node = graph.thoughts[node.parents[0]]
                through[node.id] = through.get(node.id, 0) + 1
        state.planned = planned

    def ask(self, problem: Problem) -> list[Request]:
        state = read_state(problem, MCTSState)
        if state.pending_rollouts:
            return [
                Expand(t, n=self.rollouts, temperature=self.temperature, stop=[], max_tokens=512, attach=False, tag="rollout")
                for t in state.pending_rollouts
            ]
        return [Expand(leaf, n=self.expand, temperature=self.temperature, evaluator=self.evaluator) for leaf in state.planned]

    def _value_of(self, problem: Problem, child: Thought) -> float:
        if child.terminal and self.training:
            verdict = problem.task.verify(child.answer)
            child.reward = verdict.score
            return 2.0 * verdict.score - 1.0
        return 2.0 * child.scores.get(self.evaluator, 0.5) - 1.0

    def tell(self, problem: Problem, replies: list[Reply]) -> None:
        graph, state = problem.graph, read_state(problem, MCTSState)
        state.planned = []
        if any(r.completions for r in replies) or state.pending_rollouts:
            self._tell_rollouts(problem, state, replies)
        else:
            for reply in replies:
                pending = []
                for cid in reply.thought_ids:
                    child = graph[cid]
                    child.value = self._value_of(problem, child)
                    child.visits = 1
                    if self.alpha > 0 and self.training and not child.terminal:
                        pending.append(cid)
                if pending:
                    state.pending_rollouts.extend(pending)  # backed up once their rollouts return
                else:
                    backpropagate(graph, reply.request.thought_id, self.gamma, self.lam)
                    state.iteration += 1
        if not state.pending_rollouts:
            self._plan(problem, state)
        save_state(problem, state)

    def _tell_rollouts(self, problem: Problem, state: MCTSState, replies: list[Reply]) -> None:
        graph = problem.graph
        leaves = set()
        for reply in replies:
            child = graph[reply.request.thought_id]
            returns = []
            kept = child.meta.setdefault("rollouts", [])
            for c in reply.completions:
                text = graph.path_text(child.id) + c.text
                _, verdict = problem.task.check_solution(text)
                steps = max(1, c.text.count(problem.task.step_format.delimiter or "\n\n") + 1)
                returns.append(self.gamma**steps * (2.0 * verdict.score - 1.0))
                # Kept in meta, not as child thoughts: a rollout is not a step the search chose, and
                # the training extractors (x1.data) read children as search steps.
                kept.append(
                    {"text": c.text, "finish_reason": c.finish_reason, "steps": steps, "reward": verdict.score, "return": returns[-1]}
                )
            rollout_value = sum(returns) / len(returns) if returns else 0.0
            child.value = (1 - self.alpha) * (child.value or 0.0) + self.alpha * rollout_value
            child.meta["rollout_value"] = rollout_value
            leaves.add(child.parents[0])
        state.pending_rollouts = []
        for leaf in sorted(leaves):
            backpropagate(graph, leaf, self.gamma, self.lam)
            state.iteration += 1

    def answer(self, problem: Problem) -> Thought | None:
        graph = problem.graph
        terminals = [t for t in graph if t.terminal and not t.pruned]
        pool = terminals or [t for t in graph.leaves() if t.id != ROOT_ID]
        if not pool:
            return None
        if self.answer_by == "visits":
            return min(pool, key=lambda t: (-t.visits, -to_unit(t.value), t.id))
        return min(pool, key=lambda t: (-to_unit(t.value), -t.visits, t.id))
