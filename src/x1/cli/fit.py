"""`x1 fit`: run x1's trainers from the command line on what `x1 data` writes, or on TRL-shaped data.

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
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from x1.config import ConfigError, load_yaml, parse_params

if TYPE_CHECKING:
    from x1.tasks.base import Task
    from x1.training.config import TrainConfig

fit_app = typer.Typer(no_args_is_help=True, help="Train the policy, a value model or a PRM on `x1 data` JSONL, or with RL on a task.")
console = Console()
err_console = Console(stderr=True)

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

ModelOpt = Annotated[
    str | None, typer.Option("--model", "-m", help="policy to start from: bundled name, .gguf or transformers folder "
                             "(default: default, as for every command; smollm2 trains fastest on a CPU)")
]
OutOpt = Annotated[
    Path | None, typer.Option("--out", help="where the trained model goes (default: the YAML's output_dir, else runs/fit-KIND)")
]
LoraOpt = Annotated[bool, typer.Option("--lora", help="train LoRA adapters; --out gets the adapter alone unless --merge")]
MergeOpt = Annotated[bool, typer.Option(
    "--merge", help="with --lora: also a merged copy in the base's dtype (--out; the adapter goes to --out/adapter) for x1 solve -m")]
EpochsOpt = Annotated[float | None, typer.Option("--epochs", help="passes over the data (default: 1)")]
LrOpt = Annotated[float | None, typer.Option("--lr", help="learning rate (default: the trainer's own)")]
BatchOpt = Annotated[int | None, typer.Option("--batch-size", help="examples per optimiser step (default: 4)")]
MaxStepsOpt = Annotated[int | None, typer.Option("--max-steps", help="stop after this many optimiser steps (overrides --epochs)")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML of the trainer's config (x1.training.config); flags override it")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="random seed (default: 0)")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="auto, cpu or cuda (default: auto)")]
ReportToOpt = Annotated[
    str | None, typer.Option("--report-to", help="send per-step metrics to tensorboard, wandb or trackio (default: none)")
]
SaveStepsOpt = Annotated[float | None, typer.Option(
    "--save-steps", help="checkpoint every N optimiser steps (PPO, grpo --prm: iterations), or a fraction below 1 of the run "
                         "(default: 0.1); re-running the same command resumes from the newest checkpoint")]
ThreadsOpt = Annotated[int | None, typer.Option(min=1, help="CPU threads for training (default: all); split the cores between processes")]
TaskOpt = Annotated[str, typer.Option("--task", "-t", help="task spec with a verifier: rg:NAME, jsonl:PATH, synthetic:sat, ... (x1 tasks)")]
NOpt = Annotated[int, typer.Option("--n", help="how many tasks to train on")]
TaskOptionOpt = Annotated[list[str] | None, typer.Option("--task-option", help="task config key=value (e.g. difficulty=0.5)")]


class FitError(ValueError):
    """A mistake the user can fix; the message is one line and says how."""


def fail(message: str) -> NoReturn:
    """One escaped red line (a fix such as pip install 'x1[train]' is no markup), never wrapped, exit 2."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(2)


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


def _common(model: str | None, out: Path | None, epochs: float | None, lr: float | None, batch_size: int | None,
            max_steps: int | None, seed: int | None, device: str | None, report_to: str | None,
            save_steps: float | None = None) -> dict[str, Any]:  # fmt: skip
    return {"model": model, "output_dir": out, "epochs": epochs, "learning_rate": lr, "batch_size": batch_size,
            "max_steps": max_steps, "seed": seed, "device": device, "report_to": report_to, "save_steps": save_steps}  # fmt: skip


def claim_out(kind: str, cfg: Any, **sources: Any) -> None:
    """Record what this fit is in its --out (x1_fit.json), or refuse a different run there; a same run resumes."""
    if cfg.save:
        from x1.training.checkpoint import check_fit_identity, fit_identity

        check_fit_identity(cfg.output_dir, fit_identity(kind, cfg, **sources))


