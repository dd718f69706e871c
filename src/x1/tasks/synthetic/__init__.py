"""The four synthetic domains of the x1 paper: SAT, knapsack, zebra puzzles, PrOntoQA chains.

Each module offers ``generate(difficulty, rng) -> instance`` (an instance has ``question``,
``answer`` (a gold answer that verifies with score 1), ``size`` (grows with difficulty) and
``to_meta()``), ``verify(instance, answer) -> Verification`` and ``extract(solution_text)``.
Generators are pure functions of ``(difficulty, rng)``, so a task id that records the seed and
the index regenerates the same instance.
"""

from __future__ import annotations

from types import ModuleType

from x1.tasks.synthetic import knapsack, prontoqa, sat, zebra

DOMAINS: dict[str, ModuleType] = {"sat": sat, "knapsack": knapsack, "zebra": zebra, "prontoqa": prontoqa}

DESCRIPTIONS: dict[str, str] = {
    "sat": "random satisfiable 3-SAT (planted assignment); partial credit for satisfied clauses",
    "knapsack": "0/1 knapsack with a DP-computed optimum; partial credit for feasible suboptimal picks",
    "zebra": "Einstein/zebra logic puzzles with a unique solution, one attribute asked",
    "prontoqa": "PrOntoQA-style deduction chains over a fictional ontology, with distractors",
}

__all__ = ["DESCRIPTIONS", "DOMAINS", "knapsack", "prontoqa", "sat", "zebra"]
