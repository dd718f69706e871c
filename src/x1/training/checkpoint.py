"""Crash-safe `x1 fit`: checkpoints that resume, a run identity that refuses a changed run, an atomic final folder.

- TRL's trainers checkpoint themselves (``save_steps``, ``save_total_limit``, ``resume_from_checkpoint``);
  :func:`trl_resume_point` only picks the newest *complete* ``checkpoint-N`` (TRL writes
  ``trainer_state.json`` last, so a folder without a readable one was cut by a kill) and drops torn ones.
- x1's own loops (value/PRM/ORM fitting, PPO, process GRPO) use :class:`LoopCheckpoints`: model(s),
  optimizer, scheduler, RNG states and the step go to ``checkpoint-N/`` through a temporary folder and a
  rename, so a checkpoint is there whole or not at all; the newest one is loaded on start.
- :func:`final_folder` writes the trained model beside ``output_dir`` and swaps it in by renames, so a
  kill during the final save never leaves a half-written model that looks complete;
  :func:`recover_output` finishes (or undoes) a swap a kill interrupted.
- :func:`check_fit_identity` records what the run is (``x1_fit.json``, like ``x1 eval``'s run.json) and
  refuses to resume a different one in the same folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from x1.pipelines.rundir import RunDirError, _flat, atomic_write_text
from x1.training.config import TrainConfig

IDENTITY_FILE = "x1_fit.json"
LOOP_STATE = "x1_loop_state.pt"
TRL_STATE = "trainer_state.json"
PREFIX = "checkpoint-"
READY = ".x1-final-complete"  # inside the staged final folder once the model is written whole
# settings that change how a run is run or reported, not what it trains
NOT_IDENTITY = {"output_dir", "progress", "report_to", "logging_steps", "save_steps", "save_total_limit", "device", "save"}
FLAG_OF = {"model": "--model", "learning_rate": "--lr", "epochs": "--epochs", "batch_size": "--batch-size",
           "max_steps": "--max-steps", "seed": "--seed", "data": "--data", "data_sha256": "--data", "task": "--task",
           "n": "--n", "group_size": "--group-size", "beta": "--beta", "loss": "--loss", "iterations": "--iterations"}  # fmt: skip


# -- identity ----------------------------------------------------------------------------------------
def file_sha256(path: Path) -> str:
    """Content hash of a data file, or of every file of a ``datasets`` folder (names and bytes)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path)).encode() if path.is_dir() else b"")
        with file.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def fit_identity(kind: str, cfg: TrainConfig, **sources: Any) -> dict[str, Any]:
    """What makes two `x1 fit` sessions the same run: the command, its inputs and every setting that changes the weights."""
    settings = cfg.model_dump(exclude=NOT_IDENTITY)
    if Path(cfg.model).expanduser().exists():  # a folder or file given relative or absolute is the same model
        settings["model"] = str(Path(cfg.model).expanduser().resolve())
    return {"command": f"x1 fit {kind}", **sources, **settings}


def _short(value: Any) -> Any:
    """A sha256 (or a list of them) cut to its first 12 digits: enough to tell two files apart in one line."""
    if isinstance(value, list):
        return [_short(v) for v in value]
    return value[:12] + "…" if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value) else value


def check_fit_identity(out_dir: str | Path, identity: dict[str, Any]) -> None:
    """Record the run's identity in ``out_dir``, or refuse (one line, with the fix) a run that differs from the one there."""
    out = Path(out_dir)
    recover_output(out)
    path = out / IDENTITY_FILE
    if path.exists():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise RunDirError(f"{path}: not valid JSON ({err}); fix: restore it, or delete {out} to start over") from err
        old, new = _flat(saved), _flat(json.loads(json.dumps(identity)))
        changed = sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))
        if changed:
            key = next((k for k in ("command", "data_sha256", "data", "task", "model") if k in changed), changed[0])
            was, now = (repr(_short(side[key])) if side.get(key) is not None else "unset" for side in (old, new))
            flag = FLAG_OF.get(key, key if key == "command" else f"the config field {key!r}")
            raise RunDirError(
                f"--out {out} holds a fit with {key}={was}, not {now} ({len(changed)} setting(s) differ); "
                f"fix: re-run with the run's own {flag} to resume it, or choose another --out (or delete {out} to start over)"
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(identity, indent=2))


# -- the final folder --------------------------------------------------------------------------------
def _siblings(out: Path) -> tuple[Path, Path]:
    out = out.absolute()
    return out.parent / f".{out.name}.x1-final", out.parent / f".{out.name}.x1-old"


def _commit(staging: Path, out: Path, old: Path) -> None:
    """Move what ``out`` holds and the new model does not replace (checkpoints, identity, logs) into
    ``staging``, then swap the folders. Every move is a rename, and the whole is idempotent, so a kill
    anywhere is finished by running it again."""
    if out.exists():
        for entry in out.iterdir():
            if not (staging / entry.name).exists():
                os.replace(entry, staging / entry.name)
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
    os.replace(staging, out)
    (out / READY).unlink(missing_ok=True)
    shutil.rmtree(old, ignore_errors=True)


def recover_output(out_dir: str | Path) -> None:
    """Finish a final save a kill interrupted after the model was written whole; drop one cut before that."""
    out = Path(out_dir)
    staging, old = _siblings(out)
    if staging.exists():
        if (staging / READY).exists():
            _commit(staging, out, old)
        else:
            shutil.rmtree(staging, ignore_errors=True)
    if old.exists() and not out.exists():
        os.replace(old, out)
    shutil.rmtree(old, ignore_errors=True)
    if out.is_dir():
        (out / READY).unlink(missing_ok=True)


