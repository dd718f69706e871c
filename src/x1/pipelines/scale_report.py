"""The scaling study's report: accuracy with intervals per cell, paired differences, a plot.

Two arms are compared on the problems both finished, with a paired bootstrap of the per-problem
difference: the arms share problems, so pairing removes the problems' own difficulty from the
interval and separates arms that unpaired intervals (which overlap) cannot.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from x1.pipelines.evaluate import EvalResult, bootstrap_ci, summarize
from x1.pipelines.run_clock import Elapsed, read_elapsed
from x1.pipelines.scale import ScaleConfig, cell_dir, grid, read_cell
from x1.tasks.base import Task


@dataclass
class Cell:
    """One arm at one budget: the eval summary of its finished problems, plus per-problem token means."""

    arm: str
    budget: int
    summary: EvalResult
    generated_tokens: float  # mean per problem
    prompt_tokens: float  # mean per problem (prefilled)
    # share of problems where some finished chain is right: what the best vote or selection over these chains reaches
    coverage: float = 0.0
    distinct_answers: float = 0.0  # mean per problem, among the finished chains


@dataclass
class Comparison:
    arm: str
    budget: int
    against: str
    against_budget: int
    n: int  # problems both finished
    difference: float  # accuracy of arm minus accuracy of `against`, on those problems
    ci_low: float
    ci_high: float


def paired_bootstrap(a: list[float], b: list[float], confidence: float = 0.95, resamples: int = 4000,
                     seed: int = 0) -> tuple[float, float, float]:
    """Mean of a - b, with a percentile bootstrap interval that resamples problems (pairs), not arms."""
    if len(a) != len(b):
        raise ValueError("paired samples must have the same length")
    if not a:
        return 0.0, 0.0, 0.0
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    lo, hi = bootstrap_ci(diffs, confidence, resamples, seed)  # the bootstrap of a mean, over per-problem differences
    return sum(diffs) / len(diffs), lo, hi


def _cell(study: ScaleConfig, out_dir: Path, arm_name: str, budget: int, records: list[dict], tasks: dict[str, Task]) -> Cell:
    elapsed = read_elapsed(cell_dir(out_dir, arm_name, budget)) or Elapsed(0.0, None)
    arm = next(a for a in study.arms if a.name == arm_name)
    summary = summarize(records, study.task, arm.strategy, arm.model or study.model.name, elapsed.wall_s, 0, elapsed.cpu_s)
    n = max(1, summary.n)
    covered, distinct = coverage(records, tasks)
    return Cell(arm_name, budget, summary, summary.generated_tokens / n, summary.prompt_tokens / n, covered, distinct)


def coverage(records: list[dict], tasks: dict[str, Task]) -> tuple[float, float]:
    """(share of problems with a right finished chain, mean distinct answers among the finished chains).

    Selection can only pick what was generated: a search whose finished chains share their prefixes
    may cover fewer problems than as many independent samples, and then no vote or evaluator catches up.
    """
    right = distinct = 0
    for record in records:
        task = tasks[record["task_id"]]
        answers = {t.get("answer") for t in record["graph"]["thoughts"] if t.get("terminal") and t.get("answer") is not None}
        distinct += len(answers)
        right += any(task.verify(a).score >= 1.0 - 1e-9 for a in answers)
    return right / max(1, len(records)), distinct / max(1, len(records))


def _compare(arm: str, budget: int, mine: dict[str, dict], against: str, against_budget: int, theirs: dict[str, dict],
             order: list[str]) -> Comparison | None:
    shared = [tid for tid in order if tid in mine and tid in theirs]
    if not shared:
        return None
    a = [1.0 if mine[t]["correct"] else 0.0 for t in shared]
    b = [1.0 if theirs[t]["correct"] else 0.0 for t in shared]
    diff, lo, hi = paired_bootstrap(a, b)
    return Comparison(arm, budget, against, against_budget, len(shared), diff, lo, hi)


Records = dict[tuple[str, int], dict[str, dict]]  # (arm, budget) → task id → trace record


def read_cells(study: ScaleConfig, out_dir: Path, tasks: list[Task]) -> Records:
    """Every cell's finished records on the evaluation problems, read once for the whole report."""
    ids = {t.id for t in tasks}
    return {(arm.name, b): {k: v for k, v in read_cell(out_dir, arm.name, b).items() if k in ids} for arm, b in grid(study)}


