"""Strategies and operators against values computed by hand (fake backend, no model)."""

import math
import warnings

import pytest
from helpers import ScriptedEvaluator, number_task

from x1.engine import Engine
from x1.graph import ReasoningGraph
from x1.models.fake import FakeBackend
from x1.operators.backpropagate import backpropagate
from x1.operators.select import puct_score
from x1.strategies import BeamSearch, BestOfN, ChainOfThought, build_strategy, vote
from x1.strategies.base import Expand, Problem, Reply, read_state, save_state
from x1.strategies.mcts import MCTS, MCTSState


def test_puct_by_hand():
    g = ReasoningGraph()
    a = g.add(0, "A", value=0.6, visits=1)
    # muzero: 0.8 + sqrt(1)/(1+1) * (1.25 + log((1+19652+1)/19652))
    expected = 0.8 + 0.5 * (1.25 + math.log(19654 / 19652))
    assert puct_score(a, 1) == pytest.approx(expected)
    # paper form: sqrt(N-1) = 0 at N = 1, so the second selection is purely greedy
    assert puct_score(a, 1, form="paper") == pytest.approx(0.8)
    assert puct_score(a, 5, form="paper") == pytest.approx(0.8 + 2 / 2 * (1.25 + math.log((5 + 19652) / 19652)))


def test_backpropagate_without_children_does_not_divide_by_zero():
    g = ReasoningGraph()
    leaf = g.add(0, "x", value=0.4, visits=0)
    backpropagate(g, leaf.id)
    assert leaf.value == 0.4 and leaf.visits == 1
    assert g.root.value == pytest.approx(0.96 * 0.4) and g.root.visits == 1


def test_mcts_q_and_n_after_scripted_expansions():
    fake = FakeBackend({"": ["A\n\n", "B\n\n"], "A\n\n": ["A1\n\n", "A2\n\n"]})
    evaluator = ScriptedEvaluator({"A": 0.8, "B": 0.4, "A1": 1.0, "A2": 0.5})
    engine = Engine(fake, {"scripted": evaluator})
    strategy = MCTS(iterations=2, expand=2, evaluator="scripted")
    (outcome,) = engine.run([number_task()], strategy)
    g = outcome.graph
    texts = {t.text.strip(): t for t in g if t.id}
    assert texts["A"].value == pytest.approx(0.96 * (1.0 + 0.0) / 2)  # 0.48
    assert texts["A"].visits == 2 and texts["B"].visits == 1
    assert texts["B"].value == pytest.approx(-0.2)
    assert g.root.visits == 2
    assert g.root.value == pytest.approx(0.96 * (2 * 0.48 + 1 * -0.2) / 3)  # 0.2432
    assert texts["A1"].value == pytest.approx(1.0) and texts["A1"].visits == 1


def test_mcts_progressive_widening_expands_a_visited_thought_again():
    """Without widening the root keeps its first ``expand`` children; with it, it gets more as N(root) grows."""

    def root_children(**widening: float) -> tuple[int, int]:
        fake = FakeBackend(responder=lambda prompt, i: f"Step {i}: go on.\n\n")
        engine = Engine(fake, {"scripted": ScriptedEvaluator({})})
        (outcome,) = engine.run([number_task()], MCTS(iterations=9, expand=2, evaluator="scripted", **widening))
        g = outcome.graph
        return len(g.root.children), g.root.visits

    assert root_children() == (2, 9)
    # widen 1, alpha 0.5: room for sqrt(N) children; the root widens at N = 5 (2 < 2.24) and again at N = 17 (never here)
    assert root_children(widen=1.0) == (4, 9)
    # widen 2: 2 < 2 * sqrt(2) at N = 2 and 4 < 2 * sqrt(5) at N = 5; the next (6 < 2 * sqrt(10)) would come at N = 10
    assert root_children(widen=2.0) == (6, 9)
    with pytest.raises(ValueError, match="widen_alpha=2.0 is out of range"):
        build_strategy("mcts", widen_alpha=2)


