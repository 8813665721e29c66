"""Pure-ASGI handling of a service's hot JSON routes, in front of KServe's FastAPI app.

A cache hit (transformer) or a one-text prediction (predictor) costs less than FastAPI's routing,
parameter handling, middleware stack and response encoding, so the routes of a table are answered
here. Every other request (metadata, health, docs, metrics, any request `passthrough(scope)` picks,
and any whose handler raises `PassThrough` after reading its body) goes to KServe's app untouched.
Each answered request is reported to `observe(route, status, seconds)`; errors are rendered by
`serving.errors.rest_response`, as on every other route. Size limits are enforced in front of this
(`serving.startup.BodyLimit`).

A client that disconnects while its request is being answered cancels the handler: uvicorn does not
cancel the app itself, and a transformer that gave up on a predictor call (its deadline, or its own
client gone) would otherwise leave the predictor computing up to `max_request_tokens` for nobody.
Cancelling the handler cancels its batcher future, which drops the texts not yet computed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from .errors import BadInput, InternalError, MethodNotAllowed, ServiceError, rest_response
from .startup import send_json

log = logging.getLogger(__name__)

CLIENT_CLOSED_REQUEST = 499
"""The status an abandoned request is counted under (nginx's; no response is sent)."""

Headers = dict[str, str]
"""A request's headers as KServe's routes hand them to a model: `dict(request.headers)`, lower-case names."""
Handler = Callable[[bytes, Headers], Awaitable[Any]]
"""Body and headers in, a value orjson can encode (numpy arrays included) or a `Reply` out; a ServiceError
for a 4xx/5xx."""
Observer = Callable[[str, int, float], None]
Picker = Callable[[dict], bool]


@dataclass(frozen=True)
class Reply:
    """An answer with response headers (those a model sets, which KServe's routes send too)."""

    value: Any
    headers: Headers


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
            async with _CancelledOnDisconnect(receive) as watch:
                answer = await handler(body, request_headers(scope))
            if watch.disconnected:  # nobody to answer
                if self.observe is not None:
                    self.observe(path, CLIENT_CLOSED_REQUEST, time.perf_counter() - start)
                return
            if isinstance(answer, Reply):
                headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value
                           in answer.headers.items() if name.lower() not in _OWN_HEADERS]
                answer = answer.value
            status, content = 200, orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)
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


class _CancelledOnDisconnect:
    """Cancels the task that entered it when the client disconnects before it leaves.

    The handler runs in the request's own task (no second task per request on the hot path); one
    small task waits on `receive()`, which after the body answers nothing but `http.disconnect`.
    Leaving the block after a disconnect swallows that cancellation only; any other (uvicorn
    cancelling at the end of a shutdown's grace period) propagates.
    """

    def __init__(self, receive):
        self.receive = receive
        self.disconnected = False
        self._task: asyncio.Task | None = None
        self._watcher: asyncio.Task | None = None

    async def __aenter__(self) -> _CancelledOnDisconnect:
        self._task = asyncio.current_task()
        self._watcher = asyncio.get_running_loop().create_task(self._watch())
        return self

    async def _watch(self) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            pass  # a body part after the last one: not for this request
        self.disconnected = True
        self._task.cancel()

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        if not self._watcher.done():
            self._watcher.cancel()
        if self.disconnected and self._task.uncancel() == 0:
            return exc_type is None or issubclass(exc_type, asyncio.CancelledError)
        return False


_OWN_HEADERS = frozenset({"content-length", "content-type"})
"""Response headers this module writes itself (KServe's routes drop a model's too)."""


def request_headers(scope: dict) -> Headers:
    """As Starlette's `dict(request.headers)`: latin-1, lower-case names (ASGI's), the last of repeated ones."""
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}


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
