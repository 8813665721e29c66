"""Redis and predictor faults: every request still gets a correct answer, and caching resumes."""

from __future__ import annotations

import hashlib
import signal
import threading
import uuid

import httpx
import numpy as np
import pytest
import redis
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from harness.clients import keys_in, metric, predictor_probs, seed_predict
from harness.processes import PredictorProcess, RedisServer, TlsFiles, TransformerProcess, free_port, wait_until


def unique_texts(n: int = 3) -> list[str]:
    return [f"sentence number {i} about a fine film {uuid.uuid4().hex}" for i in range(n)]


@pytest.fixture
def redis_port():
    return free_port()


@pytest.fixture
def own_redis(redis_port):
    server = RedisServer(redis_port)
    yield server
    server.stop()


# These tests are about the Redis tier: no near cache, so every hit is a Redis read.
REDIS_ONLY = ["--near_cache_entries", "0"]


@pytest.fixture
def transformer(predictor, own_redis):
    proc = TransformerProcess(f"127.0.0.1:{predictor.http_port}", own_redis.url,
                              extra=["--cache_namespace", "faults", *REDIS_ONLY])
    yield proc
    proc.stop()


def assert_correct(transformer, predictor, texts) -> None:
    np.testing.assert_allclose(seed_predict(transformer, texts), predictor_probs(predictor, texts), atol=1e-6)


def wait_for_caching(transformer, redis_server, predictor) -> None:
    """Caching has resumed once a fresh text's key lands in Redis."""
    def cached() -> bool:
        [text] = unique_texts(1)
        assert_correct(transformer, predictor, [text])
        digest = hashlib.sha256(text.encode()).hexdigest().encode()
        return any(k.endswith(digest) for k in keys_in(redis_server, "faults"))
    wait_until(cached, 20, "caching to resume")


def test_redis_down_at_start_then_up(transformer, own_redis, predictor):
    transformer.start()  # Redis not started yet
    for _ in range(3):
        assert_correct(transformer, predictor, unique_texts())
    assert metric(transformer, "sentiment_cache_errors_total") >= 1
    own_redis.start()
    wait_for_caching(transformer, own_redis, predictor)


def test_redis_killed_mid_run_and_restarted(transformer, own_redis, predictor, redis_port):
    own_redis.start()
    transformer.start()
    texts = unique_texts()
    assert_correct(transformer, predictor, texts)
    own_redis.kill()
    for _ in range(5):
        assert_correct(transformer, predictor, texts + unique_texts(1))
    restarted = RedisServer(redis_port).start()
    try:
        wait_for_caching(transformer, restarted, predictor)
    finally:
        restarted.stop()


def test_idle_connections_killed_by_redis(transformer, own_redis, predictor):
    """The original failure: 500s after Redis dropped idle connections. Here: 200 and a cache hit."""
    own_redis.start()
    transformer.start()
    texts = unique_texts()
    assert_correct(transformer, predictor, texts)
    admin = redis.Redis(port=own_redis.port)
    assert admin.client_kill_filter(_type="normal", skipme=True) >= 1
    hits = metric(transformer, "sentiment_cache_hits_total")
    assert_correct(transformer, predictor, texts)
    assert metric(transformer, "sentiment_cache_hits_total") - hits == len(texts)  # served from Redis again


def test_idle_timeout_closes_connections(transformer, own_redis, predictor):
    own_redis.start()
    admin = redis.Redis(port=own_redis.port)
    transformer.start()
    texts = unique_texts()
    assert_correct(transformer, predictor, texts)
    admin.config_set("timeout", 1)  # Redis closes connections idle for a second
    wait_until(lambda: len(admin.client_list()) == 1, 15, "redis to drop the transformer's idle connections")
    hits = metric(transformer, "sentiment_cache_hits_total")
    assert_correct(transformer, predictor, texts)
    assert metric(transformer, "sentiment_cache_hits_total") - hits == len(texts)


def test_slow_redis_is_bypassed(transformer, own_redis, predictor):
    own_redis.start()
    transformer.start()
    texts = unique_texts()
    assert_correct(transformer, predictor, texts)
    admin = redis.Redis(port=own_redis.port, socket_timeout=10)
    sleeper = threading.Thread(target=lambda: admin.execute_command("DEBUG", "SLEEP", "2"))
    sleeper.start()
    try:
        errors = metric(transformer, "sentiment_cache_errors_total")
        assert_correct(transformer, predictor, texts)  # Redis blocked: answered by the predictor
        assert metric(transformer, "sentiment_cache_errors_total") > errors
    finally:
        sleeper.join()
    wait_for_caching(transformer, own_redis, predictor)


