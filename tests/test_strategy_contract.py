"""The strategy contract: ``ask`` only reads. Every strategy, run by the engine on the fake backend,
leaves the graph (thoughts and meta) exactly as it found it on every ``ask``."""

import json

import pytest
from graph_hashes import EXTRA, tasks

from x1.config import RunConfig
from x1.models.fake import FakeBackend
from x1.pipelines.solve import run_tasks
from x1.strategies import STRATEGIES


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_ask_changes_nothing(name, monkeypatch):
    cls = STRATEGIES[name]
    real_ask = cls.ask
    asked = []

    def checked_ask(self, problem):
        before = json.dumps(problem.graph.to_dict(), sort_keys=True)
        requests = real_ask(self, problem)
        assert json.dumps(problem.graph.to_dict(), sort_keys=True) == before, f"{name}.ask changed the graph"
        assert real_ask(self, problem) == requests, f"{name}.ask gave other requests when asked again"
        asked.append(len(requests))
        return requests

    monkeypatch.setattr(cls, "ask", checked_ask)
    config = RunConfig()
    config.model.name = "fake"
    config.search.strategy = name
    config.search.params = dict(EXTRA.get(name, {}))
    summary = run_tasks(tasks(), config, policy=FakeBackend())
    assert len(summary.outcomes) == 4 and sum(asked) > 0
