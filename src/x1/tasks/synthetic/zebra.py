"""Einstein ("zebra") logic puzzles with exactly one solution.

Generation: draw a random solution (one value of every attribute per house), then add random
clues that are true of it until the solver below finds exactly one solution, then drop every
clue whose removal keeps the solution unique, so that the puzzle has no redundant clues.

Size: ``3 + round(2 * difficulty)`` houses (3..5) and ``2 + round(3 * difficulty)`` attributes
(2..5, the first is always the name); ``size`` is houses x attributes.

Scoring rule: one attribute of one person is asked; the answer must equal the gold value, ignoring
case, a leading "the"/"a" and a trailing full stop. Exact match scores 1, anything else 0.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from x1.tasks.answers import extract_marked_answer
from x1.tasks.base import Verification


@dataclass(frozen=True)
class Attribute:
    name: str
    values: tuple[str, ...]
    subject: str  # noun phrase for the person with value {v}
    predicate: str  # verb phrase saying a person has value {v}
    ask: str  # question asking this attribute of {s}


ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute("name", ("Alice", "Bob", "Carol", "David", "Eve"), "{v}", "is {v}", "What is the name of {s}?"),
    Attribute(
        "color",
        ("red", "green", "blue", "yellow", "white"),
        "the person in the {v} house",
        "lives in the {v} house",
        "What color is the house of {s}?",
    ),
    Attribute(
        "pet",
        ("cat", "dog", "bird", "fish", "horse"),
        "the person who keeps the {v}",
        "keeps the {v}",
        "Which pet does {s} keep?",
    ),
    Attribute(
        "drink",
        ("tea", "coffee", "milk", "water", "juice"),
        "the person who drinks {v}",
        "drinks {v}",
        "What does {s} drink?",
    ),
    Attribute(
        "hobby",
        ("chess", "painting", "gardening", "reading", "cycling"),
        "the person who enjoys {v}",
        "enjoys {v}",
        "Which hobby does {s} enjoy?",
    ),
)

# Clue kinds: unary ("at", "not_at") name an item and a house; binary ones name two items.
# An item is (attribute index, value index); houses are 0-based internally, 1-based in text.
Item = tuple[int, int]
Clue = tuple[str, Item, Any]
_KIND_WEIGHTS = {"at": 1, "not_at": 1, "same": 3, "diff": 1, "left": 1, "next": 2, "before": 1}


@dataclass(frozen=True)
class ZebraInstance:
    houses: int
    attributes: tuple[Attribute, ...]
    solution: tuple[tuple[int, ...], ...]  # solution[a][h] = value index of attribute a at house h
    clues: tuple[Clue, ...]
    target: Item  # the person the question is about
    asked: int  # attribute index asked

    @property
    def size(self) -> int:
        return self.houses * len(self.attributes)

    @property
    def answer(self) -> str:
        house = self.solution[self.target[0]].index(self.target[1])
        return self.attributes[self.asked].values[self.solution[self.asked][house]]

    @property
    def candidates(self) -> tuple[str, ...]:
        return self.attributes[self.asked].values[: self.houses]

    @property
    def question(self) -> str:
        lines = []
        for attr in self.attributes:
            vals = ", ".join(attr.values[: self.houses])
            lines.append(f"- Each person has a different {attr.name}: {vals}.")
        clues = "\n".join(f"{i}. {clue_text(self, c)}" for i, c in enumerate(self.clues, 1))
        ask = self.attributes[self.asked].ask.format(s=_subject(self, self.target))
        return (
            f"There are {self.houses} houses in a row, numbered 1 to {self.houses} from left to right, "
            f"each with one person.\n" + "\n".join(lines) + f"\n\nClues:\n{clues}\n\n{ask[0].upper()}{ask[1:]} "
            "Answer with just the value."
        )

    def to_meta(self) -> dict[str, Any]:
        return {
            "houses": self.houses,
            "attributes": [a.name for a in self.attributes],
            "solution": [{a.name: a.values[self.solution[i][h]] for i, a in enumerate(self.attributes)} for h in range(self.houses)],
            "clues": [clue_text(self, c) for c in self.clues],
            "size": self.size,
        }


def _subject(inst: ZebraInstance, item: Item) -> str:
    return inst.attributes[item[0]].subject.format(v=inst.attributes[item[0]].values[item[1]])


def _predicate(inst: ZebraInstance, item: Item) -> str:
    return inst.attributes[item[0]].predicate.format(v=inst.attributes[item[0]].values[item[1]])


def clue_text(inst: ZebraInstance, clue: Clue) -> str:
    kind, a, b = clue
    s = _subject(inst, a)
    if kind == "at":
        text = f"{s} lives in house {b + 1}."
    elif kind == "not_at":
        text = f"{s} does not live in house {b + 1}."
    elif kind == "same":
        text = f"{s} {_predicate(inst, b)}."
    elif kind == "diff":
        text = f"{s} and {_subject(inst, b)} live in different houses."
    elif kind == "left":
        text = f"{s} lives directly left of {_subject(inst, b)}."
    elif kind == "next":
        text = f"{s} lives next to {_subject(inst, b)}."
    else:  # before
        text = f"{s} lives somewhere to the left of {_subject(inst, b)}."
    return text[0].upper() + text[1:]


def sizes(difficulty: float) -> tuple[int, int]:
    """(houses, attributes) for a difficulty in [0, 1]."""
    d = min(max(difficulty, 0.0), 1.0)
    return 3 + round(2 * d), 2 + round(3 * d)


def _holds(kind: str, pa: int, pb: Any) -> bool:
    if kind == "at":
        return pa == pb
    if kind == "not_at":
        return pa != pb
    if kind == "same":
        return pa == pb
    if kind == "diff":
        return pa != pb
    if kind == "left":
        return pa + 1 == pb
    if kind == "next":
        return abs(pa - pb) == 1
    return pa < pb  # before


def count_solutions(houses: int, n_attrs: int, clues: tuple[Clue, ...] | list[Clue], limit: int = 2) -> tuple[int, list[list[int]] | None]:
    """How many solutions the clues allow (stopping at ``limit``), and the first one found.

    Backtracking over items (attribute, value) -> house with bitmask domains, forward checking
    and smallest-domain-first ordering; fast enough for 5 houses x 5 attributes.
    A solution is returned as ``solution[a][h] = value index``.
    """
    full = (1 << houses) - 1
    n = n_attrs * houses
    domains = [full] * n
    # neighbours[i]: (j, mask_by_house) — placing i at house h restricts j to mask_by_house[h].
    neighbours: list[list[tuple[int, list[int]]]] = [[] for _ in range(n)]
    for a in range(n_attrs):
        for v in range(houses):
            for w in range(houses):
                if v != w:
                    neighbours[a * houses + v].append((a * houses + w, [full & ~(1 << h) for h in range(houses)]))
    for kind, (a1, v1), other in clues:
        i = a1 * houses + v1
        if kind in ("at", "not_at"):
            domains[i] &= (1 << other) if kind == "at" else full & ~(1 << other)
            continue
        j = other[0] * houses + other[1]
        fwd = [sum(1 << q for q in range(houses) if _holds(kind, p, q)) for p in range(houses)]
        bwd = [sum(1 << p for p in range(houses) if _holds(kind, p, q)) for q in range(houses)]
        neighbours[i].append((j, fwd))
        neighbours[j].append((i, bwd))
    if any(d == 0 for d in domains):
        return 0, None

    found: list[list[int]] = []
    count = 0

    def search(doms: list[int], assigned: list[bool]) -> bool:  # True means: stop, limit reached
        nonlocal count
        best, best_size = -1, houses + 1
        for k in range(n):
            if not assigned[k]:
                size = doms[k].bit_count()
                if size < best_size:
                    best, best_size = k, size
        if best < 0:
            count += 1
            if not found:
                sol = [[0] * houses for _ in range(n_attrs)]
                for k in range(n):
                    sol[k // houses][doms[k].bit_length() - 1] = k % houses
                found.append(sol)  # type: ignore[arg-type]
            return count >= limit
        assigned[best] = True
        mask = doms[best]
        while mask:
            bit = mask & -mask
            mask ^= bit
            h = bit.bit_length() - 1
            new = doms.copy()
            new[best] = bit
            ok = True
            for j, table in neighbours[best]:
                new[j] &= table[h]
                if not new[j]:
                    ok = False
                    break
            if ok and search(new, assigned):
                assigned[best] = False
                return True
        assigned[best] = False
        return False

    search(domains, [False] * n)
    return count, (found[0] if found else None)


def _random_clue(rng: random.Random, houses: int, n_attrs: int, pos: list[list[int]]) -> Clue:
    """A clue that is true of the solution (``pos[a][v]`` is the house of value v of attribute a)."""
    kinds, weights = zip(*_KIND_WEIGHTS.items(), strict=True)
    while True:
        kind = rng.choices(kinds, weights)[0]
        a = (rng.randrange(n_attrs), rng.randrange(houses))
        pa = pos[a[0]][a[1]]
        if kind == "at":
            return (kind, a, pa)
        if kind == "not_at":
            return (kind, a, rng.choice([h for h in range(houses) if h != pa]))
        b_attr = rng.choice([x for x in range(n_attrs) if x != a[0]]) if kind == "same" else rng.randrange(n_attrs)
        options = [(b_attr, v) for v in range(houses) if (b_attr, v) != a and _holds(kind, pa, pos[b_attr][v])]
        if kind == "diff":  # different attribute only, else it is implied by the rules
            options = [o for o in options if o[0] != a[0]]
        if options:
            return (kind, a, rng.choice(options))


def generate(difficulty: float, rng: random.Random) -> ZebraInstance:
    """A puzzle with a unique solution and no redundant clue; see the module docstring."""
    houses, n_attrs = sizes(difficulty)
    attrs = (ATTRIBUTES[0], *rng.sample(ATTRIBUTES[1:], n_attrs - 1))
    solution = tuple(tuple(rng.sample(range(houses), houses)) for _ in range(n_attrs))
    pos = [[row.index(v) for v in range(houses)] for row in solution]
    clues: list[Clue] = []
    while count_solutions(houses, n_attrs, clues)[0] > 1:
        clue = _random_clue(rng, houses, n_attrs, pos)
        if clue not in clues:
            clues.append(clue)
    for clue in rng.sample(clues, len(clues)):
        trial = [c for c in clues if c != clue]
        if count_solutions(houses, n_attrs, trial)[0] == 1:
            clues = trial
    target = (rng.randrange(n_attrs), rng.randrange(houses))
    asked = rng.choice([a for a in range(n_attrs) if a != target[0]])
    return ZebraInstance(houses, attrs, solution, tuple(clues), target, asked)


def solve(instance: ZebraInstance, limit: int = 2) -> tuple[int, list[list[int]] | None]:
    """Number of solutions of the instance's clues (up to ``limit``) and the first one."""
    return count_solutions(instance.houses, len(instance.attributes), instance.clues, limit)


