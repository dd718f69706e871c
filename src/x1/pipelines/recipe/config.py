"""The recipe's YAML: tasks, the two phases, evaluation; every bad field is named at load."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from x1.config import BudgetConfig, load_yaml
from x1.evaluators.spec import parse_evaluator
from x1.strategies import build_strategy
from x1.training.config import DPOTrainConfig, PPOTrainConfig, SFTTrainConfig, TrainConfig, ValueTrainConfig


class RecipeError(ValueError):
    """The recipe cannot go on; the message says why and what to do."""


# -- configuration ----------------------------------------------------------------------------------
def _trainer_field(value: TrainConfig) -> TrainConfig:
    """Trainer sub-configs take their model and output folder from the recipe, and keep steps as text."""
    owned = {"model": "the recipe's `policy`", "gguf_file": "the recipe's `gguf_file`", "output_dir": "the recipe's folders",
             "save": "the recipe"}  # fmt: skip
    for name, who in owned.items():
        if name in value.model_fields_set:
            raise ValueError(f"'{name}' is set by {who}; remove it here")
    if value.eois_token:
        raise ValueError("eois_token must stay false: x1's engine splits steps at the task's delimiter, not at <eois>")
    return value


def _strategy_params(value: dict[str, Any]) -> dict[str, Any]:
    if "training" in value:
        raise ValueError("'training' is set by the recipe (on for phase-2 search, off for evaluation); remove it")
    evaluator = value.get("evaluator", "value")
    if evaluator != "value":  # 'value' is the recipe's own value model, trained as it goes
        parse_evaluator(evaluator)
    build_strategy("mcts", **value)  # unknown parameters fail here, naming what MCTS takes
    return value


# Fields checked when given (the defaults are valid): trainers the recipe configures, MCTS parameters.
Trainer = AfterValidator(_trainer_field)
MCTSParams = Annotated[dict[str, Any], AfterValidator(_strategy_params)]


class TasksConfig(BaseModel):
    """Where the problems come from. The first ``n_train`` tasks train, the next ``n_eval`` are held out."""

    model_config = ConfigDict(extra="forbid")

    spec: str = "samples"  # any task spec x1 knows: rg:NAME, synthetic:NAME, jsonl:PATH, samples, champ
    options: dict[str, Any] = Field(default_factory=dict)  # the source's options (rg config fields, difficulty)
    n_train: int = Field(8, gt=0)
    n_eval: int = Field(8, gt=0)
    seed: int = 0
    max_step_tokens: int | None = Field(None, gt=0)  # overrides the tasks' tokens per step
    max_steps: int | None = Field(None, gt=0)  # overrides the tasks' steps per solution


class Phase1Config(BaseModel):
    """SFT data (given traces, or rejection sampling now) → SFT; Monte-Carlo labels → value model."""

    model_config = ConfigDict(extra="forbid")

    traces: list[str] = Field(default_factory=list)  # trace files to learn from instead of sampling now
    samples: int = Field(4, gt=0)  # best-of-N: chains sampled per train task
    temperature: float = Field(0.8, gt=0)
    min_score: float = Field(1.0, ge=0, le=1)  # verifier score a solution needs to become SFT data
    value_gamma: float = Field(0.96, gt=0, le=1)  # discount of the Monte-Carlo value labels
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    sft: Annotated[SFTTrainConfig, Trainer] = Field(default_factory=SFTTrainConfig)
    value: Annotated[ValueTrainConfig, Trainer] = Field(default_factory=ValueTrainConfig)



class Phase2Config(BaseModel):
    """Rounds of MCTS (training mode) → replay buffer → policy update + value refit."""

    model_config = ConfigDict(extra="forbid")

    rounds: int = Field(2, ge=0)
    mcts: MCTSParams = Field(default_factory=lambda: {"iterations": 8, "expand": 2})  # MCTS parameters; training is on
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    update: Literal["sft", "dpo", "ppo"] = "sft"
    buffer_rounds: int = Field(2, gt=0)  # K: the replay buffer holds the traces of the last K rounds
    min_gap: float = Field(0.2, ge=0)  # DPO: smallest q gap between chosen and rejected
    min_visits: int = Field(1, ge=1)  # value refit: skip thoughts MCTS visited fewer times
    sft: Annotated[SFTTrainConfig, Trainer] = Field(default_factory=SFTTrainConfig)
    dpo: Annotated[DPOTrainConfig, Trainer] = Field(default_factory=DPOTrainConfig)
    ppo: Annotated[PPOTrainConfig, Trainer] = Field(default_factory=PPOTrainConfig)
    value: Annotated[ValueTrainConfig, Trainer] = Field(default_factory=ValueTrainConfig)




class EvalConfig(BaseModel):
    """Held-out evaluation after every phase."""

    model_config = ConfigDict(extra="forbid")

    greedy: bool = True  # chain of thought at temperature 0
    mcts: bool = True  # MCTS guided by the trained value model (from phase 1 on)
    mcts_params: MCTSParams = Field(default_factory=lambda: {"iterations": 8, "expand": 2})
    budget: BudgetConfig = Field(default_factory=BudgetConfig)



class RecipeConfig(BaseModel):
    """The whole recipe; ``x1 train`` loads it from YAML and names any bad field."""

    model_config = ConfigDict(extra="forbid")

    policy: str  # transformers folder, .gguf file, or bundled name (smollm2, default)
    gguf_file: str | None = None  # the GGUF inside ``policy`` when that is a folder of GGUFs
    output_dir: str = "runs/recipe"
    device: Literal["auto", "cpu", "cuda"] = "auto"  # search and trainers (a trainer's own device wins)
    threads: int | None = Field(None, gt=0)  # torch CPU threads for the whole run
    seed: int = 0
    keep_checkpoints: int | None = Field(None, gt=0)  # keep the policy/value folders of the last k stages only
    tasks: TasksConfig = Field(default_factory=TasksConfig)
    phase1: Phase1Config = Field(default_factory=Phase1Config)
    phase2: Phase2Config = Field(default_factory=Phase2Config)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @classmethod
    def from_yaml(cls, path: str | Path) -> Self:
        return load_yaml(cls, path)

    def identity(self) -> dict[str, Any]:
        """What a run's folder is bound to: resuming with another policy or other tasks is refused."""
        return {"policy": self.policy, "gguf_file": self.gguf_file, "tasks": self.tasks.model_dump(), "seed": self.seed}
