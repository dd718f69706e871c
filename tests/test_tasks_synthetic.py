"""Property tests for the synthetic generators: solvable, unique where claimed, growing with difficulty."""

from __future__ import annotations

import random
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from x1.tasks.synthetic import knapsack, prontoqa, sat, zebra

SEEDS = st.integers(min_value=0, max_value=2**32 - 1)
LEVELS = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
FAST = settings(max_examples=25, deadline=None)
SLOW = settings(max_examples=12, deadline=None)


# --- SAT ----------------------------------------------------------------------------------------


@FAST
@given(seed=SEEDS, difficulty=LEVELS)
def test_sat_planted_assignment_satisfies(seed: int, difficulty: float) -> None:
    inst = sat.generate(difficulty, random.Random(seed))
    assert sat.verify(inst, inst.answer).score == 1.0
    assert all(len({abs(lit) for lit in c}) == 3 for c in inst.clauses)


@FAST
@given(seed=SEEDS, difficulty=LEVELS)
def test_sat_violating_assignment_gets_at_most_half(seed: int, difficulty: float) -> None:
    inst = sat.generate(difficulty, random.Random(seed))
    clause = inst.clauses[0]
    values = list(inst.planted)
    for lit in clause:  # make every literal of clause 1 false
        values[abs(lit) - 1] = lit < 0
    result = sat.verify(inst, sat.format_assignment(values))
    assert result.score <= 0.5 * (len(inst.clauses) - 1) / len(inst.clauses) + 1e-9


def test_sat_answer_forms() -> None:
    inst = sat.generate(0.0, random.Random(0))
    spelled = ", ".join(f"x{i} = {'true' if v else 'false'}" for i, v in enumerate(inst.planted, 1))
    assert sat.verify(inst, spelled).correct
    assert sat.verify(inst, "x1=T, x1=F").score == 0.0
    assert sat.verify(inst, "no idea").score == 0.0


# --- knapsack -----------------------------------------------------------------------------------


def _brute_force_best(inst: knapsack.KnapsackInstance) -> int:
    best = 0
    for mask in range(1 << inst.size):
        items = [i for i in range(inst.size) if mask >> i & 1]
        if sum(inst.weights[i] for i in items) <= inst.capacity:
            best = max(best, sum(inst.values[i] for i in items))
    return best


@FAST
@given(seed=SEEDS, difficulty=st.floats(min_value=0.0, max_value=0.6))
def test_knapsack_dp_optimum_matches_brute_force(seed: int, difficulty: float) -> None:
    inst = knapsack.generate(difficulty, random.Random(seed))
    assert inst.best_value == _brute_force_best(inst)
    assert knapsack.verify(inst, inst.answer).score == 1.0


@FAST
@given(seed=SEEDS, difficulty=LEVELS)
def test_knapsack_perturbed_selection_fails(seed: int, difficulty: float) -> None:
    inst = knapsack.generate(difficulty, random.Random(seed))
    chosen = set(inst.best_items)
    rest = [i for i in range(1, inst.size + 1) if i not in chosen]
    # Adding an item to an optimal set must break the capacity (otherwise it was not optimal);
    # when everything fits, dropping an item loses value.
    worse = sorted(chosen | {rest[0]}) if rest else sorted(chosen - {min(chosen)})
    assert knapsack.verify(inst, str(worse)).score < 1.0
    assert knapsack.verify(inst, f"[{inst.size + 1}]").score == 0.0


def test_knapsack_partial_credit() -> None:
    inst = knapsack.KnapsackInstance((2, 3, 4), (3, 4, 5), 5, 7, (1, 2))
    assert knapsack.verify(inst, "[1, 2]").score == 1.0
    assert knapsack.verify(inst, "[3]").score == 0.5 * 5 / 7
    assert knapsack.verify(inst, "[2, 3]").score == 0.0  # weight 7 > 5
    assert knapsack.verify(inst, "[]").score == 0.0
    assert knapsack.solve((2, 3, 4), (3, 4, 5), 5) == (7, (1, 2))


# --- zebra --------------------------------------------------------------------------------------


