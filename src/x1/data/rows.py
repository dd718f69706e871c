"""The rows training data is made of, and the JSONL files they live in (what ``datasets`` and x1's trainers read)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, TypeVar


# -- the records ------------------------------------------------------------------------------
@dataclass
class JsonRow:
    """Plain JSON-able row: ``to_dict`` for writing, ``from_dict`` for reading back."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{cls.__name__} has no fields {sorted(unknown)}; is this file of another kind of record?")
        return cls(**data)


@dataclass
class SFTExample(JsonRow):
    """A chat prompt and the assistant's completion to imitate (rejection sampling, journeys, traces)."""

    prompt_messages: list[dict[str, str]]
    completion: str
    task_id: str
    source: str  # answer_path, correct_path, journey, trace


@dataclass
class PreferencePair(JsonRow):
    """Two continuations of one prompt text (chat prefix + path so far): chosen has the higher q.

    ``*_final``: whether that continuation ends the solution (a terminal step, or a whole solution).
    Only a final one is ended with EOS in training; an intermediate step ending with EOS would teach
    the policy to stop after it. Rows written before these fields existed read back as final.
    """

    prompt: str
    chosen: str
    rejected: str
    q_chosen: float
    q_rejected: float
    task_id: str
    chosen_final: bool = True
    rejected_final: bool = True


@dataclass
class ProcessLabel(JsonRow):
    """A path's steps (raw thought texts) with a label in [0, 1] per step: how likely it leads to success."""

    prompt: str
    steps: list[str]
    labels: list[float]
    task_id: str


@dataclass
class ValueTarget(JsonRow):
    """A partial solution and its value target in [−1, 1]; the value model reads prompt + partial_solution."""

    prompt: str
    partial_solution: str
    target: float
    task_id: str


@dataclass
class RewardedPath(JsonRow):
    """A whole solution the search produced and its true outcome reward in [−1, 1]: a PPO rollout from the replay buffer."""

    prompt: str
    completion: str
    reward: float
    task_id: str


# -- files -------------------------------------------------------------------------------
Row = TypeVar("Row", bound=JsonRow)


def write_jsonl(path: str | Path, items: Iterable[Any]) -> int:
    """Write one JSON object per line (records via ``to_dict``); returns how many were written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w") as fh:
        for item in items:
            data = item if isinstance(item, dict) else item.to_dict()
            fh.write(json.dumps(data, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl(path: str | Path, cls: type[Row]) -> list[Row]:
    """Records of one kind back from a JSONL file written by ``write_jsonl``."""
    out = []
    with Path(path).open() as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                out.append(cls.from_dict(json.loads(line)))
            except (json.JSONDecodeError, ValueError, TypeError) as err:
                raise ValueError(f"{path}:{lineno}: not a {cls.__name__} ({err})") from err
    return out
