"""What ``x1 serve policy`` and ``x1 serve value`` do: load the model, build the app, run uvicorn."""

from __future__ import annotations

from typing import Any

from x1.models.base import Backend, BackendError
from x1.serve.common import LOOPBACK


def load_serving_backend(model: str, n_ctx: int = 32768, n_seq_max: int = 64, threads: int | None = None,
                         model_name: str | None = None) -> Backend:
    """A backend for a server: llama.cpp gets enough sequence slots for a whole batch."""
    from x1.models.registry import load_backend, resolve_model

    spec = resolve_model(model, model_name)
    options: dict[str, Any] = {}
    if spec.kind == "llamacpp":
        options = {"n_ctx": n_ctx, "n_seq_max": n_seq_max}
        if threads:
            options["n_threads"] = threads
    elif spec.kind == "hf" and threads:
        options = {"threads": threads}
    return load_backend(spec, **options)


def trained_evaluator_spec(model: str) -> str | None:
    """``value:DIR`` / ``prm:DIR`` / ``orm:DIR`` as given, or a folder holding a trained evaluator (read from its
    head config); None for a policy model."""
    from x1.evaluators.spec import MODEL_KINDS, head_kind

    if model.split(":", 1)[0] in MODEL_KINDS:
        return model
    kind = head_kind(model)
    return f"{kind}:{model}" if kind else None


def load_value_scorer(model: str, n_ctx: int = 32768, n_seq_max: int = 64, threads: int | None = None) -> Any:
    """What ``x1 serve value`` scores with: a trained value model, PRM or ORM with its head, or any
    policy model's mean token probability (``BackendScorer``)."""
    spec = trained_evaluator_spec(model)
    if spec is None:
        return load_serving_backend(model, n_ctx=n_ctx, n_seq_max=n_seq_max, threads=threads)
    from x1.config import ConfigError
    from x1.serve.value import TrainedScorer

    if threads:
        import torch

        torch.set_num_threads(threads)
    try:
        return TrainedScorer(spec)
    except ConfigError as err:
        raise BackendError(str(err)) from err


def check_exposure(host: str, api_key: str | None) -> str | None:
    """A warning when the server would be reachable from other machines without a key."""
    if host not in LOOPBACK and not api_key:
        return f"serving on {host} without an API key: anyone who can reach this port can use the model (pass --api-key)"
    return None


def run_app(app: Any, host: str, port: int, log_level: str = "info") -> None:
    try:
        import uvicorn
    except ImportError as err:  # pragma: no cover - the serve extra
        raise BackendError("serving needs uvicorn and fastapi; fix: pip install 'x1[serve]'") from err
    from x1.serve.common import uvicorn_limits

    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=log_level == "debug", **uvicorn_limits())
