"""Re-voting: another vote over the chains a best-of-N cell already sampled, or a search's trees hold.

Majority, evaluator-weighted and reward-ranked best-of-N differ only in the vote, so a study
samples the N chains once and re-votes them: the arms are then compared on the very same
chains (a sharper pairing than equal seeds), and trying another evaluator or step aggregation
(min, last, product) costs evaluator calls, not generation. The re-voted record keeps the
source's generation compute and adds the evaluator's calls. A search's tree is re-voted over its
terminals (its finished chains); a tree with none keeps the search's own answer (MCTS falls back to
its best leaf), so the re-vote changes how finished chains are chosen and nothing else.
"""

from __future__ import annotations

from pathlib import Path

from x1.evaluators.base import EvalItem
from x1.graph import ReasoningGraph
from x1.strategies.best_of_n import vote
from x1.tasks.base import Task
from x1.trace import read_traces, write_record


def revote_cell(source: Path, target: Path, tasks: list[Task], voting: str, evaluator: str | None,
                on_done: object = None) -> int:
    """Append a re-voted record to ``target/traces.jsonl`` for every source record not yet there; how many were added."""
    from x1.evaluators.spec import build_evaluator, parse_evaluator
    from x1.pipelines.evaluate import evaluator_tokens_of
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
    scorer = build_evaluator(parse_evaluator(evaluator), policy=None) if evaluator else None
    clock = RunClock(target, resume=True)
    with out_path.open("a") as fh:
        for record in todo:
            task = by_id[record["task_id"]]
            graph = ReasoningGraph.from_dict(record["graph"])
            tips = graph.terminals()
            calls = tokens = 0
            if scorer is not None and evaluator is not None and tips:
                prefix = str(graph.meta.get("prefix", ""))
                tokens_before = getattr(scorer, "model_tokens", 0)
                scores = scorer.evaluate([EvalItem(task, graph, t.id, prefix) for t in tips])
                calls, tokens = 1, getattr(scorer, "model_tokens", 0) - tokens_before
                for thought, score in zip(tips, scores, strict=True):
                    thought.scores[evaluator] = float(score)
            if tips:
                chosen = vote(tips, voting, evaluator)
                answer, answer_thought = (None, None) if chosen is None else (chosen.answer, chosen.id)
            else:  # nothing finished: the source's own answer stands
                answer, answer_thought = record["answer"], record["answer_thought"]
            verdict = task.verify(answer)
            compute = dict(record["compute"], evaluator_calls=record["compute"].get("evaluator_calls", 0) + calls)
            before = evaluator_tokens_of(record["compute"])
            # unknown stays unknown: a source that predates the count with evaluator calls of its own, or a scorer that
            # does not count (a remote server)
            counted = calls == 0 or hasattr(scorer, "model_tokens")
            compute["evaluator_tokens"] = before + tokens if before is not None and counted else None
            fields = {k: v for k, v in record.items() if k != "trace_version"}
            write_record(fh, {**fields, "answer": answer, "answer_thought": answer_thought,
                              "score": verdict.score, "correct": verdict.score >= 1.0 - 1e-9, "reason": verdict.reason,
                              "compute": compute, "graph": graph.to_dict(), "revote": {"voting": voting, "evaluator": evaluator}})
            clock.record()
            if callable(on_done):
                on_done(verdict.score >= 1.0 - 1e-9)
    return len(todo)
