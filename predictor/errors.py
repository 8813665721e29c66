"""The service's error family, shared by the predictor and the transformer.

Every client-visible failure is one of these types. Each carries its HTTP status and
its gRPC code, so the mapping lives here and nowhere else: the REST handler reads
``http_status`` and KServe's gRPC interceptor reads ``status_code`` (these classes are
``grpc_interceptor`` exceptions, which the interceptor passes through unchanged).
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from grpc import StatusCode
from grpc_interceptor.exceptions import GrpcException


class ServiceError(GrpcException):
    """Base of all errors the services report to clients."""

    http_status = 500
    status_code = StatusCode.INTERNAL

    def __init__(self, message: str, headers: dict[str, str] | None = None):
        super().__init__(details=message)
        self.message = message
        self.headers = headers or {}

    # KServe's REST handlers and logs read `.reason`; keep both spellings truthful.
    @property
    def reason(self) -> str:
        return self.message

    def __str__(self) -> str:
        return self.message


class BadInput(ServiceError):
    """The request is malformed or has the wrong types/shapes."""

    http_status = 400
    status_code = StatusCode.INVALID_ARGUMENT


class Forbidden(ServiceError):
    """The operation exists in the protocol but this server does not allow it."""

    http_status = 403
    status_code = StatusCode.PERMISSION_DENIED


class TooLarge(ServiceError):
    """The request exceeds a configured size limit."""

    http_status = 413
    status_code = StatusCode.INVALID_ARGUMENT


class Overloaded(ServiceError):
    """The server's queue is full; the client should retry later."""

    http_status = 429
    status_code = StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, retry_after_s: int = 1):
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class Unavailable(ServiceError):
    """Not ready yet, or the predictor could not be reached before the deadline."""

    http_status = 503
    status_code = StatusCode.UNAVAILABLE


class UpstreamFailed(ServiceError):
    """The predictor answered with a server error."""

    http_status = 502
    status_code = StatusCode.UNAVAILABLE


def error_for_status(status: int, message: str) -> ServiceError:
    """Rebuild the error a peer reported with `status`, so it passes through unchanged."""
    for cls in (BadInput, TooLarge, Overloaded, Unavailable):
        if cls.http_status == status:
            return cls(message)
    if 400 <= status < 500:
        error = BadInput(message)
        error.http_status = status
        return error
    return UpstreamFailed(message)


async def service_error_handler(_: Request, exc: Any) -> JSONResponse:
    """FastAPI handler: the error's own status, its message under "error"."""
    return JSONResponse(status_code=exc.http_status, content={"error": exc.message}, headers=exc.headers)


async def request_validation_handler(_: Request, exc: Any) -> JSONResponse:
    """A body that does not fit the v2 schema: 422 naming the fields, never echoing their values.

    (FastAPI's own handler echoes the input and fails on values JSON cannot encode, such as Infinity.)
    """
    problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
                         for e in exc.errors()[:5])
    return JSONResponse(status_code=422, content={"error": f"request does not match the schema: {problems}"})


async def not_supported_handler(_: Request, exc: Any) -> JSONResponse:
    """KServe routes for features this service does not offer (an explainer, model versions).

    KServe answers them 501, which dashboards and SLOs count as a server fault; the request
    simply cannot be served here, so it is a 400 that says what is not supported.
    """
    return JSONResponse(status_code=400, content={"error": f"not supported by this server: {exc}"})


def install_error_handlers(app: Any) -> None:
    """Map the error family and schema errors to JSON bodies on a FastAPI app (REST side)."""
    from fastapi.exceptions import RequestValidationError
    from kserve.protocol.rest import server as kserve_rest

    app.add_exception_handler(ServiceError, service_error_handler)
    app.add_exception_handler(RequestValidationError, request_validation_handler)
    # KServe registers its own NotImplementedError handler when the server starts; give it ours.
    kserve_rest.not_implemented_error_handler = not_supported_handler
