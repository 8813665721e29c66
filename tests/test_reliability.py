"""Limits, overload, faults under load, concurrency correctness, model changes and hostile input.

Real predictor, transformer and redis-server processes. Most cases use a tiny random model
(fast forward passes, so thousands of requests fit in seconds); correctness is always checked
against the predictor's own answer for the same text.
"""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient import grpc as grpcclient
from tritonclient.utils import InferenceServerException

from harness.clients import metric, predictor_answers, predictor_probs, rows_to_probs
from harness.processes import PredictorProcess, RedisServer, TransformerProcess, free_port, wait_until
from harness.tiny_model import WORDS, build_tiny_model

LABELS2 = ("NEGATIVE", "POSITIVE")


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    base = tmp_path_factory.mktemp("tiny")
    # Large initial weights spread the probabilities, so a wrong answer is far from the right one.
    return (build_tiny_model(base / "a", labels=LABELS2, seed=0, init_range=1.0),
            build_tiny_model(base / "b", labels=LABELS2, seed=1, init_range=1.0))


@pytest.fixture(scope="module")
def redis_module():
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tiny_stack(tiny_dirs, redis_module):
    predictor = PredictorProcess(tiny_dirs[0], extra=["--runtime", "torch"]).start()
    transformer = TransformerProcess(f"127.0.0.1:{predictor.http_port}", redis_module.url,
                                     extra=["--cache_namespace", f"rel-{uuid.uuid4().hex[:6]}"]).start()
    yield predictor, transformer
    transformer.stop()
    predictor.stop()


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choices(WORDS, k=rng.randint(1, 12)))


# --- limits and memory -------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/v1/models/sentiment:predict", "/v2/models/sentiment/infer"])
def test_oversize_bodies_are_refused_and_memory_stays_bounded(tiny_stack, path):
    predictor, transformer = tiny_stack
    for server in (predictor, transformer):
        process = psutil.Process(server.proc.pid)
        huge = b'{"instances": ["' + b"x" * (6 << 20) + b'"]}'
        before = process.memory_info().rss
        with httpx.Client(timeout=30) as client:
            for _ in range(40):
                r = client.post(f"{server.url}{path}", content=huge, headers={"content-type": "application/json"})
                assert r.status_code == 413
                assert r.json()["error"] == f"request body is {len(huge)} bytes; the limit is {4 << 20}"
        growth_mib = (process.memory_info().rss - before) / 2**20
        assert growth_mib < 40, f"{server.name} grew by {growth_mib:.0f} MiB over 40 oversize requests"
        assert server.alive