def test_mcts_parallel_virtual_loss_spreads_selections():
    fake = FakeBackend({"": ["A\n\n", "B\n\n"], "A\n\n": ["A1\n\n"], "B\n\n": ["B1\n\n"]})
    evaluator = ScriptedEvaluator({"A": 0.6, "B": 0.55})
    engine = Engine(fake, {"scripted": evaluator})
    (outcome,) = engine.run([number_task()], MCTS(iterations=3, expand=2, parallel=2, evaluator="scripted"))
    expanded = {outcome.graph[t.parents[0]].text.strip() for t in outcome.graph if t.id and t.parents[0] != 0}
    assert expanded == {"A", "B"}  # one tick expanded both, thanks to the virtual loss


def test_mcts_virtual_loss_scores_siblings_against_one_parent_count():
    """Root N = 1, children A, B, C with q = 1, −0.2, −0.6 and N = 1; c1 = 1.25, c2 = 19652 (muzero).

    E(Ns, Nc) = √Ns/(1+Nc)·(1.25 + log((Ns+19653)/19652)):  E(1,1) = 0.625051, E(2,1) = 0.883991,
    E(2,2) = 0.589328, E(3,1) = 1.082708, E(3,2) = 0.721805.
    Pick 1: A 1.0 + E(1,1) = 1.625051 > B 0.4 + E(1,1) > C 0.2 + E(1,1).
    Pick 2 (A pending, Ns = 1 + 1): A q' = (1·1 − 1)/2 = 0 → 0.5 + E(2,2) = 1.089328;
    B 0.4 + E(2,1) = 1.283991 (the old code scored B against Ns = 1: 1.025051 < A, and stopped);
    C 0.2 + E(2,1) = 1.083991. → B.
    Pick 3 (A, B pending, Ns = 3): A 0.5 + E(3,2) = 1.221805; B q' = −0.6 → 0.2 + E(3,2) = 0.921805;
    C 0.2 + E(3,1) = 1.282708. → C.
    """
    task = number_task()
    graph = ReasoningGraph(problem="q")
    problem = Problem(task=task, graph=graph)
    strategy = MCTS(parallel=3)
    strategy.start(problem)
    a, b, c = (graph.add(0, t, value=q, visits=1) for t, q in (("A", 1.0), ("B", -0.2), ("C", -0.6)))
    graph.root.visits = 1
    assert strategy._score(a, 2, 1) == pytest.approx(1.0893276083)
    assert strategy._score(b, 2, 0) == pytest.approx(1.2839914125)
    assert strategy._score(c, 2, 0) == pytest.approx(1.0839914125)
    assert strategy._score(a, 3, 1) == pytest.approx(1.2218053393)
    assert strategy._score(b, 3, 1) == pytest.approx(0.9218053393)
    assert strategy._score(c, 3, 0) == pytest.approx(1.2827080090)
    replan(strategy, problem)  # the tree was built by hand after start: select again, as tell would
    requests = strategy.ask(problem)
    assert [r.thought_id for r in requests] == [a.id, b.id, c.id]
    strategy.parallel = 2
    replan(strategy, problem)
    assert [r.thought_id for r in strategy.ask(problem)] == [a.id, b.id]


def replan(strategy: MCTS, problem: Problem) -> None:
    state = read_state(problem, MCTSState)
    strategy._plan(problem, state)
    save_state(problem, state)


def test_mcts_training_mode_uses_true_terminal_reward():
    fake = FakeBackend({"": ["The answer is 2.", "The answer is 3."]})
    engine = Engine(fake, {"confidence": ScriptedEvaluator({}, name="confidence")})
    (outcome,) = engine.run([number_task(gold="2")], MCTS(iterations=1, expand=2, training=True))
    rewards = sorted((t.answer, t.reward, t.value) for t in outcome.graph if t.terminal)
    assert rewards == [("2", 1.0, 1.0), ("3", 0.0, -1.0)]
    assert outcome.answer == "2" and outcome.correct


