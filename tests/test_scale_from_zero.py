"""Hits never wake a sleeping predictor: a transformer that has never talked to the predictor answers
cached sentences from Redis, and a new sentence gets its 503 at the deadline (real processes)."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest

from harness.clients import metric, predictor_probs, rows_to_probs, seed_predict
from harness.processes import PredictorProcess, RedisServer, TransformerProcess

CACHED = ["I love this movie", "A dull, lifeless film."]
DEADLINE_S = 3.0


@pytest.fixture
def redis():
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.mark.parametrize("protocol", ["v2", "grpc-v2"])
def test_fresh_transformer_answers_cached_texts_while_the_predictor_sleeps(model_dir, redis, protocol):
    predictor = PredictorProcess(model_dir).start()
    target = predictor.grpc_target if protocol == "grpc-v2" else f"127.0.0.1:{predictor.http_port}"
    extra = ["--predictor_deadline_s", str(DEADLINE_S)]
    first = TransformerProcess(target, redis.url, protocol, extra=extra).start()
    try:
        expected = seed_predict(first, CACHED)
    finally:
        first.stop()
        predictor.stop()  # scaled to zero: nothing listens at its address any more

    # A new pod (a restart, a rollout, a scale-up) with no fingerprint flag and no predictor to ask.
    fresh = TransformerProcess(target, redis.url, protocol, extra=[*extra, "--near_cache_entries", "0"]).start()
    try:
        response = httpx.post(f"{fresh.url}/bulk-predict", json={"text": CACHED}, timeout=30)
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(rows_to_probs(response.json()["predictions"]), expected, atol=1e-6)
        assert metric(fresh, 'sentiment_cache_hits_total{tier="redis"}') == len(CACHED)
        assert metric(fresh, "sentiment_cache_misses_total") == 0
        assert metric(fresh, "sentiment_predictor_latency_seconds_count") == 0  # the predictor was never called

        # v2 metadata knows the model's labels from the identity record, before any predictor answer.
        metadata = httpx.get(f"{fresh.url}/v2/models/sentiment", timeout=10).json()
        assert metadata["outputs"][0]["shape"] == [-1, 2]

        start = time.monotonic()
        new = httpx.post(f"{fresh.url}/bulk-predict", json={"text": ["a sentence nobody has sent"]}, timeout=60)
        waited = time.monotonic() - start
        assert new.status_code == 503, new.text
        assert f"not reachable within {DEADLINE_S:g}s" in new.json()["error"]
        assert DEADLINE_S - 0.1 <= waited <= DEADLINE_S + 2.0, waited
    finally:
        fresh.stop()


def test_after_a_rollout_the_old_models_entries_are_never_read_again(model_dir, tmp_path, redis):
    from harness.tiny_model import build_tiny_model

    old = PredictorProcess(model_dir).start()
    transformer = TransformerProcess(f"127.0.0.1:{old.http_port}", redis.url).start()
    try:
        seed_predict(transformer, CACHED)
        old.stop()
        # The rollout: another model at the same address.
        new = PredictorProcess(build_tiny_model(tmp_path / "tiny", labels=("NEGATIVE", "POSITIVE")),
                               http_port=old.http_port).start()
        try:
            # The first miss reveals the new model; the cached text in the same request is recomputed
            # by it, and a text cached only under the old model is no longer read.
            mixed = seed_predict(transformer, [CACHED[0], "a text the old model never saw"])
            later = seed_predict(transformer, [CACHED[1]])
            direct = predictor_probs(new, [CACHED[0], "a text the old model never saw", CACHED[1]])
        finally:
            new.stop()
    finally:
        transformer.stop()
    np.testing.assert_allclose(np.vstack([mixed, later]), direct, atol=1e-5)
