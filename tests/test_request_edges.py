"""The edges of a request's life, on real processes: abandoned, waiting on a frozen predictor, answered
with nonsense, or in flight when the transformer is told to stop.

The predictor here runs the shared MiniLM, whose passes over 512-token texts are slow enough to
watch one request's passes go by on its /metrics.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
import uuid

import httpx
import numpy as np
import orjson
import pytest
import tritonclient.grpc as grpcclient
from aiohttp import web

from harness.clients import metric, predictor_probs, rows_to_probs
from harness.processes import PredictorProcess, RedisServer, TransformerProcess, free_port, wait_until

PASSES = "sentiment_predictor_batch_texts_count"
"""Forward passes computed so far (one observation per pass)."""
COMPUTED = "sentiment_predictor_batch_texts_sum"
"""Texts computed so far."""


def long_texts(n: int) -> list[str]:
    """`n` distinct texts, each past MiniLM's 512 tokens (truncated to 512): one per pass of 512 tokens."""
    tag = uuid.uuid4().hex[:8]
    return [f"{tag} review {i}: " + "the film was slow but the acting was good and " * 60 for i in range(n)]


MAX_SIZE = 32
"""32 texts of 512 tokens: the predictor's default max_request_tokens, 16,384."""


@pytest.fixture(scope="module")
def minilm(model_dir):
    proc = PredictorProcess(model_dir).start()
    yield proc
    proc.stop()


def v1(server) -> str:
    return f"{server.url}/v1/models/sentiment:predict"


def one_pass_s(predictor) -> float:
    """The time of one request of one 512-token text (one full pass), the best of three."""
    times = []
    for text in long_texts(3):
        start = time.monotonic()
        assert httpx.post(v1(predictor), json={"instances": [text]}, timeout=60).status_code == 200
        times.append(time.monotonic() - start)
    return min(times)


