"""Trained evaluators in float32 against bfloat16: scoring speed, score drift and AUC, in one run.

    python benchmarks/evaluators.py [--cell majority-N1] [--chains 0] [--rounds 2] [--threads 2]

Scores the labelled chains of one committed scaling-study cell (held-out problems; every finished
chain labelled by the task's verifier) with each trained evaluator the study names (``auc:``), once
as the spec says (float32 on a CPU) and once with ``?dtype=bfloat16``, in alternating rounds so the
machine's drift hits both alike. The table gives, per evaluator: seconds for all chains in each
dtype (best round) and their ratio, the largest and mean absolute score difference, and the AUC
in each dtype. bfloat16 pays only on a CPU with native bf16 arithmetic (AVX512-BF16 or AMX); on
one without it, the ratio shows the loss.
"""

from __future__ import annotations

import argparse
import time

import torch
from rich.console import Console
from rich.table import Table
from study_cells import add_cell_arguments, load_cell

from x1.evaluators.spec import build_evaluator, parse_evaluator
from x1.pipelines.recipe.metrics import auc
from x1.pipelines.scale_auc import labelled_chains

console = Console(width=150)


def with_dtype(spec: str, dtype: str) -> str:
    return f"{spec}{'&' if '?' in spec else '?'}dtype={dtype}"


def score(evaluator, items, batch: int = 16) -> tuple[list[float], float]:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    scores: list[float] = []
    for lo in range(0, len(items), batch):
        scores += evaluator.evaluate(items[lo : lo + batch])
    return scores, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_cell_arguments(parser, "majority-N1", "ARM-N<budget>: whose chains are scored")
    parser.add_argument("--chains", type=int, default=0, help="score only the first CHAINS chains (0: all)")
    args = parser.parse_args()
    study, records, tasks = load_cell(args)
    chains = labelled_chains(records, {t.id: t for t in tasks})
    if args.chains:
        chains = chains[: args.chains]
    items, labels = [item for _, item, _ in chains], [label for _, _, label in chains]
    console.print(f"{len(items)} chains of {args.cell} ({sum(labels)} right), {args.threads} threads, "
                  f"bf16 in hardware: {torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()}")
    table = Table("evaluator", "float32 s", "bfloat16 s", "speed-up", "max |diff|", "mean |diff|", "AUC fp32", "AUC bf16",
                  title=f"trained evaluators on {len(items)} held-out chains, best of {args.rounds} alternating rounds")
    for spec in study.auc:
        evaluators = {d: build_evaluator(parse_evaluator(s), None, device="cpu")
                      for d, s in (("float32", spec), ("bfloat16", with_dtype(spec, "bfloat16")))}
        for evaluator in evaluators.values():
            evaluator.model.kv_memo = None  # each round scores the same chains: kept caches would time lookups, not scoring
        best: dict[str, float] = {}
        scores: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            for dtype, evaluator in evaluators.items():
                scores[dtype], seconds = score(evaluator, items)
                best[dtype] = min(best.get(dtype, seconds), seconds)
        diffs = [abs(a - b) for a, b in zip(scores["float32"], scores["bfloat16"], strict=True)]
        aucs = [auc(scores[d], labels) for d in ("float32", "bfloat16")]
        table.add_row(spec.replace("docs/results/scaling-study/", ""), f"{best['float32']:.1f}", f"{best['bfloat16']:.1f}",
                      f"{best['float32'] / best['bfloat16']:.2f}x", f"{max(diffs):.4f}", f"{sum(diffs) / len(diffs):.4f}",
                      *(f"{a:.3f}" if a is not None else "-" for a in aucs))
        del evaluators
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
