"""The recipe's phases: base policy, phase 1 (SFT data, SFT, value model), phase-2 rounds, evaluation."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from x1.config import BudgetConfig
from x1.data import SFTExample, ValueTarget, preference_pairs, read_jsonl, rewarded_paths, sft_examples, value_targets, write_jsonl
from x1.pipelines.recipe.config import RecipeConfig, RecipeError
from x1.pipelines.recipe.metrics import accuracy_with_ci, auc, label_outcomes, value_auc_items, value_scores
from x1.pipelines.recipe.search import run_search
from x1.pipelines.recipe.state import RunState
from x1.strategies import build_strategy
from x1.tasks.base import Task
from x1.tasks.registry import load_tasks
from x1.trace import read_traces
from x1.training.dpo import train_dpo
from x1.training.ppo import train_ppo
from x1.training.progress import eta_text
from x1.training.sft import train_sft
from x1.training.value import train_value


@dataclass
class RecipeResult:
    output_dir: Path
    metrics: list[dict[str, Any]]
    state: dict[str, Any]

    @property
    def metrics_path(self) -> Path:
        return self.output_dir / "metrics.json"


class Recipe(RunState):
    """The phases, on top of the run folder's bookkeeping (``RunState``)."""

    def __init__(self, cfg: RecipeConfig, log: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        super().__init__(Path(cfg.output_dir).expanduser(), cfg.identity(), cfg.keep_checkpoints, log)
        self._tasks: tuple[list[Task], list[Task]] | None = None

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
                          on_problem=self._problem_log(str(self._rel(folder))), task_spec=self.cfg.tasks.spec)

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
            return {"records": len(records), "train_accuracy": accuracy_with_ci(records)[0]}

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
            acc, ci = accuracy_with_ci(records)
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
                    scores = value_scores(self.value, [text for text, _ in items], self._device())
                    row["value_auc"], row["auc_items"] = auc(scores, [label for _, label in items]), len(items)
            row["policy"], row["value"] = self.state["policy"], self.state["value"] if use_value else None
            steps = {n: i for n, i in self.state["steps"].items() if _phase_of(n) == phase}
            row["wall_s"] = round(sum(i.get("wall_s", 0.0) for i in steps.values()), 3)
            row["steps"] = steps
            self.state["metrics"] = [r for r in self.state["metrics"] if r["phase"] != phase] + [row]
            return {"value_auc": row["value_auc"]}

        self.step(f"{phase}.metrics", summarise)


def _phase_of(step: str) -> str:
    head = step.split(".", 1)[0]
    return "phase0" if head == "base" else head


def _losses(result: Any) -> dict[str, Any]:
    losses = list(result.losses)
    return {"steps": result.steps, "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None}


def run_recipe(cfg: RecipeConfig, log: Callable[[str], None] | None = None) -> RecipeResult:
    """Run (or continue) the recipe in ``cfg.output_dir``; returns the metrics of every phase done."""
    return Recipe(cfg, log).run()
