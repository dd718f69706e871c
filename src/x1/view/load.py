"""Read what `x1 view` is pointed at: a trace (JSONL), a run directory, a bare graph or one record (JSON)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from x1.graph import GraphError
from x1.trace import TraceError, decode_record, read_traces


class ViewError(ValueError):
    """Input the viewer cannot show; the message is the one line the CLI prints."""


def read_records(path: Path) -> list[dict[str, Any]]:
    """Trace records of ``path``; a bare graph becomes one record without a verdict."""
    if path.is_dir():
        if not (path / "traces.jsonl").exists():
            raise ViewError(f"{path} is a directory without traces.jsonl; fix: pass a trace file or an `x1 eval` run directory")
        path = path / "traces.jsonl"
    if not path.exists():
        raise ViewError(f"{path} does not exist")
    text = path.read_text()
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, dict) and "thoughts" in whole:
        return [{"task_id": "graph", "graph": whole}]
    if isinstance(whole, dict) and "graph" in whole:  # one record alone (a one-line trace parses whole)
        try:
            return [decode_record(whole, str(path)) if "trace_version" in whole else whole]
        except TraceError as err:
            raise ViewError(f"{path} is not an x1 trace or graph: {err}") from err
    try:
        records = list(read_traces(path))
    except TraceError as err:
        raise ViewError(f"{path} is not an x1 trace or graph: {err}") from err
    if not records:
        raise ViewError(f"{path} holds no trace records")
    for i, record in enumerate(records, 1):
        if not isinstance(record.get("graph"), dict):
            raise ViewError(f"{path}: record {i} has no graph; is it an x1 trace?")
    return records


def pick(records: list[dict[str, Any]], problem: str | None, source: Path) -> list[dict[str, Any]]:
    """All records, or the one whose task id is ``problem``."""
    if problem is None:
        return records
    chosen = [r for r in records if str(r.get("task_id")) == problem]
    if not chosen:
        ids = [str(r.get("task_id")) for r in records]
        shown = ", ".join(ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
        raise ViewError(f"no problem {problem!r} in {source}; it holds: {shown}")
    return chosen[-1:]  # a resumed run may hold a task twice: the last record is the one that counts


def check_graphs(records: list[dict[str, Any]], source: Path) -> None:
    """Parse each graph once up front, so a broken one is a clear line, not a traceback."""
    from x1.graph import ReasoningGraph

    for record in records:
        try:
            ReasoningGraph.from_dict(record["graph"])
        except (GraphError, KeyError, TypeError) as err:
            raise ViewError(f"{source}: the graph of problem {record.get('task_id')!r} is not readable: {err}") from err
