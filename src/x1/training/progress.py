"""Per-step feedback for x1's own training loops (PPO, process GRPO, value/PRM fitting).

TRL's trainers show their own progress bar and report through ``report_to``; these loops do the
same by hand: a line on stderr every ``logging_steps`` steps (step k/total, the loss and the
other scalars, an ETA) and, when ``report_to`` names one, the scalars to TensorBoard, Weights &
Biases or Trackio. The trackers are imported only when chosen; a missing one fails before the
first step with the package to install.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, TextIO

from x1.training.config import TrainConfig

REPORT_TO = ("none", "tensorboard", "wandb", "trackio")
PROJECT = "x1"


def eta_text(seconds: float) -> str:
    """Seconds as 45s, 3m05s or 2h07m."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _missing(tracker: str, package: str) -> ValueError:
    return ValueError(f"report_to={tracker!r} needs the {package} package; fix: pip install {package} (or report_to: none)")


class Tracker:
    """Where scalars go: one of the ``report_to`` backends."""

    def __init__(self, kind: str, output_dir: str, run_name: str, config: dict[str, Any]) -> None:
        if kind not in REPORT_TO:
            raise ValueError(f"report_to={kind!r}: choose one of {', '.join(REPORT_TO)}")
        self.kind = kind
        self._writer: Any = None
        if kind == "tensorboard":
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:
                raise _missing(kind, "tensorboard") from err
            self._writer = SummaryWriter(log_dir=str(Path(output_dir) / "runs" / run_name))
        elif kind == "wandb":
            try:
                import wandb
            except ImportError as err:
                raise _missing(kind, "wandb") from err
            self._writer = wandb.init(project=PROJECT, name=run_name, config=config)
        elif kind == "trackio":
            try:
                import trackio
            except ImportError as err:
                raise _missing(kind, "trackio") from err
            trackio.init(project=PROJECT, name=run_name, config=config)
            self._writer = trackio

    def log(self, scalars: dict[str, float], step: int) -> None:
        if self.kind == "tensorboard":
            for key, value in scalars.items():
                self._writer.add_scalar(f"train/{key}", value, step)
        elif self.kind == "wandb":
            self._writer.log({f"train/{k}": v for k, v in scalars.items()}, step=step)
        elif self.kind == "trackio":
            self._writer.log({f"train/{k}": v for k, v in scalars.items()})  # one call per step: trackio counts them

    def close(self) -> None:
        if self.kind == "tensorboard":
            self._writer.close()
        elif self.kind in ("wandb", "trackio"):
            self._writer.finish()


class StepLog:
    """Call ``step(loss=..., ...)`` after every optimiser step; ``close()`` at the end."""

    def __init__(self, cfg: TrainConfig, name: str, total: int | None, stream: TextIO | None = None, done: int = 0) -> None:
        self.name = name
        self.total = total
        self.every = cfg.logging_steps
        self.show = cfg.progress
        self.stream = stream or sys.stderr
        self.steps = self.resumed = done  # a run resumed from a checkpoint counts on from there
        self.start = time.perf_counter()
        self.tracker = Tracker(cfg.report_to, cfg.output_dir, name, cfg.model_dump()) if cfg.report_to != "none" else None

    def line(self, scalars: dict[str, float]) -> str:
        elapsed = time.perf_counter() - self.start
        where = f"{self.steps}/{self.total}" if self.total else str(self.steps)
        values = " · ".join(f"{k} {v:.4g}" for k, v in scalars.items())
        eta = ""
        per_step = elapsed / max(1, self.steps - self.resumed)
        if self.total:
            eta = f" · ETA {eta_text(per_step * (self.total - self.steps))}"
        return f"{self.name} step {where} · {values} · {per_step:.2f} s/step{eta}"

    def step(self, **scalars: float) -> None:
        self.steps += 1
        if self.tracker is not None:
            self.tracker.log(scalars, self.steps)
        if self.show and (self.steps % self.every == 0 or self.steps == self.total):
            print(self.line(scalars), file=self.stream, flush=True)

    def close(self) -> None:
        if self.tracker is not None:
            self.tracker.close()
            self.tracker = None
