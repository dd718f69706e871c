"""Strategy hyper-parameters, checked before anything loads: a wrong name, type or value is one line.

Types come from each strategy dataclass's own annotations (pydantic validates them, so ``1e-3``
is a float and ``abc`` is no integer); the ranges and choices that annotations cannot say are in
one table here, keyed by the parameter's name, which means the same thing in every strategy.
"""

from __future__ import annotations

import typing
from dataclasses import fields
from typing import Any

from pydantic import TypeAdapter, ValidationError

# name -> (lowest, highest); None is open. Inclusive.
RANGES: dict[str, tuple[float | None, float | None]] = {
    "iterations": (1, None), "expand": (1, None), "n": (1, None), "width": (1, None), "branch": (1, None),
    "breadth": (1, None), "max_depth": (1, None), "max_nodes": (1, None), "max_paths": (1, None),
    "max_substeps": (1, None), "parallel": (1, None), "rollouts": (0, None), "max_tokens": (1, None),
    "max_per_parent": (1, None), "groups": (1, None), "diversity_penalty": (0, None),
    "temperature": (0, None), "c1": (0, None), "c2": (1e-9, None), "gamma": (0, 1), "lam": (0, 1), "alpha": (0, 1),
    "threshold": (0, 1), "entropy_threshold": (0, None), "varentropy_threshold": (0, None),
    "widen": (0, None), "widen_alpha": (0, 1),
}  # fmt: skip
CHOICES: dict[str, tuple[str, ...]] = {
    "voting": ("majority", "weighted", "reward"),
    "answer_by": ("value", "visits"),
    "puct_form": ("muzero", "paper"),
}


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) or str(annotation)
    return text.replace("typing.", "").replace("NoneType", "None")


def check_params(strategy: str, cls: type, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters converted to their fields' types; raises ValueError naming the first bad one and what is valid."""
    allowed = {f.name for f in fields(cls) if f.name != "name"}  # type: ignore[arg-type]
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(f"strategy {strategy!r} has no parameter(s) {unknown}; it takes: {', '.join(sorted(allowed))}")
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for key, value in params.items():
        try:
            typed = TypeAdapter(hints[key]).validate_python(value)
        except ValidationError as err:
            reason = err.errors()[0]["msg"].lower()
            raise ValueError(f"strategy {strategy!r}: {key}={value!r} is not a valid {_type_name(hints[key])} ({reason})") from err
        if key in CHOICES and typed is not None and typed not in CHOICES[key]:
            raise ValueError(f"strategy {strategy!r}: {key}={typed!r} is not one of {', '.join(CHOICES[key])}")
        low, high = RANGES.get(key, (None, None))
        numeric = isinstance(typed, int | float) and not isinstance(typed, bool)
        if numeric and ((low is not None and typed < low) or (high is not None and typed > high)):
            span = f"at least {low:g}" if high is None else f"between {low:g} and {high:g}"
            raise ValueError(f"strategy {strategy!r}: {key}={typed!r} is out of range; it must be {span}")
        out[key] = typed
    return out