def _normalise(text: str) -> str:
    text = text.strip().strip("*`$\"'").strip().rstrip(".").strip()
    text = re.sub(r"^(?:the|a|an)\s+", "", text, flags=re.IGNORECASE)
    return text.lower()


def verify(instance: ZebraInstance, answer: str | None) -> Verification:
    """Exact, case-insensitive comparison with the asked value (see the module docstring)."""
    if answer is None:
        return Verification(0.0, "no answer could be extracted")
    if _normalise(answer) == _normalise(instance.answer):
        return Verification(1.0, "matches the unique solution")
    return Verification(0.0, f"{answer.strip()!r} is not {instance.answer!r}")


def extract(text: str, candidates: tuple[str, ...] = ()) -> str | None:
    """The marked final answer, else the last of ``candidates`` mentioned in the text."""
    marked = extract_marked_answer(text)
    if marked is not None or not candidates:
        return marked
    best, best_at = None, -1
    for cand in candidates:
        for m in re.finditer(rf"\b{re.escape(cand)}\b", text, flags=re.IGNORECASE):
            if m.start() > best_at:
                best, best_at = cand, m.start()
    return best


def extractor(instance: ZebraInstance) -> Callable[[str], str | None]:
    """An answer extractor that knows which values the asked attribute can take (picklable)."""
    return functools.partial(extract, candidates=instance.candidates)
