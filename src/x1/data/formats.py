"""Training rows in the shapes TRL and ``datasets`` use, both ways.

Writing (``x1 data --format trl``, the default):

* SFT (``sft``, ``journey``): TRL's conversational prompt-completion,
  ``{"prompt": [messages], "completion": [{"role": "assistant", "content": text}]}``; the
  completion is the path as the policy wrote it (steps keep their own delimiter), so any
  tokenizer reads it — no ``<eois>`` literal that a stock tokenizer would split into pieces.
* DPO (``pairs``): ``{"prompt", "chosen", "rejected"}`` text (the prompt is the search's own chat prefix), plus
  ``chosen_final``/``rejected_final`` (TRL ignores them; x1 fit dpo keeps EOS off intermediate steps with them).
* PRM (``process``): TRL's stepwise supervision, ``{"prompt", "completions": [steps], "labels": [bool]}``;
  a step is labelled true when its Monte-Carlo label is at least 0.5 (``--hard``: any rollout below it is correct).

Reading (``x1 fit``): x1's own rows, the TRL shapes above (plus ``messages`` and plain-text
``prompt``/``completion`` for SFT), from JSONL, Parquet, or a local ``datasets`` folder
(``save_to_disk``, or a folder of data files).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from x1.data import EOIS
from x1.data.rows import PreferencePair, ProcessLabel, SFTExample, ValueTarget

Kind = Literal["SFTExample", "PreferencePair", "ProcessLabel", "ValueTarget"]
FORMATS = ("trl", "x1")
LABEL_THRESHOLD = 0.5  # a soft Monte-Carlo label at or above this is a "good step" in TRL's boolean labels

# what a TRL-shaped row of each kind looks like, for messages
TRL_SHAPES: dict[str, str] = {
    "SFTExample": "prompt/completion (text or messages), messages, or text",
    "PreferencePair": "prompt/chosen/rejected",
    "ProcessLabel": "prompt/completions/labels (TRL stepwise supervision)",
    "ValueTarget": "x1's own prompt/partial_solution/target",
}


# why a data command had nothing to write, and the fix
NOTHING_WRITTEN = {
    "SFT examples": "no record's verdict reached --min-score; fix: run with -p training=true, more samples, or a lower --min-score",
    "journey chains": "no record's verdict reached --min-score; fix: run with -p training=true, more samples, or a lower --min-score",
    "trace samples": "no record's verdict reached --min-score; fix: run with -p training=true, more samples, or a lower --min-score",
    "preference pairs": "no sibling steps differ by --min-gap and no task has both a right and a wrong solution; "
                        "fix: a tree search with -p training=true, or a lower --min-gap",
    "labelled paths": "no thought has a known outcome; fix: run with -p training=true (a verifier scores the rollouts)",
    "value targets": "no thought was visited or has a known outcome; fix: an mcts run, or --source mc with -p training=true",
}


class FormatError(ValueError):
    """Rows that are not of the kind a command reads; the message names where and what would fit."""


# -- writing ---------------------------------------------------------------------------------------
def _raw_steps(text: str, delimiter: str = "\n\n") -> str:
    """A completion with any ``<eois>`` markers turned back into the step delimiter."""
    if EOIS not in text:
        return text
    return delimiter.join(s.strip() for s in text.split(EOIS) if s.strip())


def to_trl(items: Iterable[Any]) -> list[dict[str, Any]]:
    """x1 records → TRL rows (see the module note); value targets have no TRL shape and are refused."""
    out: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, SFTExample):
            out.append({"prompt": [dict(m) for m in item.prompt_messages],
                        "completion": [{"role": "assistant", "content": _raw_steps(item.completion)}]})
        elif isinstance(item, PreferencePair):
            # the *_final flags ride along (TRL ignores extra columns): x1 fit dpo keeps EOS off intermediate steps with them
            out.append({"prompt": item.prompt, "chosen": item.chosen, "rejected": item.rejected,
                        "chosen_final": item.chosen_final, "rejected_final": item.rejected_final})
        elif isinstance(item, ProcessLabel):
            out.append({"prompt": item.prompt, "completions": list(item.steps),
                        "labels": [float(x) >= LABEL_THRESHOLD for x in item.labels]})
        else:
            raise FormatError(f"{type(item).__name__} has no TRL shape; write it with --format x1")
    return out


def unverified(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records whose sibling steps are ranked by nothing checked: no verifier reward in the graph (not
    training mode) and no evaluator named, or only the policy's own confidence, so a wrong step can be "chosen"."""
    out = []
    for record in records:
        graph = record.get("graph") or {}
        if any(t.get("reward") is not None for t in graph.get("thoughts", [])):
            continue
        if (record.get("strategy_config") or {}).get("evaluator") in (None, "confidence"):
            out.append(record)
    return out


