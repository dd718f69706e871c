"""`x1 train recipe.yaml`: the blueprint's two-phase training recipe, end to end and resumable.

Phase 0  evaluate the base policy (greedy chain of thought on held-out eval tasks).
Phase 1  SFT data — verified solutions from given traces, or rejection sampling now (best-of-N
         chains of the base policy, every terminal labelled by the task's verifier, the verified
         paths kept) — SFT of the policy on it, and a value model fitted on Monte-Carlo labels
         (``value_targets(..., source="mc")``) of the same traces; then evaluate.
Phase 2  ``rounds`` times: MCTS in training mode (true terminal rewards) over the train tasks with
         the current policy and the current value model as its evaluator → traces → replay buffer
         of the last ``buffer_rounds`` rounds → policy update (SFT on verified paths, DPO on
         preference pairs, or PPO) → value refit on the backed-up MCTS q
         (``value_targets(..., source="mcts")``) → evaluate → checkpoint.

Evaluation after each phase: greedy CoT accuracy and the accuracy of MCTS guided by the trained
value model (``ValueModelEvaluator``), both with a bootstrap interval, and the value model's AUC at
ranking correct above wrong partial solutions of those eval traces.

Everything lives under ``output_dir``: one folder per phase/round (``phase0``, ``phase1``,
``round1``, …: traces, extracted data, ``policy/``, ``value/``, the round's ``buffer.jsonl``),
``state.json`` (the steps done so far, the current policy and value model, the last finished
round, the metrics) and ``metrics.json``. Every step is recorded in ``state.json`` as soon as it
finishes, so re-running the same command skips finished steps and never redoes a finished round;
a search interrupted half-way continues from its trace and engine checkpoint, like
``x1 eval --resume``.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator

from x1 import __version__
from x1.config import BudgetConfig, RunConfig, load_yaml
from x1.data import (
    SFTExample,
    ValueTarget,
    preference_pairs,
    read_jsonl,
    rewarded_paths,
    sft_examples,
    value_targets,
    write_jsonl,
)
from x1.evaluators.spec import parse_evaluator
from x1.graph import ReasoningGraph
from x1.pipelines.evaluate import bootstrap_ci
from x1.pipelines.solve import run_tasks
from x1.strategies import build_strategy
from x1.tasks.base import Task
from x1.tasks.registry import load_tasks
from x1.trace import read_traces
from x1.training.config import DPOTrainConfig, PPOTrainConfig, SFTTrainConfig, TrainConfig, ValueTrainConfig
from x1.training.dpo import train_dpo
from x1.training.ppo import train_ppo
from x1.training.progress import eta_text
from x1.training.sft import train_sft
from x1.training.value import train_value

STATE_VERSION = 1


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
    sft: SFTTrainConfig = Field(default_factory=SFTTrainConfig)
    value: ValueTrainConfig = Field(default_factory=ValueTrainConfig)

    @field_validator("sft", "value")
    @classmethod
    def _check_trainers(cls, value: TrainConfig) -> TrainConfig:
        return _trainer_field(value)


class Phase2Config(BaseModel):
    """Rounds of MCTS (training mode) → replay buffer → policy update + value refit."""

    model_config = ConfigDict(extra="forbid")

    rounds: int = Field(2, ge=0)
    mcts: dict[str, Any] = Field(default_factory=lambda: {"iterations": 8, "expand": 2})  # MCTS parameters; training is on
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    update: Literal["sft", "dpo", "ppo"] = "sft"
    buffer_rounds: int = Field(2, gt=0)  # K: the replay buffer holds the traces of the last K rounds
    min_gap: float = Field(0.2, ge=0)  # DPO: smallest q gap between chosen and rejected
    min_visits: int = Field(1, ge=1)  # value refit: skip thoughts MCTS visited fewer times
    sft: SFTTrainConfig = Field(default_factory=SFTTrainConfig)
    dpo: DPOTrainConfig = Field(default_factory=DPOTrainConfig)
    ppo: PPOTrainConfig = Field(default_factory=PPOTrainConfig)
    value: ValueTrainConfig = Field(default_factory=ValueTrainConfig)

    @field_validator("sft", "dpo", "ppo", "value")
    @classmethod
    def _check_trainers(cls, value: TrainConfig) -> TrainConfig:
        return _trainer_field(value)

    @field_validator("mcts")
    @classmethod
    def _check_mcts(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _strategy_params(value)


class EvalConfig(BaseModel):
    """Held-out evaluation after every phase."""

    model_config = ConfigDict(extra="forbid")

    greedy: bool = True  # chain of thought at temperature 0
    mcts: bool = True  # MCTS guided by the trained value model (from phase 1 on)
    mcts_params: dict[str, Any] = Field(default_factory=lambda: {"iterations": 8, "expand": 2})
    budget: BudgetConfig = Field(default_factory=BudgetConfig)

    @field_validator("mcts_params")
    @classmethod
    def _check_mcts(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _strategy_params(value)


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


# -- small pure helpers -------------------------------------------------------------------------------
def auc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties counting ½.

    Mann–Whitney U from average ranks; None when either class is empty.
    """
    if len(scores) != len(labels):
        raise ValueError(f"auc got {len(scores)} scores and {len(labels)} labels")
    n_pos = sum(1 for label in labels if label)
    n_neg = len(labels) - n_pos
    if not n_pos or not n_neg:
        return None
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1  # the average of ranks i+1 … j+1
        i = j + 1
    rank_sum = sum(r for r, label in zip(ranks, labels, strict=True) if label)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def label_outcomes(records: Iterable[dict[str, Any]], tasks: dict[str, Task]) -> list[dict[str, Any]]:
    """Give every terminal thought of tasks we know its verifier's reward (training mode after the fact).

    Best-of-N and evaluation runs verify only the chosen answer; labelling every finished chain
    is what turns them into rejection-sampling data and Monte-Carlo value labels.
    """
    out = []
    for record in records:
        task = tasks.get(str(record.get("task_id")))
        if task is None or not record.get("graph"):
            out.append(record)
            continue
        graph = ReasoningGraph.from_dict(record["graph"])
        for thought in graph.terminals():
            if thought.reward is None:
                answer = thought.answer if thought.answer is not None else task.extract_answer(graph.path_text(thought.id))
                thought.reward = task.verify(answer).score
        out.append({**record, "graph": graph.to_dict()})
    return out


