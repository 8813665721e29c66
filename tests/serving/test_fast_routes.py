"""The pure-ASGI route table on its own: headers both ways, and a disconnect that cancels the handler.

Driven through the ASGI interface itself (a receive that hands over the body, then waits for the
client to go, and a send that records), as uvicorn drives it.
"""

from __future__ import annotations

import asyncio

import orjson

from serving.fast_routes import CLIENT_CLOSED_REQUEST, FastJsonRoutes, Reply


class Client:
    """One HTTP request as uvicorn presents it: the body, then `http.disconnect` once `leave()` is called."""

    def __init__(self, body: bytes, headers: list[tuple[bytes, bytes]] = ()):
        self.scope = {"type": "http", "method": "POST", "path": "/infer", "headers": list(headers)}
        self.body = body
        self.gone = asyncio.Event()
        self.sent: list[dict] = []

    async def receive(self) -> dict:
        if self.body is not None:
            body, self.body = self.body, None
            return {"type": "http.request", "body": body, "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        self.sent.append(message)

    def leave(self) -> None:
        self.gone.set()


def serve(routes: dict, client: Client, observed: list) -> asyncio.Task:
    app = FastJsonRoutes(None, routes, lambda route, status, s: observed.append((route, status)))
    return asyncio.get_running_loop().create_task(app(client.scope, client.receive, client.send))


def test_handlers_get_the_request_headers_and_answer_response_headers():
    seen = {}

    async def handler(body: bytes, headers: dict[str, str]):
        seen.update(headers)
        return Reply({"echo": orjson.loads(body)}, {"X-Model": "m1", "content-length": "999"})

    async def run():
        client, observed = Client(b'{"a": 1}', [(b"x-request-id", b"r-1"), (b"content-type", b"application/json")]), []
        await serve({"/infer": handler}, client, observed)
        return client, observed

    client, observed = asyncio.run(run())
    assert seen == {"x-request-id": "r-1", "content-type": "application/json"}
    start, body = client.sent
    assert start["status"] == 200
    assert (b"x-model", b"m1") in start["headers"]
    assert dict(start["headers"])[b"content-length"] == str(len(b'{"echo":{"a":1}}')).encode()  # ours, not the model's
    assert orjson.loads(body["body"]) == {"echo": {"a": 1}}
    assert observed == [("/infer", 200)]


def test_a_client_that_leaves_cancels_its_handler_and_gets_nothing():
    state = {}

    async def handler(body: bytes, headers: dict[str, str]):
        state["started"] = True
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            state["cancelled"] = True
            raise
        return {"never": True}

    async def run():
        client, observed = Client(b"{}"), []
        task = serve({"/infer": handler}, client, observed)
        while "started" not in state:
            await asyncio.sleep(0)
        client.leave()
        await asyncio.wait_for(task, 5)
        return client, observed, task

    client, observed, task = asyncio.run(run())
    assert state == {"started": True, "cancelled": True}
    assert not task.cancelled() and task.exception() is None  # the request's own task ends normally
    assert client.sent == []
    assert observed == [("/infer", CLIENT_CLOSED_REQUEST)]


def test_a_cancellation_from_elsewhere_still_propagates():
    """uvicorn cancels the requests still running when a shutdown's grace period ends."""

    async def handler(body: bytes, headers: dict[str, str]):
        await asyncio.sleep(60)

    async def run():
        client, observed = Client(b"{}"), []
        task = serve({"/infer": handler}, client, observed)
        await asyncio.sleep(0.01)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return client, observed, True
        return client, observed, False

    client, observed, cancelled = asyncio.run(run())
    assert cancelled and client.sent == [] and observed == []


def test_a_handler_that_finishes_first_is_answered():
    async def handler(body: bytes, headers: dict[str, str]):
        return [1, 2]

    async def run():
        client, observed = Client(b"{}"), []
        await serve({"/infer": handler}, client, observed)
        client.leave()  # the client goes only after its answer
        return client, observed

    client, observed = asyncio.run(run())
    assert orjson.loads(client.sent[1]["body"]) == [1, 2]
    assert observed == [("/infer", 200)]
