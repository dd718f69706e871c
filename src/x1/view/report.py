"""`x1 report`: what one or more `x1 eval` runs measured, as an HTML page with PNG plots and viewer links.

A run directory holds ``traces.jsonl`` (one record per finished problem) and, once the run
ended, ``results.json``. The numbers are recomputed from the trace (the same ``summarize`` as
``x1 eval``), so an interrupted run is reported too; its wall time comes from ``elapsed.json``.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from x1.trace import TraceError, read_traces
from x1.view.load import ViewError
from x1.view.page import render_page
from x1.view.scene import problem_data

MATPLOTLIB_MISSING = "matplotlib is not installed; fix: pip install 'x1[view]'"


@dataclass
class Run:
    """One run directory, summarised."""

    label: str
    path: Path
    task: str
    strategy: str
    model: str
    records: list[dict[str, Any]]
    accuracy: float
    ci_low: float
    ci_high: float
    generated_tokens: int
    prompt_tokens: int
    policy_calls: int
    wall_s: float

    @property
    def n(self) -> int:
        return len(self.records)

    @property
    def correct(self) -> int:
        return sum(bool(r.get("correct")) for r in self.records)

    @property
    def tokens_per_problem(self) -> float:
        return (self.generated_tokens + self.prompt_tokens) / self.n if self.n else 0.0


@dataclass
class Written:
    plots: int
    views: int


def load_run(path: Path, label: str) -> Run:
    """Summarise a run directory from its trace; bad input is one ViewError line."""
    from x1.pipelines.evaluate import summarize

    if not path.is_dir():
        raise ViewError(f"{path} is not a directory; fix: pass the --out directory of an `x1 eval` run")
    trace = path / "traces.jsonl"
    if not trace.exists():
        raise ViewError(f"{path} has no traces.jsonl; is it an `x1 eval` run directory?")
    try:
        by_id = {r["task_id"]: r for r in read_traces(trace)}  # a resumed run may repeat a task: the last record counts
    except (TraceError, KeyError) as err:
        raise ViewError(f"{trace} is not an x1 trace: {err}") from err
    if not by_id:
        raise ViewError(f"{trace} holds no finished problems yet")
    records = list(by_id.values())
    results = json.loads((path / "results.json").read_text()) if (path / "results.json").exists() else {}
    elapsed = path / "elapsed.json"
    wall = results.get("wall_s")
    if wall is None:
        wall = json.loads(elapsed.read_text())["wall_s"] if elapsed.exists() else sum(r.get("wall_s", 0) for r in records)
    try:
        s = summarize(records, results.get("task", records[0].get("source", "?")), records[0].get("strategy", "?"),
                      records[0].get("model", "?"), float(wall), 0)
    except (KeyError, TypeError) as err:
        raise ViewError(f"{trace}: a record lacks {err}; is it an x1 trace?") from err
    return Run(label, path, s.task, s.strategy, s.model, records, s.accuracy, s.ci_low, s.ci_high, s.generated_tokens,
               s.prompt_tokens, s.policy_calls, s.wall_s)


def _labels(paths: list[Path]) -> list[str]:
    """Directory names, made unique (two runs/…/x folders must not share their viewer pages)."""
    labels: list[str] = []
    for p in paths:
        base = safe_name(p.resolve().name) or "run"
        label, k = base, 2
        while label in labels:
            label, k = f"{base}-{k}", k + 1
        labels.append(label)
    return labels


def safe_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(text))[:80]


# -- plots --------------------------------------------------------------------------------
def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as err:
        raise ViewError(MATPLOTLIB_MISSING) from err
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy(runs: list[Run], out: Path) -> None:
    """Accuracy per run with its 95% bootstrap interval."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.5, 1.3 * len(runs) + 2), 3.4), dpi=110)
    xs = range(len(runs))
    acc = [r.accuracy for r in runs]
    err = [[r.accuracy - r.ci_low for r in runs], [r.ci_high - r.accuracy for r in runs]]
    ax.bar(xs, acc, color="#4c8bd6", yerr=err, capsize=5, ecolor="#24292f")
    for x, r in zip(xs, runs, strict=True):
        ax.text(x, min(1.02, r.ci_high + 0.02), f"{r.accuracy:.0%}", ha="center", va="bottom", fontsize=9)
    ax.set_xticks(list(xs), [r.label for r in runs], rotation=20 if len(runs) > 3 else 0, ha="right" if len(runs) > 3 else "center")
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("accuracy (95% CI)")
    ax.set_title("accuracy per run")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def plot_compute(runs: list[Run], out: Path) -> None:
    """Accuracy against tokens per problem (prefilled + generated): what more compute buys."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 3.6), dpi=110)
    for r in runs:
        x = r.tokens_per_problem
        ax.errorbar([x], [r.accuracy], yerr=[[r.accuracy - r.ci_low], [r.ci_high - r.accuracy]], fmt="o", capsize=4, label=r.label)
        ax.annotate(r.label, (x, r.accuracy), textcoords="offset points", xytext=(6, 6), fontsize=8)
    ax.set_xscale("log")
    ax.margins(x=0.25)  # room for the labels of the outermost runs
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("tokens per problem (prefilled + generated, log)")
    ax.set_ylabel("accuracy (95% CI)")
    ax.set_title("accuracy against compute")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def plot_tokens(runs: list[Run], out: Path) -> None:
    """Tokens per problem, right and wrong side by side: does search spend more on the problems it misses?"""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.5, 1.3 * len(runs) + 2), 3.4), dpi=110)
    labelled: set[bool] = set()
    for i, r in enumerate(runs):
        for dx, correct, colour in ((-0.18, True, "#2da44e"), (0.18, False, "#cf222e")):
            ys = [rec["compute"]["prompt_tokens"] + rec["compute"]["generated_tokens"]
                  for rec in r.records if bool(rec.get("correct")) == correct]
            if ys:
                label = None if correct in labelled else ("right" if correct else "wrong")
                labelled.add(correct)
                ax.scatter([i + dx] * len(ys), ys, s=14, alpha=0.6, color=colour, label=label)
    ax.set_xticks(range(len(runs)), [r.label for r in runs], rotation=20 if len(runs) > 3 else 0)
    ax.set_yscale("log")
    ax.set_ylabel("tokens per problem (log)")
    ax.set_title("compute per problem, right vs wrong")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


# -- the page ---------------------------------------------------------------------------------
CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1100px; color: #1d232a; padding: 0 16px; }
table { border-collapse: collapse; margin: 8px 0 18px; } td, th { padding: 4px 10px; border-bottom: 1px solid #e5e7eb; text-align: left; }
th { background: #f3f4f6; } .ok { color: #1a7f37; } .bad { color: #cf222e; }
.plots { display: flex; flex-wrap: wrap; gap: 10px; } .plots img { width: calc(50% - 10px); }
.problems a { margin-right: 6px; } code { background: #f3f4f6; padding: 1px 4px; border-radius: 3px; }
"""


