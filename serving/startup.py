"""Process start-up shared by both services: where KServe internals are patched, and checked.

The patches live here; the internals the request paths call live in `serving.kserve_seam`. `serve`
checks every one before serving (`check_kserve`): it sends an in-process request through each
patched or called path and checks the answer, so a KServe upgrade that changes one fails at start
with its name instead of silently serving without the fix. KServe is imported here lazily:
settings and tests never need it.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import logging.handlers
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
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
    """Raise KServeChanged naming every internal that moved or behaves differently.

    A few are names (where uvicorn imports the app from, the coroutine `start` runs); the rest are
    behaviour: `_self_test` sends one in-process request through each path this service patches or
    calls (KServe's REST routes with our error handlers, the refused model repository, the gRPC
    interceptor, `serving.kserve_seam`) and checks the answer's shape.
    """
    from kserve import model_server

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
    if not problems:
        problems = asyncio.run(_self_test())
    if problems:
        raise KServeChanged("this KServe version differs from the one this service was built for (see "
                            "constraints.txt): " + "; ".join(problems))


SELF_TEST_MODEL = "kserve-self-test"
"""The probe model's name; KServe's request_*_seconds histograms carry one series of it, never observed again."""


async def _self_test() -> list[str]:
    """What differs from the KServe this was built for, found by using it: one problem per path."""
    import httpx
    from fastapi import FastAPI
    from kserve import Model, model_server
    from kserve.model_repository import ModelRepository
    from kserve.protocol.dataplane import DataPlane
    from kserve.protocol.infer_type import InferOutput, InferResponse
    from kserve.protocol.model_repository_extension import ModelRepositoryExtension
    from kserve.protocol.rest.server import RESTServer

    try:
        from . import kserve_seam
    except ImportError as exc:
        return [f"serving.kserve_seam cannot import what it uses: {exc}"]

    class Probe(Model):
        def __init__(self):
            super().__init__(SELF_TEST_MODEL, return_response_headers=True)
            self.ready = True
            self.fault: Exception | None = None
            self.headers: dict | None = None

        async def predict(self, payload, headers=None, response_headers=None):
            self.headers = headers
            if response_headers is not None:
                response_headers["x-self-test"] = "1"
            if self.fault is not None:
                raise self.fault
            return InferResponse(response_id="self-test", model_name=self.name,
                                 infer_outputs=[InferOutput("out", [1], "FP32", [0.5])])

    probe = Probe()
    repository = ModelRepository()
    repository.update(probe)
    extension = ModelRepositoryExtension(repository)
    _refuse_model_repository_changes(extension)
    app = FastAPI()
    _install_error_handlers(app)
    served, model_server.app = model_server.app, app  # KServe builds its routes on whatever app that names
    try:
        with _quiet(logging.getLogger("kserve")):  # its start-up lines, said again when it really starts
            RESTServer(KSERVE_APP, DataPlane(repository), extension, 0).create_application()
    finally:
        model_server.app = served
    problems: list[str] = []
    v2 = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["self-test"]}]}
    transport = httpx.ASGITransport(app, raise_app_exceptions=False)  # Starlette re-raises after a 500 handler
    async with httpx.AsyncClient(transport=transport, base_url="http://self-test") as client:
        async def expect(what: str, path: str, status: int, error: str | None, body: Any = v2,
                         fault: Exception | None = None) -> None:
            probe.fault = fault
            r = await client.post(path, json=body)
            try:
                answer = r.json()
            except ValueError:
                answer = None
            if error is None:
                ok = r.status_code == status and _v2_data(answer) == [0.5]
            else:
                ok = r.status_code == status and isinstance(answer, dict) and str(answer.get("error")).startswith(error)
            if not ok:
                problems.append(f"{what}: POST {path} answered {r.status_code} {r.text[:160]!r}, not {status}"
                                + (f" {{'error': {error!r}...}}" if error else " with the model's output"))

        infer = f"/v2/models/{SELF_TEST_MODEL}/infer"
        with _quiet(log):  # the unexpected-error handler logs the probe's fault otherwise
            await expect("KServe's v2 REST infer route", infer, 200, None)
            await expect("the ServiceError handler on KServe's routes", infer, 413, "self-test",
                         fault=TooLarge("self-test"))
            await expect("kserve.protocol.rest.server.generic_exception_handler (replaced by ours)", infer, 500,
                         "internal error; see the server log", fault=RuntimeError("self-test"))
            await expect("kserve.protocol.rest.server.not_implemented_error_handler (replaced by ours)",
                         f"/v2/models/{SELF_TEST_MODEL}/versions/1/infer", 400, "not supported by this server")
            await expect("the request-validation handler on KServe's routes", infer, 422,
                         "request does not match the schema", body={"inputs": 5})
            await expect("ModelRepositoryExtension.unload (refused)", f"/v2/repository/models/{SELF_TEST_MODEL}/unload",
                         403, "the model repository API is disabled", body=None)
        kserve_seam.extend_openapi(app, lambda schema: {**schema, "paths": {**schema.get("paths", {}),
                                                                           "/self-test": {}}})
        r = await client.get("/openapi.json")
        paths = r.json().get("paths", {}) if r.status_code == 200 else {}
        if "/self-test" not in paths or not any(path.startswith("/v2/models/") for path in paths):
            problems.append(f"kserve_seam.extend_openapi: KServe's app answers /openapi.json with {r.status_code} "
                            f"and paths {sorted(paths)[:5]}, not its own routes and ours")
    problems += await _grpc_problems()
    problems += await _seam_problems(kserve_seam, probe, v2)
    return problems


def _v2_data(answer: Any) -> Any:
    try:
        return answer["outputs"][0]["data"]
    except (KeyError, IndexError, TypeError):
        return None


async def _grpc_problems() -> list[str]:
    """KServe's gRPC interceptor must answer our errors with their own code and message."""
    from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor

    class Aborted(Exception):
        pass

    class Context:  # the one ServicerContext call an interceptor makes for an error
        aborted: tuple | None = None

        async def abort(self, code, details):
            self.aborted = (code, details)
            raise Aborted

    context = Context()
    error = TooLarge("self-test")
    try:
        await ExceptionToStatusInterceptor().handle_exception(error, None, context, "/inference.GRPCInferenceService/"
                                                              "ModelInfer")
    except Aborted:
        pass
    except Exception as exc:  # whatever it raised, it is not the abort we rely on
        return [f"KServe's gRPC interceptor raised {type(exc).__name__} for a GrpcException instead of aborting"]
    if context.aborted != (error.status_code, error.message):
        return [f"KServe's gRPC interceptor answers a GrpcException with {context.aborted}, not its own code and "
                "details"]
    return []


