"""Evaluators by name: what scores a thought."""

from __future__ import annotations

from typing import Any

from x1.evaluators.base import EvalItem, Evaluator
from x1.evaluators.simple import ConfidenceEvaluator, JudgeEvaluator, VerifierEvaluator
from x1.models.base import Backend

# Trained evaluators need torch: imported on first use, so `import x1.evaluators` stays light.
_MODEL_EXPORTS = {
    "HeadedLM": "x1.evaluators.value_model",
    "ValueModel": "x1.evaluators.value_model",
    "ValueModelEvaluator": "x1.evaluators.value_model",
    "OutcomeRewardModel": "x1.evaluators.reward_model",
    "OutcomeRewardEvaluator": "x1.evaluators.reward_model",
    "ProcessRewardModel": "x1.evaluators.reward_model",
    "PRMEvaluator": "x1.evaluators.reward_model",
    "load_evaluator": "x1.evaluators.reward_model",
}


def __getattr__(name: str) -> Any:
    if name in _MODEL_EXPORTS:
        import importlib

        return getattr(importlib.import_module(_MODEL_EXPORTS[name]), name)
    raise AttributeError(f"module 'x1.evaluators' has no attribute {name!r}")


EVALUATOR_NAMES = ("confidence", "verifier", "judge")


def build_evaluators(policy: Backend) -> dict[str, Evaluator]:
    """Every evaluator that needs nothing but the policy; model-based ones are added by name."""
    return {
        "confidence": ConfidenceEvaluator(),
        "verifier": VerifierEvaluator(),
        "judge": JudgeEvaluator(policy),
    }


__all__ = [
    "ConfidenceEvaluator",
    "EVALUATOR_NAMES",
    "EvalItem",
    "Evaluator",
    "JudgeEvaluator",
    "VerifierEvaluator",
    "build_evaluators",
    *_MODEL_EXPORTS,
]
