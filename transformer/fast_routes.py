"""Pure-ASGI handling of the JSON prediction routes, in front of KServe's FastAPI app.

A cache hit costs less than FastAPI's routing, parameter handling and middleware stack, so the
hot routes (`POST /v1/models/<name>:predict` and `POST /bulk-predict`) are answered here, with
the same validation and the same error bodies; every other request (v2, metadata, health,
metrics) goes to KServe's app untouched. Size limits are enforced in front of this
(`predictor.serving.BodyLimit`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from predictor.errors import BadInput, ServiceError

log = logging.getLogger(__name__)

Handler = Callable[[bytes], Awaitable[Any]]
JSON = [(b"content-type", b"application/json")]


class FastJsonRoutes:
    """Wraps an ASGI app; attribute access falls through to it, so KServe can still configure it."""

    def __init__(self, app: Any, routes: dict[str, Handler]):
        self.app = app
        self.routes = routes

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)

    async def __call__(self, scope, receive, send) -> None:
        handler = self.routes.get(scope.get("path", "")) if scope["type"] == "http" else None
        if handler is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = []
        try:
            body = await read_body(receive)
            status, content = 200, orjson.dumps(await handler(body), option=orjson.OPT_SERIALIZE_NUMPY)
        except ServiceError as exc:
            status, content = exc.http_status, orjson.dumps({"error": exc.message})
            headers = [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
        except Exception:
            log.exception("unexpected error on %s", scope["path"])
            status, content = 500, orjson.dumps({"error": "internal error"})
        await send({"type": "http.response.start", "status": status,
                    "headers": [*JSON, (b"content-length", str(len(content)).encode()), *headers]})
        await send({"type": "http.response.body", "body": content})


async def read_body(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadInput("client disconnected before sending the whole body")
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
