"""0/1 knapsack: pick items of maximum total value within a weight capacity.

Size: ``3 + round(12 * difficulty)`` items (3..15), with weights and values whose range widens
with difficulty; the capacity is about half the total weight. The optimum is computed exactly by
dynamic programming over capacities.

Scoring rule: the answer lists chosen item numbers (1-based, e.g. ``[1, 3, 4]``; repeats are
ignored). An unknown item number or a selection heavier than the capacity scores 0. A feasible
selection scores 1 when its value equals the optimum, otherwise ``0.5 * value / optimum``.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

from x1.tasks.answers import extract_marked_answer
from x1.tasks.base import Verification

_INT = re.compile(r"-?\d+")
_LIST = re.compile(r"\[[^\[\]]*\]")
_EMPTY = re.compile(r"^\s*(?:\[\s*\]|none|nothing|no items?|empty)\s*\.?$", re.IGNORECASE)


@dataclass(frozen=True)
class KnapsackInstance:
    weights: tuple[int, ...]
    values: tuple[int, ...]
    capacity: int
    best_value: int
    best_items: tuple[int, ...]  # 1-based item numbers of one optimal selection

    @property
    def size(self) -> int:
        return len(self.weights)

    @property
    def answer(self) -> str:
        return "[" + ", ".join(str(i) for i in self.best_items) + "]"

    @property
    def question(self) -> str:
        rows = "\n".join(f"Item {i}: weight {w}, value {v}" for i, (w, v) in enumerate(zip(self.weights, self.values, strict=True), 1))
        return (
            f"You have a knapsack that can carry a total weight of at most {self.capacity}. "
            f"Choose a subset of these {self.size} items (each at most once) with the largest "
            f"possible total value:\n{rows}\n\n"
            "Give the chosen item numbers as a list, for example [1, 3, 4]."
        )

    def to_meta(self) -> dict[str, Any]:
        return {
            "weights": list(self.weights),
            "values": list(self.values),
            "capacity": self.capacity,
            "best_value": self.best_value,
            "size": self.size,
        }


def n_items(difficulty: float) -> int:
    return 3 + round(12 * min(max(difficulty, 0.0), 1.0))


def solve(weights: tuple[int, ...], values: tuple[int, ...], capacity: int) -> tuple[int, tuple[int, ...]]:
    """Optimal value and one optimal selection (1-based item numbers), by DP over capacity."""
    n = len(weights)
    table = [[0] * (capacity + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        w, v = weights[i - 1], values[i - 1]
        prev, row = table[i - 1], table[i]
        for c in range(capacity + 1):
            row[c] = max(prev[c], prev[c - w] + v) if w <= c else prev[c]
    chosen, c = [], capacity
    for i in range(n, 0, -1):
        if table[i][c] != table[i - 1][c]:
            chosen.append(i)
            c -= weights[i - 1]
    return table[n][capacity], tuple(sorted(chosen))


def generate(difficulty: float, rng: random.Random) -> KnapsackInstance:
    """Random items; capacity near half the total weight so that choosing is not trivial."""
    d = min(max(difficulty, 0.0), 1.0)
    n = n_items(d)
    max_w, max_v = 5 + round(25 * d), 10 + round(90 * d)
    weights = tuple(rng.randint(1, max_w) for _ in range(n))
    values = tuple(rng.randint(1, max_v) for _ in range(n))
    capacity = max(max(weights), sum(weights) // 2)
    best, items = solve(weights, values, capacity)
    return KnapsackInstance(weights, values, capacity, best, items)


def parse_items(answer: str) -> list[int]:
    """Item numbers named in ``answer``, from its last ``[...]`` list when it has one."""
    lists = _LIST.findall(answer)
    text = lists[-1] if lists else answer
    return [int(x) for x in _INT.findall(text)]


def verify(instance: KnapsackInstance, answer: str | None) -> Verification:
    """Score a selection by the rule in the module docstring."""
    if answer is None:
        return Verification(0.0, "no answer could be extracted")
    items = parse_items(answer)
    if not items and not _EMPTY.match(answer):
        return Verification(0.0, "no item numbers found in the answer")
    bad = [i for i in items if not 1 <= i <= instance.size]
    if bad:
        return Verification(0.0, f"there is no item {bad[0]} (items are 1..{instance.size})")
    chosen = sorted(set(items))
    weight = sum(instance.weights[i - 1] for i in chosen)
    value = sum(instance.values[i - 1] for i in chosen)
    if weight > instance.capacity:
        return Verification(0.0, f"infeasible: weight {weight} exceeds capacity {instance.capacity}")
    if value == instance.best_value:
        return Verification(1.0, f"optimal: value {value}")
    score = 0.5 * value / instance.best_value if instance.best_value else 0.0
    return Verification(score, f"feasible but value {value} < optimum {instance.best_value}")


def extract(text: str) -> str | None:
    """The marked final answer, else the last ``[...]`` list in the text."""
    marked = extract_marked_answer(text)
    if marked is not None:
        return marked
    lists = _LIST.findall(text)
    return lists[-1] if lists else None