# -- commands: supervised, on `x1 data` files ----------------------------------------------------------
@fit_app.command("sft")
def fit_sft(
    data: Annotated[Path, typer.Option("--data", help="SFT rows: `x1 data sft`/`journey` output, "
                                                        "TRL prompt/completion, messages or text; " + FILES)],
    model: ModelOpt = None,
    out: OutOpt = None,
    lora: LoraOpt = False,
    merge: MergeOpt = False,
    epochs: EpochsOpt = None,
    lr: LrOpt = None,
    batch_size: BatchOpt = None,
    max_steps: MaxStepsOpt = None,
    config: ConfigOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    report_to: ReportToOpt = None,
    save_steps: SaveStepsOpt = None,
    threads: ThreadsOpt = None,
) -> None:
    """Supervised fine-tuning of the policy on verified solutions (loss on the completion only)."""
    flags = _common(model, out, epochs, lr, batch_size, max_steps, seed, device, report_to, save_steps)
    run("sft", threads, lambda: fit_on_file("sft", "SFTTrainConfig", "SFTExample", ("sft", "train_sft"), data,
                                   {"config": config, "lora": lora, "merge": merge, **flags}))  # fmt: skip


@fit_app.command("dpo")
def fit_dpo(
    data: Annotated[Path, typer.Option("--data", help="preference pairs: `x1 data pairs` output "
                                                        "or TRL prompt/chosen/rejected; " + FILES)],
    model: ModelOpt = None,
    out: OutOpt = None,
    lora: LoraOpt = False,
    merge: MergeOpt = False,
    epochs: EpochsOpt = None,
    lr: LrOpt = None,
    batch_size: BatchOpt = None,
    max_steps: MaxStepsOpt = None,
    config: ConfigOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    report_to: ReportToOpt = None,
    save_steps: SaveStepsOpt = None,
    beta: Annotated[float | None, typer.Option("--beta", help="DPO temperature β (default: 0.1)")] = None,
    threads: ThreadsOpt = None,
) -> None:
    """Direct preference optimisation of the policy on chosen/rejected steps or solutions."""
    flags = {**_common(model, out, epochs, lr, batch_size, max_steps, seed, device, report_to, save_steps), "beta": beta}
    run("dpo", threads, lambda: fit_on_file("dpo", "DPOTrainConfig", "PreferencePair", ("dpo", "train_dpo"), data,
                                   {"config": config, "lora": lora, "merge": merge, **flags}))  # fmt: skip


@fit_app.command("value")
def fit_value(
    data: Annotated[Path, typer.Option("--data", help="value targets in [-1, 1] written by `x1 data values`; " + FILES)],
    model: ModelOpt = None,
    out: OutOpt = None,
    epochs: EpochsOpt = None,
    lr: LrOpt = None,
    batch_size: BatchOpt = None,
    max_steps: MaxStepsOpt = None,
    config: ConfigOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    report_to: ReportToOpt = None,
    save_steps: SaveStepsOpt = None,
    loss: Annotated[str | None, typer.Option("--loss", help="mse (regression on q) or bce (cross-entropy); default: mse")] = None,
    threads: ThreadsOpt = None,
) -> None:
    """Fit a value model (a head on the policy's backbone) for `-p evaluator=value` and `x1 serve value`."""
    flags = {**_common(model, out, epochs, lr, batch_size, max_steps, seed, device, report_to, save_steps), "loss": loss}
    run("value", threads, lambda: fit_on_file("value", "ValueTrainConfig", "ValueTarget", ("value", "train_value"), data,
                                     {"config": config, **flags}))  # fmt: skip


@fit_app.command("prm")
def fit_prm(
    data: Annotated[Path, typer.Option("--data", help="per-step labels: `x1 data process` output "
                                                        "or TRL prompt/completions/labels; " + FILES)],
    model: ModelOpt = None,
    out: OutOpt = None,
    epochs: EpochsOpt = None,
    lr: LrOpt = None,
    batch_size: BatchOpt = None,
    max_steps: MaxStepsOpt = None,
    config: ConfigOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    report_to: ReportToOpt = None,
    save_steps: SaveStepsOpt = None,
    threads: ThreadsOpt = None,
) -> None:
    """Fit a process reward model on Monte-Carlo step labels (for `x1 fit grpo --prm`)."""
    flags = _common(model, out, epochs, lr, batch_size, max_steps, seed, device, report_to, save_steps)
    run("prm", threads, lambda: fit_on_file("prm", "ValueTrainConfig", "ProcessLabel", ("value", "train_prm"), data,
                                   {"config": config, **flags}))  # fmt: skip