def test_mcts_rollouts_keep_their_text_and_sample_at_the_strategy_temperature():
    """α = 0.5, γ = 0.96, 2 rollouts per new node, training mode.

    A: v = 2·0.75 − 1 = 0.5; rollouts "C⏎⏎The answer is 2." (2 steps, right: 0.96² = 0.9216) and
    "The answer is 3." (1 step, wrong: −0.96); mean −0.0192 → q = 0.5·0.5 + 0.5·(−0.0192) = 0.2404.
    B: v = −0.5; two rollouts "The answer is 2." (0.96 each) → q = 0.5·(−0.5) + 0.5·0.96 = 0.23.
    Root: 0.96·(0.2404 + 0.23)/2 = 0.225792.
    """
    seen: list[tuple[str, float]] = []

    class Recording(FakeBackend):
        def generate(self, requests):
            seen.extend((r.prompt, r.temperature) for r in requests)
            return super().generate(requests)

    fake = Recording(
        {
            "": ["A\n\n", "B\n\n"],
            "A\n\n": ["C\n\nThe answer is 2.", "The answer is 3."],
            "B\n\n": ["The answer is 2."],
        }
    )
    engine = Engine(fake, {"scripted": ScriptedEvaluator({"A": 0.75, "B": 0.25})}, continuous=False)
    strategy = MCTS(iterations=1, expand=2, evaluator="scripted", training=True, alpha=0.5, rollouts=2, temperature=0.3)
    (outcome,) = engine.run([number_task(gold="2")], strategy)
    g = outcome.graph
    assert len(g) == 3  # root, A, B: rollouts are no thoughts, so extractors see only search steps
    a, b = (next(t for t in g if t.text == text) for text in ("A\n\n", "B\n\n"))
    assert [r["text"] for r in a.meta["rollouts"]] == ["C\n\nThe answer is 2.", "The answer is 3."]
    assert [(r["steps"], r["reward"]) for r in a.meta["rollouts"]] == [(2, 1.0), (1, 0.0)]
    assert [r["return"] for r in a.meta["rollouts"]] == pytest.approx([0.9216, -0.96])
    assert [r["text"] for r in b.meta["rollouts"]] == ["The answer is 2."] * 2
    assert a.value == pytest.approx(0.2404) and b.value == pytest.approx(0.23)
    assert g.root.value == pytest.approx(0.225792)
    assert len(seen) == 3 and {t for _, t in seen} == {0.3}  # one expansion + two rollout requests, all at 0.3


def test_mcts_alpha_outside_training_warns_and_changes_nothing():
    with pytest.warns(UserWarning, match=r"alpha=0.5 has no effect outside training mode.*fix:"):
        strategy = build_strategy("mcts", iterations=1, expand=2, evaluator="scripted", alpha=0.5)
    fake = FakeBackend({"": ["A\n\n", "B\n\n"], "A\n\n": ["The answer is 2."]})
    (outcome,) = Engine(fake, {"scripted": ScriptedEvaluator({"A": 0.75, "B": 0.25})}).run([number_task()], strategy)
    values = sorted(t.value for t in outcome.graph if t.id)
    assert values == pytest.approx([-0.5, 0.5])  # 2s − 1 of the evaluator alone: no rollout ran
    assert not any("rollouts" in t.meta for t in outcome.graph)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MCTS(alpha=0.5, training=True)
        MCTS(alpha=0.0)


def test_beam_width_one_equals_greedy():
    tasks = [number_task(f"t{i}", question=f"q{i}") for i in range(3)]
    greedy = Engine(FakeBackend(steps_to_answer=4)).run(tasks, ChainOfThought(temperature=0.0))
    beam = Engine(FakeBackend(steps_to_answer=4), {"confidence": ScriptedEvaluator({}, name="confidence")}).run(
        tasks, BeamSearch(width=1, branch=1, temperature=0.0)
    )
    for a, b in zip(greedy, beam, strict=True):
        assert a.graph.path_text(a.answer_thought.id) == b.graph.path_text(b.answer_thought.id)


