"""Every run leaves a trace: one JSON record per problem (graph, verdict, compute, config).

The records are the input of `x1 data`, training and re-scoring; the version field lets a
reader refuse what it does not understand.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TRACE_VERSION = 1


class TraceError(ValueError):
    pass


def write_record(fh: Any, record: dict[str, Any]) -> None:
    fh.write(json.dumps({"trace_version": TRACE_VERSION, **record}) + "\n")
    fh.flush()


def read_traces(path: str | Path) -> Iterator[dict[str, Any]]:
    """Records of a JSONL trace file; a broken line names the file and line."""
    path = Path(path)
    if not path.exists():
        raise TraceError(f"trace file {path} does not exist")
    with path.open() as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise TraceError(f"{path}:{lineno}: not valid JSON ({err.msg}); fix or delete that line") from err
            version = record.get("trace_version")
            if version != TRACE_VERSION:
                raise TraceError(f"{path}:{lineno}: trace version {version!r}, this x1 reads {TRACE_VERSION}")
            yield record
