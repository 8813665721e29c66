"""Process start-up shared by both services: the one place that reaches into KServe internals.

`serve` checks every internal it relies on before touching it (`check_kserve`), so a KServe
upgrade that moves one fails at start-up with a message instead of silently serving without
the fix. KServe is imported here lazily: settings and tests never need it.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import uvloop

from .errors import BadInput, Forbidden, InternalError, SchemaViolation, ServiceError, TooLarge, rest_response
from .settings import ServerSettings

log = logging.getLogger(__name__)

KSERVE_APP = "kserve.model_server:app"
"""Where uvicorn imports the app from (KServe's FASTAPI_APP_IMPORT_STRING): our wrappers go there."""

AppWrapper = Callable[[Any], Any]
Closer = Callable[[], Awaitable[None]]


class KServeChanged(RuntimeError):
    """A KServe internal this service patches is not where it used to be."""


def check_kserve() -> None:
    """Raise KServeChanged naming every internal that moved."""
    from kserve import model_server
    from kserve.protocol.grpc import interceptors
    from kserve.protocol.model_repository_extension import ModelRepositoryExtension
    from kserve.protocol.rest import server as rest

    constants = importlib.import_module("kserve.constants.constants")  # `kserve.constants` is rebound by kserve
    problems = []
    if getattr(constants, "FASTAPI_APP_IMPORT_STRING", None) != KSERVE_APP:
        problems.append(f"uvicorn no longer imports the app from {KSERVE_APP}")
    if not hasattr(model_server, "app"):
        problems.append("kserve.model_server.app is gone")
    start = getattr(model_server.ModelServer, "start", None)
    if (not inspect.iscoroutinefunction(getattr(model_server.ModelServer, "_serve", None))
            or "_serve" not in getattr(getattr(start, "__code__", None), "co_names", ())):
        problems.append("ModelServer.start no longer serves through the coroutine ModelServer._serve")
    handlers = getattr(getattr(rest, "RESTServer", None), "_add_exception_handlers", None)
    names = handlers.__code__.co_names if handlers else ()
    for name in ("not_implemented_error_handler", "generic_exception_handler"):
        if name not in names or not hasattr(rest, name):
            problems.append(f"RESTServer no longer installs kserve.protocol.rest.server.{name}")
    for name in ("load", "unload"):
        if not callable(getattr(ModelRepositoryExtension, name, None)):
            problems.append(f"ModelRepositoryExtension.{name} is gone")
    interceptor = getattr(interceptors, "ExceptionToStatusInterceptor", None)
    if interceptor is None or "GrpcException" not in interceptor.handle_exception.__code__.co_names:
        problems.append("KServe's gRPC interceptor no longer passes GrpcException codes through")
    if problems:
        raise KServeChanged("this KServe version differs from the one this service was built for (see "
                            "constraints.txt): " + "; ".join(problems))


def check_workers(workers: int) -> None:
    """One process per pod: the wrappers below live in this process, and KServe's multi-process
    server would re-import a bare app without them (and load one model copy per worker)."""
    if workers != 1:
        raise SystemExit(f"--workers={workers} is not supported: run one worker per pod and scale pods "
                         "(KServe injects --workers from containerConcurrency; pin --workers=1)")


def show_service_logs() -> None:
    """Our own start-up and fault lines (model loaded, threads, Redis unreachable) in KServe's log format.

    KServe configures only its own and uvicorn's loggers; without this, INFO lines from `predictor.*`,
    `transformer.*` and `serving.*` are dropped. Other libraries stay quiet (httpx logs every request).
    """
    from kserve.logging import KSERVE_LOGGER_DATE_FORMAT, KSERVE_LOGGER_FORMAT

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(KSERVE_LOGGER_FORMAT, KSERVE_LOGGER_DATE_FORMAT))
    for name in ("predictor", "transformer", "serving"):
        logger = logging.getLogger(name)
        if not logger.handlers:
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False


def serve(model: Any, settings: ServerSettings, wrap_app: AppWrapper | None = None,
          close: Closer | None = None) -> None:
    """Start KServe's ModelServer for `model` with this service's error handling and limits.

    `wrap_app` gets KServe's FastAPI app (to add routes) and returns the ASGI app to serve.
    `close` is awaited on the serving loop once both servers have stopped (`_close_when_stopped`).
    """
    check_workers(settings.workers)
    check_kserve()
    show_service_logs()
    import kserve
    from kserve import model_server

    # KServe's app is built with FastAPI's ORJSONResponse, which warns on every first response.
    warnings.filterwarnings("ignore", message=".*ORJSONResponse is deprecated.*")
    app = model_server.app
    _install_error_handlers(app)
    server = kserve.ModelServer(http_port=settings.http_port, grpc_port=settings.grpc_port, workers=1)
    _refuse_model_repository_changes(server)
    if close is not None:
        _close_when_stopped(server, close)
    _quiet_request_logs(settings.log_requests)
    served = wrap_app(app) if wrap_app else app
    model_server.app = BodyLimit(served, settings.max_body_bytes)
    _use_uvloop()
    server.start([model])