@fit_app.command("orm")
def fit_orm(
    data: Annotated[Path | None, typer.Option("--data", help="preference pairs: JSONL written by `x1 data pairs`")] = None,
    traces: Annotated[list[Path] | None, typer.Option(
        "--traces", help="or trace files of `x1 eval`: correct vs incorrect solutions of each task become the pairs")] = None,
    model: ModelOpt = None,
    out: OutOpt = None,
    epochs: EpochsOpt = None,
    lr: LrOpt = None,
    batch_size: BatchOpt = None,
    max_steps: MaxStepsOpt = None,
    config: ConfigOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    report_to: ReportToOpt = None,
    save_steps: SaveStepsOpt = None,
    threads: ThreadsOpt = None,
) -> None:
    """Fit an outcome reward model (Bradley–Terry on pairs) for `-p evaluator=orm:DIR` and `x1 serve value`."""

    def body() -> None:
        import x1.training.config as configs

        if (data is None) == (not traces):
            raise FitError("give either --data PAIRS.jsonl (from `x1 data pairs`) or --traces TRACES.jsonl, not both or neither")
        if data is not None:
            fit_on_file("orm", "ValueTrainConfig", "PreferencePair", ("value", "train_orm"), data,
                        {"config": config, **_common(model, out, epochs, lr, batch_size, max_steps, seed, device, report_to, save_steps)})
            return
        from x1.data import load_records, preference_pairs

        missing = [str(p) for p in traces or [] if not p.is_file()]
        if missing:
            raise FitError(f"--traces {missing[0]}: no such file; write traces with `x1 eval --out DIR` (DIR/traces.jsonl)")
        pairs = preference_pairs(load_records(traces or []), step=False)
        if not pairs:
            raise FitError("the traces hold no task with both a correct and an incorrect solution, so there is no pair to learn "
                           "from; fix: sample more per task (e.g. -s best_of_n -p n=8) or use -p training=true")
        common = _common(model, out, epochs, lr, batch_size, max_steps, seed, device, report_to, save_steps)
        cfg = build_config(configs.ValueTrainConfig, config, "orm", **common)
        train = trainer("value", "train_orm")
        from x1.training.checkpoint import file_sha256

        claim_out("orm", cfg, traces_sha256=[file_sha256(p) for p in traces or []])
        start = time.perf_counter()
        result = train(cfg, pairs)
        report("orm", len(pairs), result, time.perf_counter() - start, cfg.save)

    run("orm", threads, body)


# -- commands: on-policy, on tasks with a verifier ----------------------------------------------------
@fit_app.command("grpo")
def fit_grpo(
    task: TaskOpt,
    n: NOpt = 32,
    task_option: TaskOptionOpt = None,
    model: ModelOpt = None,
    out: OutOpt = None,
    lora: LoraOpt = False,
    merge: MergeOpt = False,
    epochs: EpochsOpt = None,
    lr: LrOpt = None,
    max_steps: MaxStepsOpt = None,
    config: ConfigOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    report_to: ReportToOpt = None,
    save_steps: SaveStepsOpt = None,
    group_size: Annotated[int | None, typer.Option("--group-size", help="completions sampled per prompt, G (default: 8)")] = None,
    prm: Annotated[
        Path | None,
        typer.Option("--prm", help="PRM folder (`x1 fit prm`): reward every step with it (x1's own loop; --max-steps sets its iterations)"),
    ] = None,
    threads: ThreadsOpt = None,
) -> None:
    """GRPO: outcome rewards from the task's verifier (TRL), or per-step rewards from a PRM with --prm."""

    def body() -> None:
        import x1.training.config as configs

        common = _common(model, out, epochs, lr, None, max_steps, seed, device, report_to, save_steps)  # batch: G x prompts_per_step (YAML)
        if prm is None:
            cfg = build_config(configs.GRPOTrainConfig, config, "grpo", lora, merge, **common, group_size=group_size)
            train = trainer("grpo", "train_grpo")
        else:
            common["iterations"] = common.pop("max_steps")
            cfg = build_config(configs.ProcessGRPOConfig, config, "grpo", lora, merge, **common, group_size=group_size)
            train = trainer("grpo", "train_grpo_process")
        tasks = load_task_list(task, n, cfg.seed, task_option)
        claim_out("grpo", cfg, task=task, n=n, task_option=task_option or [], prm=str(prm.absolute()) if prm else None)
        start = time.perf_counter()
        if prm is None:
            result = train(cfg, tasks)
        else:
            from x1.evaluators.reward_model import ProcessRewardModel
            from x1.training.model_io import pick_device

            result = train(cfg, tasks, ProcessRewardModel.load(prm, device=str(pick_device(cfg.device))))
        rewards = result.metrics.get("reward")
        report("grpo" if prm is None else "grpo-prm", len(tasks), result, time.perf_counter() - start, cfg.save,
               {"last reward": f"{rewards[-1]:.3f}" if rewards else "-"})  # fmt: skip

    run("grpo", threads, body)