async def _seam_problems(seam: Any, probe: Any, v2: dict) -> list[str]:
    """Each KServe internal `serving.kserve_seam` uses, used once."""
    problems = []
    try:
        request = seam.v2_request(orjson.dumps(v2), SELF_TEST_MODEL)
        [tensor] = request.inputs
        if (tensor.name, tensor.datatype, list(tensor.shape)) != ("text", "BYTES", [1]):
            problems.append(f"KServe's v2 request schema reads a BYTES input as {tensor.name, tensor.datatype}")
        if [x.decode() if isinstance(x, bytes) else x for x in tensor.as_numpy().tolist()] != ["self-test"]:
            problems.append("KServe's InferRequest no longer decodes a BYTES input's data")
    except Exception as exc:  # any failure names the internal
        problems.append(f"kserve_seam.v2_request (InferenceRequest, InferRequest.from_inference_request): {exc!r}")
        request = None
    try:
        seam.v2_request(b'{"inputs": 5}', SELF_TEST_MODEL)
        problems.append("KServe's v2 request schema accepts inputs that are not a list")
    except SchemaViolation:
        pass
    except Exception as exc:
        problems.append(f"kserve_seam.v2_request refuses a malformed body with {exc!r}, not a 422")
    event = {"specversion": "1.0", "id": "1", "source": "self-test", "type": "t", "time": "2024-01-01T00:00:00Z",
             "data": {"instances": ["x"]}}
    if not seam.is_structured_cloudevent(event) or seam.is_structured_cloudevent({"instances": ["x"]}):
        problems.append("kserve.utils.utils.is_structured_cloudevent tells events from bodies differently")
    if request is not None:
        probe.fault = None
        try:
            response, headers = await seam.call_model(probe, request, {"x-request-id": "self-test"})
            if (probe.headers or {}).get("x-request-id") != "self-test":
                problems.append("Model.__call__ no longer passes the request headers to predict")
            elif headers != {"x-self-test": "1"}:
                problems.append(f"Model.__call__ answers {headers!r}, not the response headers the model set")
            elif _v2_data(seam.v2_json(response)) != [0.5]:
                problems.append("InferResponse.to_rest no longer answers the model's output")
        except Exception as exc:
            problems.append(f"Model.__call__ no longer answers (response, response headers): {exc!r}")
    return problems


