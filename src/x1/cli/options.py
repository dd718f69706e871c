"""Options that several commands take, each defined once, and the run config the search options build.

Options one group alone uses (serve's, data's, the on-policy fit commands' --task and --n) stay in that group's module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from x1.config import DEFAULT_MODEL, DEFAULT_STRATEGY, STEP_KINDS, ConfigError, RunConfig, parse_params
from x1.strategies import STRATEGIES

# -- the search: x1 solve, eval, demo (and serve policy's --model) -------------------------------------
ModelOpt = Annotated[
    str | None, typer.Option("--model", "-m", help="bundled name (default, smollm2), .gguf path, folder, or openai:URL "
                             f"(default: {DEFAULT_MODEL}, as for every command)")
]
StrategyOpt = Annotated[str | None, typer.Option("--strategy", "-s", help=f"{', '.join(STRATEGIES)} (x1 strategies) "
                                                 f"(default: {DEFAULT_STRATEGY}, or the YAML's)")]
ParamOpt = Annotated[list[str] | None, typer.Option("--param", "-p", help="strategy hyper-parameter key=value, repeatable; "
                                                    "evaluator=confidence|verifier|judge|value:DIR|prm:DIR|orm:DIR|remote:URL")]
StepOpt = Annotated[str | None, typer.Option(
    "--step", help="step granularity: newline, blank (paragraphs), eois (the <eois> marker), token, solution [default: the task's]")]
MaxStepTokensOpt = Annotated[int | None, typer.Option("--max-step-tokens", min=1, help="most tokens per step [default: the task's]")]
ChatTemplateOpt = Annotated[str | None, typer.Option(
    "--chat-template", help="for openai: models: chatml, a Jinja file, or a model folder with tokenizer_config.json")]
SeedOpt = Annotated[int | None, typer.Option(help="search seed [default: 0, or the YAML's]")]
TemperatureOpt = Annotated[float | None, typer.Option(
    help="sampling temperature; when given it wins over the strategy's own, as -p temperature= does (default: the strategy's)")]
ThreadsOpt = Annotated[int | None, typer.Option(
    min=1, help="CPU threads for a local model (default: all); give each of several processes its share of the cores")]
ValueUrlOpt = Annotated[
    str | None, typer.Option("--value-url", help="`x1 serve value` server (http://HOST:8001): -p evaluator=value then means remote:URL")
]
RunConfigOpt = Annotated[Path | None, typer.Option(help="YAML run config (flags override it)")]
ModelNameOpt = Annotated[str | None, typer.Option(help="model id for an openai: server")]

# -- tasks: x1 eval and the on-policy x1 fit commands ---------------------------------------------------
TaskOptionOpt = Annotated[list[str] | None, typer.Option("--task-option", help="task config key=value (e.g. difficulty=0.5)")]

# -- training: every x1 fit command ----------------------------------------------------------------------
# --model, --out, --config, --seed and --threads mean other things here than in the search (the policy to start
# from, where the trained model goes, the trainer's YAML, a training seed), so they are types of their own.
TrainModelOpt = Annotated[
    str | None, typer.Option("--model", "-m", help="policy to start from: bundled name, .gguf or transformers folder "
                             "(default: default, as for every command; smollm2 trains fastest on a CPU)")
]
TrainOutOpt = Annotated[
    Path | None, typer.Option("--out", help="where the trained model goes (default: the YAML's output_dir, else runs/fit-KIND)")
]
LoraOpt = Annotated[bool, typer.Option("--lora", help="train LoRA adapters; --out gets the adapter alone unless --merge")]
EvaluatorLoraOpt = Annotated[bool, typer.Option(
    "--lora", help="LoRA adapters on a frozen backbone (~4x faster steps on a CPU); --out then holds the adapter "
                   "and the head (megabytes) and names the base model, which loading merges them into")]
MergeOpt = Annotated[bool, typer.Option(
    "--merge", help="with --lora: also a merged copy in the base's dtype (--out; the adapter goes to --out/adapter) for x1 solve -m")]
EpochsOpt = Annotated[float | None, typer.Option("--epochs", help="passes over the data (default: 1)")]
LrOpt = Annotated[float | None, typer.Option("--lr", help="learning rate (default: the trainer's own)")]
BatchOpt = Annotated[int | None, typer.Option("--batch-size", help="examples per optimiser step (default: 4)")]
MaxStepsOpt = Annotated[int | None, typer.Option("--max-steps", help="stop after this many optimiser steps (overrides --epochs)")]
TrainConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="YAML of the trainer's config (x1.training.config); flags override it")
]
TrainSeedOpt = Annotated[int | None, typer.Option("--seed", help="random seed (default: 0)")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="auto, cpu or cuda (default: auto)")]
ReportToOpt = Annotated[
    str | None, typer.Option("--report-to", help="send per-step metrics to tensorboard, wandb or trackio (default: none)")
]
SaveStepsOpt = Annotated[float | None, typer.Option(
    "--save-steps", help="checkpoint every N optimiser steps (PPO, grpo --prm: iterations), or a fraction below 1 of the run "
                         "(default: 0.1); re-running the same command resumes from the newest checkpoint")]
TrainThreadsOpt = Annotated[
    int | None, typer.Option(min=1, help="CPU threads for training (default: all); split the cores between processes")
]


def build_config(
    model: str | None,
    strategy: str | None,
    params: list[str] | None,
    seed: int | None,
    temperature: float | None,
    config: Path | None,
    model_name: str | None = None,
    value_url: str | None = None,
    default_strategy: str = DEFAULT_STRATEGY,
    step: str | None = None,
    max_step_tokens: int | None = None,
    chat_template: str | None = None,
    threads: int | None = None,
) -> RunConfig:
    """The run's config: the YAML's values, overridden by the flags the user gave (and only those);
    then the strategy and every evaluator it names are checked, before any model loads."""
    from x1.pipelines.solve import check_search

    cfg = RunConfig.from_yaml(config) if config else RunConfig()
    if model is not None:
        cfg.model.name = model
    if model_name:
        cfg.model.model_name = model_name
    if value_url:
        cfg.search.value_url = value_url
    if strategy is not None:
        cfg.search.strategy = strategy
    elif "strategy" not in cfg.search.model_fields_set:
        cfg.search.strategy = default_strategy
    cfg.search.params.update(parse_params(params or []))
    if seed is not None:
        cfg.search.seed = seed
    if temperature is not None:
        cfg.search.temperature = temperature
    if step is not None:
        if step not in STEP_KINDS:
            raise ConfigError(f"--step {step!r} is not one of {', '.join(STEP_KINDS)}")
        cfg.search.step.delimiter = step  # type: ignore[assignment]
    if max_step_tokens is not None:
        cfg.search.step.max_step_tokens = max_step_tokens
    if chat_template is not None:
        cfg.model.chat_template = chat_template
    if threads is not None:
        cfg.model.threads = threads
    check_search(cfg)
    return cfg
