"""Evaluator specs: one string names what scores thoughts, and every command reads it the same way.

    confidence            the policy's mean token probability along the path (free)
    verifier              the task's own checker: reads the gold answer, so a run using it is an *oracle* run
    judge                 the policy asked "is this right so far?"
    value:PATH            a value model from ``x1 fit value`` (causal LM + value head, q in [-1, 1])
    prm:PATH[?aggregate=min|last|product|mean]   a process reward model from ``x1 fit prm``
    orm:PATH              an outcome reward model from ``x1 fit orm``
    ...?dtype=bfloat16    any of the three, its backbone in bfloat16 (float32 by default on a CPU):
                          3-3.7x faster scoring on a CPU with native bf16 (AVX512-BF16/AMX), scores
                          within about 0.02; about 8x slower than float32 without it (a warning says so)
    ...?cache_mb=N        any of the three: a budget of its own for the KV caches it keeps of paths it
                          scored, so a search's next call runs only the new steps (by default all of a
                          process's evaluators share one, an eighth of the memory, at most 4 GiB; 0 keeps
                          none; scores are the same)
    remote:URL            an ``x1 serve value`` server (whatever it serves)

A spec is checked (the folder exists and holds a model of that kind, the URL has a scheme) before
any model loads; the thought scores it writes are keyed by the spec's text, so a trace says which
model scored what.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from x1.config import ConfigError
from x1.evaluators.aggregate import AGGREGATES
from x1.evaluators.base import Evaluator

SIMPLE = ("confidence", "verifier", "judge")
MODEL_KINDS = ("value", "prm", "orm")
ORACLES = ("verifier",)
DTYPES = ("float32", "bfloat16", "float16")
FORMS = ("confidence, verifier (oracle), judge, value:PATH, prm:PATH[?aggregate=min|last|product|mean], orm:PATH, remote:URL; "
         "value, prm and orm also take ?dtype=float32|bfloat16|float16 and ?cache_mb=N")
HEAD_CONFIG = "x1_head.json"  # written by every trained evaluator's save() (see value_model.py)


@dataclass(frozen=True)
class EvaluatorSpec:
    text: str  # as the user wrote it: the key of the scores it writes
    kind: str  # confidence, verifier, judge, value, prm, orm, remote
    target: str | None = None  # the model folder or the server URL
    options: tuple[tuple[str, str], ...] = ()

    @property
    def oracle(self) -> bool:
        """True when the scores come from the gold answer, not from a model."""
        return self.kind in ORACLES

    def scoring_key(self) -> tuple[str, str | None, tuple[tuple[str, str], ...]]:
        """Equal for two specs that score every thought alike however they are written (``prm:DIR`` and
        ``prm:./DIR?aggregate=min``), so scores one already wrote can stand in for the other's."""
        options = dict(self.options)
        options.pop("cache_mb", None)  # how much it keeps between calls changes no score
        if self.kind == "prm":
            options.setdefault("aggregate", "min")
        target = str(Path(self.target).expanduser().resolve()) if self.kind in MODEL_KINDS and self.target else self.target
        return self.kind, target, tuple(sorted(options.items()))

    @property
    def aggregate(self) -> str:
        """How a PRM's step scores become one score (min by default)."""
        return dict(self.options).get("aggregate", "min")

    def step_key(self) -> tuple[str, str | None, tuple[tuple[str, str], ...]] | None:
        """Equal for two PRM specs whose step scores are the same whatever they aggregate them by; None for other kinds."""
        if self.kind != "prm":
            return None
        kind, target, options = self.scoring_key()
        return kind, target, tuple(option for option in options if option[0] != "aggregate")


