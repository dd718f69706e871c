"""Serving: the policy (OpenAI-compatible) and value servers, with dynamic batching.

``x1 serve policy`` and ``x1 serve value`` run them; ``create_policy_app`` and
``create_value_app`` build the FastAPI apps around a backend (or a value scorer) for embedding.
FastAPI and uvicorn are imported only when an app is built: ``pip install 'x1[serve]'``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BackgroundServer", "DynamicBatcher", "ServerMetrics", "create_policy_app", "create_value_app"]


def __getattr__(name: str) -> Any:
    if name == "create_policy_app":
        from x1.serve.policy import create_policy_app

        return create_policy_app
    if name == "create_value_app":
        from x1.serve.value import create_value_app

        return create_value_app
    if name == "BackgroundServer":
        from x1.serve.common import BackgroundServer

        return BackgroundServer
    if name == "DynamicBatcher":
        from x1.serve.batcher import DynamicBatcher

        return DynamicBatcher
    if name == "ServerMetrics":
        from x1.serve.metrics import ServerMetrics

        return ServerMetrics
    raise AttributeError(f"module 'x1.serve' has no attribute {name!r}")
