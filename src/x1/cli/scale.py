"""`x1 scale`: the test-time-compute scaling study (x1.pipelines.scale); ``x1.cli`` registers it on the app."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from x1.cli.progress import RunProgress
from x1.cli.root import console, err_console, fail


def scale_command(
    config: Annotated[Path, typer.Argument(help="study YAML: task, n, budgets, arms (see examples/scale-arithmetic.yaml)")],
    out: Annotated[Path | None, typer.Option("--out", help="study directory (default runs/scale-CONFIGNAME); re-run to resume")] = None,
    n: Annotated[int | None, typer.Option("--n", min=1, help="override the study's number of problems (a smaller pilot)")] = None,
    budgets: Annotated[str | None, typer.Option("--budgets", help="run only these budgets, e.g. 1,4 (the report covers all)")] = None,
    arms: Annotated[str | None, typer.Option("--arms", help="run only these arms, comma-separated (the report covers all)")] = None,
    report_only: Annotated[bool, typer.Option("--report-only", help="rewrite the report from finished cells; run nothing")] = False,
) -> None:
    """Test-time-compute scaling: a grid of strategies × budgets on one task, resumable; writes results.json, scaling.md and scaling.png."""
    from x1.config import ConfigError
    from x1.models.base import BackendError
    from x1.pipelines.evaluate import EvalError
    from x1.pipelines.scale import ScaleConfig, grid, load_study_tasks, run_study
    from x1.pipelines.scale_report import write_report
    from x1.tasks.base import TaskError

    try:
        study = ScaleConfig.from_yaml(config)
        if n is not None:
            study.n = n
        full = study.model_copy(deep=True)  # what the report covers: every arm and budget of the YAML
        if budgets:
            try:
                wanted_budgets = sorted({int(b) for b in budgets.split(",") if b.strip()})
            except ValueError:
                fail(f"--budgets {budgets!r} must be integers separated by commas, e.g. 1,4,16")
            if not wanted_budgets or min(wanted_budgets) < 1:
                fail(f"--budgets {budgets!r} must name budgets of 1 or more, e.g. 1,4,16")
            study.budgets = wanted_budgets
            # an arm with budgets of its own runs those among the chosen ones, and none if none are
            study.arms = [a for a in study.arms if not a.budgets or set(a.budgets) & set(wanted_budgets)]
            for arm in study.arms:
                if arm.budgets:
                    arm.budgets = [b for b in arm.budgets if b in wanted_budgets]
        if arms:
            wanted = [a.strip() for a in arms.split(",") if a.strip()]
            unknown = sorted(set(wanted) - {a.name for a in full.arms})
            if unknown:
                fail(f"--arms names unknown arm(s) {unknown}; the study has: {', '.join(a.name for a in full.arms)}")
            # a re-vote reads its source arm's chains, so the source comes along (its finished cells are skipped)
            sources = sorted({a.revote for a in study.arms if a.name in wanted and a.revote and a.revote not in wanted})
            if sources:
                err_console.print(f"--arms: re-votes read the chains of {', '.join(sources)}, which run(s) too where unfinished")
                wanted += sources
            study.arms = [a for a in study.arms if a.name in wanted]
        if not study.arms:
            fail("--arms and --budgets leave no cell to run; fix: name an arm that has one of those budgets")
        names = {a.name for a in study.arms}
        if study.baseline not in names:
            study.baseline = study.arms[0].name
        if study.reference not in names:
            study.reference = None
        if study.auc_arm not in names:
            study.auc_arm = None
        study.check()
        out_dir = out or Path("runs") / f"scale-{config.stem}"
        tasks, dropped = load_study_tasks(study)
        if not tasks:
            fail(f"task {study.task!r} gave no problems; fix: check the task spec and its options")
        if dropped:
            err_console.print(f"{dropped} problem(s) left out: the evaluators' training traces hold them (exclude_traces)")

        def scoring(spec: str, cell: str, chains: int) -> None:
            err_console.print(f"scoring {chains:,} chains of {cell} with {spec} for its AUC (kept in auc.json for the next report)",
                              markup=False, highlight=False, soft_wrap=True)

        if report_only:
            write_report(full, out_dir, tasks, scoring)
        else:
            cells = grid(study)
            # a bar (or dated lines) per cell: cells differ in cost by 30x, so only a cell's own pace says when it ends
            current: list[RunProgress] = []
            announced = [0]  # cells announced so far (run_study announces each once)
            right = [0, 0]

            def close() -> None:
                while current:
                    current.pop().__exit__(None, None, None)

            def on_cell(arm: str, budget: int, done: int, total: int) -> None:
                close()
                right[:] = [0, 0]
                announced[0] += 1
                label = f"cell {announced[0]}/{len(cells)}: {arm} N={budget}"
                current.append(RunProgress(label, total, done=done, remaining=True).__enter__())

            def on_done(correct: bool) -> None:
                right[0] += correct
                right[1] += 1
                if current:
                    current[0].advance(1, status=f"{right[0]}/{right[1]} right in this run")

            try:
                run_study(study, out_dir, tasks, on_cell=on_cell, on_done=on_done, report=full,  # the report: every cell of the YAML
                          on_scoring=scoring)
            finally:
                close()
    except (BackendError, ConfigError, EvalError, TaskError, ValueError) as err:
        fail(str(err))
    console.print((out_dir / "scaling.md").read_text(), markup=False, highlight=False, soft_wrap=True)
    console.print(f"study: {out_dir} (results.json, scaling.md, scaling.png, runs/)")
