"""Fingerprints of the reasoning graphs every strategy grows on the fake backend.

A refactor that must not change behaviour keeps these equal: ``python tests/graph_hashes.py``
prints them, ``--write`` stores them in ``tests/golden_graph_hashes.json`` (only when a change of
behaviour is intended), and ``test_graph_hashes.py`` compares. The hash covers the problem and
every thought (text, structure, values, visits, scores, signals, compute); ``graph.meta`` is
left out because it is the strategy's own bookkeeping, whose layout a refactor may change.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from x1.config import RunConfig
from x1.models.fake import FakeBackend
from x1.pipelines.solve import run_tasks
from x1.strategies import STRATEGIES
from x1.tasks.answers import numbers_equal
from x1.tasks.base import StepFormat, Task, Verification

GOLDEN = Path(__file__).with_name("golden_graph_hashes.json")
EXTRA = {"mcts": {"iterations": 12, "parallel": 2}, "best_of_n": {"n": 4}, "dvts": {"n": 8, "width": 2}}


def tasks() -> list[Task]:
    return [
        Task(id=f"t{i}", question=f"question {i}", gold=str(i % 4),
             verifier=lambda a, g: Verification(1.0 if numbers_equal(a, g) else 0.0, ""), step_format=StepFormat(delimiter="\n\n"))
        for i in range(4)
    ]


def graph_hash(graph: dict) -> str:
    body = {"problem": graph["problem"], "thoughts": graph["thoughts"]}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def strategy_hashes() -> dict[str, list[str]]:
    out = {}
    for name in sorted(STRATEGIES):
        config = RunConfig()
        config.model.name = "fake"
        config.search.strategy = name
        config.search.params = dict(EXTRA.get(name, {}))
        summary = run_tasks(tasks(), config, policy=FakeBackend())
        by_id = {o.task.id: o.graph.to_dict() for o in summary.outcomes}
        out[name] = [graph_hash(by_id[t.id]) for t in tasks()]
    return out


if __name__ == "__main__":
    hashes = strategy_hashes()
    if "--write" in sys.argv:
        GOLDEN.write_text(json.dumps(hashes, indent=1, sort_keys=True) + "\n")
    print(json.dumps(hashes, indent=1, sort_keys=True))
