"""A live search with its evaluator's kept caches against without them, side by side in one run.

    python benchmarks/kv_memo_live.py [--problems 6] [--first 150] [--cell-arm mcts-value] [--budget 4]

Runs a scaling-study search arm (MCTS with the value model by default, at N = 4) on a few of the
study's problems through ``x1 eval``'s own ``evaluate``, twice: with the trained evaluator keeping
the paths it scored (``kv_memo``, the default) and with ``?cache_mb=0``'s behaviour (nothing kept).
The problems' seeds are fixed and the scores agree to float rounding, so both runs grow the same
trees; the table gives the evaluator's CPU and wall seconds, the whole run's, and the tokens the
backbone ran against those it scored.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from x1.evaluators import shared_prefix
from x1.evaluators.value_model import HeadedLM
from x1.pipelines.evaluate import evaluate
from x1.pipelines.scale import ScaleConfig, cell_config, load_study_tasks

console = Console(width=150)


def run(study: ScaleConfig, arm_name: str, budget: int, tasks: list, keep: bool) -> dict[str, Any]:  # type: ignore[type-arg]
    arm = next(a for a in study.arms if a.name == arm_name)
    config = cell_config(study, arm, budget)
    config.search.max_active = len(tasks)
    stats: dict[str, Any] = {"scored": 0, "run": 0, "cpu": 0.0, "wall": 0.0}
    position_logits, forward_rows = HeadedLM.position_logits, shared_prefix.forward_rows

    def timed(self, seqs, batch_size=None):  # type: ignore[no-untyped-def]
        if not keep:
            self.kv_memo = None
        stats["scored"] += sum(map(len, seqs))
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            return position_logits(self, seqs, batch_size)
        finally:
            stats["cpu"] += time.process_time() - cpu
            stats["wall"] += time.perf_counter() - wall

    def counted(backbone, rows, device, keep_rows):  # type: ignore[no-untyped-def]
        stats["run"] += sum(len(tokens) for _, tokens in rows)
        return forward_rows(backbone, rows, device, keep_rows)

    HeadedLM.position_logits, shared_prefix.forward_rows = timed, counted  # type: ignore[method-assign]
    cpu, wall = time.process_time(), time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as folder:
            result = evaluate(tasks, config, Path(folder) / "run", study.task, resume=False)
    finally:
        HeadedLM.position_logits, shared_prefix.forward_rows = position_logits, forward_rows  # type: ignore[method-assign]
    stats.update(total_cpu=time.process_time() - cpu, total_wall=time.perf_counter() - wall, correct=result.correct)
    return stats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", default="examples/scale-arithmetic.yaml")
    parser.add_argument("--cell-arm", default="mcts-value", help="a search arm of the study that uses a trained evaluator")
    parser.add_argument("--budget", type=int, default=4)
    parser.add_argument("--problems", type=int, default=6, help="problems, all in flight at once")
    parser.add_argument("--first", type=int, default=150, help="index of the first of the study's problems")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    study = ScaleConfig.from_yaml(args.study)
    tasks = load_study_tasks(study)[0][args.first : args.first + args.problems]
    table = Table("evaluator keeps", "evaluator CPU s", "evaluator s", "run CPU s", "run s", "tokens scored", "tokens run",
                  "right", title=f"{args.cell_arm} N={args.budget}, {len(tasks)} study problems in flight, {args.threads} threads")
    rows = {keep: run(study, args.cell_arm, args.budget, tasks, keep) for keep in (True, False)}
    for keep, s in rows.items():
        table.add_row("scored paths" if keep else "nothing", f"{s['cpu']:.0f}", f"{s['wall']:.0f}", f"{s['total_cpu']:.0f}",
                      f"{s['total_wall']:.0f}", str(s["scored"]), f"{s['run']} ({s['run'] / max(s['scored'], 1):.0%})",
                      f"{s['correct']}/{len(tasks)}")
    console.print(table)
    kept, none = rows[True], rows[False]
    console.print(f"evaluator: {none['cpu'] / max(kept['cpu'], 1e-9):.2f}x less CPU with kept paths; "
                  f"whole run: {none['total_cpu'] / max(kept['total_cpu'], 1e-9):.2f}x less CPU, "
                  f"{none['total_wall'] / max(kept['total_wall'], 1e-9):.2f}x less wall time")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
