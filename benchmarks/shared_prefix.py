"""A search's evaluator calls scored with shared and kept prefixes against padded batches, side by side in one run.

    python benchmarks/shared_prefix.py [--cell beam-prm-N4] [--problems 12] [--rounds 2] [--threads 2]
        [--evaluator prm:docs/results/scaling-study/prm]

Replays the evaluator calls a committed scaling-study search cell made: the engine scores every
problem's new children of one step together, so each call here holds the thoughts of one depth of
every problem's graph. The calls are scored three ways, in alternating rounds: padded batches
(``share_prefixes`` off); prefixes shared within a call; and that plus the paths kept from the
earlier calls (``kv_memo``, fresh each round), so a child's parent does not run again. The table
gives seconds (best round), the speed-up over padded, the tokens each way runs through the
backbone, and the largest score difference from padded (float rounding only).
"""

from __future__ import annotations

import argparse
import time

from rich.console import Console
from rich.table import Table
from study_cells import add_cell_arguments, load_cell

from x1.evaluators import shared_prefix
from x1.evaluators.base import EvalItem
from x1.evaluators.kv_memo import KVMemo
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


MODES = ("padded", "shared", "shared + kept")


def set_mode(model, mode: str) -> None:  # type: ignore[no-untyped-def]
    """Padded batches; shared prefixes within a call; and also the paths kept from earlier calls (a fresh memo)."""
    model.share_prefixes = mode != "padded"
    model.kv_memo = KVMemo() if mode == "shared + kept" else None


def tokens_run(model, calls: list[list[EvalItem]], evaluator, mode: str) -> int:  # type: ignore[no-untyped-def]
    """Tokens through the backbone in one replay of ``calls`` in ``mode``."""
    if mode == "padded":
        given: list[list[int]] = []
        position_logits = model.position_logits
        model.position_logits = lambda seqs, batch_size=None: given.extend(seqs) or position_logits(seqs, batch_size)
        try:
            for items in calls:
                evaluator.evaluate(items)
        finally:
            del model.position_logits
        return sum(map(len, given))
    counted = [0]
    forward_rows = shared_prefix.forward_rows

    def counting(backbone, rows, device, keep):  # type: ignore[no-untyped-def]
        counted[0] += sum(len(tokens) for _, tokens in rows)
        return forward_rows(backbone, rows, device, keep)

    shared_prefix.forward_rows = counting
    try:
        set_mode(model, mode)
        for items in calls:
            evaluator.evaluate(items)
    finally:
        shared_prefix.forward_rows = forward_rows
    return counted[0]


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
    best: dict[str, float] = {}
    scores: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for mode in MODES:
            set_mode(model, mode)
            start = time.perf_counter()
            scores[mode] = [s for items in calls for s in evaluator.evaluate(items)]
            best[mode] = min(best.get(mode, float("inf")), time.perf_counter() - start)
    tokens = {mode: tokens_run(model, calls, evaluator, mode) for mode in MODES}
    table = Table("evaluator", "calls", "thoughts", "way", "s", "speed-up", "tokens run", "max |diff| from padded",
                  title=f"{args.cell}: {len(records)} problems' evaluator calls replayed, best of {args.rounds} alternating rounds, "
                        f"{args.threads} threads")
    name = args.evaluator.replace("docs/results/scaling-study/", "")
    for mode in MODES:
        diff = max(abs(a - b) for a, b in zip(scores["padded"], scores[mode], strict=True))
        table.add_row(name if mode == "padded" else "", str(len(calls)) if mode == "padded" else "",
                      str(sum(map(len, calls))) if mode == "padded" else "", mode, f"{best[mode]:.1f}",
                      f"{best['padded'] / best[mode]:.2f}x", str(tokens[mode]), f"{diff:.1e}")
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
