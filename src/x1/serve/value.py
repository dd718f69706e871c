"""The value server: scores in [0, 1] for (prompt, continuation) pairs over HTTP, batched.

``POST /v1/score`` takes one schema::

    {"model": "optional", "items": [{"prompt": "<chat-formatted question>", "continuation": "<reasoning path so far>",
                                     "steps": ["<step 1>", ...]  (optional: the path's steps, for a PRM)}, ...]}

and answers, in the items' order::

    {"object": "score", "model": "<served name>", "scores": [0.73, ...], "usage": {"items": 2}}

Each score estimates how likely the path is to lead to a right answer (1 = surely right), the
same contract as x1's evaluators. ``RemoteValueEvaluator`` (``x1.evaluators.remote``) sends an
EvalItem's ``prefix`` as the prompt and its ``path_text`` as the continuation.

What scores is a ``ValueScorer``: anything with ``name`` and ``score_texts(prompts,
continuations, steps=None) -> list[float]``. A trained evaluator (value model, ORM or PRM, with its
head) is wrapped by ``TrainedScorer`` and answers exactly what the in-process evaluator would;
a PRM reads the item's ``steps`` (or the continuation split after each step separator). For
any policy model, ``BackendScorer`` turns any policy backend into one: the teacher-forced mean token
logprob of the continuation, exponentiated (the geometric-mean token probability), with
``neutral`` (0.5) for an empty continuation.

Items from concurrent requests are batched into one ``score_texts`` call; /health, /metrics,
/v1/models and the API key work as on the policy server.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from x1.evaluators.base import EvalItem
from x1.evaluators.remote import value_inputs

if TYPE_CHECKING:
    from fastapi import FastAPI


@runtime_checkable
class ValueScorer(Protocol):
    """Scores in [0, 1] for continuations of prompts; one call is one batch."""

    name: str

    def score_texts(self, prompts: list[str], continuations: list[str], steps: list[list[str]] | None = None) -> list[float]: ...


class BackendScorer:
    """A policy backend as a value scorer: exp(mean teacher-forced logprob of the continuation)."""

    def __init__(self, backend: Any, neutral: float = 0.5) -> None:
        if not callable(getattr(backend, "score", None)):
            raise TypeError(f"{type(backend).__name__} has no score(); pass a Backend or a ValueScorer")
        self.backend = backend
        self.neutral = float(neutral)
        self.name = f"{backend.name}"

    def score_texts(self, prompts: list[str], continuations: list[str], steps: list[list[str]] | None = None) -> list[float]:
        if len(prompts) != len(continuations):
            raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
        out = [self.neutral] * len(prompts)
        todo = [i for i, c in enumerate(continuations) if c]
        if todo:
            logprobs = self.backend.score([prompts[i] for i in todo], [continuations[i] for i in todo])
            for i, lps in zip(todo, logprobs, strict=True):
                out[i] = math.exp(sum(lps) / len(lps)) if lps else self.neutral
        return out


class TextModelScorer:
    """A model that scores whole texts in [0, 1] (``unit_scores(texts)``, like x1's trained
    ``ValueModel``) as a value scorer: it reads prompt + continuation, as ``ValueModelEvaluator`` does."""

    def __init__(self, model: Any, name: str = "value-model") -> None:
        self.model = model
        self.name = getattr(model, "name", None) or name

    def score_texts(self, prompts: list[str], continuations: list[str], steps: list[list[str]] | None = None) -> list[float]:
        return [float(s) for s in self.model.unit_scores([p + c for p, c in zip(prompts, continuations, strict=True)])]

    def close(self) -> None:
        pass


def split_steps(continuation: str, separator: str) -> list[str]:
    """A reasoning path's steps when the client sent none: cut after each separator (the separator stays with its step)."""
    if not separator:
        return [continuation] if continuation else []
    parts, start = [], 0
    while (at := continuation.find(separator, start)) >= 0:
        parts.append(continuation[start : at + len(separator)])
        start = at + len(separator)
    if continuation[start:]:
        parts.append(continuation[start:])
    return parts


class TrainedScorer:
    """A trained x1 evaluator (``value:``, ``orm:`` or ``prm:`` folder, head included) as a value scorer.

    It computes what ``ValueModelEvaluator`` / ``PRMEvaluator`` compute in-process from the same
    (prefix, path) pair, so ``/v1/score`` and ``-p evaluator=value:DIR`` give the same numbers.
    """

    def __init__(self, spec: str) -> None:
        from x1.evaluators.spec import build_evaluator, parse_evaluator

        parsed = parse_evaluator(spec)
        if parsed.kind not in ("value", "orm", "prm"):
            raise ValueError(f"{spec!r} is not a trained evaluator (value:DIR, orm:DIR or prm:DIR)")
        self.kind = parsed.kind
        self.evaluator: Any = build_evaluator(parsed, None)
        self.name = f"{parsed.kind}:{parsed.target}"

    def score_texts(self, prompts: list[str], continuations: list[str], steps: list[list[str]] | None = None) -> list[float]:
        model = self.evaluator.model
        if self.kind != "prm":
            return [float(s) for s in model.unit_scores([p + c for p, c in zip(prompts, continuations, strict=True)])]
        paths = [list(s) if s is not None else split_steps(c, model.step_separator)
                 for s, c in zip(steps or [None] * len(continuations), continuations, strict=True)]
        return [float(s) for s in self.evaluator.score_paths(prompts, paths)]

    def close(self) -> None:
        pass


