"""Re-voting: another vote over the chains a best-of-N cell already sampled, or a search's trees hold.

Majority, evaluator-weighted and reward-ranked best-of-N differ only in the vote, so a study
samples the N chains once and re-votes them: the arms are then compared on the very same
chains (a sharper pairing than equal seeds), and trying another evaluator or step aggregation
(min, last, product) costs evaluator calls, not generation. The re-voted record keeps the
source's generation compute and adds the evaluator's calls. A search's tree is re-voted over its
terminals (its finished chains); a tree with none keeps the search's own answer (MCTS falls back to
its best leaf), so the re-vote changes how finished chains are chosen and nothing else. Scores that
the source's search or another re-vote of it already wrote with an evaluator that scores alike are
taken, not computed again (``EarlierScores``).
"""

from __future__ import annotations

from pathlib import Path

from x1.evaluators.aggregate import aggregate_steps
from x1.evaluators.base import EvalItem
from x1.graph import ReasoningGraph
from x1.pipelines.evaluate import evaluator_tokens_of
from x1.strategies.best_of_n import vote
from x1.tasks.base import Task
from x1.trace import read_traces, write_record

STEP_SCORES = "step_scores"  # thought.meta key: evaluator spec → a PRM's score per step of the path


def revote_cell(source: Path, target: Path, tasks: list[Task], voting: str, evaluator: str | None,
                on_done: object = None, siblings: list[Path] | None = None) -> int:
    """Append a re-voted record to ``target/traces.jsonl`` for every source record not yet there; how many were added.

    ``siblings``: other re-votes of the same source. Where the source's own graph (a search scored its
    terminals as it went) or a sibling already holds this evaluator's scores of every chain, they are
    taken, not computed again, and the record is charged what computing them cost there.
    """
    from x1.evaluators.spec import build_evaluator, parse_evaluator
    from x1.pipelines.run_clock import RunClock
    from x1.pipelines.rundir import drop_torn_last_line

    target.mkdir(parents=True, exist_ok=True)
    out_path = target / "traces.jsonl"
    done: set[str] = set()
    if out_path.exists():
        drop_torn_last_line(out_path)
        done = {r["task_id"] for r in read_traces(out_path)}
    by_id = {t.id: t for t in tasks}
    todo = [r for r in read_traces(source / "traces.jsonl") if r["task_id"] in by_id and r["task_id"] not in done]
    if not todo:
        return 0
    earlier = EarlierScores(evaluator, todo, siblings or []) if evaluator else None
    scorer = None
    clock = RunClock(target, resume=True)
    with out_path.open("a") as fh:
        for record in todo:
            task = by_id[record["task_id"]]
            graph = ReasoningGraph.from_dict(record["graph"])
            tips = graph.terminals()
            calls, tokens = 0, 0
            if evaluator is not None and tips:
                found = earlier.find(record, [t.id for t in tips]) if earlier else None
                if found is not None:
                    scores, calls, tokens = found
                else:
                    if scorer is None:
                        scorer = build_evaluator(parse_evaluator(evaluator), policy=None)
                    before = getattr(scorer, "model_tokens", None)
                    items = [EvalItem(task, graph, t.id, str(graph.meta.get("prefix", ""))) for t in tips]
                    if hasattr(scorer, "step_scores"):  # a PRM: its step scores are kept, for every other aggregation
                        steps = scorer.step_scores(items)
                        scores = [aggregate_steps(s, scorer.aggregate) for s in steps]
                        for thought, kept in zip(tips, steps, strict=True):
                            thought.meta.setdefault(STEP_SCORES, {})[evaluator] = kept
                    else:
                        scores = scorer.evaluate(items)
                    # a scorer that does not count its positions (a remote server) leaves the count unknown
                    calls, tokens = 1, None if before is None else scorer.model_tokens - before
                for thought, score in zip(tips, scores, strict=True):
                    thought.scores[evaluator] = float(score)
            if tips:
                chosen = vote(tips, voting, evaluator)
                answer, answer_thought = (None, None) if chosen is None else (chosen.answer, chosen.id)
            else:  # nothing finished: the source's own answer stands
                answer, answer_thought = record["answer"], record["answer_thought"]
            verdict = task.verify(answer)
            compute = dict(record["compute"], evaluator_calls=record["compute"].get("evaluator_calls", 0) + calls)
            # unknown stays unknown: a source that predates the count with evaluator calls of its own, or scores
            # whose positions were not counted
            before_tokens = evaluator_tokens_of(record["compute"])
            compute["evaluator_tokens"] = None if before_tokens is None or tokens is None else before_tokens + tokens
            fields = {k: v for k, v in record.items() if k != "trace_version"}
            write_record(fh, {**fields, "answer": answer, "answer_thought": answer_thought,
                              "score": verdict.score, "correct": verdict.score >= 1.0 - 1e-9, "reason": verdict.reason,
                              "compute": compute, "graph": graph.to_dict(), "revote": {"voting": voting, "evaluator": evaluator}})
            clock.record()
            if callable(on_done):
                on_done(verdict.score >= 1.0 - 1e-9)
    return len(todo)


class EarlierScores:
    """An evaluator's scores of a source's chains that are already written, and what they cost there.

    A re-vote with an evaluator another re-vote of the same chains used (value-best, then value-weighted)
    would compute the same scores again: at N=16 that is the better part of an hour of a CPU. A search
    that scored its terminals with the evaluator (MCTS with a value model) holds them in its own trees.
    Scores count as the same where the specs score alike (``EvaluatorSpec.scoring_key``).
    """

    def __init__(self, evaluator: str, records: list[dict], siblings: list[Path]) -> None:
        from x1.pipelines.scale_auc import scores_given

        self.own = scores_given(evaluator, records)  # free: the source's compute already counts them
        self.siblings: list[tuple[dict[str, dict], dict[tuple[str, int], float]]] = []
        for cell in siblings:
            path = cell / "traces.jsonl"
            if path.exists():
                kept = {r["task_id"]: r for r in read_traces(path)}
                self.siblings.append((kept, scores_given(evaluator, list(kept.values()))))

    def find(self, record: dict, tips: list[int]) -> tuple[list[float], int, int | None] | None:
        """(scores of ``tips`` in order, evaluator calls, evaluator positions) where some earlier run scored them all."""
        task_id = record["task_id"]
        if all((task_id, t) in self.own for t in tips):
            return [self.own[(task_id, t)] for t in tips], 0, 0
        for kept, scores in self.siblings:
            sibling = kept.get(task_id)
            if sibling is None or not all((task_id, t) in scores for t in tips):
                continue
            mine, theirs = record["compute"], sibling["compute"]
            calls = theirs.get("evaluator_calls", 0) - mine.get("evaluator_calls", 0)
            mine_tokens, their_tokens = evaluator_tokens_of(mine), evaluator_tokens_of(theirs)
            tokens = None if mine_tokens is None or their_tokens is None else their_tokens - mine_tokens
            return [scores[(task_id, t)] for t in tips], calls, tokens
        return None
