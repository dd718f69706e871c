"""The engine: lock-step batching, budgets, determinism, checkpoint and resume."""

import zlib

import pytest
from helpers import number_task

from x1.engine import Budget, Engine
from x1.evaluators.simple import ConfidenceEvaluator
from x1.models.fake import FakeBackend
from x1.strategies import BestOfN, build_strategy


class CountingFake(FakeBackend):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batch_sizes: list[int] = []
        self.sequences: list[int] = []

    def generate(self, requests):
        self.batch_sizes.append(len(requests))
        self.sequences.append(sum(r.n for r in requests))
        return super().generate(requests)


def tasks(n: int = 5):
    return [number_task(f"t{i}", question=f"question {i}") for i in range(n)]


def test_all_problems_share_one_policy_call_per_tick():
    fake = CountingFake(steps_to_answer=3)
    engine = Engine(fake, {"confidence": ConfidenceEvaluator()})
    engine.run(tasks(5), build_strategy("mcts", iterations=4, expand=2))
    assert fake.stats.calls == engine.ticks == len(fake.batch_sizes)
    assert fake.batch_sizes[0] == 5  # every problem's first expansion in the same call


def test_max_active_bounds_the_problems_in_flight_and_changes_no_result():
    def run(max_active):
        fake = CountingFake(steps_to_answer=3)
        engine = Engine(fake, {"confidence": ConfidenceEvaluator()}, max_active=max_active)
        outcomes = engine.run(tasks(7), BestOfN(n=4))
        return fake, [(o.answer, o.graph.to_dict()) for o in outcomes]

    limited, limited_out = run(3)
    unlimited, unlimited_out = run(None)
    assert max(limited.sequences) == 3 * 4 and max(unlimited.sequences) == 7 * 4  # live chains per call
    assert limited_out == unlimited_out  # seeds come from task and thought ids, not from timing
    with pytest.raises(ValueError, match="max_active"):
        Engine(FakeBackend(), max_active=0).run(tasks(1), BestOfN(n=2))


def test_max_live_admits_problems_as_sequences_finish_and_changes_no_result():
    """Admission stops at the live-sequence target and resumes as rounds come back; graphs do not change."""

    def run(max_live):
        fake = CountingFake(steps_to_answer=3)
        engine = Engine(fake, {"confidence": ConfidenceEvaluator()}, max_live=max_live)
        outcomes = engine.run(tasks(7), build_strategy("mcts", iterations=4, expand=3))
        return fake, [(o.answer, o.graph.to_dict()) for o in outcomes]

    limited, limited_out = run(7)
    unlimited, unlimited_out = run(None)
    assert max(limited.sequences) <= 7 + 3 - 1 < max(unlimited.sequences) == 7 * 3
    assert len(limited.sequences) > len(unlimited.sequences)  # the last problems waited for slots
    assert limited_out == unlimited_out
    with pytest.raises(ValueError, match="max_live"):
        Engine(FakeBackend(), max_live=0).run(tasks(1), BestOfN(n=2))


def test_the_default_live_target_is_3_16ths_of_a_continuous_backends_slots():
    slots = FakeBackend(continuous=True)
    assert Engine(slots).live_target() == slots.capabilities.max_batch * 3 // 16  # the rest keep paths cached
    assert Engine(FakeBackend()).live_target() > 10**9  # lock-step: every problem at once, as before
    assert Engine(slots, max_live=5).live_target() == 5


@pytest.mark.parametrize(
    "name, params",
    [
        ("mcts", {"iterations": 6, "expand": 2, "parallel": 2}),
        ("beam", {"width": 2, "branch": 3}),
        ("best_of_n", {"n": 4}),
        ("tot_dfs", {}),
        ("dvts", {}),
    ],
)
def test_continuous_batching_changes_no_result_and_saves_decode_steps(name, params):
    """Problems whose rounds finish early ask again while others still decode: same graphs as
    lock-step (seeds depend on where a request comes from, not when), fewer decode steps."""

    def uneven_steps(prompt: str, index: int) -> str:  # steps of 3 to 9 words, as real ones vary
        done = prompt.count("Step ")
        h = zlib.crc32(f"{prompt}|{index}".encode())
        if done >= 3 or (done and h % 5 == 0):
            return f"The answer is {h % 4}.<eos>"
        return f"Step {done + 1}:{' so' * (h % 7)} consider {h % 997}.\n\n"

    def run(continuous: bool):
        fake = FakeBackend(responder=uneven_steps, continuous=continuous)
        outcomes = Engine(fake, {"confidence": ConfidenceEvaluator()}, max_active=4).run(tasks(9), build_strategy(name, **params))
        return fake.decode_steps, [(o.answer, o.score, o.graph.to_dict()) for o in outcomes]

    lock_steps, lock_out = run(False)
    cont_steps, cont_out = run(True)
    assert cont_out == lock_out
    assert cont_steps < lock_steps


def test_same_seed_same_graphs_and_different_seed_differs():
    def run(seed):
        outs = Engine(FakeBackend(), {"confidence": ConfidenceEvaluator()}, seed=seed).run(tasks(3), build_strategy("mcts", iterations=5))
        return [o.graph.to_dict() for o in outs]

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_budgets_stop_a_problem():
    engine = Engine(FakeBackend(steps_to_answer=50), budget=Budget(max_nodes=6))
    (outcome,) = engine.run(tasks(1), BestOfN(n=4))
    assert outcome.stop_reason == "node budget"
    assert len(outcome.graph) >= 6