@fit_app.command("ppo")
def fit_ppo(
    task: TaskOpt,
    n: NOpt = 32,
    task_option: TaskOptionOpt = None,
    model: ModelOpt = None,
    out: OutOpt = None,
    lora: LoraOpt = False,
    merge: MergeOpt = False,
    lr: LrOpt = None,
    config: ConfigOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    report_to: ReportToOpt = None,
    save_steps: SaveStepsOpt = None,
    iterations: Annotated[int | None, typer.Option("--iterations", help="rounds of rollout → PPO epochs (default: 1)")] = None,
    threads: ThreadsOpt = None,
) -> None:
    """PPO with a value head on the policy; reward ±1 from the task's verifier at the last token."""

    def body() -> None:
        import x1.training.config as configs

        # PPO's sizes come from the YAML: prompts_per_iteration, minibatch_size
        common = _common(model, out, None, lr, None, None, seed, device, report_to, save_steps)
        cfg = build_config(configs.PPOTrainConfig, config, "ppo", lora, merge, **common, iterations=iterations)
        train = trainer("ppo", "train_ppo")
        tasks = load_task_list(task, n, cfg.seed, task_option)
        claim_out("ppo", cfg, task=task, n=n, task_option=task_option or [])
        start = time.perf_counter()
        result = train(cfg, tasks)
        rewards = result.metrics.get("reward")
        report("ppo", len(tasks), result, time.perf_counter() - start, cfg.save, {"last reward": f"{rewards[-1]:.3f}" if rewards else "-"})

    run("ppo", threads, body)


@fit_app.command("rejection")
def fit_rejection(
    task: TaskOpt,
    n: NOpt = 32,
    task_option: TaskOptionOpt = None,
    model: ModelOpt = None,
    out: OutOpt = None,
    lora: LoraOpt = False,
    merge: MergeOpt = False,
    epochs: EpochsOpt = None,
    lr: LrOpt = None,
    batch_size: BatchOpt = None,
    max_steps: MaxStepsOpt = None,
    config: ConfigOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    report_to: ReportToOpt = None,
    save_steps: SaveStepsOpt = None,
    samples: Annotated[int | None, typer.Option("--samples", help="solutions sampled per task (default: 8)")] = None,
    min_score: Annotated[float | None, typer.Option("--min-score", help="verifier score a sample needs to be kept (default: 1)")] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="longest sampled solution (tokens)")] = 512,
    temperature: Annotated[float, typer.Option("--temperature", help="sampling temperature")] = 0.8,
    threads: ThreadsOpt = None,
) -> None:
    """One rejection-sampling round: sample with the policy, keep the verified solutions, fine-tune on them."""

    def body() -> None:
        import x1.training.config as configs
        from x1.models.registry import load_backend

        flags = {**_common(model, out, epochs, lr, batch_size, max_steps, seed, device, report_to, save_steps),
                 "n": samples, "min_score": min_score}
        cfg = build_config(configs.RejectionSamplingConfig, config, "rejection", lora, merge, **flags)
        round_fn = trainer("rejection_sampling", "rejection_sampling_round")
        sampler_of = trainer("rejection_sampling", "backend_sampler")
        tasks = load_task_list(task, n, cfg.seed, task_option)
        claim_out("rejection", cfg, task=task, n=n, task_option=task_option or [], max_tokens=max_tokens, temperature=temperature)
        start = time.perf_counter()

        def sample_then_close(ts: Any, k: int) -> list[list[str]]:
            backend = load_backend(cfg.model)  # the sampler's runtime (llama.cpp for GGUF), closed before training
            try:
                return sampler_of(backend, max_tokens=max_tokens, temperature=temperature, seed=cfg.seed)(ts, k)  # type: ignore[no-any-return]
            finally:
                backend.close()

        rnd = round_fn(cfg.model, tasks, sample_then_close, cfg=cfg)
        accepted = {"accepted": f"{rnd.accepted}/{rnd.sampled}"}
        if rnd.result is None:
            console.print(f"no sample passed the verifier ({rnd.sampled} sampled); nothing trained, nothing written")
            return
        report("rejection", rnd.accepted, rnd.result, time.perf_counter() - start, cfg.save, accepted)

    run("rejection", threads, body)