def collect(study: ScaleConfig, out_dir: Path, tasks: list[Task], records: Records) -> tuple[list[Cell], list[Comparison]]:
    """Cells with at least one finished problem, and every arm compared with the baseline (same N) and the reference."""
    order = [t.id for t in tasks]
    by_id = {t.id: t for t in tasks}
    cells = [_cell(study, out_dir, arm, b, [recs[t] for t in order if t in recs], by_id) for (arm, b), recs in records.items() if recs]
    comparisons: list[Comparison] = []
    for (arm, b), recs in records.items():
        if not recs:
            continue
        targets = []
        if arm != study.baseline:
            targets.append((study.baseline, b))
        if study.reference and arm != study.reference:
            ref_arm = next(a for a in study.arms if a.name == study.reference)
            targets.append((study.reference, study.arm_budgets(ref_arm)[0]))
        for against, against_b in targets:
            if any((d.arm, d.budget, d.against, d.against_budget) == (against, against_b, arm, b) for d in comparisons):
                continue  # the same pair the other way round
            theirs = records.get((against, against_b), {})
            found = _compare(arm, b, recs, against, against_b, theirs, order)
            if found:
                comparisons.append(found)
    return cells, comparisons


def evaluator_aucs(study: ScaleConfig, out_dir: Path, tasks: list[Task], records: Records,
                   on_scoring: Callable[[str, str, int], None] | None = None) -> list[Any]:
    """AUC of each listed evaluator on the chains of the AUC arm's largest finished budget (held-out problems)."""
    if not study.auc:
        return []
    from x1.pipelines.scale_auc import cached_auc, scores_given

    arm_name = study.auc_arm or study.baseline
    arm = next(a for a in study.arms if a.name == arm_name)
    ids = {t.id for t in tasks}
    cells = [(b, list(records.get((arm_name, b), {}).values())) for b in sorted(study.arm_budgets(arm), reverse=True)]
    # a finished cell first (a cell just started would give an AUC on a handful of problems), else the fullest one
    whole = [(b, chains) for b, chains in cells if chains and len(chains) == len(ids)]
    started = sorted(((b, chains) for b, chains in cells if chains), key=lambda c: -len(c[1]))
    for budget, chains in (whole or started)[:1]:
        # re-votes of these very chains already scored them: their scores stand in, so only the chains they lack are scored
        revotes = [r for a in study.arms if a.revote == arm_name for r in records.get((a.name, budget), {}).values()]
        return [cached_auc(out_dir, spec, f"{arm_name}-N{budget}", chains, tasks, known=scores_given(spec, revotes),
                           on_scoring=on_scoring) for spec in study.auc]
    return []


def _uses_evaluator(study: ScaleConfig, arm_name: str) -> bool:
    arm = next(a for a in study.arms if a.name == arm_name)
    return bool(arm.params.get("evaluator")) and arm.params.get("evaluator") != "confidence"


