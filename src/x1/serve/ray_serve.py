"""The policy and value servers as Ray Serve deployments: the same FastAPI apps, replicated by Ray.

``x1 serve policy --ray-serve`` and ``x1 serve value --ray-serve`` deploy the apps that
``create_policy_app`` and ``create_value_app`` build, one per replica: the app is built *on the
replica* (``serve.ingress`` with a builder function), so each replica loads its own model and runs
its own dynamic batcher, and nothing heavy is pickled from the driver. Each kind is its own Serve
application under its own route prefix, so both can share one Serve HTTP proxy::

    http://HOST:8000/policy/v1/completions   (OpenAI client: base_url="http://HOST:8000/policy/v1")
    http://HOST:8000/value/v1/score          (x1: --value-url http://HOST:8000/value)

Ray Serve balances requests over the replicas; the batching inside a replica is x1's. Without
``--address`` a private local Ray instance is started and torn down with the deployment; with
one (``auto``, ``HOST:6379``) the app joins that cluster's Serve and only the app is deleted on exit.
Ray Serve is imported only here: ``pip install 'x1[ray]'``.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import math
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

SERVE_MISSING = "Ray Serve is not installed; fix: pip install 'x1[ray]' (or pip install 'ray[serve]')"
ROUTES: dict[str, str] = {"policy": "/policy", "value": "/value"}
SERVE_LOGS = "/tmp/ray/session_latest/logs/serve"
MIN_RAY = (2, 47)  # serve.ingress takes a builder function, run on each replica, from 2.47 on


class RayServeError(RuntimeError):
    """Ray Serve could not be started or the app could not be deployed; the message names the fix."""


def app_name(kind: str) -> str:
    """The Serve application's name: one per kind, so a policy and a value app can share a cluster."""
    return f"x1-{kind}"