def value_auc_items(records: Iterable[dict[str, Any]]) -> list[tuple[str, bool]]:
    """(prompt + partial solution, leads to a correct answer?) for every labelled non-root state.

    A state is positive when most known outcomes below it are correct (mean of 2r − 1 > 0),
    negative when most are wrong; states with a tie are left out. Complete paths count too.
    """
    return [(t.prompt + t.partial_solution, t.target > 0) for t in value_targets(records, gamma=1.0, source="mc") if t.target != 0]


def metrics_table(rows: Sequence[dict[str, Any]]) -> Any:
    """The summary as a rich table: one row per phase."""
    from rich.table import Table

    def pct(row: dict[str, Any], key: str) -> str:
        value = row.get(key)
        if value is None:
            return "—"
        lo, hi = row.get(key.replace("accuracy", "ci")) or (value, value)
        return f"{value:.1%} [{lo:.0%}, {hi:.0%}]"

    table = Table("phase", "greedy accuracy", "MCTS+value accuracy", "value AUC", "wall time", title="x1 training recipe")
    for row in rows:
        value_auc = row.get("value_auc")
        table.add_row(
            row["phase"],
            pct(row, "greedy_accuracy"),
            pct(row, "mcts_accuracy"),
            "—" if value_auc is None else f"{value_auc:.3f} (n={row.get('auc_items', 0)})",
            f"{row.get('wall_s', 0.0):.0f}s",
        )
    return table


# -- the run --------------------------------------------------------------------------------------
@dataclass
class RecipeResult:
    output_dir: Path
    metrics: list[dict[str, Any]]
    state: dict[str, Any]

    @property
    def metrics_path(self) -> Path:
        return self.output_dir / "metrics.json"