def answers(study: ScaleConfig, cells: list[Cell], comparisons: list[Comparison]) -> list[str]:
    """The two questions the study asks, answered from the finished cells (or why they cannot be yet)."""

    def find(arm: str, budget: int, against: str) -> Comparison | None:
        return next((d for d in comparisons if (d.arm, d.budget, d.against) == (arm, budget, against)), None)

    def said(d: Comparison | None) -> str:
        if d is None:
            return "no shared problems yet"
        verdict = "better" if d.ci_low > 0 else "worse" if d.ci_high < 0 else "no difference the data can tell"
        return f"{d.difference:+.1%} [{d.ci_low:+.1%}, {d.ci_high:+.1%}] on {d.n} problems: {verdict}"

    out = ["", "## The questions", ""]
    # a cell still running has its quick problems only: it answers a question only where no finished cell can
    total = max((c.summary.n for c in cells), default=0)
    running = [c for c in cells if c.summary.n < total]

    def finished_first(candidates: list[Cell]) -> list[Cell]:
        return [c for c in candidates if c.summary.n == total] or candidates

    guided = [c for c in cells if _uses_evaluator(study, c.arm)]
    if not guided:
        out.append("(a) Search with a trained evaluator against majority voting: no evaluator-guided cell has finished yet.")
    for budget in sorted({c.budget for c in guided}):
        best = max(finished_first([c for c in guided if c.budget == budget]), key=lambda c: (c.summary.accuracy, -c.generated_tokens))
        base = next((c for c in cells if c.arm == study.baseline and c.budget == budget), None)
        tokens = f", {best.generated_tokens:.0f} vs {base.generated_tokens:.0f} generated tokens" if base else ""
        out.append(f"(a) N={budget}: the best evaluator-guided arm, {best.arm}, against {study.baseline}: "
                   f"{said(find(best.arm, budget, study.baseline))}{tokens}.")
    if study.reference:
        own = [c for c in cells if c.arm != study.reference and c.summary.model == study.model.name]
        if own:
            best = max(finished_first(own), key=lambda c: (c.summary.accuracy, -c.generated_tokens))
            out.append(f"(b) The policy's best cell, {best.arm} at N={best.budget}, against {study.reference}: "
                       f"{said(find(best.arm, best.budget, study.reference))}.")
    if running:
        out.append("Still running, and left out of the answers where a finished cell exists: "
                   + ", ".join(f"{c.arm} at N={c.budget} ({c.summary.n} of {total})" for c in running) + ".")
    return out


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(map(str, row)) + " |" for row in rows]


def markdown(study: ScaleConfig, cells: list[Cell], comparisons: list[Comparison], plot_name: str | None,
             aucs: list[Any] | None = None) -> str:
    def pct(value: float, lo: float, hi: float, sign: str = "") -> str:
        return f"{value:{sign}.1%} [{lo:{sign}.1%}, {hi:{sign}.1%}]"

    lines = [f"# Test-time-compute scaling: {study.task}", "",
             f"{study.n} problems (seed {study.seed}), policy `{study.model.name}`, budgets N = {', '.join(map(str, study.budgets))}. "
             "Accuracy with a 95% bootstrap interval; tokens are means per problem.", ""]
    lines += _table(["arm", "strategy", "model", "N", "n", "accuracy [95% CI]", "coverage", "answers", "generated tok", "prefilled tok",
                     "evaluator tok", "wall", "CPU"],
                    [[c.arm, c.summary.strategy, c.summary.model, c.budget, c.summary.n,
                      pct(c.summary.accuracy, c.summary.ci_low, c.summary.ci_high), f"{c.coverage:.1%}", f"{c.distinct_answers:.1f}",
                      f"{c.generated_tokens:.0f}",
                      f"{c.prompt_tokens:.0f}",
                      "—" if c.summary.evaluator_tokens is None else f"{c.summary.evaluator_tokens / max(1, c.summary.n):.0f}",
                      f"{c.summary.wall_s:.0f} s", "—" if c.summary.cpu_s is None else f"{c.summary.cpu_s:.0f} s"] for c in cells])
    lines += ["", "Coverage: the share of problems where some finished chain is right, which no vote or evaluator over "
              "the cell's chains can exceed; answers: distinct answers among a problem's finished chains. "
              "Evaluator tok: positions a trained evaluator's model ran per problem, padding included, after the "
              "prefixes its paths share and the caches it kept (its own model, smaller than the policy, so not "
              "comparable token for token). Wall time counts every session of a cell and whatever else the machine "
              "ran meanwhile; CPU is the cell's own CPU seconds (all its threads), which a pause does not inflate and "
              "other jobs inflate less (threads that spin while waiting still count). "
              "— : some session of the cell predates that count."]
    lines += answers(study, cells, comparisons)
    if comparisons:
        lines += ["", "## Paired differences (same problems)", "",
                  "Accuracy of the arm minus the other, on the problems both finished; 95% paired bootstrap interval. "
                  "An interval that excludes 0 is a difference the data can tell.", ""]
        lines += _table(["arm", "N", "against", "N", "n", "difference [95% CI]"],
                        [[d.arm, d.budget, d.against, d.against_budget, d.n, pct(d.difference, d.ci_low, d.ci_high, "+")]
                         for d in comparisons])
    if aucs:
        lines += ["", "## Evaluators on held-out problems", "",
                  "Every finished chain of the cell, labelled by the task's verifier and scored by the evaluator; "
                  "the 95% intervals resample problems. *Pooled*: any right chain against any wrong one. *Within a problem*: "
                  "a right chain against a wrong one of the same problem, over the problems that have both; reranking and "
                  "search choose within a problem, so this is the AUC that decides them.", ""]

        def with_ci(value: float | None, lo: float | None, hi: float | None) -> str:
            return "—" if value is None else f"{value:.3f}" + ("" if lo is None else f" [{lo:.3f}, {hi:.3f}]")

        lines += _table(["evaluator", "chains of", "problems", "chains", "correct chains", "pooled AUC [95% CI]",
                         "problems with both", "within-problem AUC [95% CI]"],
                        [[f"`{a.evaluator}`", a.cell, a.problems, a.chains, a.positives, with_ci(a.auc, a.ci_low, a.ci_high),
                          a.mixed_problems, with_ci(a.within_auc, a.within_ci_low, a.within_ci_high)] for a in aucs])
    if plot_name:
        lines += ["", f"![accuracy against generated tokens]({plot_name})"]
    return "\n".join(lines) + "\n"


