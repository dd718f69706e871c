"""Evaluators that need no trained model: the ground truth, the policy's own confidence, a judge."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from x1.evaluators.base import EvalItem
from x1.graph import Thought
from x1.models.base import Backend


@dataclass
class VerifierEvaluator:
    """The task's own checker: true rewards at terminals (training mode), ``neutral`` elsewhere."""

    name: str = "verifier"
    neutral: float = 0.5
    model_calls: int = 0

    def evaluate(self, items: list[EvalItem]) -> list[float]:
        out = []
        for item in items:
            thought = item.thought
            if not thought.terminal:
                out.append(self.neutral)
                continue
            verdict = item.task.verify(thought.answer)
            thought.reward = verdict.score
            out.append(verdict.score)
        return out


@dataclass
class ConfidenceEvaluator:
    """The policy's mean token probability along the path: free, since generation logged it."""

    name: str = "confidence"
    model_calls: int = 0

    def evaluate(self, items: list[EvalItem]) -> list[float]:
        # Siblings share their parent's path: its sum is taken once per call. Tokens are still
        # added one by one in path order, so every score is the same float as a walk per item.
        parent_sums: dict[tuple[int, int], tuple[float, int]] = {}
        out = []
        for item in items:
            thought = item.graph[item.thought_id]
            if not thought.parents:  # the root: an empty path
                out.append(0.5)
                continue
            key = (id(item.graph), thought.parents[0])
            if key not in parent_sums:
                parent_sums[key] = _logprob_sum(item.graph.path(thought.parents[0]))
            total, count = parent_sums[key]
            for lp in thought.logprobs:
                total += lp
            count += len(thought.logprobs)
            out.append(math.exp(total / count) if count else 0.5)
        return out


def _logprob_sum(thoughts: list[Thought]) -> tuple[float, int]:
    """The left fold of token logprobs over ``thoughts``, in token order, and the token count."""
    total, count = 0.0, 0
    for t in thoughts:
        for lp in t.logprobs:
            total += lp
        count += len(t.logprobs)
    return total, count


JUDGE_QUESTION = (
    "\n\nIs the reasoning above correct so far? Answer Yes or No.\nAnswer:"
)


@dataclass
class JudgeEvaluator:
    """A prompted judge: P(" Yes") against P(" No") after asking the policy to rate the path.

    The blueprint warns that untrained self-critique is unreliable; this is the baseline that
    trained value and reward models should beat.
    """

    backend: Backend
    name: str = "judge"
    model_calls: int = 0
    question: str = field(default=JUDGE_QUESTION)

    def evaluate(self, items: list[EvalItem]) -> list[float]:
        if not items:
            return []
        prompts = [item.prefix + item.path_text + self.question for item in items]
        yes = self.backend.score(prompts, [" Yes"] * len(items))
        no = self.backend.score(prompts, [" No"] * len(items))
        self.model_calls += 2
        out = []
        for y, n in zip(yes, no, strict=True):
            py, pn = math.exp(sum(y)), math.exp(sum(n))
            out.append(py / (py + pn) if py + pn > 0 else 0.5)
        return out