def parse_evaluator(text: str, value_url: str | None = None) -> EvaluatorSpec:
    """Check one spec; ``value`` alone means the ``--value-url`` server when one is given."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"evaluator {text!r} is empty; valid: {FORMS}")
    text = text.strip()
    if text in SIMPLE:
        return EvaluatorSpec(text, text)
    if text == "value":
        if value_url:
            return parse_evaluator(f"remote:{value_url}")
        raise ConfigError(f"evaluator 'value' needs a model: value:PATH (a folder from `x1 fit value`) or --value-url URL; valid: {FORMS}")
    kind, sep, rest = text.partition(":")
    if not sep or kind not in (*MODEL_KINDS, "remote"):
        raise ConfigError(f"unknown evaluator {text!r}; valid: {FORMS}")
    if kind == "remote":
        if not rest.startswith(("http://", "https://")):
            raise ConfigError(f"evaluator {text!r}: the URL needs a scheme; fix: e.g. remote:http://127.0.0.1:8001")
        return EvaluatorSpec(text, kind, rest)
    path, _, query = rest.partition("?")
    options = tuple(parse_qsl(query, keep_blank_values=True))
    allowed = {"aggregate", "dtype", "cache_mb"} if kind == "prm" else {"dtype", "cache_mb"}
    unknown = [k for k, _ in options if k not in allowed]
    if unknown:
        raise ConfigError(f"evaluator {text!r}: unknown option {unknown[0]!r}; {kind}: takes {', '.join(sorted(allowed))}")
    aggregate = dict(options).get("aggregate")
    if aggregate is not None and aggregate not in AGGREGATES:
        raise ConfigError(f"evaluator {text!r}: aggregate={aggregate!r} is not one of {', '.join(AGGREGATES)}")
    dtype = dict(options).get("dtype")
    if dtype is not None and dtype not in DTYPES:
        raise ConfigError(f"evaluator {text!r}: dtype={dtype!r} is not one of {', '.join(DTYPES)}")
    cache_mb = dict(options).get("cache_mb")
    if cache_mb is not None and not (cache_mb.isdigit() and len(cache_mb) < 8):
        raise ConfigError(f"evaluator {text!r}: cache_mb={cache_mb!r} is not a whole number of megabytes; "
                          "fix: e.g. cache_mb=512, or 0 to keep none")
    check_model_folder(path, kind, what=f"evaluator {text!r}")
    return EvaluatorSpec(text, kind, path, options)


def head_kind(folder: str | Path) -> str | None:
    """The kind (value, prm, orm) of the trained evaluator saved in ``folder``, read from its head config
    without torch; None when the folder holds none. An unreadable config raises ConfigError."""
    config = Path(folder).expanduser() / HEAD_CONFIG
    if not config.is_file():
        return None
    try:
        return str(json.loads(config.read_text()).get("kind"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"{config} is unreadable ({err}); fix: train the model again") from err


def check_model_folder(path: str, kind: str, what: str) -> None:
    """The folder holds a trained x1 evaluator of ``kind``."""
    folder = Path(path).expanduser()
    if not path or not folder.is_dir():
        raise ConfigError(
            f"{what}: {path or '(no path)'} is not a folder; fix: train one with `x1 fit {kind} --out DIR` and pass {kind}:DIR"
        )
    found = head_kind(folder)
    if found is None:
        raise ConfigError(f"{what}: {folder} holds no {HEAD_CONFIG}, so it is not a trained x1 evaluator; fix: `x1 fit {kind} --out DIR`")
    if found != kind:
        raise ConfigError(f"{what}: {folder} holds a trained '{found}' model, not '{kind}'; fix: write {found}:{path}")


def specs_in(params: Any) -> Iterator[str]:
    """Every evaluator a strategy's parameters name: ``evaluator`` at any depth (e.g. in graph-of-operations' ops)."""
    if isinstance(params, dict):
        for key, value in params.items():
            if key == "evaluator" and isinstance(value, str):
                yield value
            else:
                yield from specs_in(value)
    elif isinstance(params, list):
        for value in params:
            yield from specs_in(value)


def resolve_value_alias(params: dict[str, Any], value_url: str | None) -> dict[str, Any]:
    """``evaluator=value`` with ``--value-url`` becomes ``remote:URL`` everywhere in the params, so the trace names the server."""
    if not value_url:
        return params

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: (f"remote:{value_url}" if k == "evaluator" and v == "value" else walk(v)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return walk(params)  # type: ignore[no-any-return]


def oracle_reason(params: dict[str, Any]) -> str | None:
    """Why a run with these strategy parameters saw the gold answers, or None."""
    reasons = []
    if params.get("training"):
        reasons.append("training=true gives terminals the verifier's true reward")
    oracles = sorted({s for s in specs_in(params) if s in ORACLES})
    if oracles:
        reasons.append(f"evaluator {', '.join(oracles)} reads the gold answer")
    return "; ".join(reasons) or None


def build_evaluator(spec: EvaluatorSpec, policy: Any, *, timeout: float = 60.0, device: str | None = None) -> Evaluator:
    """The evaluator a spec names, scoring under the spec's text."""
    from x1.evaluators.simple import ConfidenceEvaluator, JudgeEvaluator, VerifierEvaluator

    if spec.kind == "confidence":
        return ConfidenceEvaluator(name=spec.text)
    if spec.kind == "verifier":
        return VerifierEvaluator(name=spec.text)
    if spec.kind == "judge":
        return JudgeEvaluator(policy, name=spec.text)
    if spec.kind == "remote":
        from x1.evaluators.remote import RemoteValueEvaluator

        return RemoteValueEvaluator(spec.target or "", name=spec.text, timeout=timeout)
    from x1.evaluators.reward_model import load_evaluator

    options: dict[str, Any] = dict(spec.options)
    if device:
        options["device"] = device
    if options.get("dtype") == "bfloat16" and (device or "cpu") == "cpu":
        from x1.models.hf_loading import warn_if_cpu_bf16_is_emulated

        warn_if_cpu_bf16_is_emulated(spec.text, fix="drop dtype=bfloat16")
    return load_evaluator(spec.target or "", name=spec.text, **options)  # type: ignore[no-any-return]


def build_evaluators_for(specs: Iterable[str], policy: Any, *, value_url: str | None = None, timeout: float = 60.0,
                         device: str | None = None) -> dict[str, Evaluator]:
    """One evaluator per distinct spec (a model loads once however often it is named)."""
    out: dict[str, Evaluator] = {}
    for text in specs:
        if text not in out:
            out[text] = build_evaluator(parse_evaluator(text, value_url), policy, timeout=timeout, device=device)
    return out
