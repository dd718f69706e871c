"""How often a search's evaluator still keeps an expansion's parent, by the kept caches' budget.

    python benchmarks/kv_memo_budget.py [--cell mcts-value-N4] [--in-flight 24] [--budgets-gb 0.5,1,2,4]

Replays a committed scaling-study search cell's expansions in the order the engine interleaves
them: ``--in-flight`` problems at once, each expanding its next leaf per round (a finished problem
makes room for the next), and each expansion's children go into a least-recently-used store of
their paths' KV caches (SmolLM2-135M's size per token, float32, the study's tokenizer). An
expansion whose parent is still kept runs only its children's new steps (``kv_memo``); one whose
parent was evicted runs the parent's path again. No model runs, so this takes seconds.
"""

from __future__ import annotations

import argparse
from collections import OrderedDict

from rich.console import Console
from rich.table import Table
from study_cells import add_cell_arguments, load_cell
from transformers import AutoTokenizer

from x1.graph import ReasoningGraph

console = Console(width=150)
KV_BYTES_PER_TOKEN = 30 * 2 * 3 * 64 * 4  # SmolLM2-135M: 30 layers x (keys, values) x 3 KV heads x 64 dims x float32


def expansions(graph: ReasoningGraph, tokens_of) -> list[tuple[int, list[tuple[int, int]]]]:  # type: ignore[no-untyped-def]
    """(parent id, [(child id, the child's path length in tokens)]) in the order the search made them."""
    prefix = str(graph.meta.get("prefix", ""))
    by_parent: dict[int, list[tuple[int, int]]] = {}
    for thought in sorted(graph.thoughts.values(), key=lambda t: t.id):
        if thought.parents:
            by_parent.setdefault(thought.parents[0], []).append((thought.id, tokens_of(prefix + graph.path_text(thought.id))))
    return list(by_parent.items())


def parents_kept(problems: list[list[tuple[int, list[tuple[int, int]]]]], in_flight: int, budget: float) -> tuple[int, int]:
    """(expansions whose parent was still kept, expansions below the root), round-robin over the problems in flight."""
    kept: OrderedDict[tuple[int, int], int] = OrderedDict()
    used = hits = total = 0
    queues = [list(p) for p in problems]
    waiting, live = list(range(len(queues)))[in_flight:], list(range(min(in_flight, len(queues))))
    while live:
        still = []
        for q in live:
            if not queues[q]:
                if waiting:
                    still.append(waiting.pop(0))
                continue
            parent, children = queues[q].pop(0)
            if parent:
                total += 1
                if (q, parent) in kept:
                    hits += 1
                    kept.move_to_end((q, parent))
            for child, length in children:
                size = length * KV_BYTES_PER_TOKEN
                while kept and used + size > budget:
                    used -= kept.popitem(last=False)[1]
                kept[(q, child)] = size
                used += size
            still.append(q)
        live = still
    return hits, total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_cell_arguments(parser, "mcts-value-N4", "ARM-N<budget>: a search cell whose expansions are replayed")
    parser.add_argument("--in-flight", type=int, default=24, help="problems the engine interleaves")
    parser.add_argument("--budgets-gb", default="0.5,1,2,4")
    parser.add_argument("--tokenizer", default="docs/results/scaling-study/value")
    args = parser.parse_args()
    _, records, _ = load_cell(args)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    problems = [expansions(ReasoningGraph.from_dict(r["graph"]), lambda text: len(tokenizer(text)["input_ids"])) for r in records]
    table = Table("budget", "expansions below the root", "parent kept", "share",
                  title=f"{args.cell}: {len(records)} problems' expansions, {args.in_flight} in flight, least recently used out")
    for gb in (float(b) for b in args.budgets_gb.split(",")):
        hits, total = parents_kept(problems, args.in_flight, gb * (1 << 30))
        table.add_row(f"{gb:g} GiB", str(total), str(hits), f"{hits / max(total, 1):.0%}")
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
