"""The confidence evaluator's shared parent sums give the same floats as a walk over each path."""

import math
import random

from helpers import number_task

from x1.evaluators.base import EvalItem
from x1.evaluators.simple import ConfidenceEvaluator
from x1.graph import ReasoningGraph


def walked_score(graph: ReasoningGraph, thought_id: int) -> float:
    total, count = 0.0, 0
    for thought in graph.path(thought_id):
        for lp in thought.logprobs:
            total += lp
        count += len(thought.logprobs)
    return math.exp(total / count) if count else 0.5


def test_shared_parent_sums_equal_a_walk_as_the_tree_grows():
    rng = random.Random(0)
    graph, task = ReasoningGraph(problem="p"), number_task()
    evaluator = ConfidenceEvaluator()
    for _ in range(300):
        parent = rng.choice(list(graph.thoughts))
        logprobs = [-rng.random() * 3 for _ in range(rng.randint(0, 5))]
        kid = graph.add(parent, "x", logprobs=logprobs)
        ids = [kid.id, rng.choice(list(graph.thoughts))]
        scores = evaluator.evaluate([EvalItem(task, graph, i) for i in ids])
        assert scores == [walked_score(graph, i) for i in ids]  # exact, not approximate

