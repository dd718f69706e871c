"""A recipe run's folder: ``state.json`` (steps done, current models, metrics), written atomically.

Every step is recorded as soon as it finishes, so a re-run skips finished steps; the folder is
bound to the run's identity (policy, tasks, seed), and resuming it with another is refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from x1 import __version__
from x1.pipelines.recipe.config import RecipeError

STATE_VERSION = 1


class RunState:
    """The bookkeeping of one run folder; the phases (``Recipe``) build on it."""

    def __init__(self, out: Path, identity: dict[str, Any], keep_checkpoints: int | None,
                 log: Callable[[str], None] | None = None) -> None:
        self.out = out
        self.identity = json.loads(json.dumps(identity))
        self.keep_checkpoints = keep_checkpoints
        self.log = log or (lambda _message: None)
        self.state_path = self.out / "state.json"
        self.state = self._load_state()

    # -- state ------------------------------------------------------------------------------
    def _load_state(self) -> dict[str, Any]:
        identity = self.identity
        if not self.state_path.exists():
            return {"version": STATE_VERSION, "identity": identity, "completed": [], "steps": {}, "round": 0,
                    "policy": None, "value": None, "metrics": [], "checkpoints": []}  # fmt: skip
        state = json.loads(self.state_path.read_text())
        if state.get("version") != STATE_VERSION:
            raise RecipeError(f"{self.state_path} has state version {state.get('version')!r}; this x1 writes {STATE_VERSION}")
        if state.get("identity") != identity:
            raise RecipeError(
                f"{self.out} holds a run of another policy, task set or seed ({state.get('identity')}); "
                "fix: choose another output_dir, or restore those settings to resume it"
            )
        return state

    def _save_state(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=2))
        os.replace(tmp, self.state_path)
        metrics = {"x1_version": __version__, "phases": self.state["metrics"]}
        tmp = self.out / "metrics.tmp"
        tmp.write_text(json.dumps(metrics, indent=2))
        os.replace(tmp, self.out / "metrics.json")

    def _rel(self, path: str | Path | None) -> str | None:
        if path is None:
            return None
        path = Path(path)
        with contextlib.suppress(ValueError):
            return str(path.resolve().relative_to(self.out.resolve()))
        return str(path)

    def _abs(self, path: str | None) -> Path | None:
        if path is None:
            return None
        p = Path(path)
        return p if p.is_absolute() else self.out / p

    @property
    def policy(self) -> Path:
        path = self._abs(self.state["policy"])
        assert path is not None, "the base policy is set by the first step"
        return path

    @property
    def value(self) -> Path | None:
        return self._abs(self.state["value"])

    def done(self, name: str) -> bool:
        return name in self.state["completed"]

    def step(self, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run ``fn`` unless a previous run finished it; record its info and wall time."""
        if self.done(name):
            return self.state["steps"][name]
        self.log(f"{name} …")
        start = time.perf_counter()
        info = fn()
        info = {**info, "wall_s": round(time.perf_counter() - start, 3)}
        self.state["steps"][name] = info
        self.state["completed"].append(name)
        self._save_state()
        self.log(f"{name} done in {info['wall_s']:.1f}s {self._brief(info)}")
        return info

    @staticmethod
    def _brief(info: dict[str, Any]) -> str:
        shown = {k: v for k, v in info.items() if k != "wall_s" and isinstance(v, int | float | str) and v is not None}
        return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())

    def _checkpointed(self, stage: str) -> None:
        """Remember this stage's model folders; with ``keep_checkpoints`` drop older ones no longer in use."""
        entry = [self.state["policy"], self.state["value"]]
        if entry not in self.state["checkpoints"]:
            self.state["checkpoints"].append(entry)
        keep = self.keep_checkpoints
        if keep is not None:
            live = {p for pair in self.state["checkpoints"][-keep:] for p in pair if p} | {self.state["policy"], self.state["value"]}
            for pair in self.state["checkpoints"][:-keep]:
                for path in pair:
                    where = self._abs(path)
                    inside = where is not None and self.out.resolve() in where.resolve().parents
                    if path and path not in live and inside and where is not None and where.exists():
                        shutil.rmtree(where)
                        self.log(f"removed old checkpoint {where}")
        self._save_state()