def _install_error_handlers(app: Any) -> None:
    from fastapi.exceptions import RequestValidationError
    from kserve.protocol.rest import server as rest

    app.add_exception_handler(ServiceError, _service_error_handler)
    app.add_exception_handler(RequestValidationError, _request_validation_handler)
    # RESTServer installs these two when it starts; give it ours instead.
    rest.not_implemented_error_handler = _not_supported_handler
    rest.generic_exception_handler = _unexpected_error_handler


def error_response(error: ServiceError):
    """A Starlette response carrying `error` exactly as the fast routes render it."""
    from starlette.responses import Response

    status, body, headers = rest_response(error)
    return Response(body, status_code=status, media_type="application/json",
                    headers={k.decode(): v.decode() for k, v in headers})


async def _service_error_handler(_: Any, exc: ServiceError):
    return error_response(exc)


async def _request_validation_handler(_: Any, exc: Any):
    """A body that does not fit a route's schema: 422 naming the fields, never echoing their values.

    (FastAPI's own handler echoes the input and fails on values JSON cannot encode, such as Infinity.)
    """
    return error_response(SchemaViolation.from_errors(exc.errors()))


async def _not_supported_handler(_: Any, exc: Any):
    """KServe answers features this service does not offer (an explainer, model versions) with 501,
    which dashboards count as a server fault; the request simply cannot be served here."""
    return error_response(BadInput(f"not supported by this server: {exc}"))


async def _unexpected_error_handler(_: Any, exc: Exception):
    log.error("unexpected error", exc_info=exc)
    return error_response(InternalError("internal error; see the server log"))


def _refuse_model_repository_changes(server: Any) -> None:
    """Refuse the Open Inference Protocol's model repository load/unload, over REST and gRPC.

    KServe answers them for anyone who can reach the server, so one unauthenticated
    `POST /v2/repository/models/<name>/unload` would take the model offline until the pod
    restarts. A serving pod here holds one fixed model; changing it is a rollout.
    """
    repository = server.model_repository_extension

    async def refuse(model_name: str) -> None:
        raise Forbidden(f"the model repository API is disabled: model {model_name!r} cannot be loaded or "
                        "unloaded at run time; roll out a new revision to change the model")

    repository.load = refuse
    repository.unload = refuse


def _close_when_stopped(server: Any, close: Closer) -> None:
    """Await `close` on the serving loop after the last accepted request is answered.

    On SIGTERM uvicorn stops accepting, lets the HTTP requests under way finish (KServe's grace
    period), and re-raises the signal to KServe, which starts stopping the gRPC server (its grace
    period again) and calls each model's synchronous `stop()`. `asyncio.run` then cancels every task
    still pending. The one point where both servers have drained and the loop still runs is the end
    of `ModelServer._serve`, the coroutine `start` hands to `asyncio.run`: there, pools close cleanly.
    """
    serve_until_stopped = server._serve

    async def serve_then_close() -> None:
        try:
            await serve_until_stopped()
        finally:
            await close()

    server._serve = serve_then_close


def _quiet_request_logs(log_requests: bool) -> None:
    """Per-request access and timing lines cost more than a cache hit; the mesh logs requests anyway."""
    if not log_requests:
        for name in ("uvicorn.access", "kserve.trace"):
            logging.getLogger(name).setLevel(logging.WARNING)


def _use_uvloop() -> None:
    """KServe serves from asyncio.run(), which creates its loop from the policy: make that uvloop.

    KServe also asks for the current loop first (to configure it), so give the thread one.
    """
    uvloop.install()
    asyncio.set_event_loop(asyncio.new_event_loop())


class BodyLimit:
    """ASGI wrapper answering 413 to HTTP requests whose body exceeds `max_bytes`.

    A declared Content-Length over the limit is refused before anything is read; a chunked body
    is counted as it streams. Attribute access falls through to the wrapped app, so KServe can
    still configure it after wrapping.
    """

    def __init__(self, app: Any, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await send_error(send, TooLarge(f"request body is {int(value)} bytes; the limit is {self.max_bytes}"))
                return
        seen = 0

        async def counted_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise TooLarge(f"request body exceeds the limit of {self.max_bytes} bytes")
            return message

        await self.app(scope, counted_receive, send)


async def send_error(send, error: ServiceError) -> None:
    """Answer an ASGI HTTP request with `error`."""
    status, body, headers = rest_response(error)
    await send_json(send, status, body, headers)


async def send_json(send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] = ()) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})
