"""What every `x1 fit` command runs through: the records it reads, the trainer config it builds, the trainer it
imports, the one-line errors and the result table.

Thin on purpose: read the rows with ``x1.data.formats`` (JSONL, Parquet, ``datasets`` folders; x1's or TRL's shapes),
build the trainer's config (``x1.training.config``; a ``--config`` YAML first, flags on top), call the trainer, print one
table. Nothing here imports torch at module import time, so ``x1 --help`` stays fast and works
without the ``train`` extra; the trainers load inside each command.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Column, Table

from x1.cli.root import console, fail
from x1.config import ConfigError, load_yaml, parse_params

if TYPE_CHECKING:
    from x1.tasks.base import Task
    from x1.training.config import TrainConfig

TRAIN_EXTRA = "pip install 'x1[train]'"
FILES = "JSONL, .parquet or a datasets folder"

# record class → (the `x1 data` command that writes it, the `x1 fit` command that reads it)
WRITERS = {
    "SFTExample": ("x1 data sft", "x1 fit sft"),
    "PreferencePair": ("x1 data pairs", "x1 fit dpo"),
    "ProcessLabel": ("x1 data process", "x1 fit prm"),
    "ValueTarget": ("x1 data values", "x1 fit value"),
}
ALSO_WRITTEN_BY = {"SFTExample": "x1 data journey"}


def written_by(kind: str) -> str:
    """The `x1 data` command(s) that write records of ``kind``, quoted for a message."""
    also = ALSO_WRITTEN_BY.get(kind)
    return f"`{WRITERS[kind][0]}`" + (f" (or `{also}`)" if also else "")


# config field → the flag that sets it, so a bad flag value is reported as the flag
FLAGS = {
    "model": "--model",
    "output_dir": "--out",
    "epochs": "--epochs",
    "learning_rate": "--lr",
    "batch_size": "--batch-size",
    "max_steps": "--max-steps",
    "seed": "--seed",
    "device": "--device",
    "report_to": "--report-to",
    "lora": "--lora",
    "group_size": "--group-size",
    "beta": "--beta",
    "loss": "--loss",
    "iterations": "--max-steps",
    "n": "--samples",
    "min_score": "--min-score",
    "save_steps": "--save-steps",
}


class FitError(ValueError):
    """A mistake the user can fix; the message is one line and says how."""


def trainer(module: str, name: str) -> Callable[..., Any]:
    """Import a trainer only when a command runs: torch, transformers and TRL take seconds and are an extra."""
    try:
        return getattr(import_module(f"x1.training.{module}"), name)  # type: ignore[no-any-return]
    except ImportError as err:
        missing = err.name or str(err)
        raise FitError(f"training needs the train extra ({missing} is not installed): {TRAIN_EXTRA}") from err


# -- data --------------------------------------------------------------------------------------------
def read_records(path: Path, kind: str, command: str) -> list[Any]:
    """The records of ``path`` (JSONL, Parquet or a ``datasets`` folder; x1's rows or TRL's) for ``kind``.

    Any mistake names the file, the row and the command that writes what this one reads.
    """
    from x1.data.formats import TRL_SHAPES, FormatError, kind_of, load_rows, records_of, shape_of

    writer = written_by(kind)
    if not path.exists():
        raise FitError(f"{path}: no such file; write it with `{WRITERS[kind][0]} --traces TRACES.jsonl --out {path}`")
    try:
        rows = load_rows(path)
    except UnicodeDecodeError as err:
        raise FitError(f"{path}: not a text JSONL file ({err.reason}); `{command}` reads what {writer} writes") from err
    except FormatError as err:
        raise FitError(f"{err}; `{command}` reads what {writer} writes, or TRL's {TRL_SHAPES[kind]}") from err
    if not rows:
        raise FitError(f"{path}: holds no records; {writer} writes them (it writes none when nothing in the traces qualifies)")
    try:
        return records_of(rows, kind, str(path))  # type: ignore[arg-type]
    except FormatError as err:
        bad = next((i for i, row in enumerate(rows, 1) if shape_of(row, kind) is None), None)  # type: ignore[arg-type]
        other = kind_of(rows[bad - 1], kind) if bad else None
        if other is None:
            raise FitError(f"{err}; `{command}` reads what {writer} writes, or TRL's {TRL_SHAPES[kind]}") from err
        raise FitError(
            f"{path}:{bad}: a {other} (what {written_by(other)} writes), not a {kind}; "
            f"`{command}` reads what {writer} writes; train on this file with `{WRITERS[other][1]}`"
        ) from err


# -- config ------------------------------------------------------------------------------------------
def build_config(cls: type[TrainConfig], config: Path | None, kind: str, lora: bool = False, merge: bool = False, **flags: Any) -> Any:
    """The trainer config: YAML (validated on its own, so its mistakes name the file) with the given flags on top."""
    from pydantic import ValidationError

    data: dict[str, Any] = load_yaml(cls, config).model_dump(exclude_unset=True) if config else {}
    data.update({k: str(v) if isinstance(v, Path) else v for k, v in flags.items() if v is not None})
    data.setdefault("output_dir", f"runs/fit-{kind}")
    if lora:
        data["lora"] = {**data.get("lora", {}), "enabled": True}
    if merge:
        if not data.get("lora", {}).get("enabled"):
            raise ConfigError("--merge merges LoRA adapters into the model; fix: add --lora (a full fine-tune is saved whole anyway)")
        data["lora"] = {**data["lora"], "merge_on_save": True}
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        by_flag = flags.get(field) is not None or (field == "lora" and lora) or config is None
        where = FLAGS.get(field, field) if by_flag else f"{config}: field '{'.'.join(map(str, first['loc']))}'"
        raise ConfigError(f"{where}: {first['msg']}") from err


def load_task_list(task: str, n: int, seed: int, options: list[str] | None) -> list[Task]:
    """The training tasks (each carries its verifier, which gives the RL rewards)."""
    from x1.tasks.registry import load_tasks

    tasks = load_tasks(task, n=n, seed=seed, **parse_params(options or []))
    if not tasks:
        raise FitError(f"--task {task} gave no tasks; check --n and the spec (x1 tasks)")
    return tasks


# -- running and reporting ---------------------------------------------------------------------------
def _fmt(losses: list[float], index: int) -> str:
    """A loss for the table; "-" when the trainer logged none (e.g. zero steps)."""
    return f"{losses[index]:.4f}" if losses else "-"


def report(kind: str, records: int, result: Any, wall_s: float, saved: bool, extra: dict[str, str] | None = None) -> None:
    """One row: what ran, how many steps, the first and last loss, where the model went, how long it took."""
    table = Table("records", "steps", "first loss", "last loss", *(extra or {}))
    table.columns.insert(0, Column("trainer", no_wrap=True))
    table.add_column("output", overflow="fold")  # the whole path, folded, rather than cut to "runs/gr…"
    table.add_column("wall", no_wrap=True)
    output = result.output_dir if saved else f"{result.output_dir} (not saved: save is false)"
    table.add_row(kind, str(records), str(result.steps), _fmt(result.losses, 0), _fmt(result.losses, -1), *(extra or {}).values(),
                  output, f"{wall_s:.1f}s")  # fmt: skip
    console.print(table)


def run(kind: str, threads: int | None, body: Callable[[], None]) -> None:
    """Run a command body on ``threads`` CPU threads (None: torch's default, all cores), turning the errors
    a user can fix into one line and exit code 2."""
    from x1.models.base import BackendError
    from x1.tasks.base import TaskError

    try:
        if threads:
            import torch

            torch.set_num_threads(threads)
        body()
    except (FitError, ConfigError, BackendError, TaskError, ValueError, OSError) as err:
        fail(str(err) or f"{kind}: {type(err).__name__}")


def fit_on_file(kind: str, cls_name: str, record: str, trainer_ref: tuple[str, str], data: Path, cfg_args: dict[str, Any]) -> None:
    """The shared path of the file-based trainers: config, records, train, table."""
    import x1.training.config as configs

    command = f"x1 fit {kind}"
    cfg = build_config(getattr(configs, cls_name), **cfg_args, kind=kind)
    records = read_records(data, record, command)
    train = trainer(*trainer_ref)
    from x1.training.checkpoint import file_sha256

    claim_out(kind, cfg, data_sha256=file_sha256(data))
    start = time.perf_counter()
    result = train(cfg, records)
    extra = {}
    if margins := result.metrics.get("rewards/margins"):
        extra["last margin"] = f"{margins[-1]:.3f}"
    report(kind, len(records), result, time.perf_counter() - start, cfg.save, extra)


def common_flags(model: str | None, out: Path | None, epochs: float | None, lr: float | None, batch_size: int | None,
                 max_steps: int | None, seed: int | None, device: str | None, report_to: str | None,
                 save_steps: float | None = None) -> dict[str, Any]:  # fmt: skip
    """The flags most fit commands share, keyed by the config field each sets (None: not given)."""
    return {"model": model, "output_dir": out, "epochs": epochs, "learning_rate": lr, "batch_size": batch_size,
            "max_steps": max_steps, "seed": seed, "device": device, "report_to": report_to, "save_steps": save_steps}  # fmt: skip


def claim_out(kind: str, cfg: Any, **sources: Any) -> None:
    """Record what this fit is in its --out (x1_fit.json), or refuse a different run there; a same run resumes."""
    if cfg.save:
        from x1.training.checkpoint import check_fit_identity, fit_identity

        check_fit_identity(cfg.output_dir, fit_identity(kind, cfg, **sources))
