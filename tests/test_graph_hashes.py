"""Behaviour is pinned: every strategy grows the same graphs on the fake backend as when the golden file was written."""

import json

from graph_hashes import GOLDEN, strategy_hashes


def test_every_strategy_grows_the_pinned_graphs():
    golden = json.loads(GOLDEN.read_text())
    now = strategy_hashes()
    changed = sorted(name for name in golden if golden[name] != now.get(name))
    assert set(now) == set(golden), "strategies added or removed: python tests/graph_hashes.py --write, and say why in the commit"
    assert not changed, f"these strategies grow other graphs than before: {changed} (intended? python tests/graph_hashes.py --write)"
