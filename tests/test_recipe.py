"""`x1 train`: the two-phase recipe end to end on a tiny random Llama, then resumed without redoing work.

The policy is a 2-layer, 32-wide Llama with SmolLM2's tokenizer; the tasks are "write something"
problems whose answer is right when its length is even, so about half of the random chains are
verified and every trainer gets data. Accuracy numbers mean nothing here: the mechanics are tested.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("trl")
pytest.importorskip("datasets")

from helpers import one_torch_thread, save_tiny_llama  # noqa: E402

from x1.config import ConfigError  # noqa: E402
from x1.pipelines.recipe import RecipeConfig, RecipeError, auc, run_recipe  # noqa: E402
from x1.pipelines.recipe import phases as recipe  # noqa: E402  (the phases module: what the tests patch)
from x1.tasks.base import StepFormat, Task, Verification  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Two threads on a shared two-core machine run several times slower than one."""
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> str:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny"))


def parity_task(i: int) -> Task:
    """The answer is the whole solution; right when its length is even (about half of random chains)."""
    return Task(
        id=f"parity:{i}",
        question=f"Write something ({i}).",
        gold=None,
        system=None,
        extractor=lambda text: text,
        verifier=lambda answer, gold: Verification(1.0 if len(answer) % 2 == 0 else 0.0),
        step_format=StepFormat(),
        source="parity",
    )


@pytest.fixture
def parity_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recipe, "load_tasks", lambda spec, n=None, seed=0, **options: [parity_task(i) for i in range(n or 4)])