def as_scorer(model: Any) -> ValueScorer:
    """A ValueScorer as is; a text model (``unit_scores``) in ``TextModelScorer``; a Backend in ``BackendScorer``."""
    if callable(getattr(model, "score_texts", None)):
        return model  # type: ignore[no-any-return]
    if callable(getattr(model, "unit_scores", None)):
        return TextModelScorer(model)
    if callable(getattr(model, "score", None)):
        return BackendScorer(model)
    raise TypeError(f"{type(model).__name__} is neither a ValueScorer (score_texts) nor a Backend (score)")


@dataclass
class ScorerEvaluator:
    """The same scores in-process: an x1 Evaluator over a ValueScorer, with no HTTP in between."""

    scorer: Any
    name: str = "value"
    model_calls: int = 0

    def __post_init__(self) -> None:
        self.scorer = as_scorer(self.scorer)

    def evaluate(self, items: list[EvalItem]) -> list[float]:
        if not items:
            return []
        prompts, continuations = value_inputs(items)
        self.model_calls += 1
        steps = [item.steps for item in items]
        return [min(1.0, max(0.0, float(s))) for s in self.scorer.score_texts(prompts, continuations, steps)]


# -- HTTP -------------------------------------------------------------------------------------
class ScoreItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = ""
    continuation: str
    steps: list[str] | None = None  # the path's steps (a PRM scores each); None: split the continuation


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    items: list[ScoreItem] = Field(min_length=1)


def _checked(scores: Sequence[float], n: int) -> list[float]:
    values = [float(s) for s in scores]
    if len(values) != n:
        raise ValueError(f"the scorer returned {len(values)} scores for {n} items")
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        raise ValueError(f"the scorer returned a non-finite score ({bad[0]})")
    return [min(1.0, max(0.0, v)) for v in values]


def create_value_app(
    evaluator_or_backend: Any,
    api_key: str | None = None,
    max_batch: int = 32,
    max_wait_ms: float = 5.0,
    max_prompt_chars: int = 65536,
    max_items: int = 1024,
    max_body_bytes: int = 8 << 20,
    model_name: str | None = None,
) -> "FastAPI":
    """A FastAPI app with ``POST /v1/score`` over a ValueScorer (or a Backend, through BackendScorer)."""
    from x1.models.base import BackendError
    from x1.serve.batcher import BatcherClosed, DynamicBatcher
    from x1.serve.common import APIError, check_model, make_app, model_lock
    from x1.serve.metrics import ServerMetrics

    scorer = as_scorer(evaluator_or_backend)
    served = model_name or scorer.name
    # A BackendScorer shares its backend's lock with a policy server on the same backend.
    lock = model_lock(getattr(scorer, "backend", scorer))

    def run(items: list[ScoreItem]) -> list[float]:
        with lock:
            steps = [i.steps for i in items] if any(i.steps is not None for i in items) else None
            scores = scorer.score_texts([i.prompt for i in items], [i.continuation for i in items], steps)
        return _checked(scores, len(items))

    metrics = ServerMetrics()
    batcher: DynamicBatcher[ScoreItem, float] = DynamicBatcher(run, max_batch=max_batch, max_wait_ms=max_wait_ms, metrics=metrics,
                                                              name="value")
    limits = {"max_prompt_chars": max_prompt_chars, "max_items": max_items}
    app = make_app("x1 value server", served, metrics, [batcher], api_key, max_body_bytes,
                   info=lambda: {"kind": "value", "limits": limits})
    app.state.scorer = scorer

    @app.post("/v1/score")
    async def score(body: ScoreRequest) -> dict[str, Any]:
        check_model(body.model, served)
        if len(body.items) > max_items:
            raise APIError(413, f"{len(body.items)} items in one request; this server's limit is {max_items}", param="items")
        for k, item in enumerate(body.items):
            size = len(item.prompt) + len(item.continuation)
            if size > max_prompt_chars:
                raise APIError(413, f"item {k} has {size} characters; this server's limit is {max_prompt_chars} (--max-prompt-chars)",
                               param="items", code="prompt_too_large")
        try:
            scores = await batcher.submit_many(body.items)
        except BatcherClosed as err:
            raise APIError(503, str(err), "server_error") from err
        except (BackendError, ValueError) as err:
            raise APIError(400, f"the scorer could not score these items: {err}", code="model_error") from err
        except Exception as err:
            raise APIError(500, f"the scorer failed: {type(err).__name__}: {err}", "server_error") from err
        return {"object": "score", "model": served, "scores": scores, "usage": {"items": len(scores)}}

    return app
