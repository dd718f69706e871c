"""Random 3-SAT with a planted solution, so every instance is satisfiable by construction.

Size: ``4 + round(16 * difficulty)`` variables (4..20) and a clause/variable ratio rising from
2.5 to 4.2 (near the hard 3-SAT threshold of about 4.26).

Scoring rule (:mod:`x1.tasks.cnf`): the answer is an assignment such as ``x1=T, x2=F, ...``
(T/F, true/false, 1/0, ``x_1 = True``, value or literal lists are all read). Score 1 when every
clause has a true literal; otherwise partial credit ``0.5 * satisfied_clauses / clauses``, so a
wrong assignment never scores above 0.5. A variable the answer leaves out makes its literals
false; a variable given both values scores 0.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from x1.tasks.base import Verification
from x1.tasks.cnf import Clause, extract_assignment, score_assignment


@dataclass(frozen=True)
class SatInstance:
    n_vars: int
    clauses: tuple[Clause, ...]
    planted: tuple[bool, ...]  # planted[i] is the value of x_{i+1}

    @property
    def size(self) -> int:
        return self.n_vars * len(self.clauses)

    @property
    def answer(self) -> str:
        return format_assignment(self.planted)

    @property
    def question(self) -> str:
        lines = "\n".join(f"{i}. {format_clause(c)}" for i, c in enumerate(self.clauses, 1))
        return (
            f"Find an assignment of true (T) or false (F) to the variables x1..x{self.n_vars} that "
            f"satisfies every one of these {len(self.clauses)} clauses (each clause is an OR of "
            f"literals; ¬ means NOT):\n{lines}\n\n"
            f"Give the assignment in the form 'x1=T, x2=F, ...' listing all {self.n_vars} variables."
        )

    def to_meta(self) -> dict[str, Any]:
        return {"n_vars": self.n_vars, "clauses": [list(c) for c in self.clauses], "size": self.size}


def format_clause(clause: Clause) -> str:
    return "(" + " ∨ ".join(("¬" if lit < 0 else "") + f"x{abs(lit)}" for lit in clause) + ")"


def format_assignment(values: tuple[bool, ...] | list[bool]) -> str:
    return ", ".join(f"x{i}={'T' if v else 'F'}" for i, v in enumerate(values, 1))


def sizes(difficulty: float) -> tuple[int, int]:
    """(variables, clauses) for a difficulty in [0, 1]."""
    d = min(max(difficulty, 0.0), 1.0)
    n_vars = 4 + round(16 * d)
    return n_vars, round(n_vars * (2.5 + 1.7 * d))


def generate(difficulty: float, rng: random.Random) -> SatInstance:
    """A satisfiable instance: clauses are drawn at random and kept only if the plant satisfies them."""
    n_vars, n_clauses = sizes(difficulty)
    planted = tuple(rng.random() < 0.5 for _ in range(n_vars))
    clauses: list[Clause] = []
    while len(clauses) < n_clauses:
        chosen = rng.sample(range(1, n_vars + 1), 3)
        lits = tuple(v if rng.random() < 0.5 else -v for v in chosen)
        if any(planted[abs(lit) - 1] == (lit > 0) for lit in lits):
            clauses.append(lits)
    return SatInstance(n_vars, tuple(clauses), planted)


def verify(instance: SatInstance, answer: str | None) -> Verification:
    """Score an assignment by the rule in the module docstring (shared with ``x1paper:`` SAT)."""
    return score_assignment(instance.clauses, answer)


def extract(text: str) -> str | None:
    """The assignment the solution ends with (see :func:`x1.tasks.cnf.extract_assignment`)."""
    return extract_assignment(text)
