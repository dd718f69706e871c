"""What the policy and value servers share: errors in OpenAI's shape, the API key, the body
size limit, request metrics, /health and /metrics, and a uvicorn server in a background thread.

Every error body is ``{"error": {"message", "type", "param", "code"}}`` (OpenAI's shape, which
the ``openai`` client reads). Bad input is always a 4xx: malformed JSON and wrong types are 400,
a missing or wrong API key 401, a body or prompt over the limit 413.
"""

import asyncio
import contextlib
import secrets
import socket
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from x1.serve.batcher import Batcher, call_seconds, describe
from x1.serve.metrics import CONTENT_TYPE, ServerMetrics

DEFAULT_MAX_BODY_BYTES = 8 << 20
MAX_HEADER_BYTES = 16 << 10  # headers in one piece over this get 431; h11 refuses a header block still incomplete at this size
MAX_HEADERS = 100
DEFAULT_WEDGED_S = 120.0  # one model call (a step, or a gathered batch) running longer: /health says wedged
DEFAULT_REQUEST_TIMEOUT_S = 600.0  # a request still running after this gets 504 and leaves the batcher
LOOPBACK = ("127.0.0.1", "localhost", "::1")

_locks: "weakref.WeakKeyDictionary[Any, threading.Lock]" = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


def model_lock(model: Any) -> threading.Lock:
    """One lock per model object, so two servers sharing one in-process model take turns."""
    with _locks_guard:
        try:
            lock = _locks.get(model)
            if lock is None:
                lock = _locks[model] = threading.Lock()
        except TypeError:  # not weak-referenceable: a lock of its own
            lock = threading.Lock()
        return lock


