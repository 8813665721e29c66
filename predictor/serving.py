"""Process-level serving setup shared by the predictor and the transformer."""

from __future__ import annotations

import asyncio
import logging

import orjson
import uvloop

from .errors import Forbidden, TooLarge


def use_uvloop() -> None:
    """KServe serves from asyncio.run(), which creates its loop from the policy: make that uvloop.

    KServe also asks for the current loop first (to configure it), so give the thread one.
    """
    uvloop.install()
    asyncio.set_event_loop(asyncio.new_event_loop())


def fixed_model_repository(server) -> None:
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


def quiet_request_logs(log_requests: bool) -> None:
    """Per-request access and timing lines cost more than a cache hit; the mesh logs requests anyway."""
    if not log_requests:
        for name in ("uvicorn.access", "kserve.trace"):
            logging.getLogger(name).setLevel(logging.WARNING)


class BodyLimit:
    """ASGI wrapper answering 413 to HTTP requests whose body exceeds `max_bytes`.

    A declared Content-Length over the limit is refused before anything is read; a chunked body
    is counted as it streams. Attribute access falls through to the wrapped app, so KServe can
    still configure it after wrapping.
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def __getattr__(self, name: str):
        return getattr(self.app, name)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await _send_error(send, TooLarge(f"request body is {int(value)} bytes; the limit is {self.max_bytes}"))
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


async def _send_error(send, error: TooLarge) -> None:
    body = orjson.dumps({"error": error.message})
    await send({"type": "http.response.start", "status": error.http_status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
