"""Adaptive branching on token-level signals: decode greedily, fork only where the model is unsure.

Following the blueprint's reading of entropy and varentropy (and entropix-style samplers):
every path advances by one greedy step (n=1, temperature 0, ``signals=True``). When a new
step's mean entropy exceeds ``entropy_threshold`` or its max varentropy exceeds
``varentropy_threshold`` (``thought.signals``, summarised by the generate operator from
``Completion.signals``), the step is a fork: the greedy step stays as one branch and
``branch - 1`` sampled alternatives of the same step are drawn from its parent. Sampled
alternatives are not checked again (that would fork forever); their *next* steps are. Paths
are capped at ``max_paths``; the answer is a vote over the finished paths.

A backend that returns no signals never forks (plain greedy CoT) unless ``surprisal_fallback``
is set, which uses the chosen tokens' mean surprisal (−mean logprob) in place of entropy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from x1.graph import ROOT_ID, Thought
from x1.strategies.base import Evaluate, Expand, Problem, Reply, Request, Strategy, read_state, save_state
from x1.strategies.best_of_n import vote


@dataclass
class AdaptiveState:
    tips: list[int] = field(default_factory=lambda: [ROOT_ID])  # the end of each path
    forks: list[int] = field(default_factory=list)  # every thought that was forked below, in order
    pending_forks: list[int] = field(default_factory=list)  # forks whose samples are asked for next
    scored: bool = False  # the evaluator has scored the finished paths


@dataclass
class AdaptiveBranching(Strategy):
    branch: int = 3
    entropy_threshold: float = 1.5  # nats, mean over the step's tokens
    varentropy_threshold: float = 3.0  # nats², max over the step's tokens
    temperature: float = 0.8  # of the sampled alternatives at a fork
    max_paths: int = 8
    max_depth: int = 12
    voting: str = "majority"
    evaluator: str | None = None  # needed for weighted / reward voting
    surprisal_fallback: bool = False
    name: str = "adaptive"

    def __post_init__(self) -> None:
        if self.branch < 2:
            raise ValueError(f"adaptive: branch must be at least 2 (the greedy step plus one sample), got {self.branch}")

    def start(self, problem: Problem) -> None:
        save_state(problem, AdaptiveState())

    def uncertain(self, thought: Thought) -> bool:
        """Does this step's token-level uncertainty call for a fork?"""
        s = thought.signals
        entropy = s.get("entropy_mean")
        if entropy is None and self.surprisal_fallback and thought.logprobs:
            entropy = -sum(thought.logprobs) / len(thought.logprobs)
        if entropy is not None and entropy > self.entropy_threshold:
            return True
        varentropy = s.get("varentropy_max")
        return varentropy is not None and varentropy > self.varentropy_threshold

    def _open(self, problem: Problem, tip: int) -> bool:
        t = problem.graph[tip]
        return tip == ROOT_ID or not (t.terminal or problem.graph.depth(tip) >= self.max_depth)

    def ask(self, problem: Problem) -> list[Request]:
        state = read_state(problem, AdaptiveState)
        requests: list[Request] = [
            Expand(t, n=1, temperature=0.0, signals=True, tag="greedy") for t in state.tips if self._open(problem, t)
        ]
        requests += [
            Expand(p, n=self.branch - 1, temperature=self.temperature, signals=True, tag="fork")
            for p in state.pending_forks
        ]
        if not requests and self.evaluator and not state.scored:
            requests.append(Evaluate([t for t in state.tips if t != ROOT_ID], self.evaluator))
        return requests

    def tell(self, problem: Problem, replies: list[Reply]) -> None:
        graph, state = problem.graph, read_state(problem, AdaptiveState)
        tips = state.tips
        state.pending_forks = []
        # forks first, so the path cap below sees every path that exists after this tick
        greedy = []
        for reply in replies:
            request = reply.request
            if isinstance(request, Evaluate):
                state.scored = True
            elif request.tag == "fork":
                for c in reply.thought_ids:
                    graph[c].meta["fork"] = request.thought_id
                tips.extend(reply.thought_ids)
            else:
                greedy.append(reply)
        for reply in greedy:
            parent, child = reply.request.thought_id, reply.thought_ids[0]
            tips[tips.index(parent)] = child
            planned = len(tips) + (self.branch - 1) * (len(state.pending_forks) + 1)
            if self.uncertain(graph[child]) and planned <= self.max_paths:
                state.forks.append(parent)
                state.pending_forks.append(parent)
        save_state(problem, state)

    def answer(self, problem: Problem) -> Thought | None:
        finished = [problem.graph[t] for t in read_state(problem, AdaptiveState).tips if t != ROOT_ID]
        return vote(finished, self.voting, self.evaluator)