def plot(cells: list[Cell], path: Path) -> bool:
    """Accuracy against mean generated tokens, one line per arm with its interval band; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arm in dict.fromkeys(c.arm for c in cells):
        mine = sorted((c for c in cells if c.arm == arm), key=lambda c: c.generated_tokens)
        xs = [c.generated_tokens for c in mine]
        ys = [c.summary.accuracy for c in mine]
        line = ax.plot(xs, ys, marker="o", label=arm)[0]
        for c in mine:
            ax.annotate(f"N={c.budget}", (c.generated_tokens, c.summary.accuracy), textcoords="offset points", xytext=(4, 4), fontsize=7,
                        color=line.get_color())
        ax.fill_between(xs, [c.summary.ci_low for c in mine], [c.summary.ci_high for c in mine], alpha=0.15, color=line.get_color())
        if len(mine) == 1:
            only = mine[0].summary
            ax.errorbar(xs, ys, yerr=[[ys[0] - only.ci_low], [only.ci_high - ys[0]]], color=line.get_color(), capsize=3)
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("generated tokens per problem (mean)")
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_report(study: ScaleConfig, out_dir: Path, tasks: list[Task],
                 on_scoring: Callable[[str, str, int], None] | None = None) -> dict[str, Any]:
    """results.json, scaling.md and scaling.png from whatever cells have finished problems (a partial study reports too).

    ``on_scoring(spec, cell, chains)`` announces chains an evaluator scores for its AUC (see ``evaluator_auc``).
    """
    records = read_cells(study, out_dir, tasks)
    cells, comparisons = collect(study, out_dir, tasks, records)
    aucs = evaluator_aucs(study, out_dir, tasks, records, on_scoring)
    plotted = plot(cells, out_dir / "scaling.png") if cells else False
    (out_dir / "scaling.md").write_text(markdown(study, cells, comparisons, "scaling.png" if plotted else None, aucs))
    result = {"study": study.model_dump(mode="json"), "cells": [asdict(c) for c in cells],
              "comparisons": [asdict(d) for d in comparisons], "evaluator_auc": [asdict(a) for a in aucs]}
    tmp = out_dir / "results.json.tmp"
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out_dir / "results.json")
    (out_dir / "study.json").write_text(json.dumps(result["study"], indent=2))  # the study the report covers
    return result
