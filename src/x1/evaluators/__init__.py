"""Evaluators by name: what scores a thought."""

from __future__ import annotations

from x1.evaluators.base import EvalItem, Evaluator
from x1.evaluators.simple import ConfidenceEvaluator, JudgeEvaluator, VerifierEvaluator
from x1.models.base import Backend

EVALUATOR_NAMES = ("confidence", "verifier", "judge")


def build_evaluators(policy: Backend) -> dict[str, Evaluator]:
    """Every evaluator that needs nothing but the policy; model-based ones are added by name."""
    return {
        "confidence": ConfidenceEvaluator(),
        "verifier": VerifierEvaluator(),
        "judge": JudgeEvaluator(policy),
    }


__all__ = ["ConfidenceEvaluator", "EVALUATOR_NAMES", "EvalItem", "Evaluator", "JudgeEvaluator", "VerifierEvaluator", "build_evaluators"]