class Recipe:
    """One run folder; every public step is recorded in ``state.json`` once it has finished."""

    def __init__(self, cfg: RecipeConfig, log: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.out = Path(cfg.output_dir).expanduser()
        self.log = log or (lambda _message: None)
        self.state_path = self.out / "state.json"
        self.state = self._load_state()
        self._tasks: tuple[list[Task], list[Task]] | None = None

    # -- state ------------------------------------------------------------------------------
    def _load_state(self) -> dict[str, Any]:
        identity = json.loads(json.dumps(self.cfg.identity()))
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

    # -- tasks and models -----------------------------------------------------------------------
    def tasks(self) -> tuple[list[Task], list[Task]]:
        if self._tasks is None:
            t = self.cfg.tasks
            loaded = load_tasks(t.spec, n=t.n_train + t.n_eval, seed=t.seed, **t.options)
            if len(loaded) < t.n_train + t.n_eval:
                raise RecipeError(
                    f"tasks.spec {t.spec!r} gave {len(loaded)} tasks, fewer than n_train + n_eval = {t.n_train + t.n_eval}; "
                    "fix: lower tasks.n_train / tasks.n_eval"
                )
            if t.max_step_tokens is not None or t.max_steps is not None:
                for task in loaded:
                    fmt = task.step_format
                    task.step_format = replace(
                        fmt,
                        max_step_tokens=t.max_step_tokens or fmt.max_step_tokens,
                        max_steps=t.max_steps or fmt.max_steps,
                    )
            self._tasks = (loaded[: t.n_train], loaded[t.n_train : t.n_train + t.n_eval])
        return self._tasks

    def _device(self) -> str | None:
        return None if self.cfg.device == "auto" else self.cfg.device

    def _trainer(self, sub: Any, model: Path, output_dir: Path, seed_offset: int = 0) -> Any:
        update: dict[str, Any] = {"model": str(model), "gguf_file": None, "output_dir": str(output_dir), "save": True}
        if getattr(sub, "lora", None) is not None and sub.lora.enabled:  # the search backend opens output_dir: a whole model
            update["lora"] = sub.lora.model_copy(update={"merge_on_save": True})
        if "device" not in sub.model_fields_set:
            update["device"] = self.cfg.device
        if "seed" not in sub.model_fields_set:
            update["seed"] = self.cfg.seed + seed_offset
        return sub.model_copy(update=update)

    def search(
        self,
        folder: Path,
        tasks: list[Task],
        strategy_name: str,
        params: dict[str, Any],
        budget: BudgetConfig,
        seed: int,
        value: Path | None = None,
    ) -> list[dict[str, Any]]:
        """Run a strategy over ``tasks`` with the current policy; resumable like ``x1 eval --resume``."""
        return run_search(folder, tasks, self.policy, strategy_name, params, budget, seed, value, self._device(),
                          on_problem=self._problem_log(str(self._rel(folder))))

    def _problem_log(self, label: str) -> Callable[[int, int, int], None]:
        """A log line per finished problem: how many of how many, how many right, and when the search will end."""
        start = time.perf_counter()
        first: list[int] = []

        def done(finished: int, total: int, right: int) -> None:
            if not first:
                first.append(finished - 1)  # problems an earlier, interrupted run had finished: not timed here
            ran = finished - first[0]
            eta = eta_text((time.perf_counter() - start) / ran * (total - finished))
            self.log(f"{label}: {finished}/{total} problems · {right} right · ETA {eta}")

        return done

    # -- phases -----------------------------------------------------------------------------------
    def run(self) -> RecipeResult:
        if self.cfg.threads:
            import torch

            torch.set_num_threads(self.cfg.threads)
        self.tasks()  # a bad task spec fails before any model is touched
        self.step("base", self._base)
        self._evaluate("phase0", with_value=False)
        self._phase1()
        for k in range(1, self.cfg.phase2.rounds + 1):
            self._round(k)
        return RecipeResult(self.out, list(self.state["metrics"]), self.state)

    def _base(self) -> dict[str, Any]:
        """The base policy as a transformers folder (what TransformersBackend and the trainers open)."""
        from x1.training.model_io import load_policy, resolve_model, save_policy

        try:
            location, gguf = resolve_model(self.cfg.policy, self.cfg.gguf_file)
        except FileNotFoundError as err:
            raise RecipeError(f"policy: {err}") from err
        if gguf is None and (location / "config.json").exists() and not (location / "adapter_config.json").exists():
            self.state["policy"] = str(location.resolve())
            return {"policy": str(location), "converted": False}
        target = self.out / "base" / "policy"
        self.log(f"converting {self.cfg.policy} to a transformers folder at {target}")
        loaded = load_policy(self.cfg.policy, self.cfg.gguf_file, device="cpu", trainable=False)
        save_policy(loaded.model, loaded.tokenizer, target, merge=True)
        del loaded
        gc.collect()
        self.state["policy"] = self._rel(target)
        return {"policy": str(target), "converted": True}

    def _phase1(self) -> None:
        train, _ = self.tasks()
        p1 = self.cfg.phase1
        data = self.out / "phase1" / "data"

        def gather() -> dict[str, Any]:
            if p1.traces:
                records = [r for path in p1.traces for r in read_traces(Path(path).expanduser())]
                source = "traces"
            else:
                params = {"n": p1.samples, "temperature": p1.temperature}
                records = self.search(self.out / "phase1" / "sample", train, "best_of_n", params, p1.budget, self.cfg.seed)
                source = "rejection sampling"
            labelled = label_outcomes(records, {t.id: t for t in train})
            write_jsonl(data / "traces.jsonl", labelled)
            sft = sft_examples(labelled, min_score=p1.min_score, all_correct_paths=True)
            values = value_targets(labelled, gamma=p1.value_gamma, source="mc")
            write_jsonl(data / "sft.jsonl", sft)
            write_jsonl(data / "values.jsonl", values)
            return {"source": source, "records": len(records), "sft_examples": len(sft), "value_targets": len(values),
                    "tasks_solved": len({e.task_id for e in sft})}  # fmt: skip

        self.step("phase1.data", gather)

        def sft() -> dict[str, Any]:
            examples = read_jsonl(data / "sft.jsonl", SFTExample)
            if not examples:
                self.log("phase1.sft: no verified solutions, so the policy stays the base policy")
                return {"trained": False, "examples": 0}
            target = self.out / "phase1" / "policy"
            result = train_sft(self._trainer(p1.sft, self.policy, target), examples)
            self.state["policy"] = self._rel(target)
            return {"trained": True, "examples": len(examples), **_losses(result)}

        self.step("phase1.sft", sft)

        def fit_value() -> dict[str, Any]:
            targets = read_jsonl(data / "values.jsonl", ValueTarget)
            if not targets:
                raise RecipeError(
                    "phase 1 found no Monte-Carlo value labels (no finished chains); fix: raise tasks.max_step_tokens or "
                    "the phase1 budget so that chains reach an answer, or give phase1.traces with finished solutions"
                )
            target = self.out / "phase1" / "value"
            result = train_value(self._trainer(p1.value, self.policy, target), targets)  # head on the phase-1 policy
            self.state["value"] = self._rel(target)
            return {"targets": len(targets), "positive": sum(t.target > 0 for t in targets), **_losses(result)}

        self.step("phase1.value", fit_value)
        self._evaluate("phase1", with_value=True)
        self._checkpointed("phase1")

    def _round(self, k: int) -> None:
        if k <= self.state["round"]:
            return
        p2 = self.cfg.phase2
        train, _ = self.tasks()
        here = self.out / f"round{k}"
        name = f"round{k}"

        def search() -> dict[str, Any]:
            params = {"evaluator": "value", **p2.mcts, "training": True}
            records = self.search(here / "search", train, "mcts", params, p2.budget, self.cfg.seed + k, self.value)
            return {"records": len(records), "train_accuracy": _accuracy(records)[0]}

        self.step(f"{name}.search", search)

        def buffer() -> dict[str, Any]:
            rounds = range(max(1, k - p2.buffer_rounds + 1), k + 1)
            records = [r for j in rounds for r in read_traces(self.out / f"round{j}" / "search" / "traces.jsonl")]
            write_jsonl(here / "buffer.jsonl", records)
            return {"records": len(records), "rounds": [*rounds]}

        self.step(f"{name}.buffer", buffer)
        self.step(f"{name}.policy", lambda: self._update_policy(k, here))

        def refit() -> dict[str, Any]:
            targets = value_targets(read_traces(here / "buffer.jsonl"), source="mcts", min_visits=p2.min_visits)
            write_jsonl(here / "data" / "values.jsonl", targets)
            if not targets:
                self.log(f"{name}.value: no visited states in the buffer, so the value model stays as it was")
                return {"trained": False, "targets": 0}
            assert self.value is not None
            target = here / "value"
            result = train_value(self._trainer(p2.value, self.value, target, seed_offset=k), targets)
            self.state["value"] = self._rel(target)
            return {"trained": True, "targets": len(targets), **_losses(result)}

        self.step(f"{name}.value", refit)
        self._evaluate(name, with_value=True)
        self.state["round"] = k
        self._checkpointed(name)

    def _update_policy(self, k: int, here: Path) -> dict[str, Any]:
        p2 = self.cfg.phase2
        train, _ = self.tasks()
        target = here / "policy"
        records = list(read_traces(here / "buffer.jsonl"))
        if p2.update == "ppo":
            # PPO on the replay buffer: the search's paths with their true rewards are the rollouts.
            paths = rewarded_paths(records)
            write_jsonl(here / "data" / "rollouts.jsonl", paths)
            if not paths:
                self.log(f"round{k}.policy: no rewarded paths in the buffer, so the policy is not updated")
                return {"method": "ppo", "trained": False, "rollouts": 0}
            ppo = p2.ppo
            if "temperature" not in ppo.model_fields_set:  # the buffer's paths were sampled at the search's temperature
                ppo = ppo.model_copy(update={"temperature": build_strategy("mcts", **p2.mcts).temperature})  # type: ignore[attr-defined]
            result = train_ppo(self._trainer(ppo, self.policy, target, seed_offset=k), train, buffer=paths)
            info: dict[str, Any] = {"method": "ppo", "trained": True, "rollouts": len(paths), **_losses(result)}
            if result.metrics.get("reward"):
                info["mean_reward"] = sum(result.metrics["reward"]) / len(result.metrics["reward"])
        elif p2.update == "dpo":
            pairs = preference_pairs(records, min_gap=p2.min_gap)
            write_jsonl(here / "data" / "pairs.jsonl", pairs)
            if not pairs:
                self.log(f"round{k}.policy: no preference pairs in the buffer, so the policy is not updated")
                return {"method": "dpo", "trained": False, "pairs": 0}
            result = train_dpo(self._trainer(p2.dpo, self.policy, target, seed_offset=k), pairs)
            info = {"method": "dpo", "trained": True, "pairs": len(pairs), **_losses(result)}
        else:
            examples = sft_examples(records, all_correct_paths=True)
            write_jsonl(here / "data" / "sft.jsonl", examples)
            if not examples:
                self.log(f"round{k}.policy: no verified paths in the buffer, so the policy is not updated")
                return {"method": "sft", "trained": False, "examples": 0}
            result = train_sft(self._trainer(p2.sft, self.policy, target, seed_offset=k), examples)
            info = {"method": "sft", "trained": True, "examples": len(examples), **_losses(result)}
        self.state["policy"] = self._rel(target)
        return info

    def _evaluate(self, phase: str, with_value: bool) -> None:
        """Greedy CoT and MCTS+value on the eval tasks, the value AUC, and the phase's metrics row."""
        if self.done(f"{phase}.metrics"):
            return
        ev = self.cfg.eval
        _, held_out = self.tasks()
        here = self.out / phase / "eval"
        results: dict[str, list[dict[str, Any]]] = {}

        def run(kind: str, strategy: str, params: dict[str, Any], value: Path | None) -> dict[str, Any]:
            records = self.search(here / kind, held_out, strategy, params, ev.budget, self.cfg.seed, value)
            acc, ci = _accuracy(records)
            return {"accuracy": acc, "ci": list(ci), "n": len(records)}

        if ev.greedy:
            self.step(f"{phase}.eval.greedy", lambda: run("greedy", "cot", {"temperature": 0.0}, None))
            results["greedy"] = list(read_traces(here / "greedy" / "traces.jsonl"))
        use_value = with_value and self.value is not None
        if ev.mcts and use_value:
            params = {"evaluator": "value", **ev.mcts_params, "training": False}
            self.step(f"{phase}.eval.mcts", lambda: run("mcts", "mcts", params, self.value))
            results["mcts"] = list(read_traces(here / "mcts" / "traces.jsonl"))

        def summarise() -> dict[str, Any]:
            row: dict[str, Any] = {"phase": phase, "n_eval": len(held_out)}
            for kind in ("greedy", "mcts"):
                info = self.state["steps"].get(f"{phase}.eval.{kind}")
                row[f"{kind}_accuracy"] = info["accuracy"] if info else None
                row[f"{kind}_ci"] = info["ci"] if info else None
            row["value_auc"], row["auc_items"] = None, 0
            if use_value:
                labelled = label_outcomes([r for rs in results.values() for r in rs], {t.id: t for t in held_out})
                items = value_auc_items(labelled)
                if items:
                    scores = _value_scores(self.value, [text for text, _ in items], self._device())
                    row["value_auc"], row["auc_items"] = auc(scores, [label for _, label in items]), len(items)
            row["policy"], row["value"] = self.state["policy"], self.state["value"] if use_value else None
            steps = {n: i for n, i in self.state["steps"].items() if _phase_of(n) == phase}
            row["wall_s"] = round(sum(i.get("wall_s", 0.0) for i in steps.values()), 3)
            row["steps"] = steps
            self.state["metrics"] = [r for r in self.state["metrics"] if r["phase"] != phase] + [row]
            return {"value_auc": row["value_auc"]}

        self.step(f"{phase}.metrics", summarise)

    def _checkpointed(self, stage: str) -> None:
        """Remember this stage's model folders; with ``keep_checkpoints`` drop older ones no longer in use."""
        entry = [self.state["policy"], self.state["value"]]
        if entry not in self.state["checkpoints"]:
            self.state["checkpoints"].append(entry)
        keep = self.cfg.keep_checkpoints
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


def _phase_of(step: str) -> str:
    head = step.split(".", 1)[0]
    return "phase0" if head == "base" else head


def _losses(result: Any) -> dict[str, Any]:
    losses = list(result.losses)
    return {"steps": result.steps, "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None}


def _accuracy(records: Sequence[dict[str, Any]]) -> tuple[float, tuple[float, float]]:
    correct = [1.0 if r.get("correct") else 0.0 for r in records]
    return (sum(correct) / len(correct) if correct else 0.0), bootstrap_ci(correct)


def _value_scores(value: Path | None, texts: list[str], device: str | None) -> list[float]:
    from x1.evaluators.value_model import ValueModel

    assert value is not None
    model = ValueModel.load(value, device=device)
    try:
        return model.predict(texts)
    finally:
        del model
        gc.collect()


def run_search(
    folder: Path,
    tasks: list[Task],
    policy: Path,
    strategy_name: str,
    params: dict[str, Any],
    budget: BudgetConfig,
    seed: int,
    value: Path | None = None,
    device: str | None = None,
    on_problem: Callable[[int, int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """One strategy over ``tasks`` with the policy folder's TransformersBackend, through ``run_tasks``.

    ``evaluator: value`` means the recipe's current value model (``value:FOLDER``). Records go to
    ``folder/traces.jsonl`` as problems finish and in-flight graphs to ``checkpoint.jsonl``, so an
    interrupted call picks up where it stopped. ``on_problem(finished, total, right)`` follows each
    finished problem, counting those an earlier run finished.
    """
    from x1.models.hf import TransformersBackend

    folder.mkdir(parents=True, exist_ok=True)
    trace, checkpoint = folder / "traces.jsonl", folder / "checkpoint.jsonl"
    ids = {t.id for t in tasks}
    earlier = [r for r in read_traces(trace) if r["task_id"] in ids] if trace.exists() else []
    finished = {r["task_id"] for r in earlier}
    todo = [t for t in tasks if t.id not in finished]
    count = [len(finished), sum(bool(r["correct"]) for r in earlier)]
    if todo:
        if params.get("evaluator") == "value":
            if value is None:
                raise RecipeError("the search asks for evaluator 'value' but no value model is trained yet")
            params = {**params, "evaluator": f"value:{value}"}
        config = RunConfig(
            model={"name": str(policy)},
            search={"strategy": strategy_name, "params": params, "seed": seed, "budget": budget.model_dump()},
        )

        def done(outcome: Any) -> None:
            count[0] += 1
            count[1] += outcome.correct
            if on_problem:
                on_problem(count[0], len(ids), count[1])

        backend = TransformersBackend(policy, name=str(policy), device=device)
        try:
            run_tasks(todo, config, policy=backend, trace_path=trace, checkpoint_path=checkpoint, device=device, on_done=done)
        finally:
            backend.close()
            gc.collect()
    checkpoint.unlink(missing_ok=True)
    return [r for r in read_traces(trace) if r["task_id"] in ids] if trace.exists() else []


def run_recipe(cfg: RecipeConfig, log: Callable[[str], None] | None = None) -> RecipeResult:
    """Run (or continue) the recipe in ``cfg.output_dir``; returns the metrics of every phase done."""
    return Recipe(cfg, log).run()
