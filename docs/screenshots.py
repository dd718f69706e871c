"""Take the README's screenshots of `x1 view` and `x1 report` pages in headless Chromium.

    python docs/screenshots.py --view runs/eval-mcts/traces.jsonl --problem samples:1 --report report.html

Writes docs/viewer.png (the tree with the answer thought selected, so the detail panel and its
token strip show) and docs/report.png (the top of the report, with its plots); with
--aggregate TRACE docs/viewer-aggregate.png (a graph with an aggregate thought selected), with
--signals TRACE docs/viewer-entropy.png (the second thought with per-token entropy selected).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from x1.trace import read_traces
from x1.view.page import write_view

DOCS = Path(__file__).parent


def shoot_view(browser, trace: Path, problem: str | None, out: Path, pick: str) -> None:  # type: ignore[no-untyped-def]
    """Write the page, open it, select a thought (the answer, or the first aggregate), screenshot."""
    records = [r for r in read_traces(trace) if problem is None or r["task_id"] == problem]
    record = records[-1]
    if pick == "aggregate":
        selected = next(t["id"] for t in record["graph"]["thoughts"] if len(t["parents"]) > 1)
    elif pick == "signals":
        selected = [t["id"] for t in record["graph"]["thoughts"] if t["meta"].get("token_signals")][1]
    else:
        selected = record["answer_thought"]
    with tempfile.TemporaryDirectory() as tmp:
        page_path = Path(tmp) / "view.html"
        write_view(trace, page_path, record["task_id"])
        page = browser.new_page(viewport={"width": 1400, "height": 780})
        page.goto(page_path.resolve().as_uri())
        page.wait_for_selector("body[data-ready='1']")
        page.evaluate(f"window.x1view.select({json.dumps(selected)}, false)")
        page.screenshot(path=str(out))
        page.close()


def shoot_report(browser, report: Path, out: Path) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": 1250, "height": 900})
    page.goto(report.resolve().as_uri())
    page.wait_for_load_state("load")
    page.screenshot(path=str(out))
    page.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--view", type=Path, required=True, help="trace for docs/viewer.png")
    parser.add_argument("--problem", help="its task id (default: the last record)")
    parser.add_argument("--aggregate", type=Path, help="trace with an aggregate thought, for docs/viewer-aggregate.png")
    parser.add_argument("--signals", type=Path, help="trace with per-token signals (-s adaptive), for docs/viewer-entropy.png")
    parser.add_argument("--report", type=Path, required=True, help="an `x1 report` page for docs/report.png")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("google-chrome")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        shoot_view(browser, args.view, args.problem, DOCS / "viewer.png", "answer")
        if args.aggregate:
            shoot_view(browser, args.aggregate, None, DOCS / "viewer-aggregate.png", "aggregate")
        if args.signals:
            shoot_view(browser, args.signals, None, DOCS / "viewer-entropy.png", "signals")
        shoot_report(browser, args.report, DOCS / "report.png")
        browser.close()


if __name__ == "__main__":
    main()