def test_depth_one_beam_equals_reward_ranked_best_of_n():
    responses = {"": ["The answer is 1.", "The answer is 2.", "The answer is 3.", "The answer is 4."]}
    scores = ScriptedEvaluator({"The answer is 1.": 0.2, "The answer is 2.": 0.9, "The answer is 3.": 0.5, "The answer is 4.": 0.1})
    task = number_task(delimiter="")
    beam = Engine(FakeBackend(responses), {"scripted": scores}).run([task], BeamSearch(width=2, branch=2, evaluator="scripted"))
    bon = Engine(FakeBackend(responses), {"scripted": scores}).run([task], BestOfN(n=4, voting="reward", evaluator="scripted"))
    assert beam[0].answer == bon[0].answer == "2"


def _expand(graph, parent, texts_scores):
    """Attach scored children under ``parent`` as the engine would, and the reply that names them."""
    kids = [graph.add(parent, text, scores={"confidence": score}) for text, score in texts_scores]
    return Reply(Expand(parent, n=len(kids)), thought_ids=[k.id for k in kids])


def test_diverse_beam_groups_with_hamming_penalty_by_hand():
    """width 4 = 2 groups × 2, λ = 0.5; a candidate loses 0.5 per step the earlier groups chose with the same text.

    Step 1 (shared root pool): group 0 takes "x = 1" (0.9) and "X =  1" (0.85, the same step once
    normalised). Group 1: "x = 1 " 0.78 − 0.5·2 = −0.22, so it takes "y = 2" (0.8) and "z = 3" (0.6);
    without the penalty it would take "y = 2" and the third copy of "x = 1".
    Step 2: group 0 expands its own two thoughts and takes both "a" (0.9; no penalty inside a group).
    Group 1: "a" 0.9 − 0.5·2 = −0.1 < "d" 0.7, "e" 0.65, so it takes "d" and "e".
    """

    def run(penalty):
        graph = ReasoningGraph(problem="q")
        problem = Problem(task=number_task(), graph=graph)
        beam = BeamSearch(width=4, branch=2, groups=2, diversity_penalty=penalty, max_depth=2)
        beam.start(problem)
        (request,) = beam.ask(problem)
        assert request.thought_id == 0 and request.n == 8
        step1 = [("x = 1", 0.9), ("X =  1", 0.85), ("x = 1 ", 0.78), ("y = 2", 0.8), ("z = 3", 0.6), ("w", 0.5), ("v", 0.1), ("u", 0.1)]
        beam.tell(problem, [_expand(graph, 0, step1)])
        return graph, problem, beam

    graph, problem, beam = run(0.0)
    text = {t.id: t.text for t in graph}
    assert [[text[t] for t in b] for b in problem.meta["beams"]] == [["x = 1", "X =  1"], ["y = 2", "x = 1 "]]

    graph, problem, beam = run(0.5)
    text = {t.id: t.text for t in graph}
    assert [[text[t] for t in b] for b in problem.meta["beams"]] == [["x = 1", "X =  1"], ["y = 2", "z = 3"]]
    assert sorted(text[t.id] for t in graph if t.pruned) == ["u", "v", "w", "x = 1 "]
    x1, x2, y, z = (t for b in problem.meta["beams"] for t in b)
    assert [r.thought_id for r in beam.ask(problem)] == [x1, x2, y, z]
    replies = [
        _expand(graph, x1, [("a", 0.9), ("b", 0.3)]),
        _expand(graph, x2, [("a", 0.9), ("c", 0.2)]),
        _expand(graph, y, [("a", 0.9), ("d", 0.7)]),
        _expand(graph, z, [("e", 0.65), ("f", 0.1)]),
    ]
    beam.tell(problem, replies)
    text = {t.id: t.text for t in graph}
    assert [[text[t] for t in g] for g in problem.meta["group_completed"]] == [["a", "a"], ["d", "e"]]  # max_depth 2
    assert problem.meta["beams"] == [[], []] and beam.ask(problem) == []
    assert [graph[t].meta["beam_group"] for t in problem.meta["completed"]] == [0, 0, 1, 1]
    assert text[beam.answer(problem).id] == "a"


