"""The services' error family and its one HTTP <-> gRPC table.

Every client-visible failure is a `ServiceError`. Each class carries its HTTP status and gRPC
code; `PEER_ERRORS` is the two-way table used both to answer clients (REST bodies, gRPC status)
and to rebuild the error a peer (the predictor) reported, over either transport, so a
predictor 413 is a 413 whichever way the transformer called it.
"""

from __future__ import annotations

from typing import Any

import orjson
from grpc import StatusCode
from grpc_interceptor.exceptions import GrpcException

DEFAULT_RETRY_AFTER_S = 1


class ServiceError(GrpcException):
    """Base of all errors the services report to clients.

    KServe's gRPC interceptor passes `GrpcException`s through with their own `status_code`
    and `details`, so the gRPC side needs no handler of ours.
    """

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

    def body(self) -> dict[str, Any]:
        """The JSON body of this error."""
        return {"error": self.message}


class BadInput(ServiceError):
    """The request is malformed or has the wrong types/shapes (KServe routes)."""

    http_status = 400
    status_code = StatusCode.INVALID_ARGUMENT


class Forbidden(ServiceError):
    """The operation exists in the protocol but this server does not allow it."""

    http_status = 403
    status_code = StatusCode.PERMISSION_DENIED


class NotFound(ServiceError):
    """No such model or route."""

    http_status = 404
    status_code = StatusCode.NOT_FOUND


class MethodNotAllowed(ServiceError):
    """The route exists but takes another method."""

    http_status = 405
    status_code = StatusCode.UNIMPLEMENTED


class TooLarge(ServiceError):
    """The request exceeds a configured size limit (texts, characters, tokens, bytes)."""

    http_status = 413
    # Not INVALID_ARGUMENT: that code comes back as 400, and a limit is worth telling apart.
    status_code = StatusCode.OUT_OF_RANGE


class SchemaViolation(ServiceError):
    """The body does not match the documented schema of the original app's routes (FastAPI's 422).

    `detail` holds FastAPI-style entries (loc, msg, type) without the offending input, so clients
    of the original app that read `detail` keep working and no text is ever echoed.
    """

    http_status = 422
    status_code = StatusCode.INVALID_ARGUMENT

    def __init__(self, message: str, detail: list[dict[str, Any]]):
        super().__init__(message)
        self.detail = detail

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "detail": self.detail}

    @classmethod
    def from_errors(cls, errors: list[dict]) -> SchemaViolation:
        """From pydantic/FastAPI error entries, without their `input` values."""
        detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "invalid"), "type": e.get("type", "")}
                  for e in errors[:10]]
        problems = "; ".join(f"{'.'.join(str(p) for p in d['loc'])}: {d['msg']}" for d in detail[:5])
        return cls(f"request does not match the schema: {problems}", detail)


class Overloaded(ServiceError):
    """A queue is full; the client should retry later."""

    http_status = 429
    status_code = StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, retry_after_s: int | str = DEFAULT_RETRY_AFTER_S):
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class InternalError(ServiceError):
    """A fault of this server (a bug); the message never carries internals."""

    http_status = 500
    status_code = StatusCode.INTERNAL


class UpstreamFailed(ServiceError):
    """The predictor answered with a server error or a malformed answer."""

    http_status = 502
    status_code = StatusCode.UNKNOWN


class Unavailable(ServiceError):
    """Not ready yet, or the predictor could not be reached before the deadline."""

    http_status = 503
    status_code = StatusCode.UNAVAILABLE


PEER_ERRORS: tuple[type[ServiceError], ...] = (BadInput, Forbidden, NotFound, TooLarge, Overloaded, UpstreamFailed,
                                               Unavailable)
"""The errors a peer's status maps back to, one per HTTP status and one per gRPC code."""



def _family(cls: type[ServiceError]) -> list[type[ServiceError]]:
    return [cls, *(member for sub in cls.__subclasses__() for member in _family(sub))]


HTTP_STATUSES: tuple[int, ...] = tuple(sorted({cls.http_status for cls in _family(ServiceError)}))
"""Every HTTP status an error of this family answers, for series that must exist before the first error."""

_BY_HTTP = {cls.http_status: cls for cls in PEER_ERRORS}
_BY_GRPC = {cls.status_code: cls for cls in PEER_ERRORS}
assert len(_BY_HTTP) == len(_BY_GRPC) == len(PEER_ERRORS), "the peer error table must be two-way"


def from_peer_http(status: int, message: str, retry_after: str | None = None) -> ServiceError:
    """The error a peer reported with HTTP `status`: the same class; another 4xx is BadInput, and
    the peer's own faults (500, ...) are UpstreamFailed."""
    cls = _BY_HTTP.get(status) or (BadInput if 400 <= status < 500 else UpstreamFailed)
    return _build(cls, message, retry_after)


def from_peer_grpc(code: StatusCode, message: str, retry_after: str | None = None) -> ServiceError:
    """The error a peer reported with gRPC `code`; its server faults (INTERNAL, ...) are UpstreamFailed."""
    return _build(_BY_GRPC.get(code, UpstreamFailed), message, retry_after)


def _build(cls: type[ServiceError], message: str, retry_after: str | None) -> ServiceError:
    if cls is Overloaded:
        return Overloaded(message, retry_after or DEFAULT_RETRY_AFTER_S)
    return cls(message)


def rest_response(error: ServiceError) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """Status, JSON body and headers (lower-case, bytes) of `error` for an ASGI response."""
    headers = [(name.lower().encode(), value.encode()) for name, value in error.headers.items()]
    return error.http_status, orjson.dumps(error.body()), headers
