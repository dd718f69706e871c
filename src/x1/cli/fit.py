"""`x1 fit`: run x1's trainers from the command line on what `x1 data` writes, or on TRL-shaped data, or with RL on a task.

This module holds the group and the commands that train on files; ``fit_rl`` the on-policy ones, ``fit_base`` what all
of them run through. Nothing here imports torch at import time (``x1 --help`` must stay fast without the train extra).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from x1.cli.fit_base import FILES, FitError, build_config, claim_out, common_flags, fit_on_file, report, run, trainer
from x1.cli.fit_rl import fit_grpo, fit_ppo, fit_rejection
from x1.cli.options import (
    BatchOpt,
    DeviceOpt,
    EpochsOpt,
    EvaluatorLoraOpt,
    LoraOpt,
    LrOpt,
    MaxStepsOpt,
    MergeOpt,
    ReportToOpt,
    SaveStepsOpt,
    TrainConfigOpt,
    TrainModelOpt,
    TrainOutOpt,
    TrainSeedOpt,
    TrainThreadsOpt,
)


def fit_sft(
    data: Annotated[Path, typer.Option("--data", help="SFT rows: `x1 data sft`/`journey` output, "
                                                        "TRL prompt/completion, messages or text; " + FILES)],
    model: TrainModelOpt = None,
    out: TrainOutOpt = None,
    lora: LoraOpt = False,
    merge: MergeOpt = False,
    epochs: EpochsOpt = None,
    lr: LrOpt = None,
    batch_size: BatchOpt = None,
    max_steps: MaxStepsOpt = None,
    config: TrainConfigOpt = None,
    seed: TrainSeedOpt = None,
    device: DeviceOpt = None,
    report_to: ReportToOpt = None,
    save_steps: SaveStepsOpt = None,
    threads: TrainThreadsOpt = None,
) -> None:
    """Supervised fine-tuning of the policy on verified solutions (loss on the completion only)."""
    flags = common_flags(model, out, epochs, lr, batch_size, max_steps, seed, device, report_to, save_steps)
    run("sft", threads, lambda: fit_on_file("sft", "SFTTrainConfig", "SFTExample", ("sft", "train_sft"), data,
                                   {"config": config, "lora": lora, "merge": merge, **flags}))  # fmt: skip


def fit_dpo(
    data: Annotated[Path, typer.Option("--data", help="preference pairs: `x1 data pairs` output "
                                                        "or TRL prompt/chosen/rejected; " + FILES)],
    model: TrainModelOpt = None,
    out: TrainOutOpt = None,
    lora: LoraOpt = False,
    merge: MergeOpt = False,
    epochs: EpochsOpt = None,
    lr: LrOpt = None,
    batch_size: BatchOpt = None,
    max_steps: MaxStepsOpt = None,
    config: TrainConfigOpt = None,
    seed: TrainSeedOpt = None,
    device: DeviceOpt = None,
    report_to: ReportToOpt = None,
    save_steps: SaveStepsOpt = None,
    beta: Annotated[float | None, typer.Option("--beta", help="DPO temperature β (default: 0.1)")] = None,
    threads: TrainThreadsOpt = None,
) -> None:
    """Direct preference optimisation of the policy on chosen/rejected steps or solutions."""
    flags = {**common_flags(model, out, epochs, lr, batch_size, max_steps, seed, device, report_to, save_steps), "beta": beta}
    run("dpo", threads, lambda: fit_on_file("dpo", "DPOTrainConfig", "PreferencePair", ("dpo", "train_dpo"), data,
                                   {"config": config, "lora": lora, "merge": merge, **flags}))  # fmt: skip


def fit_value(
    data: Annotated[Path, typer.Option("--data", help="value targets in [-1, 1] written by `x1 data values`; " + FILES)],
    model: TrainModelOpt = None,
    out: TrainOutOpt = None,
    lora: EvaluatorLoraOpt = False,
    epochs: EpochsOpt = None,
    lr: LrOpt = None,
    batch_size: BatchOpt = None,
    max_steps: MaxStepsOpt = None,
    config: TrainConfigOpt = None,
    seed: TrainSeedOpt = None,
    device: DeviceOpt = None,
    report_to: ReportToOpt = None,
    save_steps: SaveStepsOpt = None,
    loss: Annotated[str | None, typer.Option("--loss", help="mse (regression on q) or bce (cross-entropy); default: mse")] = None,
    threads: TrainThreadsOpt = None,
) -> None:
    """Fit a value model (a head on the policy's backbone) for `-p evaluator=value` and `x1 serve value`."""
    flags = {**common_flags(model, out, epochs, lr, batch_size, max_steps, seed, device, report_to, save_steps), "loss": loss}
    run("value", threads, lambda: fit_on_file("value", "ValueTrainConfig", "ValueTarget", ("value", "train_value"), data,
                                     {"config": config, "lora": lora, **flags}))  # fmt: skip


def fit_prm(
    data: Annotated[Path, typer.Option("--data", help="per-step labels: `x1 data process` output "
                                                        "or TRL prompt/completions/labels; " + FILES)],
    model: TrainModelOpt = None,
    out: TrainOutOpt = None,
    lora: EvaluatorLoraOpt = False,
    epochs: EpochsOpt = None,
    lr: LrOpt = None,
    batch_size: BatchOpt = None,
    max_steps: MaxStepsOpt = None,
    config: TrainConfigOpt = None,
    seed: TrainSeedOpt = None,
    device: DeviceOpt = None,
    report_to: ReportToOpt = None,
    save_steps: SaveStepsOpt = None,
    threads: TrainThreadsOpt = None,
) -> None:
    """Fit a process reward model on Monte-Carlo step labels (for `x1 fit grpo --prm`)."""
    flags = common_flags(model, out, epochs, lr, batch_size, max_steps, seed, device, report_to, save_steps)
    run("prm", threads, lambda: fit_on_file("prm", "ValueTrainConfig", "ProcessLabel", ("value", "train_prm"), data,
                                   {"config": config, "lora": lora, **flags}))  # fmt: skip


def fit_orm(
    data: Annotated[Path | None, typer.Option("--data", help="preference pairs: JSONL written by `x1 data pairs`")] = None,
    traces: Annotated[list[Path] | None, typer.Option(
        "--traces", help="or trace files of `x1 eval`: correct vs incorrect solutions of each task become the pairs")] = None,
    model: TrainModelOpt = None,
    out: TrainOutOpt = None,
    lora: EvaluatorLoraOpt = False,
    epochs: EpochsOpt = None,
    lr: LrOpt = None,
    batch_size: BatchOpt = None,
    max_steps: MaxStepsOpt = None,
    config: TrainConfigOpt = None,
    seed: TrainSeedOpt = None,
    device: DeviceOpt = None,
    report_to: ReportToOpt = None,
    save_steps: SaveStepsOpt = None,
    threads: TrainThreadsOpt = None,
) -> None:
    """Fit an outcome reward model (Bradley–Terry on pairs) for `-p evaluator=orm:DIR` and `x1 serve value`."""

    def body() -> None:
        import x1.training.config as configs

        if (data is None) == (not traces):
            raise FitError("give either --data PAIRS.jsonl (from `x1 data pairs`) or --traces TRACES.jsonl, not both or neither")
        common = common_flags(model, out, epochs, lr, batch_size, max_steps, seed, device, report_to, save_steps)
        if data is not None:
            fit_on_file("orm", "ValueTrainConfig", "PreferencePair", ("value", "train_orm"), data,
                        {"config": config, "lora": lora, **common})
            return
        from x1.data import load_records, preference_pairs

        missing = [str(p) for p in traces or [] if not p.is_file()]
        if missing:
            raise FitError(f"--traces {missing[0]}: no such file; write traces with `x1 eval --out DIR` (DIR/traces.jsonl)")
        pairs = preference_pairs(load_records(traces or []), step=False)
        if not pairs:
            raise FitError("the traces hold no task with both a correct and an incorrect solution, so there is no pair to learn "
                           "from; fix: sample more per task (e.g. -s best_of_n -p n=8) or use -p training=true")
        cfg = build_config(configs.ValueTrainConfig, config, "orm", lora=lora, **common)
        train = trainer("value", "train_orm")
        from x1.training.checkpoint import file_sha256

        claim_out("orm", cfg, traces_sha256=[file_sha256(p) for p in traces or []])
        start = time.perf_counter()
        result = train(cfg, pairs)
        report("orm", len(pairs), result, time.perf_counter() - start, cfg.save)

    run("orm", threads, body)


fit_app = typer.Typer(no_args_is_help=True, help="Train the policy, a value model or a PRM on `x1 data` JSONL, or with RL on a task.")
fit_app.command("sft")(fit_sft)
fit_app.command("dpo")(fit_dpo)
fit_app.command("value")(fit_value)
fit_app.command("prm")(fit_prm)
fit_app.command("orm")(fit_orm)
fit_app.command("grpo")(fit_grpo)
fit_app.command("ppo")(fit_ppo)
fit_app.command("rejection")(fit_rejection)
