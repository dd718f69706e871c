"""The x1 paper's benchmark files: SAT, knapsack, Einstein puzzles and PrOntoQA, graded by level.

A file is one JSON document, plain or bz2-compressed: ``{"version": 1, "data": [record, ...]}``,
each record with ``type`` (SAT, Knapsack, Einstein, ProntoQA), ``level`` (1-10), ``problem``,
``unique_solution`` and ``solution``. How each domain is checked:

- SAT: the solution is the formula itself; any assignment satisfying it is right, scored with
  ``synthetic:sat``'s partial-credit rule (:mod:`x1.tasks.cnf`).
- Einstein: the solution is a house number; the answer may be boxed, marked or the last number.
- ProntoQA: "True"/"False"; Knapsack: a JSON boolean (a "yes"/"no" answer is read too).

Options: ``level=3``, ``levels=1-4`` or ``levels=1,3,5``, ``type=sat`` (or ``type=sat,einstein``).
A smaller ``n`` than the records left is spread round-robin over the (type, level) groups, so
``--n 40`` of a level-sorted file still covers every level (and every type of a mixed file).
"""

from __future__ import annotations

import bz2
import functools
import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from x1.tasks.answers import extract_answer, extract_truth, read_truth
from x1.tasks.base import Task, TaskError, Verification
from x1.tasks.cnf import extract_assignment, parse_formula, score_assignment

TYPES = {"sat": "SAT", "knapsack": "Knapsack", "einstein": "Einstein", "prontoqa": "ProntoQA"}
ALIASES = {"zebra": "einstein"}
FIELDS = ("type", "level", "problem", "unique_solution", "solution")
FORMAT = '{"version": 1, "data": [{"type", "level", "problem", "unique_solution", "solution"}, ...]}'
_NUMBER_WORDS = {
    word: value
    for value, words in enumerate(
        [(), ("one", "first"), ("two", "second"), ("three", "third"), ("four", "fourth"), ("five", "fifth"),
         ("six", "sixth"), ("seven", "seventh"), ("eight", "eighth"), ("nine", "ninth"), ("ten", "tenth")]
    )
    for word in words
}  # fmt: skip


# --- verifiers ----------------------------------------------------------------------------------


def sat_verifier(answer: str | None, gold: Any) -> Verification:
    """Any assignment that satisfies the gold formula is right; partial credit as in ``synthetic:sat``."""
    return score_assignment(parse_formula(str(gold)), answer)


def house_number(answer: str) -> int | None:
    """The house an answer names: "3", "House #3", "3rd", "the third house"; None when none."""
    digits = re.search(r"\d+", answer)
    if digits:
        return int(digits.group(0))
    words = [_NUMBER_WORDS[w] for w in re.findall(r"[a-z]+", answer.lower()) if w in _NUMBER_WORDS]
    return words[-1] if words else None


def einstein_verifier(answer: str | None, gold: Any) -> Verification:
    """The named house number equals the gold one."""
    if answer is None:
        return Verification(0.0, "no answer could be extracted")
    number = house_number(answer)
    if number is None:
        return Verification(0.0, f"{answer.strip()!r} names no house number")
    if number == int(gold):
        return Verification(1.0, f"house {number}")
    return Verification(0.0, f"house {number}, not {gold}")


def truth_verifier(answer: str | None, gold: Any, yes_no: bool = False) -> Verification:
    """The stated truth value equals the gold one ("True"/"False")."""
    if answer is None:
        return Verification(0.0, "no answer could be extracted")
    value = read_truth(answer, yes_no)
    if value is None:
        return Verification(0.0, f"{answer.strip()!r} is neither True nor False")
    if str(value) == str(gold):
        return Verification(1.0, f"{value}, as the gold")
    return Verification(0.0, f"{value}, the gold is {gold}")


knapsack_verifier = functools.partial(truth_verifier, yes_no=True)
extract_yes_no = functools.partial(extract_truth, yes_no=True)


# --- reading a file -----------------------------------------------------------------------------


