"""`x1 view` and `x1 report`: HTML pages of traces and eval runs (x1.view); ``x1.cli`` registers them on the app."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from x1.cli.root import err_console, fail


def view_command(
    source: Annotated[Path, typer.Argument(help="a trace (JSONL), an `x1 eval` run directory, or a graph / trace record (JSON)")],
    problem: Annotated[str | None, typer.Option("--problem", help="task id of the problem to show (default: all, with a picker)")] = None,
    out: Annotated[Path, typer.Option("--out", help="the HTML file to write")] = Path("tree.html"),
) -> None:
    """Write one self-contained HTML page that draws the reasoning graph(s) of a trace: open it in any browser, offline."""
    from x1.view.load import ViewError
    from x1.view.page import write_view

    try:
        n = write_view(source, out, problem)
    except ViewError as err:
        fail(str(err))
    err_console.print(f"wrote {out} ({n} problem{'s' if n != 1 else ''}); open it in a browser: file://{out.resolve()}", soft_wrap=True)


def report_command(
    runs: Annotated[list[Path], typer.Argument(help="`x1 eval` run directories (each holds traces.jsonl and results.json)")],
    out: Annotated[Path, typer.Option("--out", help="the HTML report to write; plots and viewer pages go beside it")] = Path("report.html"),
) -> None:
    """An HTML report of one or more eval runs: accuracy with intervals, compute, plots, and viewer pages per problem."""
    from x1.view.load import ViewError
    from x1.view.report import write_report

    try:
        written = write_report(runs, out)
    except ViewError as err:
        fail(str(err))
    err_console.print(f"wrote {out} with {written.plots} plot(s) and {written.views} viewer page(s); open file://{out.resolve()}",
                      soft_wrap=True)
