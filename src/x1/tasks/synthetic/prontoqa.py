"""PrOntoQA-style deduction: follow "Every A is a B" rules from a fact to a property.

A fictional ontology ("Every wumpus is a yumpus. Every yumpus is not bright.") keeps world
knowledge out of it. The proof needs ``depth = 1 + round(7 * difficulty)`` rules (1..8), and
``1 + round(5 * difficulty)`` distractors are mixed in: irrelevant properties of chain concepts,
concepts below the chain that the entity does not belong to, and a separate chain ending in the
opposite property that another entity belongs to. Statements are shuffled.

Scoring rule: the question is "True or false: <entity> is [not] <property>."; the answer must be
True or False (yes/no are accepted); a match scores 1, anything else 0.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

from x1.tasks.answers import extract_marked_answer
from x1.tasks.base import Verification

CONCEPTS = (
    "wumpus", "yumpus", "zumpus", "dumpus", "rompus", "numpus", "tumpus", "vumpus", "impus", "jompus",
    "gorpus", "shumpus", "lempus", "sterpus", "grimpus", "lorpus", "brimpus", "felpus", "scrompus",
    "timpus", "quimpus", "blimpus",
)  # fmt: skip
PROPERTIES = (
    "bright", "sour", "wooden", "large", "hot", "happy", "red", "opaque", "fruity", "nervous", "kind",
    "shy", "feisty", "floral", "liquid", "muffled", "spicy", "striped", "transparent", "aggressive",
)  # fmt: skip
ENTITIES = ("Max", "Alex", "Sam", "Fae", "Rex", "Sally", "Polly", "Wren", "Stella")

_TRUE = {"true", "yes", "t"}
_FALSE = {"false", "no", "f"}
_WORD = re.compile(r"\b(true|false)\b", re.IGNORECASE)


@dataclass(frozen=True)
class ProntoInstance:
    entity: str
    statements: tuple[str, ...]  # facts and rules, shuffled
    query: str  # "<entity> is [not] <property>."
    truth: bool
    proof: tuple[str, ...]  # one deduction per line
    depth: int
    distractors: int

    @property
    def size(self) -> int:
        return len(self.statements)

    @property
    def answer(self) -> str:
        return "True" if self.truth else "False"

    @property
    def question(self) -> str:
        return " ".join(self.statements) + f"\n\nTrue or false: {self.query}\nAnswer True or False."

    def to_meta(self) -> dict[str, Any]:
        return {
            "depth": self.depth,
            "distractors": self.distractors,
            "proof": list(self.proof),
            "size": self.size,
        }


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _is_a(subject: str, concept: str) -> str:
    return f"{subject} is {_article(concept)} {concept}."


def _has(subject: str, prop: str, positive: bool) -> str:
    return f"{subject} is {'' if positive else 'not '}{prop}."


def sizes(difficulty: float) -> tuple[int, int]:
    """(proof depth, distractor count) for a difficulty in [0, 1]."""
    d = min(max(difficulty, 0.0), 1.0)
    return 1 + round(7 * d), 1 + round(5 * d)


def generate(difficulty: float, rng: random.Random) -> ProntoInstance:
    """A consistent ontology, a fact, and a property query whose proof takes ``depth`` rules."""
    depth, n_distract = sizes(difficulty)
    concepts = rng.sample(CONCEPTS, len(CONCEPTS))
    props = rng.sample(PROPERTIES, len(PROPERTIES))
    entity, other = rng.sample(ENTITIES, 2)
    chain = [concepts.pop() for _ in range(depth)]  # entity is chain[0]; chain[-1] has the property
    prop, positive = props.pop(), rng.random() < 0.5

    statements = [_is_a(entity, chain[0])]
    statements += [_is_a(f"Every {a}", b) for a, b in zip(chain, chain[1:], strict=False)]
    statements.append(_has(f"Every {chain[-1]}", prop, positive))
    proof = [_is_a(entity, chain[0])]
    proof += [_is_a(entity, c) for c in chain[1:]]
    proof.append(_has(entity, prop, positive))

    kinds = ["opposite", "irrelevant", "child"]
    for k in range(n_distract):
        kind = kinds[k % 3]
        if kind == "opposite":  # another entity reaches the opposite property via its own chain
            a, b = concepts.pop(), concepts.pop()
            statements += [_is_a(other, a), _is_a(f"Every {a}", b), _has(f"Every {b}", prop, not positive)]
        elif kind == "irrelevant":  # chain concepts with properties nobody asks about
            statements.append(_has(f"Every {rng.choice(chain)}", props.pop(), rng.random() < 0.5))
        else:  # a concept below the chain: the entity is not one, so its property does not apply
            child = concepts.pop()
            statements += [
                _is_a(f"Every {child}", rng.choice(chain)),
                _has(f"Every {child}", props.pop(), True),
            ]
    rng.shuffle(statements)

    query_positive = rng.random() < 0.5
    query = _has(entity, prop, query_positive)
    return ProntoInstance(entity, tuple(statements), query, positive == query_positive, tuple(proof), depth, n_distract)


def parse_truth(answer: str) -> bool | None:
    """True/False from an answer ("True", "false.", "Yes"), or None when it is neither."""
    words = re.findall(r"[A-Za-z]+", answer)
    if not words:
        return None
    first = words[0].lower()
    if first in _TRUE:
        return True
    if first in _FALSE:
        return False
    return None


def verify(instance: ProntoInstance, answer: str | None) -> Verification:
    """Score 1 when the answer's truth value matches the query's (see the module docstring)."""
    if answer is None:
        return Verification(0.0, "no answer could be extracted")
    value = parse_truth(answer)
    if value is None:
        return Verification(0.0, f"{answer.strip()!r} is neither True nor False")
    if value == instance.truth:
        return Verification(1.0, "follows from the rules")
    return Verification(0.0, f"the statement is {instance.answer}")


def extract(text: str) -> str | None:
    """The marked final answer, else the last "true"/"false" in the text."""
    marked = extract_marked_answer(text)
    if marked is not None:
        return marked
    words = _WORD.findall(text)
    return words[-1].capitalize() if words else None
