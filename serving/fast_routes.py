"""Pure-ASGI handling of a service's hot JSON routes, in front of KServe's FastAPI app.

A cache hit (transformer) or a one-text prediction (predictor) costs less than FastAPI's routing,
parameter handling, middleware stack and response encoding, so the routes of a table are answered
here. Every other request (metadata, health, docs, metrics, any request `passthrough(scope)` picks,
and any whose handler raises `PassThrough` after reading its body) goes to KServe's app untouched.
Each answered request is reported to `observe(route, status, seconds)`; errors are rendered by
`serving.errors.rest_response`, as on every other route. Size limits are enforced in front of this
(`serving.startup.BodyLimit`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from .errors import BadInput, InternalError, MethodNotAllowed, ServiceError, rest_response
from .startup import send_json

log = logging.getLogger(__name__)

Handler = Callable[[bytes], Awaitable[Any]]
"""Body in, a value orjson can encode (numpy arrays included) out; a ServiceError for a 4xx/5xx."""
Observer = Callable[[str, int, float], None]
Picker = Callable[[dict], bool]


class PassThrough(Exception):
    """Raised by a handler that leaves this request (its body replayed) to the wrapped app."""


class FastJsonRoutes:
    """Wraps an ASGI app; attribute access falls through to it, so KServe can still configure it."""

    def __init__(self, app: Any, routes: dict[str, Handler], observe: Observer | None = None,
                 passthrough: Picker | None = None):
        self.app = app
        self.routes = routes
        self.observe = observe
        self.passthrough = passthrough

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "")
        handler = self.routes.get(path) if scope["type"] == "http" else None
        if handler is not None and self.passthrough is not None and self.passthrough(scope):
            handler = None
        if handler is None:
            await self.app(scope, receive, send)
            return
        if scope["method"] != "POST":
            status, content, headers = rest_response(MethodNotAllowed(f"{path} takes POST, not {scope['method']}"))
            await send_json(send, status, content, [*headers, (b"allow", b"POST")])
            return
        start = time.perf_counter()
        headers: list[tuple[bytes, bytes]] = []
        body = b""
        try:
            body = await read_body(receive)
            status, content = 200, orjson.dumps(await handler(body), option=orjson.OPT_SERIALIZE_NUMPY)
        except PassThrough:
            await self.app(scope, _replay(body, receive), send)
            return
        except ServiceError as exc:
            status, content, headers = rest_response(exc)
        except Exception:
            log.exception("unexpected error on %s", path)
            status, content, headers = rest_response(InternalError("internal error; see the server log"))
        await send_json(send, status, content, headers)
        if self.observe is not None:
            self.observe(path, status, time.perf_counter() - start)


def _replay(body: bytes, receive):
    """An ASGI receive that hands over the body already read, then the client's own messages."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed():
        return pending.pop() if pending else await receive()

    return replayed


async def read_body(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadInput("client disconnected before sending the whole body")
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
