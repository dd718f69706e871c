"""The in-process llama.cpp backend, one room per part.

- ``backend``: ``LlamaCppBackend``, the context, decoding and scoring;
- ``stream``: ``LlamaStream``, continuous batching over that context;
- ``contract``: ``StreamBackend``, every call the stream may make on the backend;
- ``slots``: the prefix cache over the context's sequence slots;
- ``vocab``: tokens, pieces and the chat template; ``runtime``: the optional llama-cpp-python;
- ``build`` and ``check``: building llama.cpp for this CPU and proving it runs.

``LlamaCppBackend`` is loaded on first use, so ``python -m x1.models.llama_cpp.build`` (run by setup
before llama-cpp-python exists) imports nothing of the backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from x1.models.llama_cpp.backend import LlamaCppBackend

__all__ = ["LlamaCppBackend"]


def __getattr__(name: str) -> Any:
    if name == "LlamaCppBackend":
        from x1.models.llama_cpp.backend import LlamaCppBackend

        return LlamaCppBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
