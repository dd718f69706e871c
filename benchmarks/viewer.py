"""How fast `x1 view` pages open and answer in headless Chromium, for MCTS trees of growing size.

    python benchmarks/viewer.py [--sizes 500,2000,5000] [--repeats 3]

Each tree is a real MCTS search on the fake backend (deep solutions, 3 children per expansion)
stopped by a node budget. For each size the table gives the page size, the time to write it,
and in Chromium (the system one, driven by Playwright): load (navigation start to the graph
drawn and painted), the first draw alone, and three interactions measured from the
Python side (so they include the driver's round trip): a click until the detail panel shows
the thought (a click event on the deepest thought, wherever it is on screen), a wheel zoom until
the viewport moved, and switching the colour selector (a full redraw); each until the next frame
was painted. Times are medians over --repeats fresh page loads. The target: under 2 s each at 2,000.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from x1.config import RunConfig
from x1.models.fake import FakeBackend
from x1.pipelines.solve import run_tasks
from x1.tasks.base import Task, Verification
from x1.trace import read_traces
from x1.view.page import write_view

console = Console(width=160)
NEXT_FRAME = "new Promise(r => requestAnimationFrame(() => setTimeout(() => r(performance.now()), 0)))"


def mcts_trace(folder: Path, nodes: int) -> Path:
    """A trace of one MCTS search grown to ``nodes`` thoughts."""
    cfg = RunConfig()
    cfg.model.name = "fake"
    cfg.search.strategy = "mcts"
    cfg.search.params = {"iterations": 100_000, "expand": 3, "parallel": 8}
    cfg.search.budget.max_nodes = nodes
    task = Task(id=f"mcts-{nodes}", question="What is 1+1?", gold="2",
                verifier=lambda a, g: Verification(1.0 if a == g else 0.0, ""))
    trace = folder / f"mcts-{nodes}.jsonl"
    run_tasks([task], cfg, policy=FakeBackend(steps_to_answer=14, answers=4), trace_path=trace)
    return trace


def measure(browser, page_path: Path, node_id: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(page_path.resolve().as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=30_000)
    load_ms = page.evaluate(NEXT_FRAME)  # ms since navigation start, until the frame after the first draw (style, layout, paint)
    render_ms = page.evaluate("window.x1view.renderMs")
    start = time.perf_counter()
    page.evaluate(f"document.querySelector('#nodes [data-id=\"{node_id}\"]').dispatchEvent(new MouseEvent('click', {{bubbles: true}}))")
    page.wait_for_selector(f"#detail h2[data-node='{node_id}']")
    page.evaluate(NEXT_FRAME)
    click_ms = (time.perf_counter() - start) * 1000
    before = page.get_attribute("#viewport", "transform")
    page.mouse.move(600, 400)
    start = time.perf_counter()
    page.mouse.wheel(0, -300)
    page.wait_for_function(f"document.getElementById('viewport').getAttribute('transform') !== {before!r}")
    page.evaluate(NEXT_FRAME)
    zoom_ms = (time.perf_counter() - start) * 1000
    start = time.perf_counter()
    page.select_option("#colour", "reward")
    page.wait_for_function("document.getElementById('scale-label').textContent.startsWith('reward')")
    page.evaluate(NEXT_FRAME)
    recolour_ms = (time.perf_counter() - start) * 1000
    drawn = page.locator("#nodes [data-id]").count()
    page.close()
    if errors:
        raise SystemExit(f"console errors on {page_path}: {errors}")
    return {"load": load_ms, "render": render_ms, "click": click_ms, "zoom": zoom_ms, "recolour": recolour_ms, "drawn": drawn}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="500,2000,5000", help="thoughts per tree, comma-separated")
    parser.add_argument("--repeats", type=int, default=3, help="page loads per size (medians are shown)")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        sys.exit("no chromium on this machine; fix: apt-get install -y chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sys.exit("playwright is not installed; fix: pip install 'x1[dev]'")

    table = Table("thoughts", "page", "write", "load → painted", "first draw", "click → detail", "wheel → zoom", "recolour", "under 2 s")
    with tempfile.TemporaryDirectory(prefix="x1-viewer-bench-") as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        for size in (int(s) for s in args.sizes.split(",")):
            trace = mcts_trace(Path(tmp), size)
            record = next(read_traces(trace))
            thoughts = len(record["graph"]["thoughts"])
            page_path = Path(tmp) / f"view-{size}.html"
            start = time.perf_counter()
            write_view(trace, page_path)
            write_s = time.perf_counter() - start
            deepest = max(record["graph"]["thoughts"], key=lambda t: t["id"])["id"]
            runs = [measure(browser, page_path, deepest) for _ in range(args.repeats)]
            assert all(r["drawn"] == thoughts for r in runs), "not every thought was drawn"
            med = {k: statistics.median(r[k] for r in runs) for k in ("load", "render", "click", "zoom", "recolour")}
            ok = all(med[k] < 2000 for k in ("load", "click", "zoom", "recolour"))
            table.add_row(str(thoughts), f"{page_path.stat().st_size / 1e6:.1f} MB", f"{write_s:.2f} s", f"{med['load']:.0f} ms",
                          f"{med['render']:.0f} ms", f"{med['click']:.0f} ms", f"{med['zoom']:.0f} ms", f"{med['recolour']:.0f} ms",
                          "yes" if ok else "NO")
        browser.close()
    console.print(table)
    console.print(f"Chromium {browser.version}, medians of {args.repeats} page loads; "
                  "interactions timed from Python (driver round trip included).")


if __name__ == "__main__":
    main()