@contextmanager
def final_folder(out_dir: str | Path) -> Iterator[Path]:
    """Yield a fresh folder to save the model into; on success it becomes ``out_dir``, keeping the identity,
    logs and the newest checkpoint (optimizer state is large: older ones go)."""
    out = Path(out_dir)
    recover_output(out)
    staging, old = _siblings(out)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    yield staging
    _fsync_tree(staging)
    (staging / READY).write_text("ok")
    _commit(staging, out, old)
    numbered = sorted((int(m.group(1)), e) for e in out.iterdir() if (m := re.fullmatch(rf"{PREFIX}(\d+)", e.name)) and e.is_dir())
    for _, folder in numbered[:-1]:  # the finished run needs only its last checkpoint (a re-run then trains nothing)
        shutil.rmtree(folder, ignore_errors=True)


def _fsync_tree(root: Path) -> None:
    for file in root.rglob("*"):
        if file.is_file():
            with file.open("rb") as fh:
                os.fsync(fh.fileno())


# -- checkpoints -------------------------------------------------------------------------------------
def trainable_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state a resume needs: all but frozen parameters (a LoRA run's base weights, rebuilt from the base
    on resume), so a LoRA checkpoint is megabytes rather than the whole model."""
    frozen = {name for name, param in module.named_parameters() if not param.requires_grad}
    return {name: value for name, value in module.state_dict().items() if name not in frozen}


def load_trainable_state(module: torch.nn.Module, state: dict[str, torch.Tensor], folder: Path) -> None:
    """Load what :func:`trainable_state` saved; any other missing weight means the checkpoint is of another model."""
    frozen = {name for name, param in module.named_parameters() if not param.requires_grad}
    result = module.load_state_dict(state, strict=False)
    missing = [name for name in result.missing_keys if name not in frozen]
    if missing or result.unexpected_keys:
        raise ValueError(f"{folder} was written by another model setup (missing {missing[:3]}, unexpected "
                         f"{result.unexpected_keys[:3]}); fix: resume with the same model and flags, or use a new --out")


def save_every(save_steps: float, total: int) -> int:
    """``save_steps`` as a whole number of steps: itself when >= 1, else that fraction of ``total`` (at least 1)."""
    return int(save_steps) if save_steps >= 1 else max(1, -(-int(save_steps * total * 1000) // 1000))


def checkpoints(out_dir: str | Path, complete_file: str) -> list[tuple[int, Path]]:
    """(step, folder) of the complete checkpoints in ``out_dir``, oldest first."""
    out = Path(out_dir)
    if not out.is_dir():
        return []
    found = []
    for entry in out.iterdir():
        match = re.fullmatch(rf"{PREFIX}(\d+)", entry.name)
        if match and entry.is_dir() and _complete(entry / complete_file):
            found.append((int(match.group(1)), entry))
    return sorted(found)


def _complete(marker: Path) -> bool:
    if not marker.is_file():
        return False
    if marker.suffix != ".json":
        return True
    try:
        json.loads(marker.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return True


def announce(folder: Path) -> None:
    """One stderr line saying where a run picks up, so a user (and benchmarks/faults.py) sees what was kept."""
    print(f"resuming from {folder} (step {folder.name.removeprefix(PREFIX)})", file=sys.stderr, flush=True)


def trl_resume_point(cfg: TrainConfig) -> str | None:
    """The newest complete TRL checkpoint to resume from (None: start fresh); torn ones are deleted first."""
    if not cfg.save:
        return None
    out = Path(cfg.output_dir)
    recover_output(out)
    complete = {path for _, path in checkpoints(out, TRL_STATE)}
    if out.is_dir():
        for entry in out.glob(f"{PREFIX}*"):
            if entry.is_dir() and entry not in complete:
                shutil.rmtree(entry, ignore_errors=True)  # cut by a kill: TRL would otherwise pick it by number
    found = checkpoints(out, TRL_STATE)
    if not found:
        return None
    announce(found[-1][1])
    return str(found[-1][1])


def _rng_state() -> dict[str, Any]:
    import numpy as np

    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class LoopCheckpoints:
    """Checkpoints of one of x1's own loops in ``cfg.output_dir/checkpoint-STEP/`` (every ``save_steps`` of ``total``)."""

    def __init__(self, cfg: TrainConfig, total: int, modules: dict[str, Any], optimizer: Any, scheduler: Any = None) -> None:
        self.out = Path(cfg.output_dir)
        self.enabled = cfg.save
        self.every = save_every(cfg.save_steps, total)
        self.keep = cfg.save_total_limit
        self.total = total
        self.modules, self.optimizer, self.scheduler = modules, optimizer, scheduler

    def resume(self) -> tuple[int, dict[str, Any]]:
        """Load the newest complete checkpoint: (its step, the extra state saved with it); (0, {}) when none."""
        if not self.enabled:
            return 0, {}
        recover_output(self.out)
        found = checkpoints(self.out, LOOP_STATE)
        if not found:
            return 0, {}
        step, folder = found[-1]
        state = torch.load(folder / LOOP_STATE, map_location="cpu", weights_only=False)  # x1's own file
        for name, module in self.modules.items():
            load_trainable_state(module, state["modules"][name], folder)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        announce(folder)
        return step, state["extra"]

    def maybe_save(self, step: int, extra: dict[str, Any]) -> None:
        """Write ``checkpoint-step`` when ``step`` is a save point (every ``save_steps`` and the last step)."""
        if not self.enabled or (step % self.every and step != self.total):
            return
        final = self.out / f"{PREFIX}{step}"
        tmp = self.out / f".{PREFIX}{step}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        state = {
            "step": step,
            "modules": {name: trainable_state(module) for name, module in self.modules.items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rng": _rng_state(),
            "extra": extra,
        }
        with (tmp / LOOP_STATE).open("wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for _, old in checkpoints(self.out, LOOP_STATE)[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
