"""Typed run configuration: loads from YAML or CLI flags and fails at load naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from x1.markers import EOIS


class ConfigError(ValueError):
    pass


# One default per setting for every command (solve, eval, demo, serve, fit): a model trained with the
# defaults is the model the other commands run with the defaults.
DEFAULT_MODEL = "default"
DEFAULT_STRATEGY = "cot"
DEFAULT_TEMPERATURE = 0.7  # for a generate request that sets none (every built-in strategy sets its own)


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = DEFAULT_MODEL  # bundled name, .gguf path, transformers folder, openai:URL
    model_name: str | None = None  # the model id an OpenAI-compatible server expects
    n_ctx: int = Field(32768, gt=0)
    # llama.cpp sequence slots (its maximum): 3/16 run (the engine's live target), the rest keep paths cached
    n_seq_max: int = Field(256, gt=0, le=256)
    # llama.cpp: one KV stream of this many cells per slot (n_seq_max x it in all) instead of one unified cache of
    # n_ctx; a decode step then attends over its own sequence's cells, not every cached one (benchmarks/prefix_cache.py)
    kv_stream_cells: int | None = Field(None, gt=0)
    timeout: float = Field(60.0, gt=0)
    chat_template: str | None = None  # openai: models: chatml, a Jinja file, or a model folder with tokenizer_config.json
    threads: int | None = Field(None, gt=0)  # CPU threads for a local model (None: all); split the cores between processes


class BudgetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_tokens: int | None = Field(None, gt=0)
    max_policy_calls: int | None = Field(None, gt=0)
    max_nodes: int | None = Field(None, gt=0)
    max_seconds: float | None = Field(None, gt=0)


STEP_KINDS = ("newline", "blank", "eois", "token", "solution")


class StepConfig(BaseModel):
    """The blueprint's step granularity for every task of a run; unset fields keep the task's own.

    newline: a step is a line; blank: a paragraph (x1's default); eois: ended by the <eois> marker
    (models fine-tuned with it); token: every token is a step; solution: the whole answer is one step.
    """

    model_config = ConfigDict(extra="forbid")

    delimiter: Literal["newline", "blank", "eois", "token", "solution"] | None = None
    max_step_tokens: int | None = Field(None, gt=0)
    max_steps: int | None = Field(None, gt=0)

    def apply(self, fmt: Any) -> Any:
        """The task's ``StepFormat`` with this config's choices on top."""
        from dataclasses import replace

        if self.delimiter is None:
            return replace(fmt, max_step_tokens=self.max_step_tokens or fmt.max_step_tokens, max_steps=self.max_steps or fmt.max_steps)
        if self.delimiter == "token":
            return replace(fmt, delimiter="", max_step_tokens=self.max_step_tokens or 1, max_steps=self.max_steps or 4096)
        if self.delimiter == "solution":
            return replace(fmt, delimiter="", max_step_tokens=self.max_step_tokens or 1024, max_steps=self.max_steps or 1)
        text = {"newline": "\n", "blank": "\n\n", "eois": EOIS}[self.delimiter]
        return replace(fmt, delimiter=text, max_step_tokens=self.max_step_tokens or fmt.max_step_tokens,
                       max_steps=self.max_steps or fmt.max_steps)


class SearchConfig(BaseModel):
    """The search. ``temperature``, when given (a flag or the YAML), replaces the strategy's own
    temperature: a given setting wins over a strategy default (None, the default, keeps the strategy's).
    ``-p temperature=...`` sets only the strategy's, and the two may not disagree."""

    model_config = ConfigDict(extra="forbid")

    strategy: str = "mcts"
    params: dict[str, Any] = Field(default_factory=dict)
    temperature: float | None = Field(None, ge=0)  # None: each strategy's own; requests that set none get DEFAULT_TEMPERATURE
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int = 0
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    value_url: str | None = None  # an `x1 serve value` server, scoring as the evaluator named "value"
    # problems in flight at once (None: all); keep problems × live chains within the backend's slots
    max_active: int | None = Field(None, ge=1)
    # live sequences at which no new problem is admitted (None: 3/16 of the backend's slots); see Engine.max_live
    max_live: int | None = Field(None, ge=1)
    step: StepConfig = Field(default_factory=StepConfig)


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: ModelConfig = Field(default_factory=ModelConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)

    @classmethod
    def from_yaml(cls, path: str | Path) -> RunConfig:
        return load_yaml(cls, path)


def load_yaml(cls: type[BaseModel], path: str | Path) -> Any:
    """Load a config class from YAML; any mistake names the file and the field."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path}: field '{where}': {first['msg']} ({err.error_count()} error(s) in all)") from err


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` strings (CLI --param) to typed values via YAML scalars."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--param {pair!r} must look like key=value, e.g. --param iterations=16")
        key, value = pair.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out
