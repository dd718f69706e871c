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

from x1.pipelines.recipe.config import (
    EvalConfig,
    Phase1Config,
    Phase2Config,
    RecipeConfig,
    RecipeError,
    TasksConfig,
)
from x1.pipelines.recipe.metrics import auc, label_outcomes, metrics_table, value_auc_items
from x1.pipelines.recipe.phases import Recipe, RecipeResult, run_recipe
from x1.pipelines.recipe.search import run_search
from x1.pipelines.recipe.state import STATE_VERSION, RunState

__all__ = [
    "STATE_VERSION", "EvalConfig", "Phase1Config", "Phase2Config", "Recipe", "RecipeConfig", "RecipeError", "RecipeResult",
    "RunState", "TasksConfig", "auc", "label_outcomes", "metrics_table", "run_recipe", "run_search", "value_auc_items",
]  # fmt: skip
