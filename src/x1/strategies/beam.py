"""Step-level beam search: keep the ``width`` best partial solutions, expand each by ``branch``.

Finished (terminal) candidates leave the beam and wait in ``completed``; the search ends when
the beam is empty or ``max_depth`` is reached. Width 1, branch 1, temperature 0 is greedy.

Diverse beam search (Vijayakumar et al. 2016) at step level: the beam is split into ``groups``
groups of about width/groups each, every group grows its own partial solutions, and at each step
the groups choose in turn. A candidate's score in group g is the evaluator's score minus
``diversity_penalty`` (λ) times how many thoughts the groups before g chose at this step with the
same step text, compared after lower-casing and collapsing whitespace (Hamming diversity, with a
step as the unit). Within a group it is a plain beam. The first step expands the root once,
``width × branch`` children, and the groups choose from that shared pool (a thought joins one
group at most). ``groups=1`` is the plain beam; λ = 0 gives G beams that ignore each other.

``max_per_parent`` is only a cap: at most that many children of one parent survive, before the
groups choose. It stops one parent filling the beam but scores nothing for being different.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from x1.graph import ROOT_ID, Thought
from x1.operators.prune import keep_best
from x1.strategies.base import Expand, Problem, Reply, Request, Strategy, read_state, save_state, scored_by


def step_key(text: str) -> str:
    """The text two steps must share to count as the same for the diversity penalty."""
    return " ".join(text.lower().split())


@dataclass
class BeamState:
    beams: list[list[int]] = field(default_factory=list)  # each group's partial solutions
    group_completed: list[list[int]] = field(default_factory=list)  # each group's finished candidates
    completed: list[int] = field(default_factory=list)  # every finished candidate, in the order they finished


@dataclass
class BeamSearch(Strategy):
    width: int = 4
    branch: int = 4
    temperature: float = 0.8
    evaluator: str = "confidence"
    max_depth: int = 12
    groups: int = 1  # G: diverse beam search splits the width into G groups; 1 = one plain beam
    diversity_penalty: float = 0.0  # λ: subtracted once per earlier group's same step at this depth
    max_per_parent: int | None = None  # a cap per parent before selection (not a diversity term)
    name: str = "beam"

    def __post_init__(self) -> None:
        if not 1 <= self.groups <= self.width:
            raise ValueError(f"beam needs 1 <= groups <= width, got groups={self.groups}, width={self.width}")

    @property
    def group_sizes(self) -> list[int]:
        """Beam slots per group: width split as evenly as possible, the first groups taking the remainder."""
        base, extra = divmod(self.width, self.groups)
        return [base + (1 if g < extra else 0) for g in range(self.groups)]

    def start(self, problem: Problem) -> None:
        save_state(problem, BeamState([[ROOT_ID] for _ in range(self.groups)], [[] for _ in range(self.groups)]))

    def ask(self, problem: Problem) -> list[Request]:
        beams = read_state(problem, BeamState).beams
        if beams[0] == [ROOT_ID]:  # the first step: one shared expansion of the root
            return [Expand(ROOT_ID, n=self.width * self.branch, temperature=self.temperature, evaluator=self.evaluator)]
        return [Expand(t, n=self.branch, temperature=self.temperature, evaluator=self.evaluator) for beam in beams for t in beam]

    def tell(self, problem: Problem, replies: list[Reply]) -> None:
        graph, state = problem.graph, read_state(problem, BeamState)
        beams = state.beams
        own_score = scored_by(self.evaluator)
        group_of = {t: g for g, beam in enumerate(beams) for t in beam if t != ROOT_ID}
        pools: list[list[Thought]] = [[] for _ in beams]
        everyone: list[Thought] = []
        for reply in replies:
            children = [graph[c] for c in reply.thought_ids]
            if self.max_per_parent is not None:
                children = keep_best(graph, children, self.max_per_parent, own_score)
            everyone.extend(children)
            assert isinstance(reply.request, Expand)
            parent = reply.request.thought_id
            for g in range(len(beams)) if parent == ROOT_ID else [group_of[parent]]:
                pools[g].extend(children)
        chosen: list[str] = []  # step keys the earlier groups chose at this step
        taken: set[int] = set()
        for g, size in enumerate(self.group_sizes):
            done = state.group_completed[g]
            earlier = list(chosen)

            def score(t: Thought, earlier: list[str] = earlier) -> float:
                return own_score(t) - self.diversity_penalty * earlier.count(step_key(t.text))

            pool = [t for t in pools[g] if t.id not in taken]
            kept = sorted(pool, key=lambda t: (-score(t), t.id))[: max(size - len(done), 0)]
            beam = []
            for t in kept:
                taken.add(t.id)
                chosen.append(step_key(t.text))
                if self.groups > 1:
                    t.meta["beam_group"] = g
                if t.terminal or graph.depth(t.id) >= self.max_depth:
                    done.append(t.id)
                    state.completed.append(t.id)
                else:
                    beam.append(t.id)
            beams[g] = beam if len(done) < size else []
        for t in everyone:
            if t.id not in taken:
                t.pruned = True
        save_state(problem, state)

    def answer(self, problem: Problem) -> Thought | None:
        completed = [problem.graph[t] for t in read_state(problem, BeamState).completed]
        if not completed:
            return None
        score = scored_by(self.evaluator)
        return min(completed, key=lambda t: (-score(t), t.id))
