"""The edges of a request's life, on real processes: abandoned, waiting on a frozen predictor, answered
with nonsense, or in flight when the transformer is told to stop.

The predictor here runs the shared MiniLM, whose passes over 512-token texts are slow enough to
watch one request's passes go by on its /metrics.
"""

from __future__ import annotations

import socket
import time
import uuid

import httpx
import orjson
import pytest

from harness.clients import metric
from harness.processes import PredictorProcess, wait_until

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