def read_document(path: Path, spec: str) -> dict[str, Any]:
    """The file's JSON object, from plain or bz2 bytes (told apart by content, not by name)."""
    if not path.is_file():
        raise TaskError(f"{spec}: no such file {str(path)!r}; fix: give the path of an x1 paper benchmark (.json or .json.bz2)")
    raw = path.read_bytes()
    if raw.startswith(b"BZh"):
        try:
            raw = bz2.decompress(raw)
        except (OSError, ValueError) as err:
            raise TaskError(f"{path.name}: a damaged bz2 file ({err}); fix: download it again") from err
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        hint = "; a file with one JSON object per line goes in as jsonl:PATH" if "Extra data" in str(err) else ""
        raise TaskError(f"{path.name}: not one JSON document ({err}); expected {FORMAT}{hint}") from err
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        got = f"an object with keys {', '.join(sorted(document)) or 'none'}" if isinstance(document, dict) else type(document).__name__
        raise TaskError(f"{path.name}: not an x1 paper benchmark file (got {got}); expected {FORMAT}")
    if document.get("version") != 1:
        raise TaskError(f"{path.name}: format version {document.get('version')!r}; this x1 reads version 1 ({FORMAT})")
    return document


def _gold(kind: str, solution: Any, where: str) -> str:
    """The record's solution as the gold text its verifier takes; raises TaskError when it cannot be."""
    if kind == "SAT":
        try:
            parse_formula(str(solution))
        except ValueError as err:
            raise TaskError(f"{where}: the SAT solution is not a CNF formula: {err}") from err
        return str(solution)
    if kind == "Einstein":
        if isinstance(solution, bool) or not re.fullmatch(r"\s*\d+\s*", str(solution)):
            raise TaskError(f"{where}: the Einstein solution {solution!r} is not a house number such as \"3\"")
        return str(int(str(solution)))
    truth = solution if isinstance(solution, bool) else {"true": True, "false": False}.get(str(solution).strip().lower())
    if truth is None:
        raise TaskError(f"{where}: the {kind} solution {solution!r} is neither true nor false")
    return str(truth)


def parse_record(record: Any, index: int, name: str) -> tuple[str, int, str]:
    """(type, level, gold) of a record, checked; a TaskError names the record and the fix."""
    where = f"{name} record {index}"
    if not isinstance(record, dict):
        raise TaskError(f"{where}: expected a JSON object with {', '.join(FIELDS)}, got {type(record).__name__}")
    missing = [f for f in FIELDS if f not in record]
    if missing:
        there = ", ".join(sorted(record)) or "none"
        raise TaskError(f"{where}: no field {missing[0]!r} (fields there: {there}); every record needs {', '.join(FIELDS)}")
    kind = TYPES.get(str(record["type"]).lower())
    if kind is None:
        raise TaskError(f"{where}: unknown type {record['type']!r}; expected one of {', '.join(TYPES.values())}")
    level = record["level"]
    if isinstance(level, bool) or not isinstance(level, int) or level < 1:
        raise TaskError(f"{where}: level {level!r} is not a whole number from 1 (easiest) up")
    if not isinstance(record["problem"], str) or not record["problem"].strip():
        raise TaskError(f"{where}: the problem is empty or not text")
    return kind, level, _gold(kind, record["solution"], where)


# --- options ------------------------------------------------------------------------------------


def parse_levels(config: dict[str, Any], spec: str) -> set[int] | None:
    """The levels asked for by ``level=3`` or ``levels=1-4`` / ``levels=1,3,5``; None for all."""
    if "level" in config and "levels" in config:
        raise TaskError(f"{spec}: give level=N or levels=A-B, not both")
    key = "level" if "level" in config else "levels" if "levels" in config else None
    if key is None:
        return None
    raw = config[key]
    items = raw if isinstance(raw, list) else str(raw).split(",")
    levels: set[int] = set()
    for item in items:
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", str(item))
        if not match or isinstance(item, bool):
            raise TaskError(f"{spec}: {key}={raw!r} is not a level (3), a range (1-4) or a list (1,3,5)")
        low, high = int(match.group(1)), int(match.group(2) or match.group(1))
        if low > high:
            raise TaskError(f"{spec}: {key}={raw!r}: the range {low}-{high} is empty; write it low-high")
        levels.update(range(low, high + 1))
    return levels


