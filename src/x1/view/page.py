"""One self-contained HTML file: the template, its CSS and JS inlined, and the graphs as embedded JSON.

Nothing is fetched when the page opens, so it works from ``file://`` and offline.
"""

from __future__ import annotations

import html
import json
from importlib.resources import files
from pathlib import Path
from typing import Any

from x1.view.load import check_graphs, pick, read_records
from x1.view.scene import problem_data


def asset(name: str) -> str:
    return (files("x1.view") / "assets" / name).read_text(encoding="utf-8")


def embed_json(data: Any) -> str:
    """JSON safe inside <script>: no '</' can close the tag, no '<!--' can open a comment."""
    return json.dumps(data, separators=(",", ":")).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_page(problems: list[dict[str, Any]], title: str) -> str:
    """The viewer page for the given problem entries (see scene.problem_data)."""
    page = asset("viewer.html")
    return (
        page.replace("/*X1_CSS*/", asset("viewer.css"))
        .replace("/*X1_JS*/", asset("viewer.js"))
        .replace("X1_TITLE", html.escape(title))
        .replace("X1_DATA", embed_json({"problems": problems}))
    )


def write_view(source: Path, out: Path, problem: str | None = None) -> int:
    """Write the viewer page for a trace or graph file; how many problems it shows."""
    records = pick(read_records(source), problem, source)
    check_graphs(records, source)
    entries = [problem_data(r) for r in records]
    title = f"x1 view · {source.name}" + (f" · {problem}" if problem else "")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_page(entries, title), encoding="utf-8")
    return len(entries)