def test_interrupted_run_resumes_to_the_same_result(tmp_path):
    strategy = build_strategy("mcts", iterations=6, expand=2)
    reference_engine = Engine(FakeBackend(), {"confidence": ConfidenceEvaluator()})
    reference = reference_engine.run(tasks(3), strategy)

    checkpoint = tmp_path / "ckpt.jsonl"

    def stop_after_two(tick, problems):
        if tick == 2:
            raise KeyboardInterrupt

    engine = Engine(FakeBackend(), {"confidence": ConfidenceEvaluator()}, checkpoint_path=checkpoint, on_tick=stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        engine.run(tasks(3), strategy)
    assert checkpoint.exists()
    resumed_engine = Engine(FakeBackend(), {"confidence": ConfidenceEvaluator()}, checkpoint_path=checkpoint)
    resumed = resumed_engine.run(tasks(3), strategy)
    assert [o.graph.to_dict() for o in resumed] == [o.graph.to_dict() for o in reference]
    assert 0 < resumed_engine.ticks < reference_engine.ticks  # finished work was not redone


def test_checkpoint_of_another_strategy_is_refused(tmp_path):
    checkpoint = tmp_path / "ckpt.jsonl"
    Engine(FakeBackend(), checkpoint_path=checkpoint).run(tasks(1), BestOfN(n=2))
    with pytest.raises(ValueError, match="delete the checkpoint"):
        Engine(FakeBackend(), {"confidence": ConfidenceEvaluator()}, checkpoint_path=checkpoint).run(tasks(1), build_strategy("mcts"))


def test_admission_counts_what_the_stream_says_is_live(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream that reports its live sequences is believed; without it, whole requests count until they are back."""
    from x1.models import fake

    most: list[int] = []
    original_submit = fake.FakeStream.submit

    def submit(self, request):  # type: ignore[no-untyped-def]
        ticket = original_submit(self, request)
        most.append(len(self._running))
        return ticket

    monkeypatch.setattr(fake.FakeStream, "submit", submit)

    def peak(**options) -> int:  # type: ignore[no-untyped-def]
        most.clear()
        Engine(FakeBackend(continuous=True), max_live=2, **options).run(tasks(6), BestOfN(n=2))
        return max(most)

    # requests in flight at once (best-of-2 asks for two chains of one sequence each)
    assert peak() == 2  # no live_sequences: one problem's requests hold the target of 2 until they are back
    monkeypatch.setattr(fake.FakeStream, "live_sequences", lambda self: 0, raising=False)
    assert peak() == 12  # the stream says nothing decodes: every problem is admitted at once
    assert peak(live_from_stream=False) == 2


@pytest.mark.parametrize("strategy, params", [("cot", {}), ("mcts", {"iterations": 40, "expand": 3, "parallel": 2})])
def test_a_path_that_outgrows_its_sequence_ends_its_problem_not_the_run(strategy, params):
    """A prompt with no room left in a sequence's cells (llama.cpp's KV streams) raises ContextFull at submission:
    the engine ends that problem ("context full", its best answer so far) and the other problems run on."""
    long_question = number_task("long", question="many words " * 30)
    fake = FakeBackend(continuous=True, steps_to_answer=40, context_chars=300)
    outcomes = Engine(fake, {"confidence": ConfidenceEvaluator()}).run([*tasks(2), long_question], build_strategy(strategy, **params))
    by_id = {o.task.id: o for o in outcomes}
    assert by_id["long"].stop_reason == "context full" and len(by_id["long"].graph) == 1  # its first prompt never fit
    short = [by_id["t0"], by_id["t1"]]
    assert all(o.stop_reason == "context full" and len(o.graph) >= 3 for o in short)  # grew until the cells ran out
    roomy = Engine(FakeBackend(continuous=True, steps_to_answer=3), {"confidence": ConfidenceEvaluator()})
    assert all(o.stop_reason != "context full" for o in roomy.run(tasks(2), build_strategy(strategy, **params)))


class RankedCacheFake(FakeBackend):
    """A fake with a prefix cache's ``rank_cached``: every completion gets a cache ref, every ranking is kept."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.refs: dict[int, str] = {}  # ref -> the prompt + text it stands for
        self.ranks: list[dict[int, float | None]] = []

    def _complete(self, req):
        group = super()._complete(req)
        for c in group:
            c.cache_ref = len(self.refs) + 1
            self.refs[c.cache_ref] = req.prompt + c.text + (c.stop or "")
        return group

    def rank_cached(self, ranks):
        self.ranks.append(dict(ranks))


def test_the_engine_ranks_cached_paths_and_retires_those_no_prompt_extends():
    """A leaf the search may still expand is ranked by its value; an expanded or final step, and every
    path of a finished problem, is retired (None); every ref handed out is retired by the end."""
    fake = RankedCacheFake(steps_to_answer=3)
    outcomes = Engine(fake, {"confidence": ConfidenceEvaluator()}).run(tasks(3), build_strategy("mcts", iterations=6, expand=2))
    last: dict[int, float | None] = {}
    for ranking in fake.ranks:
        for ref, rank in ranking.items():
            assert last.get(ref, 0.0) is not None, "a retired path came back to life"
            last[ref] = rank
    assert set(last) == set(fake.refs) and all(rank is None for rank in last.values())
    ranked = [rank for ranking in fake.ranks for rank in ranking.values() if rank is not None]
    assert ranked and all(0.0 <= rank <= 1.0 for rank in ranked)
    # while a problem runs, its expanded steps are retired beside leaves that stay ranked
    assert any(None in ranking.values() and any(r is not None for r in ranking.values()) for ranking in fake.ranks)
    expanded = {o.graph.meta["prefix"] + o.graph.path_text(t.id) for o in outcomes for t in o.graph if t.parents and t.children}
    assert expanded and expanded <= set(fake.refs.values())