# -- reading ---------------------------------------------------------------------------------------
def load_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL/JSON file, a Parquet file, or a local ``datasets`` folder, as plain dicts."""
    if path.is_dir():
        return _dataset_rows(path)
    if not path.is_file():
        raise FormatError(f"{path}: no such file or folder")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()  # type: ignore[no-any-return]
    rows = []
    with path.open() as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise FormatError(f"{path}:{lineno}: not valid JSON ({err.msg})") from err
            if not isinstance(row, dict):
                raise FormatError(f"{path}:{lineno}: not a JSON object")
            rows.append(row)
    return rows


def _dataset_rows(folder: Path) -> list[dict[str, Any]]:
    """A ``save_to_disk`` folder (its train split if it holds several), else a folder of data files."""
    import datasets

    saved = (folder / "dataset_info.json").exists() or (folder / "dataset_dict.json").exists()
    try:
        ds = datasets.load_from_disk(str(folder)) if saved else datasets.load_dataset(str(folder))
    except (FileNotFoundError, ValueError) as err:
        raise FormatError(f"{folder}: not a datasets folder ({err})") from err
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise FormatError(f"{folder}: a dataset with splits {sorted(ds)} and no 'train' split; fix: save the split to train on")
        ds = ds["train"]
    return ds.to_list()  # type: ignore[no-any-return]


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in value)


def _text(value: Any, field: str, where: str) -> str:
    if not isinstance(value, str):
        raise FormatError(f"{where}: field {field!r} should be text, got {type(value).__name__}")
    return value


def shape_of(row: dict[str, Any], kind: Kind) -> Literal["x1", "trl"] | None:
    """Whether a row is x1's own record of ``kind``, a TRL row of that kind, or neither."""
    from dataclasses import MISSING, fields

    cls = {"SFTExample": SFTExample, "PreferencePair": PreferencePair, "ProcessLabel": ProcessLabel, "ValueTarget": ValueTarget}[kind]
    names = {f.name for f in fields(cls)}
    required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
    keys = set(row)
    if keys <= names and required - {"task_id", "source"} <= keys:
        return "x1"
    if kind == "SFTExample" and ({"prompt", "completion"} <= keys or "messages" in keys or "text" in keys):
        return "trl"
    if kind == "PreferencePair" and {"prompt", "chosen", "rejected"} <= keys:
        return "trl"
    if kind == "ProcessLabel" and {"prompt", "completions", "labels"} <= keys:
        return "trl"
    return None


def sft_row(row: dict[str, Any], where: str) -> dict[str, Any]:
    """A TRL SFT row, checked; conversational rows keep their messages, text rows their text."""
    if "messages" in row:
        if not _is_messages(row["messages"]):
            raise FormatError(f"{where}: 'messages' should be a list of {{role, content}}")
        return {"messages": [{"role": m["role"], "content": m["content"]} for m in row["messages"]]}
    if "prompt" in row:
        prompt, completion = row["prompt"], row["completion"]
        if _is_messages(prompt) and _is_messages(completion):
            return {"prompt": [{"role": m["role"], "content": m["content"]} for m in prompt],
                    "completion": [{"role": m["role"], "content": m["content"]} for m in completion]}
        return {"prompt": _text(prompt, "prompt", where), "completion": _text(completion, "completion", where)}
    return {"text": _text(row["text"], "text", where)}


def pair_row(row: dict[str, Any], where: str) -> dict[str, Any]:
    """A TRL preference row, checked: all three text, or all three conversations."""
    values = [row["prompt"], row["chosen"], row["rejected"]]
    if all(_is_messages(v) for v in values):
        return {k: row[k] for k in ("prompt", "chosen", "rejected")}
    out: dict[str, Any] = {k: _text(row[k], k, where) for k in ("prompt", "chosen", "rejected")}
    return out | {k: bool(row[k]) for k in ("chosen_final", "rejected_final") if k in row}


def process_label(row: dict[str, Any], where: str) -> ProcessLabel:
    """TRL stepwise supervision → x1's ``ProcessLabel`` (booleans become 1.0 / 0.0)."""
    steps, labels = row["completions"], row["labels"]
    if not isinstance(steps, list) or not all(isinstance(s, str) for s in steps):
        raise FormatError(f"{where}: 'completions' should be a list of step texts")
    if not isinstance(labels, list) or len(labels) != len(steps):
        raise FormatError(f"{where}: 'labels' should hold one label per step ({len(steps)} steps)")
    return ProcessLabel(_text(row["prompt"], "prompt", where), list(steps), [float(x) for x in labels], str(row.get("task_id", "")))


def kind_of(row: dict[str, Any], but: str) -> str | None:
    """Which other kind of record (x1's or TRL's) a row is, to tell the user what they passed."""
    for kind in TRL_SHAPES:
        if kind != but and shape_of(row, kind) is not None:  # type: ignore[arg-type]
            return kind
    return None


def records_of(rows: list[dict[str, Any]], kind: Kind, source: str) -> list[Any]:
    """Rows → what the trainer of ``kind`` takes: x1 records, or checked TRL rows (SFT, DPO) / ProcessLabels (PRM).

    The first row decides the file's shape; every row must have it (a trainer's dataset has one schema).
    """
    if not rows:
        return []
    first = shape_of(rows[0], kind)
    if first is None:
        raise FormatError(f"{source}:1: fields {sorted(rows[0])}, which are neither x1's {kind} nor TRL's "
                          f"{TRL_SHAPES[kind]}")
    out: list[Any] = []
    layout: tuple[Any, ...] | None = None
    for i, row in enumerate(rows, 1):
        where = f"{source}:{i}"
        if shape_of(row, kind) != first:
            raise FormatError(f"{where}: fields {sorted(row)} differ from row 1's ({first} {kind}); fix: one shape per file")
        if first == "x1":
            cls = {"SFTExample": SFTExample, "PreferencePair": PreferencePair, "ProcessLabel": ProcessLabel,
                   "ValueTarget": ValueTarget}[kind]
            try:
                out.append(cls.from_dict({"task_id": "", **({"source": "file"} if kind == "SFTExample" else {}), **row}))
            except (TypeError, ValueError) as err:
                raise FormatError(f"{where}: {err}") from err
        elif kind == "ProcessLabel":
            out.append(process_label(row, where))
        else:
            checked = sft_row(row, where) if kind == "SFTExample" else pair_row(row, where)
            this = (tuple(checked), isinstance(next(iter(checked.values())), list))
            if layout is not None and this != layout:
                raise FormatError(f"{where}: mixes text and conversational rows (row 1 is {'conversational' if layout[1] else 'text'}); "
                                  "fix: one kind per file")
            layout = this
            out.append(checked)
    return out
