"""The reasoning structure: thoughts (steps) in a directed acyclic graph.

A chain and a tree are special cases of the DAG; a thought with several parents is what
*aggregate* makes; a thought whose ``nested`` graph is set is a step solved by an inner search.
Everything a strategy knows about a problem lives here, so saving the graph checkpoints it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from typing import Any

SCHEMA_VERSION = 1
ROOT_ID = 0


class GraphError(ValueError):
    """A graph that breaks an invariant (a cycle, a dangling parent, a bad schema)."""


@dataclass(slots=True)
class Compute:
    """Model work spent to produce one thought (or a whole run, when summed)."""

    prompt_tokens: int = 0  # tokens prefilled (evaluated) for this thought, after prefix reuse
    generated_tokens: int = 0
    policy_calls: int = 0
    evaluator_calls: int = 0
    # positions a trained evaluator's backbone ran (padding included; after shared prefixes and kept caches)
    evaluator_tokens: int = 0

    def add(self, other: Compute) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.generated_tokens += other.generated_tokens
        self.policy_calls += other.policy_calls
        self.evaluator_calls += other.evaluator_calls
        self.evaluator_tokens += other.evaluator_tokens

    @property
    def tokens(self) -> int:
        """The policy's tokens (the evaluator's are counted apart: another model, another cost per token)."""
        return self.prompt_tokens + self.generated_tokens


@dataclass(slots=True)
class Thought:
    """One step of reasoning: its text, how it was produced, and what search learned about it."""

    id: int
    text: str = ""
    parents: list[int] = field(default_factory=list)
    children: list[int] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    terminal: bool = False  # ends the solution (end of sequence, or an answer was given)
    answer: str | None = None  # extracted final answer, for terminals
    value: float | None = None  # q in [-1, 1]: the backed-up value estimate
    visits: int = 0  # N: how often search passed through this thought
    reward: float | None = None  # true terminal reward when a verifier was consulted (training mode)
    scores: dict[str, float] = field(default_factory=dict)  # evaluator name -> score
    signals: dict[str, float] = field(default_factory=dict)  # token-level entropy, varentropy, gini, margin
    compute: Compute = field(default_factory=Compute)
    pruned: bool = False
    nested: ReasoningGraph | None = None  # the inner structure, for a nested scheme
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "nested":
                out[f.name] = value.to_dict() if value is not None else None
            elif f.name == "compute":
                out[f.name] = asdict(value)
            else:
                out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Thought:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise GraphError(f"thought {data.get('id')!r} has unknown fields {sorted(unknown)}")
        data = dict(data)
        data["compute"] = Compute(**data.get("compute", {}))
        nested = data.get("nested")
        data["nested"] = ReasoningGraph.from_dict(nested) if nested is not None else None
        return cls(**data)


@dataclass
class ReasoningGraph:
    """A DAG of thoughts rooted at the problem statement (thought 0, empty text)."""

    problem: str = ""
    thoughts: dict[int, Thought] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.thoughts:
            self.thoughts[ROOT_ID] = Thought(id=ROOT_ID)

    # -- building -------------------------------------------------------------------------
    @property
    def root(self) -> Thought:
        return self.thoughts[ROOT_ID]

    def __getitem__(self, thought_id: int) -> Thought:
        return self.thoughts[thought_id]

    def __len__(self) -> int:
        return len(self.thoughts)

    def __iter__(self) -> Iterator[Thought]:
        return iter(self.thoughts.values())

    def add(self, parents: int | list[int], text: str, **attrs: Any) -> Thought:
        """Add a thought below one parent (tree) or several (aggregate)."""
        parent_ids = [parents] if isinstance(parents, int) else list(parents)
        if not parent_ids:
            raise GraphError("a new thought needs at least one parent; only the root has none")
        for pid in parent_ids:
            if pid not in self.thoughts:
                raise GraphError(f"parent {pid} is not in the graph")
        # ids only grow (thoughts are never deleted), so the last key + 1 is free: O(1)
        new_id = next(reversed(self.thoughts)) + 1
        thought = Thought(id=new_id, text=text, parents=parent_ids, **attrs)
        self.thoughts[new_id] = thought
        for pid in parent_ids:
            self.thoughts[pid].children.append(new_id)
        return thought

    # -- reading --------------------------------------------------------------------------
    def path(self, thought_id: int) -> list[Thought]:
        """The thoughts from the root's first child down to ``thought_id``, along first parents."""
        chain: list[Thought] = []
        current = self.thoughts[thought_id]
        while current.parents:
            chain.append(current)
            current = self.thoughts[current.parents[0]]
        chain.reverse()
        return chain

    def path_text(self, thought_id: int) -> str:
        return "".join(t.text for t in self.path(thought_id))

    def depth(self, thought_id: int) -> int:
        """``len(path(thought_id))``, counted without building the path (attach_children asks it per expansion)."""
        depth, current = 0, self.thoughts[thought_id]
        while current.parents:
            depth += 1
            current = self.thoughts[current.parents[0]]
        return depth

    def leaves(self) -> list[Thought]:
        """Thoughts without children (the root counts only while it is alone)."""
        if len(self.thoughts) == 1:
            return [self.root]
        return [t for t in self.thoughts.values() if not t.children and t.id != ROOT_ID]

    def terminals(self) -> list[Thought]:
        return [t for t in self.thoughts.values() if t.terminal]

    def total_compute(self) -> Compute:
        total = Compute()
        for t in self.thoughts.values():
            total.add(t.compute)
            if t.nested is not None:
                total.add(t.nested.total_compute())
        return total

    # -- invariants -----------------------------------------------------------------------
    def validate(self) -> None:
        """Raise GraphError if links disagree, a thought is unreachable, or there is a cycle."""
        if ROOT_ID not in self.thoughts or self.thoughts[ROOT_ID].parents:
            raise GraphError("the root (thought 0) must exist and have no parents")
        for tid, t in self.thoughts.items():
            if t.id != tid:
                raise GraphError(f"thought stored under {tid} says its id is {t.id}")
            if tid != ROOT_ID and not t.parents:
                raise GraphError(f"thought {tid} has no parent")
            for pid in t.parents:
                if pid not in self.thoughts or tid not in self.thoughts[pid].children:
                    raise GraphError(f"thought {tid} names parent {pid}, which does not list it as a child")
            for cid in t.children:
                if cid not in self.thoughts or tid not in self.thoughts[cid].parents:
                    raise GraphError(f"thought {tid} names child {cid}, which does not list it as a parent")
            if t.nested is not None:
                t.nested.validate()
        # Kahn's algorithm: every thought must be reachable and the graph acyclic.
        indegree = {tid: len(t.parents) for tid, t in self.thoughts.items()}
        ready = [ROOT_ID]
        seen = 0
        while ready:
            tid = ready.pop()
            seen += 1
            for cid in self.thoughts[tid].children:
                indegree[cid] -= 1
                if indegree[cid] == 0:
                    ready.append(cid)
        if seen != len(self.thoughts):
            raise GraphError("the graph has a cycle or thoughts unreachable from the root")

    # -- serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "problem": self.problem,
            "meta": self.meta,
            "thoughts": [t.to_dict() for t in self.thoughts.values()],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReasoningGraph:
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise GraphError(
                f"graph schema version {version!r} is not supported (this x1 reads version {SCHEMA_VERSION})"
            )
        loaded = sorted((Thought.from_dict(t) for t in data["thoughts"]), key=lambda t: t.id)
        thoughts = {t.id: t for t in loaded}
        graph = cls(problem=data.get("problem", ""), thoughts=thoughts, meta=data.get("meta", {}))
        graph.validate()
        return graph

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text: str) -> ReasoningGraph:
        return cls.from_dict(json.loads(text))