@SLOW
@given(seed=SEEDS, difficulty=LEVELS)
def test_zebra_unique_solution_equals_the_generated_one(seed: int, difficulty: float) -> None:
    inst = zebra.generate(difficulty, random.Random(seed))
    count, solution = zebra.solve(inst, limit=10)
    assert count == 1
    assert solution is not None and tuple(map(tuple, solution)) == inst.solution
    assert zebra.verify(inst, inst.answer).score == 1.0
    assert zebra.verify(inst, f"The {inst.answer.upper()}.").score == 1.0
    wrong = next(v for v in inst.candidates if v != inst.answer)
    assert zebra.verify(inst, wrong).score == 0.0


@settings(max_examples=8, deadline=None)
@given(seed=SEEDS, difficulty=st.floats(min_value=0.0, max_value=0.5))
def test_zebra_has_no_redundant_clue(seed: int, difficulty: float) -> None:
    inst = zebra.generate(difficulty, random.Random(seed))
    for k in range(len(inst.clues)):
        rest = inst.clues[:k] + inst.clues[k + 1 :]
        assert zebra.count_solutions(inst.houses, len(inst.attributes), rest)[0] > 1


def test_zebra_solver_counts_small_cases() -> None:
    assert zebra.count_solutions(3, 1, [], limit=100)[0] == 6  # 3! orders of one attribute
    assert zebra.count_solutions(3, 2, [], limit=100)[0] == 36
    assert zebra.count_solutions(3, 1, [("at", (0, 0), 0), ("left", (0, 1), (0, 2))], limit=100)[0] == 1


# --- PrOntoQA -----------------------------------------------------------------------------------

_FACT = re.compile(r"^(\w+) is an? (\w+)\.$")
_RULE = re.compile(r"^Every (\w+) is an? (\w+)\.$")
_PROP = re.compile(r"^Every (\w+) is (not )?(\w+)\.$")
_QUERY = re.compile(r"^(\w+) is (not )?(\w+)\.$")


def _deduce(statements: tuple[str, ...], query: str) -> bool | None:
    """An independent forward-chaining reader of the generated text: is the query entailed?"""
    facts: dict[str, set[str]] = {}
    subsets: dict[str, set[str]] = {}
    props: dict[str, dict[str, bool]] = {}
    for s in statements:
        if m := _RULE.match(s):
            subsets.setdefault(m.group(1), set()).add(m.group(2))
        elif m := _PROP.match(s):
            props.setdefault(m.group(1), {})[m.group(3)] = m.group(2) is None
        elif m := _FACT.match(s):
            facts.setdefault(m.group(1), set()).add(m.group(2))
    q = _QUERY.match(query)
    assert q is not None
    entity, negated, prop = q.group(1), q.group(2) is not None, q.group(3)
    seen, todo = set(), list(facts.get(entity, ()))
    values = set()
    while todo:
        concept = todo.pop()
        if concept in seen:
            continue
        seen.add(concept)
        todo += subsets.get(concept, ())
        if prop in props.get(concept, {}):
            values.add(props[concept][prop])
    if len(values) != 1:
        return None  # undetermined or contradictory
    return values.pop() != negated


@FAST
@given(seed=SEEDS, difficulty=LEVELS)
def test_prontoqa_answer_is_entailed(seed: int, difficulty: float) -> None:
    inst = prontoqa.generate(difficulty, random.Random(seed))
    assert _deduce(inst.statements, inst.query) is inst.truth
    assert len(inst.proof) == inst.depth + 1
    assert prontoqa.verify(inst, inst.answer).score == 1.0
    assert prontoqa.verify(inst, "False" if inst.truth else "True").score == 0.0
    assert prontoqa.verify(inst, "Maybe").score == 0.0


# --- all domains --------------------------------------------------------------------------------


@FAST
@given(seed=SEEDS)
def test_size_grows_with_difficulty(seed: int) -> None:
    for module in (sat, knapsack, zebra, prontoqa):
        easy = module.generate(0.1, random.Random(seed))
        hard = module.generate(0.9, random.Random(seed))
        assert easy.size < hard.size, module.__name__


@FAST
@given(seed=SEEDS, difficulty=LEVELS)
def test_generators_are_deterministic(seed: int, difficulty: float) -> None:
    for module in (sat, knapsack, prontoqa):
        assert module.generate(difficulty, random.Random(seed)) == module.generate(difficulty, random.Random(seed))
