import pytest

from x1.graph import Compute, GraphError, ReasoningGraph


def build() -> ReasoningGraph:
    g = ReasoningGraph(problem="2+2?")
    a = g.add(0, "a\n\n", token_ids=[1, 2], logprobs=[-0.1, -0.2], value=0.5, visits=2)
    b = g.add(0, "b\n\n", scores={"judge": 0.3}, signals={"entropy_mean": 1.2})
    g.add(a.id, "The answer is 4.", terminal=True, answer="4", compute=Compute(3, 4, 1, 0))
    g.add([a.id, b.id], "merged", meta={"op": "aggregate"})
    inner = ReasoningGraph(problem="sub")
    inner.add(0, "inner step")
    g.add(b.id, "nested step", nested=inner)
    return g


def test_round_trip_is_lossless():
    g = build()
    again = ReasoningGraph.from_json(g.to_json())
    assert again.to_dict() == g.to_dict()
    assert again[5].nested is not None and again[5].nested[1].text == "inner step"
    assert again[3].compute.tokens == 7


def test_aggregate_has_two_parents_and_paths_follow_first_parent():
    g = build()
    assert g[4].parents == [1, 2]
    assert 4 in g[1].children and 4 in g[2].children
    assert g.path_text(3) == "a\n\nThe answer is 4."
    assert g.depth(3) == 2
    assert [t.id for t in g.terminals()] == [3]
    assert {t.id for t in g.leaves()} == {3, 4, 5}


def test_total_compute_includes_nested():
    g = build()
    g[5].nested[1].compute.generated_tokens = 10
    assert g.total_compute().generated_tokens == 14


def test_validate_catches_broken_links_and_cycles():
    g = build()
    g[1].children.append(99)
    with pytest.raises(GraphError, match="child 99"):
        g.validate()
    g = build()
    g[1].parents.append(3)
    g[3].children.append(1)
    with pytest.raises(GraphError, match="cycle"):
        g.validate()


def test_bad_input_is_rejected_clearly():
    g = build()
    with pytest.raises(GraphError, match="parent 42"):
        g.add(42, "x")
    data = g.to_dict()
    data["schema_version"] = 99
    with pytest.raises(GraphError, match="schema version 99"):
        ReasoningGraph.from_dict(data)
    data = g.to_dict()
    data["thoughts"][1]["colour"] = "red"
    with pytest.raises(GraphError, match="unknown fields"):
        ReasoningGraph.from_dict(data)