@dataclass
class ReplicaSpec:
    """What every replica builds for itself: plain data, so it pickles to the replicas instead of a loaded model."""

    kind: str  # "policy" or "value"
    model: str
    api_key: str | None = None
    max_batch: int = 32
    max_wait_ms: float = 5.0
    n_ctx: int = 32768
    threads: int | None = None
    served_name: str | None = None
    limits: dict[str, int | bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ROUTES:
            raise ValueError(f"kind must be 'policy' or 'value', got {self.kind!r}")


def build_app(spec: ReplicaSpec) -> Any:
    """Load the model and build the FastAPI app, as ``x1 serve`` does; runs on each replica."""
    from x1.serve.run import load_serving_backend, load_value_scorer

    load = load_value_scorer if spec.kind == "value" else load_serving_backend
    backend = load(spec.model, n_ctx=spec.n_ctx, n_seq_max=max(64, 2 * spec.max_batch), threads=spec.threads)
    try:
        if spec.kind == "policy":
            from x1.serve.policy import create_policy_app

            app = create_policy_app(backend, api_key=spec.api_key, max_batch=spec.max_batch, max_wait_ms=spec.max_wait_ms,
                                    model_name=spec.served_name, **spec.limits)
        else:
            from x1.serve.value import create_value_app

            app = create_value_app(backend, api_key=spec.api_key, max_batch=spec.max_batch, max_wait_ms=spec.max_wait_ms,
                                   model_name=spec.served_name, **spec.limits)
    except Exception:
        backend.close()
        raise
    app.state.x1_backend = backend
    return RouteRelative(app)


class RouteRelative:
    """Give the app paths relative to the route prefix: Ray Serve's proxy passes ``/policy/v1/...`` with ``root_path``
    ``/policy``, and x1's API-key and body-size guard, which matches ``/v1`` on the path, would then let every request through."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.state = app.state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            root, path = scope.get("root_path", ""), scope.get("path", "")
            if root and path.startswith(root):
                scope = {**scope, "path": path[len(root):] or "/"}  # the pre-Starlette-0.35 form, which FastAPI still routes
        await self.app(scope, receive, send)


class _Replica:
    """The deployment's class: Serve runs the app's lifespan (which stops the batcher), then this ``__del__`` frees the model."""

    def __del__(self) -> None:
        try:
            backend = getattr(self.app.state, "x1_backend", None)  # type: ignore[attr-defined]
        except Exception:  # the app was never built (the model failed to load)
            return
        if backend is not None:
            backend.close()


def import_serve() -> tuple[Any, Any]:
    """``(ray, ray.serve)``, or a RayServeError with the pip command (``import ray.serve`` fails without its extra)."""
    try:
        import ray

        serve = importlib.import_module("ray.serve")  # not `from ray import serve`: that finds a half-imported attribute
    except ImportError as err:
        raise RayServeError(SERVE_MISSING) from err
    version = tuple(int(p) for p in ray.__version__.split(".")[:2] if p.isdigit())
    if version < MIN_RAY:  # older Serve would treat the builder function as the ASGI app itself
        need = ".".join(map(str, MIN_RAY))
        raise RayServeError(f"Ray {ray.__version__} is too old for x1 on Ray Serve; fix: pip install 'ray[serve]>={need}'")
    return ray, serve


def bind(spec: ReplicaSpec, replicas: int = 1, num_cpus: float = 1.0) -> Any:
    """The Serve application: ``replicas`` copies of the app, each reserving ``num_cpus`` CPUs."""
    _ray, serve = import_serve()

    def builder() -> Any:  # evaluated on each replica when it starts
        return build_app(spec)

    options: dict[str, Any] = {"name": app_name(spec.kind), "num_replicas": replicas, "ray_actor_options": {"num_cpus": num_cpus}}
    if "max_constructor_retry_count" in inspect.signature(serve.deployment).parameters:
        options["max_constructor_retry_count"] = 3  # a model that fails to load fails the deploy soon, not after 20 tries
    return serve.deployment(serve.ingress(builder)(_Replica), **options).bind()


def start_ray(ray: Any, address: str | None, num_cpus: int) -> bool:
    """Join the cluster at ``address`` or start a private local one; True when this call started Ray."""
    if ray.is_initialized():
        return False
    if address:
        from x1.pipelines.distributed import connect
        from x1.pipelines.evaluate import EvalError

        try:
            return connect(ray, address, num_cpus)  # ships this x1 to the cluster, with its API keys
        except EvalError as err:
            raise RayServeError(str(err)) from err
    # Serve kills an HTTP proxy that is not ready within 5 s, which a loaded 2-core machine can miss
    # (seen once in CI beside a background study); the local cluster's processes inherit this.
    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")
    for attempt in range(2):
        try:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
            return True
        except Exception as err:
            # On a loaded machine, right after another local Ray stopped, the GCS can miss its start-up
            # deadline once; a second try after a pause succeeds.
            if attempt == 0:
                with contextlib.suppress(Exception):
                    ray.shutdown()
                time.sleep(3)
                continue
            detail = " ".join(str(err).split())[:200]
            raise RayServeError(f"could not start a local Ray instance: {detail}; fix: see the logs under /tmp/ray") from err
    return True


@dataclass
class Deployment:
    """A running x1 app on Ray Serve; ``shutdown()`` removes it (and Ray, when this process started Ray)."""

    kind: str
    url: str
    started_ray: bool

    def shutdown(self) -> None:
        ray, serve = import_serve()
        try:
            if self.started_ray:
                serve.shutdown()
            else:
                serve.delete(app_name(self.kind))  # leave the cluster's other apps (and its Serve) running
        finally:
            if self.started_ray:
                ray.shutdown()


def _proxy_port(serve_port: int) -> int:
    """The port Serve's proxy really listens on: an earlier ``serve.start`` on a shared cluster fixed it."""
    try:
        from ray.serve.context import _get_global_client

        return int(_get_global_client().http_config.port)
    except Exception:  # private API: fall back to what was asked for
        return serve_port


def deploy(spec: ReplicaSpec, replicas: int = 1, num_cpus: float = 1.0, host: str = "127.0.0.1", port: int = 8000,
           address: str | None = None) -> Deployment:
    """Start (or join) Ray and Serve, deploy ``spec`` and wait until every replica is up; the URL is ``.../policy`` or ``.../value``."""
    if replicas < 1:
        raise RayServeError(f"--replicas {replicas}: a deployment needs at least 1 replica")
    if num_cpus <= 0:
        raise RayServeError(f"--replica-cpus {num_cpus:g}: each replica needs some CPU (e.g. 1)")
    if not address:  # local replicas see this machine's files: a bad --model fails here, before Ray starts
        from x1.models.registry import resolve_model

        resolve_model(spec.model)
    ray, serve = import_serve()
    started = start_ray(ray, address, max(1, math.ceil(replicas * num_cpus)))
    kind = spec.kind
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(bind(spec, replicas, num_cpus), name=app_name(kind), route_prefix=ROUTES[kind], blocking=False)
    except Exception as err:
        if started:
            try:
                serve.shutdown()
            finally:
                ray.shutdown()
        detail = " ".join(str(err).split())[:300]
        message = f"could not deploy the x1 {kind} app on Ray Serve: {detail}; fix: see the replica logs under {SERVE_LOGS}"
        raise RayServeError(message) from err
    return Deployment(kind=kind, url=f"http://{host}:{_proxy_port(port)}{ROUTES[kind]}", started_ray=started)


def wait_for_interrupt() -> None:
    """Block until Ctrl-C or SIGTERM (which becomes a KeyboardInterrupt, so the caller's cleanup runs either way)."""

    def _stop(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