class Calls:
    """Counts every trainer and search call the recipe makes, and still runs them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.counts: dict[str, int] = {}
        for name in ("train_sft", "train_dpo", "train_ppo", "train_value", "run_search"):
            monkeypatch.setattr(recipe, name, self._wrap(name, getattr(recipe, name)))

    def _wrap(self, name: str, fn: Any) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.counts[name] = self.counts.get(name, 0) + 1
            return fn(*args, **kwargs)

        return counted


def write_config(path: Path, tiny: str, out: Path, **changes: Any) -> Path:
    data: dict[str, Any] = {
        "policy": tiny,
        "output_dir": str(out),
        "device": "cpu",
        "tasks": {"spec": "samples", "n_train": 2, "n_eval": 2, "max_step_tokens": 4, "max_steps": 2},
        "phase1": {
            "samples": 2,
            "sft": {"max_steps": 1, "batch_size": 2, "max_length": 128},
            "value": {"max_steps": 1, "batch_size": 4, "max_length": 128},
        },
        "phase2": {
            "rounds": 0,
            "mcts": {"iterations": 2, "expand": 2},
            "update": "dpo",
            "dpo": {"max_steps": 1, "batch_size": 2, "max_length": 128},
            "value": {"max_steps": 1, "batch_size": 4, "max_length": 128},
        },
        "eval": {"mcts_params": {"iterations": 2, "expand": 2}},
    }
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            data[section][field] = value
        else:
            data[section] = value
    path.write_text(yaml.safe_dump(data))
    return path


def test_auc_counts_pairs_and_ties() -> None:
    assert auc([0.9, 0.8, 0.1], [True, True, False]) == 1.0
    assert auc([0.1, 0.9], [True, False]) == 0.0
    assert auc([0.5, 0.5, 0.5, 0.5], [True, False, True, False]) == 0.5
    assert auc([0.2, 0.6, 0.4, 0.6], [False, True, True, False]) == pytest.approx(0.625)  # 2.5 of 4 pairs
    assert auc([0.3, 0.4], [True, True]) is None


def test_recipe_runs_every_phase_then_resumes_without_redoing_work(
    tiny: str, tmp_path: Path, parity_tasks: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    cfg_path = write_config(tmp_path / "recipe.yaml", tiny, out)

    # 1. phases 0 and 1 only (no rounds yet)
    calls = Calls(monkeypatch)
    messages: list[str] = []
    first = run_recipe(RecipeConfig.from_yaml(cfg_path), log=messages.append)
    assert [r["phase"] for r in first.metrics] == ["phase0", "phase1"]
    # every search reports each finished problem with an ETA
    progress = [m for m in messages if m.startswith("phase0/eval/greedy: ")]
    assert [m.split(" · ")[0] for m in progress] == ["phase0/eval/greedy: 1/2 problems", "phase0/eval/greedy: 2/2 problems"]
    assert progress[-1].endswith("ETA 0s")
    # phase 0: greedy eval; phase 1: best-of-N sampling, greedy eval, MCTS+value eval
    assert calls.counts == {"run_search": 4, "train_sft": 1, "train_value": 1}
    assert (out / "phase0" / "eval" / "greedy" / "traces.jsonl").exists()
    for name in ("traces.jsonl", "sft.jsonl", "values.jsonl"):
        assert (out / "phase1" / "data" / name).stat().st_size > 0
    assert (out / "phase1" / "policy" / "config.json").exists()
    assert (out / "phase1" / "value" / "x1_head.json").exists()
    assert (out / "phase1" / "eval" / "mcts" / "traces.jsonl").exists()
    phase0, phase1 = first.metrics
    assert phase0["greedy_accuracy"] is not None and phase0["mcts_accuracy"] is None and phase0["value_auc"] is None
    assert phase1["greedy_accuracy"] is not None and phase1["mcts_accuracy"] is not None
    assert phase1["auc_items"] > 0 and (phase1["value_auc"] is None or 0.0 <= phase1["value_auc"] <= 1.0)
    assert phase1["steps"]["phase1.data"]["sft_examples"] > 0
    assert all(row["wall_s"] > 0 for row in first.metrics)

    # 2. the same config with one round: only round 1 runs
    write_config(cfg_path, tiny, out, phase2__rounds=1)
    calls = Calls(monkeypatch)
    second = run_recipe(RecipeConfig.from_yaml(cfg_path))
    # round 1: MCTS search, greedy eval, MCTS+value eval; DPO (if the buffer has pairs) and the value refit
    trained = second.state["steps"]["round1.policy"]["trained"]
    assert calls.counts == {"run_search": 3, "train_value": 1, **({"train_dpo": 1} if trained else {})}
    assert trained, "the tiny run is expected to find preference pairs (fixed seeds)"
    round1 = out / "round1"
    assert (round1 / "search" / "traces.jsonl").exists() and (round1 / "buffer.jsonl").exists()
    assert (round1 / "data" / "pairs.jsonl").stat().st_size > 0
    assert (round1 / "policy" / "config.json").exists() and (round1 / "value" / "x1_head.json").exists()
    state = json.loads((out / "state.json").read_text())
    assert state["round"] == 1 and state["policy"] == "round1/policy" and state["value"] == "round1/value"
    assert [r["phase"] for r in state["metrics"]] == ["phase0", "phase1", "round1"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["phases"] == state["metrics"] == second.metrics
    assert second.metrics[:2] == first.metrics  # earlier phases untouched

    # 3. again: nothing left to do, nothing is redone
    calls = Calls(monkeypatch)
    third = run_recipe(RecipeConfig.from_yaml(cfg_path))
    assert calls.counts == {}
    assert third.metrics == second.metrics

    # 4. the CLI prints the table from the finished run
    from typer.testing import CliRunner

    from x1.cli import app

    result = CliRunner().invoke(app, ["train", str(cfg_path)])
    assert result.exit_code == 0, result.output
    assert "round1" in result.output and "value AUC" in result.output


def test_an_interrupted_round_resumes_at_the_step_that_failed(
    tiny: str, tmp_path: Path, parity_tasks: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    ppo = {"iterations": 1, "prompts_per_iteration": 1, "ppo_epochs": 1, "max_new_tokens": 4}
    sft = {"max_steps": 1, "batch_size": 2, "max_length": 128, "lora": {"enabled": True, "r": 4, "alpha": 8}}
    cfg_path = write_config(tmp_path / "recipe.yaml", tiny, out, phase1__sft=sft, phase2__rounds=1, phase2__update="ppo",
                            phase2__ppo=ppo, eval={"greedy": True, "mcts": False})  # fmt: skip
    real_value = recipe.train_value
    fits = []

    def crash_in_round(cfg: Any, targets: Any, model: Any = None) -> Any:
        fits.append(cfg.output_dir)
        if "round1" in cfg.output_dir:
            raise RuntimeError("power cut")
        return real_value(cfg, targets, model)

    monkeypatch.setattr(recipe, "train_value", crash_in_round)
    with pytest.raises(RuntimeError, match="power cut"):
        run_recipe(RecipeConfig.from_yaml(cfg_path))
    state = json.loads((out / "state.json").read_text())
    assert "round1.policy" in state["completed"] and "round1.value" not in state["completed"] and state["round"] == 0
    assert state["steps"]["round1.policy"]["method"] == "ppo" and state["steps"]["round1.policy"]["rollouts"] > 0
    assert (out / "round1" / "policy" / "ppo_value_head.safetensors").exists()

    monkeypatch.setattr(recipe, "train_value", real_value)
    calls = Calls(monkeypatch)
    result = run_recipe(RecipeConfig.from_yaml(cfg_path))
    assert calls.counts == {"train_value": 1, "run_search": 1}  # the refit and round 1's greedy eval only
    assert result.state["round"] == 1 and [r["phase"] for r in result.metrics] == ["phase0", "phase1", "round1"]


def test_a_policy_that_is_not_a_plain_folder_is_converted_once(tiny: str, tmp_path: Path) -> None:
    """A LoRA adapter folder (like a .gguf file) becomes a merged transformers folder the search backend opens."""
    from x1.models.base import GenerationRequest
    from x1.models.hf import TransformersBackend
    from x1.training.config import LoRAConfig
    from x1.training.model_io import load_policy, save_policy

    adapter = load_policy(tiny, device="cpu", lora=LoRAConfig(enabled=True, r=4, alpha=8))
    save_policy(adapter.model, adapter.tokenizer, tmp_path / "adapter", merge=False, base=adapter.base)
    cfg = RecipeConfig.from_yaml(write_config(tmp_path / "r.yaml", str(tmp_path / "adapter"), tmp_path / "run"))
    run = recipe.Recipe(cfg)
    info = run.step("base", run._base)
    assert info["converted"] and run.policy == tmp_path / "run" / "base" / "policy"
    backend = TransformersBackend(run.policy, device="cpu")
    assert len(backend.generate([GenerationRequest("Hello", max_tokens=3, temperature=0.0)])[0][0].token_ids) <= 3
    backend.close()
    plain = recipe.Recipe(RecipeConfig.from_yaml(write_config(tmp_path / "p.yaml", tiny, tmp_path / "plain")))
    assert plain.step("base", plain._base)["converted"] is False and plain.policy == Path(tiny).resolve()


def test_bad_config_fields_are_named(tmp_path: Path, tiny: str) -> None:
    out = tmp_path / "run"
    cases = {
        "phase2.update": {"phase2__update": "adam"},
        "phase1.sft.learning_rat": {"phase1__sft": {"learning_rat": 1e-5}},
        "phase1.value": {"phase1__value": {"model": "elsewhere"}},
        "phase2.mcts": {"phase2__mcts": {"iterations": 2, "training": False}},
        "tasks.n_train": {"tasks__n_train": 0},
    }
    for field, change in cases.items():
        path = write_config(tmp_path / "bad.yaml", tiny, out, **change)
        with pytest.raises(ConfigError, match=f"field '{field}'"):
            RecipeConfig.from_yaml(path)
    path = tmp_path / "no-policy.yaml"
    path.write_text("output_dir: somewhere\n")
    with pytest.raises(ConfigError, match="field 'policy'"):
        RecipeConfig.from_yaml(path)


def test_resuming_with_another_policy_is_refused(tmp_path: Path, tiny: str) -> None:
    out = tmp_path / "run"
    out.mkdir()
    state = {"version": 1, "identity": {"policy": "other", "gguf_file": None, "tasks": {}, "seed": 0}, "completed": []}
    (out / "state.json").write_text(json.dumps(state))
    cfg = RecipeConfig.from_yaml(write_config(tmp_path / "r.yaml", tiny, out))
    with pytest.raises(RecipeError, match="another policy"):
        run_recipe(cfg)
