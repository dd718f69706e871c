"""The viewer in a real headless browser: traces of x1's strategies on the fake backend, drawn and clicked.

Needs Playwright (dev extra) and a system Chromium (Debian: apt-get install chromium); skips with
the reason otherwise. Each test leaves a screenshot in its tmp_path.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import trace_record
from typer.testing import CliRunner

from x1.cli import app

runner = CliRunner()


def chromium_path() -> str | None:
    return os.environ.get("X1_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium_path()
    if executable is None:
        pytest.skip("no chromium on this machine (Debian: apt-get install -y chromium); the viewer's browser tests need one")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install 'x1[dev]'); the viewer's browser tests drive chromium with it")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def solve_and_view(tmp_path: Path, strategy: str, *params: str) -> tuple[Path, dict[str, Any]]:
    """x1 solve on the fake backend, then x1 view: the page and the trace record."""
    trace, page = tmp_path / "trace.jsonl", tmp_path / "tree.html"
    args = ["solve", "What is 1+1?", "--model", "fake", "--gold", "2", "--trace", str(trace), "-s", strategy]
    for p in params:
        args += ["-p", p]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["view", str(trace), "--out", str(page)])
    assert result.exit_code == 0, result.output
    return page, trace_record(trace.read_text().splitlines()[0])


class Page:
    """A page opened from file:// that records console errors and uncaught exceptions."""

    def __init__(self, browser: Any, path: Path, fragment: str = "") -> None:
        self.errors: list[str] = []
        self.page = browser.new_page(viewport={"width": 1300, "height": 800})
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(path.resolve().as_uri() + fragment)
        self.page.wait_for_selector("body[data-ready='1']", timeout=5000)

    def count(self, selector: str) -> int:
        return self.page.locator(selector).count()

    def click_node(self, thought_id: int) -> str:
        """Click a drawn thought; the detail panel's heading."""
        self.page.locator(f"#nodes [data-id='{thought_id}']").click()
        heading = self.page.wait_for_selector(f"#detail h2[data-node='{thought_id}']", timeout=2000)
        return heading.inner_text()

    def close(self, screenshot: Path) -> None:
        self.page.screenshot(path=str(screenshot))
        self.page.close()
        assert self.errors == [], f"console errors: {self.errors}"


def test_mcts_tree_renders_and_a_click_shows_the_thought(browser, tmp_path):
    path, record = solve_and_view(tmp_path, "mcts", "iterations=10")
    thoughts = record["graph"]["thoughts"]
    page = Page(browser, path)
    assert page.count("#nodes [data-id]") == len(thoughts)
    assert page.count("#edges path.e.path") == 1  # the chosen answer's path is drawn
    terminals = [t for t in thoughts if t["terminal"]]
    assert page.count("#marks text.mark") >= len(terminals) > 0  # every terminal says right or wrong
    answer = record["answer_thought"]
    assert page.click_node(answer) == f"thought #{answer}"
    detail = page.page.inner_text("#detail")
    assert "q (value)" in detail and "N (visits)" in detail and "generated" in detail
    logprobs = next(t["logprobs"] for t in thoughts if t["id"] == answer)
    assert page.count("#detail .strip i") == len(logprobs) > 0  # per-token heat strip (surprisal: the fake gives no entropy)
    assert page.count("#nodes .sel") == 1
    page.close(tmp_path / "mcts.png")


def test_graph_of_operations_shows_the_aggregate_and_pruned_thoughts(browser, tmp_path):
    path, record = solve_and_view(tmp_path, "graph_of_operations")
    merged = [t for t in record["graph"]["thoughts"] if len(t["parents"]) > 1]
    pruned = [t for t in record["graph"]["thoughts"] if t["pruned"]]
    assert merged and pruned
    page = Page(browser, path)
    assert page.count("#nodes .merge") == len(merged)
    assert page.count("#nodes .pruned") == len(pruned)
    assert page.count("#edges path.e.merge") + page.count("#edges path.e.path") >= 1
    page.click_node(merged[0]["id"])
    assert f"aggregate of {len(merged[0]['parents'])}" in page.page.inner_text("#detail")
    page.close(tmp_path / "graph_of_operations.png")


def test_nested_graph_opens_and_leads_back_out(browser, tmp_path):
    path, record = solve_and_view(tmp_path, "nested")
    outer = record["graph"]["thoughts"]
    step = next(t for t in outer if t["nested"] is not None)
    inner = step["nested"]["thoughts"]
    page = Page(browser, path)
    assert page.count("#nodes [data-id]") == len(outer)
    assert page.count("#marks circle.ring") == sum(t["nested"] is not None for t in outer)
    page.click_node(step["id"])
    page.page.click("#detail .drill")
    page.page.wait_for_selector("#crumbs button[data-level='1']")
    assert page.count("#nodes [data-id]") == len(inner)
    page.click_node(inner[-1]["id"])
    page.page.click("#crumbs button[data-level='0']")
    page.page.wait_for_selector(f"#detail h2[data-problem='{record['task_id']}']")
    assert page.count("#nodes [data-id]") == len(outer)
    page.close(tmp_path / "nested.png")


def test_pan_and_zoom_move_the_viewport(browser, tmp_path):
    path, _ = solve_and_view(tmp_path, "mcts", "iterations=6")
    page = Page(browser, path)
    before = page.page.get_attribute("#viewport", "transform")
    page.page.mouse.move(500, 400)
    page.page.mouse.wheel(0, -400)
    zoomed = page.page.get_attribute("#viewport", "transform")
    assert zoomed != before
    page.page.mouse.down()
    page.page.mouse.move(600, 450, steps=4)
    page.page.mouse.up()
    assert page.page.get_attribute("#viewport", "transform") != zoomed
    page.close(tmp_path / "panned.png")


def test_a_page_of_several_problems_opens_the_one_in_its_address_and_switches(browser, tmp_path):
    run = tmp_path / "run"
    result = runner.invoke(app, ["eval", "--task", "samples", "--model", "fake", "-s", "best_of_n", "--n", "2", "--out", str(run)])
    assert result.exit_code == 0, result.output
    page_path = tmp_path / "all.html"
    assert runner.invoke(app, ["view", str(run), "--out", str(page_path)]).exit_code == 0
    page = Page(browser, page_path, fragment="#problem=samples:1")
    assert page.page.get_attribute("#detail h2", "data-problem") == "samples:1"
    page.page.select_option("#problem", "0")
    page.page.wait_for_selector("#detail h2[data-problem='samples:0']")
    page.close(tmp_path / "picker.png")
