"""`x1 fit grpo|ppo|rejection`: on-policy training on tasks whose verifier gives the rewards; ``x1.cli.fit`` registers them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from x1.cli.fit_base import build_config, claim_out, common_flags, load_task_list, report, run, trainer
from x1.cli.options import (
    BatchOpt,
    DeviceOpt,
    EpochsOpt,
    LoraOpt,
    LrOpt,
    MaxStepsOpt,
    MergeOpt,
    ReportToOpt,
    SaveStepsOpt,
    TaskOptionOpt,
    TrainConfigOpt,
    TrainModelOpt,
    TrainOutOpt,
    TrainSeedOpt,
    TrainThreadsOpt,
)
from x1.cli.root import console

TaskOpt = Annotated[str, typer.Option("--task", "-t", help="task spec with a verifier: rg:NAME, jsonl:PATH, synthetic:sat, ... (x1 tasks)")]
NOpt = Annotated[int, typer.Option("--n", help="how many tasks to train on")]


def fit_grpo(
    task: TaskOpt,
    n: NOpt = 32,
    task_option: TaskOptionOpt = None,
    model: TrainModelOpt = None,
    out: TrainOutOpt = None,
    lora: LoraOpt = False,
    merge: MergeOpt = False,
    epochs: EpochsOpt = None,
    lr: LrOpt = None,
    max_steps: MaxStepsOpt = None,
    config: TrainConfigOpt = None,
    seed: TrainSeedOpt = None,
    device: DeviceOpt = None,
    report_to: ReportToOpt = None,
    save_steps: SaveStepsOpt = None,
    group_size: Annotated[int | None, typer.Option("--group-size", help="completions sampled per prompt, G (default: 8)")] = None,
    prm: Annotated[
        Path | None,
        typer.Option("--prm", help="PRM folder (`x1 fit prm`): reward every step with it (x1's own loop; --max-steps sets its iterations)"),
    ] = None,
    threads: TrainThreadsOpt = None,
) -> None:
    """GRPO: outcome rewards from the task's verifier (TRL), or per-step rewards from a PRM with --prm."""

    def body() -> None:
        import x1.training.config as configs

        # no --batch-size: a GRPO batch is G x prompts_per_step (YAML)
        common = common_flags(model, out, epochs, lr, None, max_steps, seed, device, report_to, save_steps)
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


def fit_ppo(
    task: TaskOpt,
    n: NOpt = 32,
    task_option: TaskOptionOpt = None,
    model: TrainModelOpt = None,
    out: TrainOutOpt = None,
    lora: LoraOpt = False,
    merge: MergeOpt = False,
    lr: LrOpt = None,
    config: TrainConfigOpt = None,
    seed: TrainSeedOpt = None,
    device: DeviceOpt = None,
    report_to: ReportToOpt = None,
    save_steps: SaveStepsOpt = None,
    iterations: Annotated[int | None, typer.Option("--iterations", help="rounds of rollout → PPO epochs (default: 1)")] = None,
    threads: TrainThreadsOpt = None,
) -> None:
    """PPO with a value head on the policy; reward ±1 from the task's verifier at the last token."""

    def body() -> None:
        import x1.training.config as configs

        # PPO's sizes come from the YAML: prompts_per_iteration, minibatch_size
        common = common_flags(model, out, None, lr, None, None, seed, device, report_to, save_steps)
        cfg = build_config(configs.PPOTrainConfig, config, "ppo", lora, merge, **common, iterations=iterations)
        train = trainer("ppo", "train_ppo")
        tasks = load_task_list(task, n, cfg.seed, task_option)
        claim_out("ppo", cfg, task=task, n=n, task_option=task_option or [])
        start = time.perf_counter()
        result = train(cfg, tasks)
        rewards = result.metrics.get("reward")
        report("ppo", len(tasks), result, time.perf_counter() - start, cfg.save, {"last reward": f"{rewards[-1]:.3f}" if rewards else "-"})

    run("ppo", threads, body)


def fit_rejection(
    task: TaskOpt,
    n: NOpt = 32,
    task_option: TaskOptionOpt = None,
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
    samples: Annotated[int | None, typer.Option("--samples", help="solutions sampled per task (default: 8)")] = None,
    min_score: Annotated[float | None, typer.Option("--min-score", help="verifier score a sample needs to be kept (default: 1)")] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="longest sampled solution (tokens)")] = 512,
    temperature: Annotated[float, typer.Option("--temperature", help="sampling temperature")] = 0.8,
    threads: TrainThreadsOpt = None,
) -> None:
    """One rejection-sampling round: sample with the policy, keep the verified solutions, fine-tune on them."""

    def body() -> None:
        import x1.training.config as configs
        from x1.models.registry import load_backend

        flags = {**common_flags(model, out, epochs, lr, batch_size, max_steps, seed, device, report_to, save_steps),
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