def _e(value: object) -> str:
    return html.escape(str(value))


def run_table(runs: list[Run]) -> str:
    head = ("run", "task", "strategy", "model", "n", "accuracy (95% CI)", "tokens generated / prefilled", "tokens / problem",
            "policy calls", "wall")
    rows = []
    for r in runs:
        cells = (r.label, r.task, r.strategy, r.model, r.n, f"{r.correct}/{r.n} = {r.accuracy:.1%} [{r.ci_low:.1%}, {r.ci_high:.1%}]",
                 f"{r.generated_tokens} / {r.prompt_tokens}", f"{r.tokens_per_problem:.0f}", r.policy_calls, f"{r.wall_s:.1f} s")
        rows.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    return "<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>"


def problem_links(run: Run, views: dict[str, str]) -> str:
    parts = []
    for correct, title, cls in ((True, "right", "ok"), (False, "wrong", "bad")):
        links = [f'<a class="{cls}" href="{_e(views[r["task_id"]])}">{_e(r["task_id"])}</a>'
                 for r in run.records if bool(r.get("correct")) == correct]
        parts.append(f"<p><b class=\"{cls}\">{title} ({len(links)})</b>: {' '.join(links) or '—'}</p>")
    return f'<div class="problems">{"".join(parts)}</div>'


def write_views(run: Run, folder: Path) -> dict[str, str]:
    """One viewer page per problem; task id → its path relative to the report."""
    folder.mkdir(parents=True, exist_ok=True)
    pages: dict[str, str] = {}
    used: set[str] = set()
    for record in run.records:
        name = safe_name(record["task_id"]) or "problem"
        while name in used:
            name += "_"
        used.add(name)
        (folder / f"{name}.html").write_text(render_page([problem_data(record)], f"x1 view · {run.label} · {record['task_id']}"),
                                             encoding="utf-8")
        pages[record["task_id"]] = f"{folder.parent.name}/{folder.name}/{name}.html"
    return pages


def write_report(paths: list[Path], out: Path) -> Written:
    """The report page, its plots under ``<out stem>_files/`` and a viewer page per problem."""
    if not paths:
        raise ViewError("no run directories given; fix: x1 report runs/eval-A runs/eval-B")
    runs = [load_run(p, label) for p, label in zip(paths, _labels(paths), strict=True)]
    _pyplot()  # fail before writing anything when matplotlib is missing
    assets = out.parent / f"{out.stem}_files"
    assets.mkdir(parents=True, exist_ok=True)
    plots = [("accuracy.png", plot_accuracy), ("tokens.png", plot_tokens)]
    if len(runs) > 1:
        plots.insert(1, ("compute.png", plot_compute))
    for name, plot in plots:
        plot(runs, assets / name)
    views = 0
    sections = []
    for run in runs:
        pages = write_views(run, assets / safe_name(run.label))
        views += len(pages)
        sections.append(f"<h3>{_e(run.label)}</h3><p><code>{_e(run.path)}</code></p>{problem_links(run, pages)}")
    images = '<div class="plots">' + "".join(f'<img src="{_e(assets.name)}/{name}" alt="{name[:-4]}">' for name, _ in plots) + "</div>"
    page = (
        f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><link rel=\"icon\" href=\"data:,\"><title>x1 report</title>"
        f"<style>{CSS}</style></head><body><h1>x1 report</h1>"
        f"<p>{len(runs)} run(s). Accuracy intervals are 95% percentile bootstrap intervals over problems; tokens count "
        "prefilled plus generated.</p>"
        f"{run_table(runs)}<h2>Plots</h2>{images}<h2>Problems</h2>"
        "<p>Each link opens the problem's reasoning graph in the viewer (<code>x1 view</code>).</p>"
        f"{''.join(sections)}</body></html>"
    )
    out.write_text(page, encoding="utf-8")
    return Written(plots=len(plots), views=views)