def parse_types(config: dict[str, Any], spec: str) -> set[str] | None:
    """The record types asked for by ``type=sat`` (any case; a comma list too); None for all."""
    if "type" not in config:
        return None
    kinds = set()
    for item in str(config["type"]).split(","):
        name = ALIASES.get(item.strip().lower(), item.strip().lower())
        if name not in TYPES:
            raise TaskError(f"{spec}: unknown type {item.strip()!r}; choose from {', '.join(TYPES)} (any case)")
        kinds.add(TYPES[name])
    return kinds


def spread(picked: list[tuple[int, str, int]], n: int | None) -> list[tuple[int, str, int]]:
    """At most ``n`` of ``(index, type, level)`` entries, round-robin over their (type, level) groups, in file order.

    The groups go in a Latin-square order (type i starts at level i), so any ``n`` of at least
    max(types, levels) covers every type and every level.
    """
    if n is None or n >= len(picked):
        return picked
    groups: dict[tuple[str, int], list[tuple[int, str, int]]] = defaultdict(list)
    for entry in picked:
        groups[(entry[1], entry[2])].append(entry)
    kinds, levels = sorted({k for k, _ in groups}), sorted({lv for _, lv in groups})
    order = sorted(groups, key=lambda g: ((levels.index(g[1]) - kinds.index(g[0])) % len(levels), kinds.index(g[0])))
    queues = [groups[key] for key in order]
    chosen: list[tuple[int, str, int]] = []
    depth = 0
    while len(chosen) < n:
        for queue in queues:
            if depth < len(queue) and len(chosen) < n:
                chosen.append(queue[depth])
        depth += 1
    return sorted(chosen)


# --- tasks --------------------------------------------------------------------------------------

VERIFIERS = {"SAT": sat_verifier, "Einstein": einstein_verifier, "ProntoQA": truth_verifier, "Knapsack": knapsack_verifier}
EXTRACTORS = {"SAT": extract_assignment, "Einstein": extract_answer, "ProntoQA": extract_truth, "Knapsack": extract_yes_no}


def load_x1paper(spec: str, path_text: str, n: int | None, config: dict[str, Any]) -> list[Task]:
    """Tasks from an x1 paper benchmark file, filtered by level and type; ``meta`` carries both."""
    extra = sorted(set(config) - {"level", "levels", "type"})
    if extra:
        raise TaskError(f"{spec}: unknown option(s) {', '.join(extra)}; it takes level=3, levels=1-4 (or 1,3,5), type=sat")
    levels, kinds = parse_levels(config, spec), parse_types(config, spec)
    path = Path(path_text).expanduser()
    records = read_document(path, spec)["data"]
    parsed = [parse_record(record, i, path.name) for i, record in enumerate(records)]
    picked = [
        (i, kind, level)
        for i, (kind, level, _) in enumerate(parsed)
        if (levels is None or level in levels) and (kinds is None or kind in kinds)
    ]
    if not picked:
        kinds_there = ", ".join(sorted({kind for kind, _, _ in parsed})) or "none"
        levels_there = ", ".join(str(lv) for lv in sorted({level for _, level, _ in parsed})) or "none"
        asked = ", ".join(f"{k}={config[k]}" for k in sorted(config)) or "no filter"
        raise TaskError(f"{path.name}: no record left after {asked}; the file has types {kinds_there} and levels {levels_there}")
    tasks = []
    for i, kind, level in spread(picked, n):
        record = records[i]
        tasks.append(
            Task(
                id=f"x1paper:{path.name}:{i}",
                question=record["problem"],
                gold=parsed[i][2],
                verifier=VERIFIERS[kind],
                extractor=EXTRACTORS[kind],
                source=spec,
                meta={
                    "type": kind,
                    "level": level,
                    "unique_solution": bool(record["unique_solution"]),
                    "file": str(path),
                    "index": i,
                    "record_id": record.get("id"),
                },
            )
        )
    return tasks