class _quiet:
    """Silence a logger for a block (the self-test's deliberate faults)."""

    def __init__(self, logger: logging.Logger):
        self.logger = logger

    def __enter__(self) -> None:
        self.disabled, self.logger.disabled = self.logger.disabled, True

    def __exit__(self, *exc) -> None:
        self.logger.disabled = self.disabled


def check_workers(workers: int) -> None:
    """One process per pod: the wrappers below live in this process, and KServe's multi-process
    server would re-import a bare app without them (and load one model copy per worker)."""
    if workers != 1:
        raise SystemExit(f"--workers={workers} is not supported: run one worker per pod and scale pods "
                         "(KServe injects --workers from containerConcurrency; pin --workers=1)")


SERVICE_LOGGERS = ("predictor", "transformer", "serving")


def hold_service_logs() -> None:
    """Keep our loggers' records (with their times) until `show_service_logs` can format them as KServe
    does: work that starts before KServe is imported (the predictor's model load) logs too."""
    for name in SERVICE_LOGGERS:
        logger = logging.getLogger(name)
        if not logger.handlers:
            logger.addHandler(logging.handlers.MemoryHandler(10_000, flushLevel=logging.CRITICAL + 1))
            logger.setLevel(logging.INFO)
            logger.propagate = False


def show_service_logs() -> None:
    """Our own start-up and fault lines (model loaded, threads, Redis unreachable) in KServe's log format.

    KServe configures only its own and uvicorn's loggers; without this, INFO lines from `predictor.*`,
    `transformer.*` and `serving.*` are dropped. Other libraries stay quiet (httpx logs every request).
    Records held by `hold_service_logs` are written first.
    """
    from kserve.logging import KSERVE_LOGGER_DATE_FORMAT, KSERVE_LOGGER_FORMAT

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(KSERVE_LOGGER_FORMAT, KSERVE_LOGGER_DATE_FORMAT))
    for name in SERVICE_LOGGERS:
        logger = logging.getLogger(name)
        held = [h for h in logger.handlers if isinstance(h, logging.handlers.MemoryHandler)]
        for memory in held:
            memory.setTarget(handler)
            memory.flush()
            logger.removeHandler(memory)
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
    _refuse_model_repository_changes(server.model_repository_extension)
    _describe_model_in_metadata(server.dataplane, model)
    if close is not None:
        _close_when_stopped(server, close)
    _quiet_request_logs(settings.log_requests)
    served = wrap_app(app) if wrap_app else app
    model_server.app = BodyLimit(served, settings.max_body_bytes)
    _use_uvloop()
    server.start([model])


def _describe_model_in_metadata(dataplane: Any, model: Any) -> None:
    """Fill the v2 model metadata's `platform` and `versions` (KServe answers "" and none) from the model's
    `platform` and `version` attributes, where it has them: REST and gRPC both ask the data plane."""
    metadata = dataplane.model_metadata

    async def model_metadata(model_name: str) -> dict:
        answer = await metadata(model_name)
        if model_name == model.name:
            platform, version = getattr(model, "platform", None), getattr(model, "version", None)
            answer = {**answer, **({"platform": platform} if platform else {}),
                      **({"versions": [version]} if version else {})}
        return answer

    dataplane.model_metadata = model_metadata


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


def _refuse_model_repository_changes(repository: Any) -> None:
    """Refuse the Open Inference Protocol's model repository load/unload, over REST and gRPC.

    KServe answers them for anyone who can reach the server, so one unauthenticated
    `POST /v2/repository/models/<name>/unload` would take the model offline until the pod
    restarts. A serving pod here holds one fixed model; changing it is a rollout.
    """
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
