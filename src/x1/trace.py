"""Every run leaves a trace: one JSON record per problem (graph, verdict, compute, config).

The records are the input of `x1 data`, training and re-scoring; the version field lets a
reader refuse what it does not understand.

Version 2 gives every record the same columns with the same types, whichever strategy or task
wrote it, so any set of trace files loads together in ``datasets.load_dataset("json", ...)``
(Arrow needs one schema; a strategy's own parameters or graph fields would each make a new one):

* ``strategy_config`` and ``graph`` are JSON text (their shape depends on the strategy);
* text that may be missing (``gold``, ``answer``, ``oracle``, ``type``, ``level``) is ``""``
  rather than null, and a missing ``answer_thought`` is ``-1`` (a column that is null in every
  row of one file would get Arrow's null type, which no other file can be cast to);
* ``score`` and ``wall_s`` are floats, ``gold`` and ``level`` are text (a whole-number level reads back as an int).

``read_traces`` undoes all of this, so readers see the same dicts as from version 1 files,
which it still reads.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TRACE_VERSION = 2
READABLE_VERSIONS = (1, 2)
JSON_FIELDS = ("strategy_config", "graph")  # strategy-shaped: stored as JSON text
OPTIONAL_TEXT = ("gold", "answer", "oracle")  # "" on disk means None
GROUP_TEXT = ("type", "level")  # task meta copied into records; "" on disk means absent
NO_THOUGHT = -1


class TraceError(ValueError):
    pass


def encode_record(record: dict[str, Any]) -> dict[str, Any]:
    """A record in the version-2 layout (see the module note); the inverse of ``decode_record``."""
    out: dict[str, Any] = {"trace_version": TRACE_VERSION, **record}
    for key in JSON_FIELDS:
        if key in out and not isinstance(out[key], str):
            out[key] = json.dumps(out[key], ensure_ascii=False)
    for key in (*OPTIONAL_TEXT, *GROUP_TEXT):
        value = out.get(key)
        out[key] = "" if value is None else str(value)
    if out.get("answer_thought") is None:
        out["answer_thought"] = NO_THOUGHT
    for key in ("score", "wall_s"):
        if key in out and out[key] is not None:
            out[key] = float(out[key])
    return out


def decode_record(record: dict[str, Any], where: str = "a trace record") -> dict[str, Any]:
    """A record as readers use it: JSON fields parsed, sentinels back to None; version 1 passes as it is."""
    version = record.get("trace_version")
    if version not in READABLE_VERSIONS:
        raise TraceError(
            f"{where}: trace version {version!r}, this x1 reads versions {', '.join(map(str, READABLE_VERSIONS))}; "
            "fix: re-run it with this x1 (x1 eval / x1 solve write the current version)"
        )
    if version == 1:
        return record
    out = dict(record)
    for key in JSON_FIELDS:
        if isinstance(out.get(key), str):
            try:
                out[key] = json.loads(out[key])
            except json.JSONDecodeError as err:
                raise TraceError(f"{where}: field {key!r} is not valid JSON text ({err.msg})") from err
    for key in OPTIONAL_TEXT:
        if out.get(key) == "":
            out[key] = None
    for key in GROUP_TEXT:
        if out.get(key) == "":
            del out[key]
    level = out.get("level")
    if isinstance(level, str) and level.lstrip("-").isdigit():
        out["level"] = int(level)  # levels are mostly numbers (x1paper's 1-10): text on disk only for one column type
    if out.get("answer_thought") == NO_THOUGHT:
        out["answer_thought"] = None
    return out


def write_record(fh: Any, record: dict[str, Any]) -> None:
    fh.write(json.dumps(encode_record(record), ensure_ascii=False) + "\n")
    fh.flush()


def read_traces(path: str | Path) -> Iterator[dict[str, Any]]:
    """Records of a JSONL trace file, decoded; a broken line names the file and line."""
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
            if not isinstance(record, dict):
                raise TraceError(f"{path}:{lineno}: not a trace record (a JSON object); is it an x1 trace?")
            yield decode_record(record, f"{path}:{lineno}")