class APIError(StarletteHTTPException):
    """An error answered in OpenAI's shape. A subclass of HTTPException so FastAPI passes it through
    even when it is raised while the body is being read."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(status_code=status, detail=message)
        self.message = message
        self.type = type_
        self.param = param
        self.code = code


def error_response(status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                   code: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _validation_message(err: RequestValidationError) -> tuple[str, str | None]:
    parts, param = [], None
    for e in err.errors():
        loc = [str(x) for x in e.get("loc", ()) if x != "body"]
        if e.get("type") == "json_invalid":
            ctx = e.get("ctx") or {}
            return f"malformed JSON body: {ctx.get('error', e.get('msg', 'cannot parse'))}", None
        where = ".".join(loc) or "body"
        param = param or where
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts[:8]), param


def install_errors(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_request: Request, exc: APIError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return error_response(exc.status_code, exc.message, exc.type, exc.param, exc.code, headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return error_response(400, message, param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return error_response(exc.status_code, str(exc.detail), type_)

    @app.exception_handler(Exception)
    async def _crash(_request: Request, exc: Exception) -> JSONResponse:  # pragma: no cover - a bug, not bad input
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}", "server_error")


class _TooLarge(APIError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds this server's limit of {limit} bytes (--max-body-bytes)", code="body_too_large")


class GuardMiddleware:
    """Pure ASGI: the API key and body limit on /v1/*, and request counts and latency."""

    def __init__(self, app: Any, metrics: ServerMetrics, api_key: str | None, max_body_bytes: int,
                 request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S) -> None:
        self.app = app
        self.metrics = metrics
        self.api_key = api_key
        self.max_body = max_body_bytes
        self.request_timeout_s = request_timeout_s

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        path, root = str(scope.get("path", "")), str(scope.get("root_path", ""))
        if root and path.startswith(root):  # behind a proxy that mounts the app under a prefix
            path = path[len(root) :]
        raw_headers = scope.get("headers", []) if scope["type"] == "http" else []
        if len(raw_headers) > MAX_HEADERS or sum(len(k) + len(v) for k, v in raw_headers) > MAX_HEADER_BYTES:
            self.metrics.requests.inc(status="431")
            await error_response(431, f"request headers over this server's limit ({MAX_HEADERS} headers, {MAX_HEADER_BYTES} bytes)",
                                 code="headers_too_large")(scope, receive, send)
            return
        if scope["type"] != "http" or not path.startswith("/v1"):
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]
        started = [False]

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
                started[0] = True
            await send(message)

        try:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            if self.api_key is not None:
                auth = headers.get("authorization", "")
                scheme, _, token = auth.partition(" ")
                if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), self.api_key.encode()):
                    why = "missing API key" if not auth else "wrong API key"
                    response = error_response(401, f"{why}; send the header 'Authorization: Bearer <key>'",
                                              "authentication_error", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
                    await response(scope, receive, send_wrapper)
                    return
            length = headers.get("content-length", "")
            if length.isdigit() and int(length) > self.max_body:
                await error_response(413, str(_TooLarge(self.max_body).message), code="body_too_large")(scope, receive, send_wrapper)
                return
            received = 0
            body_read = asyncio.Event()

            async def receive_wrapper() -> dict[str, Any]:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > self.max_body:
                        raise _TooLarge(self.max_body)
                    if not message.get("more_body", False):
                        body_read.set()
                return message

            try:
                if not await self._run_watched(scope, receive_wrapper, send_wrapper, receive, body_read):
                    status[0] = 499  # the client closed the connection before the answer
                    return
            except _TooLarge as err:
                if started[0]:
                    raise
                await error_response(413, err.message, code=err.code)(scope, receive, send_wrapper)
        finally:
            self.metrics.requests.inc(status=str(status[0]))
            self.metrics.latency.observe(time.perf_counter() - start)


    async def _run_watched(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any],
                           raw_receive: Callable[..., Any], body_read: asyncio.Event) -> bool:
        """Run the route, cancelling it when its client disconnects or it outlives ``request_timeout_s``, so work
        nobody waits for leaves the batcher's queue and decode (a cancelled waiter is dropped there). False if cancelled."""
        work = asyncio.ensure_future(self.app(scope, receive, send))

        async def client_gone() -> None:
            await body_read.wait()
            while (await raw_receive())["type"] != "http.disconnect":
                pass

        watch = asyncio.ensure_future(client_gone())
        try:
            done, _ = await asyncio.wait({work, watch}, timeout=self.request_timeout_s, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            work.cancel()
            raise
        finally:
            watch.cancel()
        if work in done:
            work.result()
            return True
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await work
        if watch in done:
            return False
        await error_response(504, f"the request took longer than this server's limit of {self.request_timeout_s:g}s; fix: "
                             "ask for fewer or shorter completions", "timeout_error", code="request_timeout")(scope, raw_receive, send)
        return True


def make_app(
    title: str,
    model_name: str,
    metrics: ServerMetrics,
    batchers: list[Batcher[Any, Any]],
    api_key: str | None,
    max_body_bytes: int,
    info: Callable[[], dict[str, Any]] | None = None,
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
    wedged_after_s: float = DEFAULT_WEDGED_S,
) -> FastAPI:
    """A FastAPI app that starts and stops ``batchers`` with the server and has /health and /metrics.

    /health answers 503 when a batcher's worker died or one model call has run longer than ``wedged_after_s``."""

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        for b in batchers:
            b.start()
        try:
            yield
        finally:
            for b in batchers:
                await b.stop()

    app = FastAPI(title=title, lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    install_errors(app)
    app.add_middleware(GuardMiddleware, metrics=metrics, api_key=api_key or None, max_body_bytes=max_body_bytes,
                       request_timeout_s=request_timeout_s)
    app.state.metrics = metrics
    app.state.batchers = batchers
    started = int(time.time())

    @app.get("/health")
    async def health() -> JSONResponse:
        wedged = [b.name for b in batchers if call_seconds(b) > wedged_after_s]
        alive = all(b.running for b in batchers) and not wedged
        status = "ok" if alive else (f"wedged: one model call has run over {wedged_after_s:g}s" if wedged else "unavailable")
        body: dict[str, Any] = {"status": status, "model": model_name, **(info() if info else {})}
        body["batchers"] = {b.name: describe(b) for b in batchers}
        return JSONResponse(body, status_code=200 if alive else 503)

    @app.get("/metrics")
    async def metrics_route() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": started, "owned_by": "x1"}]}

    return app


def check_model(requested: str | None, served: str) -> None:
    """Accept the served name, ``default`` (what ``--model openai:URL`` sends) or nothing."""
    if requested in (None, "", served, "default"):
        return
    raise APIError(404, f"model {requested!r} is not served here; this server serves {served!r} (see /v1/models)",
                   "not_found_error", "model", "model_not_found")


# -- running ----------------------------------------------------------------------------------
SHUTDOWN_GRACE_S = 5.0  # SIGTERM: requests still running after this are cancelled and the server exits


def uvicorn_limits() -> dict[str, Any]:
    """uvicorn settings that bound what one client can hold: header size, idle keep-alive, and the shutdown wait."""
    from x1.serve.slow import SlowClientH11Protocol

    return {"http": SlowClientH11Protocol, "h11_max_incomplete_event_size": MAX_HEADER_BYTES, "timeout_keep_alive": 5,
            "timeout_graceful_shutdown": SHUTDOWN_GRACE_S}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class BackgroundServer:
    """uvicorn serving ``app`` in a daemon thread (tests, benchmarks, notebooks).

    ``with BackgroundServer(app) as server: ... server.url ...``
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int | None = None, log_level: str = "warning") -> None:
        import uvicorn

        self.host = host
        self.port = port or free_port(host)
        config = uvicorn.Config(app, host=host, port=self.port, log_level=log_level, lifespan="on", access_log=False,
                                **uvicorn_limits())
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=f"x1-serve-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> "BackgroundServer":
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError(f"the server on port {self.port} exited while starting")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server on port {self.port} did not start within {timeout:g}s")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