def http_request(url: str, body: bytes) -> bytes:
    host_port, path = url.removeprefix("http://").split("/", 1)
    return (f"POST /{path} HTTP/1.1\r\nhost: {host_port}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode() + body


def test_an_abandoned_request_stops_computing(minilm):
    pass_s = one_pass_s(minilm)
    passes, computed = metric(minilm, PASSES), metric(minilm, COMPUTED)
    body = orjson.dumps({"instances": long_texts(MAX_SIZE)})
    client = socket.create_connection(("127.0.0.1", minilm.http_port))
    try:
        client.sendall(http_request(v1(minilm), body))
        wait_until(lambda: metric(minilm, PASSES) > passes, 60, "the request's first pass")
    finally:
        client.close()  # the client gives up, as a transformer past its deadline does
    start = time.monotonic()
    r = httpx.post(v1(minilm), json={"instances": ["great"]}, timeout=60)
    waited = time.monotonic() - start
    assert r.status_code == 200 and r.json()["predictions"][0][0]["label"] == "POSITIVE"
    # At most the abandoned request's pass under way, then this one's (a short text's pass is tiny).
    assert waited < 2 * pass_s + 0.5, f"a one-word request waited {waited:.2f}s; one pass takes {pass_s:.2f}s"
    # Its remaining texts are dropped: the queue empties after the pass under way, not 30 passes later.
    wait_until(lambda: metric(minilm, "sentiment_predictor_queued_texts") == 0, 5 * pass_s + 2,
               "the abandoned request's texts to leave the queue")
    abandoned = metric(minilm, COMPUTED) - computed - 1
    assert abandoned <= 3, f"{abandoned:.0f} of the abandoned request's {MAX_SIZE} texts were computed"
    assert metric(minilm, "sentiment_predictor_queued_tokens") == 0


@pytest.mark.parametrize("protocol", ["v1", "v2", "grpc-v2"])
def test_a_frozen_predictor_costs_a_miss_its_deadline_and_no_more(minilm, redis_server, protocol):
    """SIGSTOP: the predictor's sockets still accept connections, and nothing ever answers."""
    deadline_s = 3
    predictor = minilm
    port = predictor.grpc_port if protocol == "grpc-v2" else predictor.http_port
    transformer = TransformerProcess(f"127.0.0.1:{port}", redis_server.url, protocol=protocol,
                                     extra=["--predictor_deadline_s", str(deadline_s),
                                            "--predictor_request_timeout_seconds", "300",
                                            "--cache_namespace", f"frozen-{uuid.uuid4().hex[:6]}"]).start()
    try:
        warm = httpx.post(v1(transformer), json={"text": ["a connection to reuse"]}, timeout=60)
        assert warm.status_code == 200, warm.text
        os.kill(predictor.proc.pid, signal.SIGSTOP)
        for text in ("a miss on the pooled connection", "and one more"):
            start = time.monotonic()
            r = httpx.post(v1(transformer), json={"text": [f"{text} {uuid.uuid4().hex}"]}, timeout=deadline_s + 30)
            elapsed = time.monotonic() - start
            assert r.status_code == 503, r.text
            assert r.json()["error"] == (f"predictor at 127.0.0.1:{port} did not answer within {deadline_s}s "
                                         "(--predictor_deadline_s); retry later")
            assert deadline_s <= elapsed < deadline_s + 1.0, f"503 after {elapsed:.2f}s; the deadline is {deadline_s}s"
    finally:
        os.kill(predictor.proc.pid, signal.SIGCONT)
        transformer.stop()


class MalformedPredictor:
    """A real HTTP server answering 200 to v1 and v2 predictions with whatever body is set."""

    def __init__(self):
        self.port = free_port()
        self.body = b"{}"
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _answer(self, _request: web.Request) -> web.Response:
        return web.Response(body=self.body, content_type="application/json")

    def _run(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/models/sentiment:predict", self._answer)
        app.router.add_post("/v2/models/sentiment/infer", self._answer)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self._started.set()
        self._loop.run_forever()

    def __enter__(self) -> MalformedPredictor:
        self._thread.start()
        assert self._started.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def _v1(predictions, labels=("NEGATIVE", "POSITIVE")) -> dict:
    return {"predictions": predictions, "labels": list(labels), "model_version": "m1"}


def _v2(probabilities: dict, labels: dict | None = None) -> dict:
    labels = labels or {"name": "labels", "datatype": "BYTES", "shape": [2], "data": ["NEGATIVE", "POSITIVE"]}
    return {"model_name": "sentiment", "model_version": "m1", "outputs": [
        {"name": "probabilities", **probabilities}, labels]}


ROW = [{"label": "NEGATIVE", "score": 0.25}, {"label": "POSITIVE", "score": 0.75}]
MALFORMED = [
    ("v1", _v1([[{"label": "NEGATIVE", "score": "high"}, {"label": "POSITIVE", "score": "low"}]]),
     "v1 answer is malformed (ValueError: could not convert string to float: 'high')"),
    ("v1", _v1([[0.25, 0.75]]), "v1 answer is malformed (TypeError"),
    ("v1", _v1([ROW, ROW]), "scores of shape [2, 2] for 1 texts and 2 labels"),
    ("v1", _v1([[]], labels=()), "a model has distinct labels, at least one"),
    ("v1", _v1([ROW[:1]]), "v1 answer is malformed (KeyError: 'POSITIVE')"),
    ("v1", {"predictions": [ROW]}, "v1 answer is malformed (KeyError: 'labels')"),
    ("v1", [1, 2], "v1 answer is malformed (TypeError"),
    ("v2", _v2({"datatype": "FP32", "shape": [1, 2], "data": ["a", "b"]}), "v2 answer is malformed (ValueError"),
    ("v2", _v2({"datatype": "FP32", "shape": [1, 3], "data": [0.1, 0.2, 0.7]}), "v2 answer is malformed (ValueError"),
    ("v2", _v2({"datatype": "FP32", "shape": [1, 2], "data": [0.5]}), "v2 answer is malformed (ValueError"),
    ("v2", {"outputs": "none"}, "v2 answer is malformed (TypeError"),
    ("v2", {"model_name": "sentiment"}, "v2 answer is malformed (KeyError: 'outputs')"),
    ("v2", _v2({"datatype": "FP32", "shape": [1, 2], "data": [0.25, 0.75]}, labels={"name": "labels"}),
     "v2 answer is malformed (KeyError: 'shape')"),
]


def test_a_malformed_predictor_answer_is_a_502_naming_the_problem(redis_server):
    with MalformedPredictor() as fake:
        transformers = {protocol: TransformerProcess(f"127.0.0.1:{fake.port}", redis_server.url, protocol=protocol,
                                                     extra=["--predictor_deadline_s", "5"]).start()
                        for protocol in ("v1", "v2")}
        try:
            for protocol, body, message in MALFORMED:
                fake.body = orjson.dumps(body)
                r = httpx.post(v1(transformers[protocol]), json={"text": [f"anything {uuid.uuid4().hex}"]},
                               timeout=30)
                assert (r.status_code, protocol) == (502, protocol), (body, r.text)
                assert r.json()["error"].startswith("predictor"), r.text
                assert message in r.json()["error"], (body, r.text)
            for transformer in transformers.values():  # nothing of it was cached or broke the process
                assert metric(transformer, "sentiment_requests_total") >= 1 and transformer.alive
        finally:
            for transformer in transformers.values():
                transformer.stop()


def grpc_probs(transformer, texts: list[str]) -> np.ndarray:
    """A v2 gRPC inference on the transformer: probabilities in (NEGATIVE, POSITIVE) order."""
    client = grpcclient.InferenceServerClient(transformer.grpc_target)
    tensor = grpcclient.InferInput("text", [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=np.object_))
    result = client.infer("sentiment", [tensor], client_timeout=120)
    labels = [x.decode() for x in result.as_numpy("labels")]
    probs = result.as_numpy("probabilities").reshape(len(texts), len(labels))
    return probs[:, [labels.index("NEGATIVE"), labels.index("POSITIVE")]]


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_sigterm_answers_the_miss_in_flight_then_closes_the_pools(minilm, redis_server, transport):
    """uvicorn drains HTTP, then KServe drains gRPC: the pools must outlive both."""
    transformer = TransformerProcess(f"127.0.0.1:{minilm.http_port}", redis_server.url,
                                     extra=["--cache_namespace", f"stop-{uuid.uuid4().hex[:6]}"],
                                     env={"PYTHONWARNINGS": "always::ResourceWarning"}).start()
    texts = long_texts(MAX_SIZE)
    result: dict = {}

    def call() -> None:
        if transport == "grpc":
            result["probs"] = grpc_probs(transformer, texts)
        else:
            r = httpx.post(v1(transformer), json={"text": texts}, timeout=120)
            assert r.status_code == 200, r.text
            result["probs"] = rows_to_probs(r.json()["predictions"])

    thread = threading.Thread(target=call)
    try:
        passes = metric(minilm, PASSES)
        thread.start()
        wait_until(lambda: metric(minilm, PASSES) > passes, 60, "the request's first pass")
        stopped = time.monotonic()
        os.kill(transformer.proc.pid, signal.SIGTERM)
        transformer.proc.wait(60)
        exit_s = time.monotonic() - stopped
        thread.join(60)
    finally:
        transformer.stop()
    assert "probs" in result, "the request in flight got no answer"
    np.testing.assert_allclose(result["probs"], predictor_probs(minilm, texts), atol=1e-5)
    assert transformer.proc.returncode == 0, transformer.log()[-3000:]
    assert exit_s < 30, f"exited {exit_s:.1f}s after SIGTERM"
    log = transformer.log()
    assert "Stopping the model server" in log
    for warning in ("Unclosed client session", "Unclosed connector", "Unclosed connection", "unclosed Connection",
                    "unclosed resource", "ResourceWarning"):
        assert warning not in log, log[-3000:]


def test_the_fast_routes_hand_the_model_the_request_headers(model_dir):
    """As KServe's own routes do: its latency line names the request's x-request-id (the fast path passed none)."""
    predictor = PredictorProcess(model_dir, extra=["--enable_latency_logging", "true", "--log_requests"]).start()
    v2_body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a fine film"]}]}
    try:
        for path, body in (("/v1/models/sentiment:predict", {"instances": ["a fine film"]}),
                           ("/v2/models/sentiment/infer", v2_body)):
            request_id = f"edge-{uuid.uuid4().hex}"
            r = httpx.post(f"{predictor.url}{path}", json=body, headers={"x-request-id": request_id}, timeout=30)
            assert r.status_code == 200, r.text
            wait_until(lambda rid=request_id: f"requestId: {rid}," in predictor.log(), 10, f"{path}'s latency line")
    finally:
        predictor.stop()


def test_a_miss_carries_the_requests_trace_context_to_the_predictor(model_dir):
    """The transformer passes Envoy's request id and the trace headers on (Istio joins the hops' spans by
    them), on every route and predictor protocol; its own other headers stay with it."""
    predictor = PredictorProcess(model_dir, extra=["--enable_latency_logging", "true", "--log_requests"]).start()
    redis = RedisServer().start()
    routes = {"/bulk-predict": lambda t: {"text": [t]}, "/v1/models/sentiment:predict": lambda t: {"instances": [t]},
              "/v2/models/sentiment/infer": lambda t: {"inputs": [{"name": "text", "datatype": "BYTES",
                                                                    "shape": [1], "data": [t]}]}}
    try:
        for protocol, host in (("v2", f"127.0.0.1:{predictor.http_port}"),
                               ("grpc-v2", f"127.0.0.1:{predictor.grpc_port}")):
            transformer = TransformerProcess(host, redis.url, extra=["--predictor_protocol", protocol,
                                                                     "--cache_namespace", protocol]).start()
            try:
                for path, body in routes.items():
                    request_id = f"trace-{uuid.uuid4().hex}"
                    text = f"a film of many parts {request_id}"  # new: a miss
                    r = httpx.post(f"{transformer.url}{path}", json=body(text), timeout=30,
                                   headers={"x-request-id": request_id, "authorization": "Bearer not-forwarded"})
                    assert r.status_code == 200, r.text
                    wait_until(lambda rid=request_id: f"requestId: {rid}," in predictor.log(), 10,
                               f"the predictor's latency line for {path} over {protocol}")
            finally:
                transformer.stop()
    finally:
        predictor.stop()
        redis.stop()
