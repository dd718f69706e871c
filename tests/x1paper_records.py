"""Records in the x1 paper's benchmark format, written here (not copied), with answers to check them by.

Each record is built from x1's own synthetic generators at difficulty ``(level - 1) / 9``, so its
gold is known: the planted SAT assignment, the zebra solution's house, the PrOntoQA truth, the
knapsack optimum. ``right_answers`` and ``wrong_answers`` give solution texts in the phrasings
models write, for the checks and for the acceptance table in the issue report.
"""

from __future__ import annotations

import bz2
import json
import random
from pathlib import Path
from typing import Any

from x1.tasks.synthetic import knapsack, prontoqa, sat, zebra

TYPES = ("SAT", "Knapsack", "Einstein", "ProntoQA")


def _difficulty(level: int) -> float:
    return (level - 1) / 9


def sat_record(level: int, rng: random.Random) -> tuple[dict[str, Any], tuple[bool, ...]]:
    inst = sat.generate(_difficulty(level), rng)
    lit = lambda v: ("NOT " if v < 0 else "") + f"x_{abs(v)}"  # noqa: E731
    formula = " AND ".join("(" + " OR ".join(lit(v) for v in clause) + ")" for clause in inst.clauses) + " "
    problem = (
        f"Consider the following propositional logic formula\n\n{formula}\n\n"
        "Provide a value for each variable (x_i = True / False), such that the formula is satisfied."
    )
    return {"type": "SAT", "level": level, "problem": problem, "unique_solution": False, "solution": formula}, inst.planted


def einstein_record(level: int, rng: random.Random) -> tuple[dict[str, Any], int]:
    inst = zebra.generate(_difficulty(level), rng)
    attributes = "\n".join(f"- Each person has a different {a.name}: {', '.join(a.values[: inst.houses])}." for a in inst.attributes)
    clues = "\n".join(f"{i}. {zebra.clue_text(inst, c)}" for i, c in enumerate(inst.clues, 1))
    house = inst.solution[inst.target[0]].index(inst.target[1]) + 1
    problem = (
        f"There are {inst.houses} houses in a row, numbered 1 to {inst.houses} from left to right.\n{attributes}\n\n"
        f"Clues:\n{clues}\n\nIn which house does {zebra._subject(inst, inst.target)} live? "
        "Give the house number as \\boxed{x}."
    )
    return {"type": "Einstein", "level": level, "problem": problem, "unique_solution": True, "solution": str(house)}, house


def prontoqa_record(level: int, rng: random.Random) -> tuple[dict[str, Any], bool]:
    inst = prontoqa.generate(_difficulty(level), rng)
    return {"type": "ProntoQA", "level": level, "problem": inst.question, "unique_solution": True, "solution": inst.answer}, inst.truth


def knapsack_record(level: int, rng: random.Random) -> tuple[dict[str, Any], bool]:
    inst = knapsack.generate(_difficulty(level), rng)
    reachable = rng.random() < 0.5
    target = inst.best_value if reachable else inst.best_value + 1
    rows = "\n".join(f"Item {i}: weight {w}, value {v}" for i, (w, v) in enumerate(zip(inst.weights, inst.values, strict=True), 1))
    problem = (
        f"{rows}\n\nCan you choose some of these items (each at most once) with a total weight of at most "
        f"{inst.capacity} and a total value of at least {target}? Answer True or False."
    )
    return {"type": "Knapsack", "level": level, "problem": problem, "unique_solution": True, "solution": reachable}, reachable


BUILDERS = {"SAT": sat_record, "Knapsack": knapsack_record, "Einstein": einstein_record, "ProntoQA": prontoqa_record}


def make_records(
    types: tuple[str, ...] = TYPES, levels: tuple[int, ...] = (1, 4, 7, 10), per_level: int = 1, seed: int = 0
) -> list[tuple[dict[str, Any], Any]]:
    """(record, truth) pairs, sorted by type then level as the paper's files are."""
    rng = random.Random(seed)
    out = []
    for kind in types:
        for level in levels:
            for _ in range(per_level):
                record, truth = BUILDERS[kind](level, rng)
                out.append(({**record, "id": len(out)}, truth))
    return out


def write_benchmark(path: Path, records: list[dict[str, Any]], version: Any = 1) -> Path:
    """The records as the paper's file: ``{"version": 1, "data": [...]}``, bz2 when the name ends in .bz2."""
    blob = json.dumps({"version": version, "data": records}).encode()
    path.write_bytes(bz2.compress(blob) if path.name.endswith(".bz2") else blob)
    return path


# --- answers in the phrasings models write -----------------------------------------------------