def test_chunked_oversize_body_is_refused(tiny_stack):
    predictor, _ = tiny_stack

    def chunks():
        for _ in range(5):
            yield b"y" * (1 << 20)

    r = httpx.post(f"{predictor.url}/v1/models/sentiment:predict", content=chunks(),
                   headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert "exceeds the limit of 4194304 bytes" in r.json()["error"]


def test_predictor_sheds_load_with_429_and_finishes_what_it_accepted(tiny_dirs):
    predictor = PredictorProcess(tiny_dirs[0], extra=["--runtime", "torch", "--max_queued_texts", "8",
                                                      "--max_batch_size", "2", "--max_wait_ms", "0"]).start()
    try:
        rng = random.Random(3)
        bodies = [[sentence(rng) for _ in range(4)] for _ in range(64)]
        with ThreadPoolExecutor(32) as pool:
            responses = list(pool.map(lambda texts: httpx.post(
                f"{predictor.url}/v1/models/sentiment:predict", json={"instances": texts}, timeout=60), bodies))
        statuses = [r.status_code for r in responses]
        assert set(statuses) <= {200, 429}
        assert 429 in statuses and 200 in statuses
        for texts, r in zip(bodies, responses, strict=True):
            if r.status_code == 429:
                assert r.headers["retry-after"] == "1"
                assert "the queue limit is 8" in r.json()["error"]
            else:
                np.testing.assert_allclose(rows_to_probs(r.json()["predictions"]),
                                           predictor_probs(predictor, texts), atol=1e-4)
    finally:
        predictor.stop()


def test_transformer_sheds_load_past_max_inflight(redis_module):
    # The predictor is absent: accepted requests wait in the cold-start retry loop, holding their slot.
    transformer = TransformerProcess(f"127.0.0.1:{free_port()}", redis_module.url,
                                     extra=["--max_inflight", "2", "--predictor_deadline_s", "4"]).start()
    try:
        with ThreadPoolExecutor(2) as pool:
            waiting = [pool.submit(httpx.post, f"{transformer.url}/v1/models/sentiment:predict",
                                   json={"text": [f"t{i}"]}, timeout=30) for i in range(2)]
            wait_until(lambda: metric(transformer, "sentiment_inflight_requests") == 2, 10,
                       "both requests to be in flight")
            r = httpx.post(f"{transformer.url}/v1/models/sentiment:predict", json={"text": ["third"]})
            assert r.status_code == 429
            assert r.json()["error"] == "transformer busy: 2 requests in flight; the limit is 2; retry later"
            assert [f.result().status_code for f in waiting] == [503, 503]
    finally:
        transformer.stop()


# --- correctness under concurrency and model changes -------------------------------------------

def test_thousands_of_mixed_concurrent_requests_are_all_correct(tiny_stack):
    predictor, transformer = tiny_stack
    rng = random.Random(11)
    pool = list({sentence(rng) for _ in range(400)})
    requests = []
    for _ in range(2000):
        texts = rng.sample(pool, rng.randint(1, 6))
        if rng.random() < 0.3:
            texts.append(texts[0])  # duplicate within the request
        if rng.random() < 0.2:
            texts.append(f"{sentence(rng)} {uuid.uuid4().hex}")  # never seen before
        rng.shuffle(texts)
        requests.append(texts)
    errors: list[str] = []
    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(24) as executor:
        def call(texts):
            r = client.post(f"{transformer.url}/v1/models/sentiment:predict", json={"text": texts})
            return texts, r

        results = list(executor.map(call, requests))
    truth = predictor_answers(predictor, (t for texts, _ in results for t in texts))
    for texts, r in results:
        if r.status_code != 200:
            errors.append(f"{r.status_code}: {r.text}")
            continue
        got = rows_to_probs(r.json()["predictions"])
        expected = np.array([truth[t] for t in texts])
        # 1e-4: batched forward passes with this model's large weights differ by ~1e-5 from
        # single ones; another text's answer would be off by far more (see the spread below).
        if not np.allclose(got, expected, atol=1e-4):
            errors.append(f"wrong answer (max diff {np.abs(got - expected).max():.1e}) for {texts}")
    assert errors == []
    assert len(results) == 2000
    assert np.std([p[1] for p in truth.values()]) > 0.05  # answers of different texts are far apart


def test_model_change_invalidates_cached_answers(tiny_dirs, redis_module):
    port, grpc_port = free_port(), free_port()
    first = PredictorProcess(tiny_dirs[0], extra=["--runtime", "torch"], http_port=port, grpc_port=grpc_port).start()
    transformer = TransformerProcess(f"127.0.0.1:{port}", redis_module.url,
                                     extra=["--cache_namespace", f"swap-{uuid.uuid4().hex[:6]}"]).start()
    texts = ["i love this movie", "terrible boring plot", "the film was fun"]
    second = None
    try:
        url = f"{transformer.url}/v1/models/sentiment:predict"
        old = rows_to_probs(httpx.post(url, json={"text": texts}).json()["predictions"])
        np.testing.assert_allclose(old, predictor_probs(first, texts), atol=1e-6)
        first.stop()
        second = PredictorProcess(tiny_dirs[1], extra=["--runtime", "torch"], http_port=port,
                                  grpc_port=grpc_port).start()
        new_expected = predictor_probs(second, texts)
        assert not np.allclose(new_expected, old, atol=1e-2)  # the models really differ
        # A miss reveals the new fingerprint; from then on the old entries are never read.
        httpx.post(url, json={"text": ["a new sentence to reveal the model"]})
        for _ in range(2):
            got = rows_to_probs(httpx.post(url, json={"text": texts}).json()["predictions"])
            np.testing.assert_allclose(got, new_expected, atol=1e-6)
    finally:
        transformer.stop()
        first.stop()
        if second is not None:
            second.stop()


def test_predictor_killed_and_restarted_during_load(tiny_dirs, redis_module):
    port, grpc_port = free_port(), free_port()
    predictor = PredictorProcess(tiny_dirs[0], extra=["--runtime", "torch"], http_port=port,
                                 grpc_port=grpc_port).start()
    deadline_s = 20
    transformer = TransformerProcess(f"127.0.0.1:{port}", redis_module.url,
                                     extra=["--cache_namespace", f"kill-{uuid.uuid4().hex[:6]}",
                                            "--predictor_deadline_s", str(deadline_s)]).start()
    truth_source = None
    stop = threading.Event()
    results: list[tuple[list[str], int, dict, float]] = []

    def load(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(timeout=120) as client:
            while not stop.is_set():
                texts = [sentence(rng), f"{sentence(rng)} {uuid.uuid4().hex[:8]}"]
                start = time.monotonic()
                r = client.post(f"{transformer.url}/v1/models/sentiment:predict", json={"text": texts})
                results.append((texts, r.status_code, r.json(), time.monotonic() - start))

    threads = [threading.Thread(target=load, args=(i,)) for i in range(8)]
    try:
        for t in threads:
            t.start()
        wait_until(lambda: len(results) >= 100, 120, "100 answers before the kill")
        predictor.kill()
        predictor = PredictorProcess(tiny_dirs[0], extra=["--runtime", "torch"], http_port=port,
                                     grpc_port=grpc_port).start()
        served_before = len(results)
        wait_until(lambda: len(results) >= served_before + 200, 180, "200 answers after the restart")
        stop.set()
        for t in threads:
            t.join(deadline_s + 30)
        truth_source = predictor
        statuses = [status for _, status, _, _ in results]
        assert set(statuses) <= {200, 503}, set(statuses)
        for texts, status, body, elapsed in results:
            assert elapsed < deadline_s + 10  # never hangs past the deadline
            if status == 503:
                assert "not reachable within" in body["error"]
            else:
                np.testing.assert_allclose(rows_to_probs(body["predictions"]),
                                           predictor_probs(truth_source, texts), atol=1e-4)
        assert statuses.count(200) >= 300
    finally:
        stop.set()
        transformer.stop()
        predictor.stop()


# --- hostile input -----------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)
hostile_text = st.text(st.characters(codec="utf-8"), max_size=200) | st.sampled_from(
    ["", "\x00\x01\x02", "😀" * 50, "\u202e reversed", "a\r\nb", "\ud7ff", "\U0001d518\U0001d52b"])
bodies = st.one_of(
    st.builds(lambda v: json.dumps({"text": v}), st.lists(hostile_text, max_size=5)),
    st.builds(lambda v: json.dumps({"text": v}), json_values),
    st.builds(lambda v: json.dumps({"instances": v}), json_values),
    st.builds(json.dumps, json_values),
    st.builds(lambda n: '{"text": ' + "[" * n + "]" * n + "}", st.integers(1, 5000)),  # deep nesting
    st.builds(lambda a, b: f'{{"text": ["{a}"], "text": ["{b}"]}}', st.sampled_from("abc"), st.sampled_from("xyz")),
    st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
)


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=bodies, route=st.sampled_from(["/v1/models/sentiment:predict", "/bulk-predict"]))
def test_hostile_bodies_never_cause_a_5xx(tiny_stack, body, route):
    predictor, transformer = tiny_stack
    r = httpx.post(f"{transformer.url}{route}", content=body.encode("utf-8", "surrogatepass"),
                   headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code < 500, (r.status_code, r.text)
    if r.status_code != 200:
        assert isinstance(r.json()["error"], str) and r.json()["error"]
    assert transformer.alive and predictor.alive


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(inputs=json_values)
def test_hostile_v2_bodies_never_cause_a_5xx(tiny_stack, inputs):
    predictor, transformer = tiny_stack
    for server in (predictor, transformer):
        r = httpx.post(f"{server.url}/v2/models/sentiment/infer", content=json.dumps({"inputs": inputs}),
                       headers={"content-type": "application/json"}, timeout=30)
        assert r.status_code < 500, (server.name, r.status_code, r.text)


@pytest.mark.parametrize("server", ["predictor", "transformer"])
def test_schemathesis_finds_no_server_error(tiny_stack, server):
    """Fuzz every operation in the server's own OpenAPI document (tests/schemathesis.toml)."""
    proc = dict(zip(("predictor", "transformer"), tiny_stack, strict=True))[server]
    run = subprocess.run([str(Path(sys.executable).parent / "schemathesis"), "--config-file",
                          str(Path(__file__).parent / "schemathesis.toml"), "run", f"{proc.url}/openapi.json",
                          "--max-examples", "40", "--phases", "examples,coverage,fuzzing"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    paths = httpx.get(f"{proc.url}/openapi.json").json()["paths"]
    if server == "transformer":  # the fast-path routes are documented, so they are fuzzed too
        assert "post" in paths["/bulk-predict"] and "post" in paths["/v1/models/sentiment:predict"]
    operations = sum(len(methods) for methods in paths.values())
    assert re.search(rf"Tested: +{operations}\b", run.stdout), run.stdout[-3000:]  # it reached every operation
    assert proc.alive


@pytest.mark.parametrize("server", ["predictor", "transformer"])
def test_model_repository_api_cannot_unload_the_model(tiny_stack, server):
    """KServe would let any caller unload the model over REST or gRPC; here both are refused."""
    proc = dict(zip(("predictor", "transformer"), tiny_stack, strict=True))[server]
    for action in ("unload", "load"):
        r = httpx.post(f"{proc.url}/v2/repository/models/sentiment/{action}", timeout=10)
        assert r.status_code == 403, r.text
        assert "model repository API is disabled" in r.json()["error"]
    client = grpcclient.InferenceServerClient(proc.grpc_target)
    with pytest.raises(InferenceServerException) as err:
        client.unload_model("sentiment")
    assert err.value.status() == "StatusCode.PERMISSION_DENIED"
    assert "model repository API is disabled" in err.value.message()
    assert client.is_model_ready("sentiment")
    assert httpx.get(f"{proc.url}/v2/models/sentiment/ready", timeout=10).json()["ready"] is True
    r = httpx.post(f"{proc.url}/v1/models/sentiment:predict", json={"instances": ["still serving"]}, timeout=30)
    assert r.status_code == 200 and len(r.json()["predictions"]) == 1


def test_texts_are_never_logged(tiny_dirs, redis_module):
    """Even with every per-request log line on, no text reaches a log."""
    verbose = ["--log_requests", "--enable_latency_logging", "true"]
    predictor = PredictorProcess(tiny_dirs[0], extra=["--runtime", "torch", *verbose]).start()
    transformer = TransformerProcess(f"127.0.0.1:{predictor.http_port}", redis_module.url, extra=verbose).start()
    try:
        marker = f"secret-marker-{uuid.uuid4().hex}"
        url = f"{transformer.url}/v1/models/sentiment:predict"
        assert httpx.post(url, json={"text": [f"i love {marker}"]}).status_code == 200
        assert httpx.post(url, json={"text": [f"i love {marker}", 5]}).status_code == 400
        assert httpx.post(url, json={"text": [marker * 1000]}).status_code == 413
        assert httpx.post(url, content=f'{{"text": ["{marker}"'.encode()).status_code == 400
    finally:
        # Stopped processes have written every log line they ever will.
        transformer.stop()
        predictor.stop()
    assert transformer.proc.returncode == 0 and predictor.proc.returncode == 0
    for server in (predictor, transformer):
        assert "Stopping the model server" in server.log()
        assert marker not in server.log(), f"{server.name} logged a text"


def test_redis_keys_hold_hashes_not_texts(tiny_stack, redis_module):
    _, transformer = tiny_stack
    marker = f"findme{uuid.uuid4().hex}"
    assert httpx.post(f"{transformer.url}/v1/models/sentiment:predict", json={"text": [marker]}).status_code == 200
    import redis

    client = redis.Redis(port=redis_module.port)
    try:
        assert all(marker.encode() not in key for key in client.scan_iter(count=1000))
        assert all(marker.encode() not in client.get(key) for key in client.scan_iter(count=1000))
    finally:
        client.close()


def test_sigterm_stops_both_services_cleanly(tiny_dirs, redis_module):
    predictor = PredictorProcess(tiny_dirs[0], extra=["--runtime", "torch"]).start()
    transformer = TransformerProcess(f"127.0.0.1:{predictor.http_port}", redis_module.url).start()
    for server in (transformer, predictor):
        server.stop(signal.SIGTERM)
        assert server.proc.returncode == 0, server.log()[-2000:]