def test_paused_redis_process(transformer, own_redis, predictor):
    own_redis.start()
    transformer.start()
    own_redis.proc.send_signal(signal.SIGSTOP)
    try:
        for _ in range(3):
            assert_correct(transformer, predictor, unique_texts(2))
    finally:
        own_redis.proc.send_signal(signal.SIGCONT)
    wait_for_caching(transformer, own_redis, predictor)


def test_redis_with_password(predictor):
    server = RedisServer(password="s3cret-pw").start()
    proc = TransformerProcess(f"127.0.0.1:{predictor.http_port}", f"redis://127.0.0.1:{server.port}/0",
                              extra=["--cache_namespace", "faults"], env={"REDIS_PASSWORD": "s3cret-pw"})
    try:
        proc.start()
        texts = unique_texts()
        assert_correct(proc, predictor, texts)
        assert len(keys_in(server, "faults")) == len(texts)
    finally:
        proc.stop()
        server.stop()


def test_redis_over_tls_with_a_private_ca(predictor, tmp_path):
    """rediss:// with the server verified against REDIS_CA_CERT; without that CA nothing is cached."""
    tls = TlsFiles.create(tmp_path)
    server = RedisServer(password="tls-pw", tls=tls).start()
    url = f"rediss://127.0.0.1:{server.port}/0"
    trusting = TransformerProcess(f"127.0.0.1:{predictor.http_port}", url,
                                  extra=["--cache_namespace", "tls", *REDIS_ONLY],
                                  env={"REDIS_PASSWORD": "tls-pw", "REDIS_CA_CERT": str(tls.ca)})
    untrusting = TransformerProcess(f"127.0.0.1:{predictor.http_port}", url, extra=["--cache_namespace", "tls"],
                                    env={"REDIS_PASSWORD": "tls-pw"})
    try:
        trusting.start()
        texts = unique_texts()
        assert_correct(trusting, predictor, texts)
        assert len(keys_in(server, "tls")) == len(texts)
        assert metric(trusting, "sentiment_cache_hits_total") == 0
        assert_correct(trusting, predictor, texts)
        assert metric(trusting, "sentiment_cache_hits_total") == len(texts)
        # A server certificate the transformer cannot verify: answers still come (fail open), nothing is cached.
        untrusting.start()
        fresh = unique_texts()
        assert_correct(untrusting, predictor, fresh)
        assert len(keys_in(server, "tls")) == len(texts)
        assert metric(untrusting, "sentiment_cache_errors_total") >= 1
    finally:
        untrusting.stop()
        trusting.stop()
        server.stop()


def test_predictor_cold_start(model_dir, redis_server):
    """The first request arrives before the predictor process even starts: it still succeeds."""
    http_port, grpc_port = free_port(), free_port()
    transformer = TransformerProcess(f"127.0.0.1:{http_port}", redis_server.url,
                                     extra=["--cache_namespace", f"cold-{uuid.uuid4().hex[:6]}"]).start()
    predictor = PredictorProcess(model_dir, http_port=http_port, grpc_port=grpc_port)
    result: dict = {}

    def call() -> None:
        result["response"] = httpx.post(f"{transformer.url}/v1/models/sentiment:predict",
                                        json={"text": ["I love this movie"]}, timeout=120)

    thread = threading.Thread(target=call)
    try:
        thread.start()
        # The request is in flight and has found no predictor (more than once) before the process starts.
        wait_until(lambda: metric(transformer, "sentiment_inflight_requests") == 1
                   and metric(transformer, 'sentiment_predictor_errors_total{kind="unreachable"}') >= 3,
                   10, "the request to wait for the absent predictor")
        assert thread.is_alive(), "the request should still be waiting for the predictor"
        predictor.start(wait=False)
        thread.join(120)
        r = result["response"]
        assert r.status_code == 200, r.text
        [row] = r.json()["predictions"]
        assert row[0]["label"] == "POSITIVE" and row[0]["score"] > 0.9
    finally:
        transformer.stop()
        predictor.stop()


def test_predictor_absent_past_deadline_is_503(redis_server):
    transformer = TransformerProcess(f"127.0.0.1:{free_port()}", redis_server.url,
                                     extra=["--predictor_deadline_s", "2"]).start()
    try:
        r = httpx.post(f"{transformer.url}/v1/models/sentiment:predict", json={"text": ["anyone there?"]},
                       timeout=30)
        assert r.status_code == 503
        assert "predictor at 127.0.0.1:" in r.json()["error"] and "not reachable within 2s" in r.json()["error"]
        client = grpcclient.InferenceServerClient(transformer.grpc_target)
        tensor = grpcclient.InferInput("text", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([b"anyone?"], dtype=np.object_))
        with pytest.raises(InferenceServerException) as err:
            client.infer("sentiment", [tensor])
        assert err.value.status() == "StatusCode.UNAVAILABLE"
        assert "not reachable within 2s" in err.value.message()
    finally:
        transformer.stop()