def test_beam_max_per_parent_is_a_cap_before_selection():
    graph = ReasoningGraph(problem="q")
    problem = Problem(task=number_task(), graph=graph)
    beam = BeamSearch(width=2, branch=2, max_per_parent=1)
    beam.start(problem)
    beam.tell(problem, [_expand(graph, 0, [("p", 0.9), ("q", 0.8), ("r", 0.1), ("s", 0.2)])])
    assert [graph[t].text for t in problem.meta["beams"][0]] == ["p"]  # the cap leaves one candidate


def test_voting_ties_resolve_to_the_first_answer():
    g = ReasoningGraph()
    ts = [g.add(0, f"s{i}", terminal=True, answer=a) for i, a in enumerate(["7", "5", "5", "7"])]
    assert vote(ts, "majority").answer == "7"
    assert vote(list(reversed(ts)), "majority").id == ts[0].id
    ts[1].scores["v"] = 0.9
    ts[0].scores["v"] = 0.2
    assert vote(ts, "weighted", "v").answer == "5"
    assert vote(ts, "reward", "v").id == ts[1].id
    assert vote([g.add(0, "x", terminal=True, answer="1,000"), g.add(0, "y", terminal=True, answer="1000")], "majority").answer == "1,000"


def test_unknown_strategy_and_parameter_name_the_fix():
    with pytest.raises(ValueError, match="choose one of"):
        build_strategy("alphazero")
    with pytest.raises(ValueError, match="it takes"):
        build_strategy("mcts", iterationz=3)


def test_token_level_steps():
    """Step granularity of one token: every thought is a single token of the solution."""
    from x1.tasks.base import StepFormat

    task = number_task()
    task.step_format = StepFormat(delimiter="", max_step_tokens=1, max_steps=50)
    words = [" The", " answer", " is", " 2.<eos>"]

    def one_token(prompt: str, index: int) -> str:
        done = len(prompt.split("<|assistant|>\n", 1)[1].split())
        return words[min(done, 3)]

    fake = FakeBackend(responder=one_token)
    (outcome,) = Engine(fake).run([task], ChainOfThought())
    steps = [t.text for t in outcome.graph.path(outcome.answer_thought.id)]
    assert steps == words[:3] + [" 2."]
    assert outcome.graph.path(outcome.answer_thought.id)[-1].terminal


def test_inlined_puct_selection_picks_what_the_reference_score_picks():
    """select_leaf inlines puct_score for speed; on random trees, with and without virtual loss,
    it must descend exactly as the reference scores do (ties included)."""
    import random

    from x1.graph import ReasoningGraph
    from x1.strategies.mcts import MCTS

    rng = random.Random(3)
    for form in ("muzero", "paper"):
        mcts = MCTS(puct_form=form)
        for _ in range(30):
            graph = ReasoningGraph(problem="p")
            for _ in range(40):
                parent = rng.choice(list(graph.thoughts))
                t = graph.add(parent, "s")
                t.visits, t.value = rng.randint(0, 4), rng.choice([None, 0.5, -0.25, rng.uniform(-1, 1)])
            for t in graph:
                t.visits += sum(graph[c].visits for c in t.children)
            virtual = {k: rng.randint(0, 2) for k in rng.sample(list(graph.thoughts), 8)}
            for vl in ({}, virtual):
                node, want = graph.root, None
                while True:
                    kids = [graph[c] for c in node.children if not graph[c].pruned]
                    if not kids or node.terminal:
                        want = node
                        break
                    pv = node.visits + sum(vl.get(c.id, 0) for c in kids) if vl else node.visits
                    node = max(kids, key=lambda c, pv=pv: (mcts._score(c, pv, vl.get(c.id, 0) if vl else 0), -c.id))
                assert mcts.select_leaf(graph, vl).id == want.id
                # _plan's running count of selections through each thought gives the same descent
                through = {t.id: sum(vl.get(c, 0) for c in t.children) for t in graph}
                assert mcts.select_leaf(graph, vl, through).id == want.id
