"""How a process reward model's step scores become one score for a path.

Apart from the model (no torch), so specs can check an aggregation, and a study can aggregate step
scores that an earlier run kept, without loading a model.
"""

from __future__ import annotations

import math

AGGREGATES: tuple[str, ...] = ("min", "last", "product", "mean")


def aggregate_steps(scores: list[float], how: str = "min") -> float:
    """One solution score from step scores: weakest step (min), last, product, or mean."""
    if how not in AGGREGATES:
        raise ValueError(f"PRM aggregation {how!r} is not one of {', '.join(AGGREGATES)}")
    if not scores:
        return 0.5
    if how == "min":
        return min(scores)
    if how == "last":
        return scores[-1]
    if how == "product":
        return math.prod(scores)
    return sum(scores) / len(scores)
