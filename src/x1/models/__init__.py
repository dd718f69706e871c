"""Policy backends behind one protocol (see base.py); heavy runtimes load on demand."""

from x1.models.base import Backend, BackendError, BackendStats, Capabilities, Completion, GenerationRequest
from x1.models.registry import available_models, load_backend, resolve_model

__all__ = [
    "Backend", "BackendError", "BackendStats", "Capabilities", "Completion", "GenerationRequest",
    "available_models", "load_backend", "resolve_model",
]
