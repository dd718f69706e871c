"""A search's evaluator calls scored with shared prefixes against padded batches, side by side in one run.

    python benchmarks/shared_prefix.py [--cell beam-prm-N4] [--problems 12] [--rounds 2] [--threads 2]
        [--evaluator prm:docs/results/scaling-study/prm]

Replays the evaluator calls a committed scaling-study search cell made: the engine scores every
problem's new children of one step together, so each call here holds the thoughts of one depth of
every problem's graph. Each call is scored twice in alternating rounds, with the evaluator's shared
prefixes on and off (``share_prefixes``); the table gives seconds (best round), the speed-up, the
tokens each way runs through the backbone, and the largest score difference (float rounding only).
"""

from __future__ import annotations

import argparse
import time

from rich.console import Console
from rich.table import Table
from study_cells import add_cell_arguments, load_cell

from x1.evaluators.base import EvalItem
from x1.evaluators.shared_prefix import plan
from x1.evaluators.spec import build_evaluator, parse_evaluator
from x1.graph import ReasoningGraph

console = Console(width=150)


def calls_of(records: list[dict], tasks: dict) -> list[list[EvalItem]]:  # type: ignore[type-arg]
    """One call per depth: the thoughts at that depth of every problem's graph, as the engine batches them."""
    by_depth: dict[int, list[EvalItem]] = {}
    for record in records:
        graph = ReasoningGraph.from_dict(record["graph"])
        prefix = str(graph.meta.get("prefix", ""))
        depth = {0: 0}
        for thought in sorted(graph.thoughts.values(), key=lambda t: t.id):
            if thought.id:
                depth[thought.id] = depth[thought.parents[0]] + 1
                by_depth.setdefault(depth[thought.id], []).append(EvalItem(tasks[record["task_id"]], graph, thought.id, prefix))
    return [by_depth[d] for d in sorted(by_depth)]


def tokens_run(model, calls: list[list[EvalItem]], evaluator) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """(padded, shared): tokens through the backbone each way, from the sequences the model is given and its own plan."""
    given: list[list[list[int]]] = []
    position_logits = model.position_logits
    model.position_logits = lambda seqs, batch_size=None: given.append(seqs) or position_logits(seqs, batch_size)
    try:
        for items in calls:
            evaluator.evaluate(items)
    finally:
        del model.position_logits
    padded = shared = 0
    for seqs in given:
        padded += sum(len(s) for s in seqs)
        groups, singles = plan(seqs, model.batch_size)
        shared += sum(len(seqs[i]) for i in singles) + sum(p + sum(len(seqs[i]) - p for i in m) for p, m in groups)
    return padded, shared


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_cell_arguments(parser, "beam-prm-N4", "ARM-N<budget>: a search cell whose graphs are replayed")
    parser.add_argument("--evaluator", default="prm:docs/results/scaling-study/prm")
    parser.add_argument("--problems", type=int, default=12, help="replay the first PROBLEMS problems' graphs")
    args = parser.parse_args()
    _, records, tasks = load_cell(args)
    records = records[: args.problems]
    calls = calls_of(records, {t.id: t for t in tasks})
    evaluator = build_evaluator(parse_evaluator(args.evaluator), None, device="cpu")
    model = evaluator.model
    evaluator.evaluate(calls[0][:2])  # warm up
    best: dict[bool, float] = {}
    scores: dict[bool, list[float]] = {}
    for _ in range(args.rounds):
        for share in (False, True):
            model.share_prefixes = share
            start = time.perf_counter()
            scores[share] = [s for items in calls for s in evaluator.evaluate(items)]
            best[share] = min(best.get(share, float("inf")), time.perf_counter() - start)
    padded, shared = tokens_run(model, calls, evaluator)
    table = Table("evaluator", "calls", "thoughts", "padded s", "shared s", "speed-up", "tokens padded", "tokens shared", "max |diff|",
                  title=f"{args.cell}: {len(records)} problems' evaluator calls replayed, best of {args.rounds} alternating rounds, "
                        f"{args.threads} threads")
    table.add_row(args.evaluator.replace("docs/results/scaling-study/", ""), str(len(calls)), str(sum(map(len, calls))),
                  f"{best[False]:.1f}", f"{best[True]:.1f}", f"{best[False] / best[True]:.2f}x", str(padded), str(shared),
                  f"{max(abs(a - b) for a, b in zip(scores[False], scores[True], strict=True)):.1e}")
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
