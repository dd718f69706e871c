"""A run directory's safety rules: what may be resumed, and writes that a kill cannot tear.

``x1 eval`` writes ``run.json`` (the run's identity: task, model, strategy, parameters, seed,
budget) when a run starts; ``--resume`` refuses any change to it, because records made under one
identity must never be summarised under another. Finished records are checked field by field, so
a hand-edited or half-written trace is named by file and line instead of crashing the summary.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from x1.config import RunConfig
from x1.trace import TraceError, read_traces

IDENTITY_FILE = "run.json"
# Fields a finished record must carry for the summary to use it; (name, type).
RECORD_FIELDS: tuple[tuple[str, type | tuple[type, ...]], ...] = (
    ("task_id", str), ("strategy", str), ("correct", bool), ("score", (int, float)), ("compute", dict),
)  # fmt: skip
COMPUTE_FIELDS = ("prompt_tokens", "generated_tokens", "policy_calls")


class RunDirError(ValueError):
    pass


def atomic_write_text(path: Path, text: str) -> None:
    """Write through a temporary file and rename: a kill leaves the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def check_out_dir(out_dir: Path) -> None:
    """Fail before any model loads if the run directory cannot hold a run (a file there, read-only, no space)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise RunDirError(f"--out {out_dir} is a file, not a directory; fix: choose another --out")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".x1-write-check"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise RunDirError(f"cannot write to the run directory {out_dir}: {err.strerror or err}; fix: choose a writable --out") from err


def run_identity(config: RunConfig, task_spec: str) -> dict[str, Any]:
    """What makes two sessions the same run: everything that changes a problem's result (not throughput settings)."""
    search = config.search.model_dump(exclude={"max_active"})
    return {"task": task_spec, "model": config.model.name, "model_name": config.model.model_name, **search}


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flat(item, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def _flag(key: str) -> str:
    """The command-line spelling of an identity field, for the fix."""
    if key.startswith("params."):
        return f"-p {key.removeprefix('params.')}"
    flags = {"budget.max_tokens": "--max-tokens", "step.delimiter": "--step", "step.max_step_tokens": "--max-step-tokens"}
    return flags.get(key, f"--{key.replace('_', '-')}" if "." not in key else key)


def check_identity(out_dir: Path, identity: dict[str, Any], resume: bool) -> None:
    """Record the run's identity, or on resume refuse any change to it with the first differing field."""
    path = out_dir / IDENTITY_FILE
    if resume and path.exists():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise RunDirError(f"{path}: not valid JSON ({err}); fix: restore it, or start a new run with another --out") from err
        old, new = _flat(saved), _flat(json.loads(json.dumps(identity)))
        first = ("task", "model", "model_name", "strategy", "seed")  # the biggest change is the one named
        changed = sorted((key for key in old.keys() | new.keys() if old.get(key) != new.get(key)),
                         key=lambda key: (first.index(key) if key in first else len(first), key))
        if changed:
            key = changed[0]
            was, now = (repr(side[key]) if side.get(key) is not None else "unset" for side in (old, new))
            raise RunDirError(
                f"--resume: {out_dir} is a run with {key}={was}, not {now} ({len(changed)} setting(s) differ); "
                f"fix: resume with the run's own {_flag(key)}, or start a new run with another --out"
            )
        return
    atomic_write_text(path, json.dumps(identity, indent=2))


def check_record(record: dict[str, Any], where: str) -> None:
    """Raise naming ``where`` (file:line) and the field when a finished record lacks what the summary reads."""
    fix = "fix: delete that line (its problem then runs again) or restore the field"
    for name, kind in RECORD_FIELDS:
        if name not in record:
            raise RunDirError(f"{where}: the record has no field {name!r}; {fix}")
        if not isinstance(record[name], kind) or (kind is not bool and isinstance(record[name], bool)):
            raise RunDirError(f"{where}: field {name!r} is {record[name]!r}, not a {getattr(kind, '__name__', 'number')}; {fix}")
    for name in COMPUTE_FIELDS:
        if not isinstance(record["compute"].get(name), int):
            raise RunDirError(f"{where}: field 'compute.{name}' is missing or not an integer; {fix}")


def drop_torn_last_line(trace_path: Path) -> None:
    """A run killed while writing leaves half a record without its newline: drop it, that problem reruns."""
    data = trace_path.read_bytes()
    if data and not data.endswith(b"\n"):
        with trace_path.open("r+b") as fh:
            fh.truncate(data.rfind(b"\n") + 1)


def finished_records(trace_path: Path, strategy: str) -> dict[str, dict]:
    """Task id → checked trace record of problems an earlier run finished with the same strategy."""
    if not trace_path.exists():
        return {}
    drop_torn_last_line(trace_path)
    done: dict[str, dict] = {}
    try:
        for lineno, record in enumerate_records(trace_path):
            check_record(record, f"{trace_path}:{lineno}")
            if record["strategy"] != strategy:
                raise RunDirError(
                    f"{trace_path}:{lineno} holds a run of strategy {record['strategy']!r}, not {strategy!r}; "
                    "fix: use another --out directory, or the same strategy to resume"
                )
            done.setdefault(record["task_id"], record)  # a duplicate (never written by x1) counts once
    except UnicodeDecodeError as err:
        raise RunDirError(f"{trace_path}: not UTF-8 text ({err.reason}); fix: restore it, or start a new run with another --out") from err
    except TraceError as err:
        raise RunDirError(str(err)) from err
    return done


def enumerate_records(trace_path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, record) pairs: ``read_traces`` skips blank lines, so the numbers are counted here."""
    numbered: list[tuple[int, dict[str, Any]]] = []
    lines = [i for i, line in enumerate(trace_path.read_text(encoding="utf-8").splitlines(), 1) if line.strip()]
    for lineno, record in zip(lines, read_traces(trace_path), strict=False):
        if not isinstance(record, dict):
            raise RunDirError(f"{trace_path}:{lineno}: not a JSON object; fix: delete that line (its problem then runs again)")
        numbered.append((lineno, record))
    return numbered