def _sat_forms(values: tuple[bool, ...]) -> list[str]:
    named = ", ".join(f"x_{i} = {v}" for i, v in enumerate(values, 1))
    return [
        f"Checking each clause works.\n\nThe answer is: {named}",
        "So the assignment is:\n" + "\n".join(f"x{i}={'T' if v else 'F'}" for i, v in enumerate(values, 1)),
        "The answer is:\n" + "\n".join(f"- x_{i}: {str(v).lower()}" for i, v in enumerate(values, 1)),
        "The answer is: " + ", ".join(f"x_{i} = {int(v)}" for i, v in enumerate(values, 1)),
        "The answer is: [" + ", ".join(str(v) for v in values) + "]",
        "The answer is: " + ", ".join(("" if v else "NOT ") + f"x_{i}" for i, v in enumerate(values, 1)),
        f"\\boxed{{{named}}}",
        "Final values:\n\n" + "\n".join(f"**x_{i}** = **{v}**" for i, v in enumerate(values, 1)),
        "The answer is: " + ", ".join(f"$x_{{{i}}} = \\text{{{v}}}$" for i, v in enumerate(values, 1)),
    ]


def _violating(record: dict[str, Any], rng: random.Random) -> tuple[bool, ...]:
    """An assignment that leaves at least one clause of the record's formula false."""
    from x1.tasks.cnf import parse_formula

    clauses = parse_formula(record["solution"])
    n = max(abs(lit) for clause in clauses for lit in clause)
    clause = clauses[rng.randrange(len(clauses))]
    values = [rng.random() < 0.5 for _ in range(n)]
    for lit in clause:  # make this clause false
        values[abs(lit) - 1] = lit < 0
    return tuple(values)


def right_answers(record: dict[str, Any], truth: Any) -> list[str]:
    """Solution texts a grader should accept."""
    kind = record["type"]
    if kind == "SAT":
        return _sat_forms(truth)
    if kind == "Einstein":
        words = {1: "first", 2: "second", 3: "third", 4: "fourth", 5: "fifth"}
        return [f"\\boxed{{{truth}}}", f"The answer is: {truth}", f"So it is House #{truth}.", f"The answer is: the {words[truth]} house.",
                f"The answer is: **{truth}**", f"Step 1: house 2 is red.\n\nThey live in house {truth}."]
    word = str(truth)
    forms = [word, f"{word}.", f"**{word}**", f"Therefore, the statement is {word.lower()}.", f"The answer is: {word}",
             f"\\boxed{{{word}}}", f"The answer is: {'not false' if truth else 'not true'}"]
    if kind == "Knapsack":
        forms += ["Yes, that value can be reached." if truth else "No, it cannot be reached."]
    return forms


def wrong_answers(record: dict[str, Any], truth: Any, rng: random.Random) -> list[str]:
    """Solution texts a grader should reject (score below 1)."""
    kind = record["type"]
    if kind == "SAT":
        bad = _violating(record, rng)
        named = ", ".join(f"x_{i} = {v}" for i, v in enumerate(truth, 1))
        return _sat_forms(bad)[:6] + [
            f"The answer is: {named}, x_1 = {not truth[0]}",  # x_1 given both values
            f"The answer is: {record['solution']}",  # the formula echoed back
            "I could not find one.",
        ]
    if kind == "Einstein":
        other = truth % 5 + 1
        return [f"\\boxed{{{other}}}", f"The answer is: {other}", f"The answer is: house {other}", "I do not know."]
    word = str(not truth)
    forms = [word, f"{word}.", f"**{word}**", f"Therefore, the statement is {word.lower()}.", f"\\boxed{{{word}}}", "I am not sure."]
    if kind == "Knapsack":
        forms += ["No, it cannot be reached." if truth else "Yes, that value can be reached."]
    return forms


def acceptance_table(per_level: int = 3, seed: int = 0) -> list[tuple[str, int, int, int, int, int]]:
    """(type, records, right answers accepted, right answers, wrong answers rejected, wrong answers) over levels 1-10."""
    import tempfile

    from x1.tasks import load_tasks

    pairs = make_records(levels=tuple(range(1, 11)), per_level=per_level, seed=seed)
    with tempfile.TemporaryDirectory() as folder:
        tasks = load_tasks(str(write_benchmark(Path(folder) / "gen.json.bz2", [r for r, _ in pairs])), n=None)
    rng = random.Random(seed)
    rows = []
    for kind in TYPES:
        counts = [0, 0, 0, 0, 0]
        for (record, truth), task in zip(pairs, tasks, strict=True):
            if record["type"] != kind:
                continue
            counts[0] += 1
            right = [task.check_solution(text)[1].correct for text in right_answers(record, truth)]
            wrong = [not task.check_solution(text)[1].correct for text in wrong_answers(record, truth, rng)]
            counts[1:] = [counts[1] + sum(right), counts[2] + len(right), counts[3] + sum(wrong), counts[4] + len(wrong)]
        rows.append((kind, *counts))
    return rows


if __name__ == "__main__":  # python tests/x1paper_records.py: the acceptance table of the issue report
    print("| domain | records (levels 1-10) | gold-like answers accepted | wrong answers rejected |")
    print("|---|---|---|---|")
    for kind, records, ok, right, rejected, wrong in acceptance_table():
        print(f"| {kind} | {records} | {ok}/{right} | {rejected}/{wrong} |")
