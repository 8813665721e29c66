"""Unit tests of the cache-then-predictor flow with an in-memory cache and a scripted predictor."""

from __future__ import annotations

import asyncio
import hashlib

import numpy as np
import pytest

from serving.errors import Unavailable
from transformer.cache import CacheHit
from transformer.caching import CachedClassifier
from transformer.keys import SCHEMA_VERSION, CacheKeys
from transformer.shapes import Predictions, decode_entry, encode_entry


class MemoryCache:
    """In-memory stand-in for Redis, recording every call."""

    def __init__(self, broken: bool = False):
        self.data: dict[str, bytes] = {}
        self.gets: list[list[str]] = []
        self.sets: list[dict[str, bytes]] = []
        self.broken = broken

    async def get_many(self, keys):
        self.gets.append(list(keys))
        if self.broken:
            return [None] * len(keys)
        return [CacheHit(self.data[k], "memory") if k in self.data else None for k in keys]

    async def set_many(self, items):
        self.sets.append(dict(items))
        if not self.broken:
            self.data.update(items)

    async def ping(self):
        return not self.broken

    async def close(self):
        pass


class ScriptedPredictor:
    """Deterministic fake predictor: P(POSITIVE) derived from the text's hash."""

    def __init__(self, version: str = "m1"):
        self.version = version
        self.calls: list[list[str]] = []
        self.traces: list[dict | None] = []
        self.fail: Exception | None = None

    @staticmethod
    def prob(text: str, version: str) -> float:
        return hashlib.sha256(f"{version}:{text}".encode()).digest()[0] / 255

    async def predict(self, texts, trace=None):
        self.calls.append(list(texts))
        self.traces.append(trace)
        if self.fail:
            raise self.fail
        p = np.array([[1 - self.prob(t, self.version), self.prob(t, self.version)] for t in texts], np.float32)
        return Predictions(p, ["NEGATIVE", "POSITIVE"], self.version)


def expected(texts, version="m1"):
    return np.array([[1 - ScriptedPredictor.prob(t, version), ScriptedPredictor.prob(t, version)] for t in texts],
                    np.float32)


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def parts():
    cache, predictor = MemoryCache(), ScriptedPredictor()
    return cache, predictor, CachedClassifier(cache, predictor, CacheKeys("ns", "sentiment"))


def test_first_request_learns_the_fingerprint_and_writes_each_text(parts):
    cache, predictor, classifier = parts
    answer = run(classifier.classify(["a", "b", "a"]))
    np.testing.assert_allclose(answer.probs, expected(["a", "b", "a"]), atol=1e-6)
    assert answer.version == "m1" and answer.labels == ["NEGATIVE", "POSITIVE"]
    assert predictor.calls == [["a", "b"]]  # duplicates computed once
    # Before any fingerprint is known only the identity record is looked up; one pipelined write holds
    # each text and the record.
    assert cache.gets == [[classifier.keys.identity_key()]]
    assert len(cache.sets) == 1 and set(cache.sets[0]) == {
        classifier.keys.key("m1", "a"), classifier.keys.key("m1", "b"), classifier.keys.identity_key()}


def test_a_predictor_call_carries_the_requests_trace_context_and_nothing_else(parts):
    _, predictor, classifier = parts
    headers = {"x-request-id": "r-1", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
               "authorization": "Bearer secret", "content-type": "application/json", "x-b3-sampled": ""}
    run(classifier.classify(["a"], headers))
    run(classifier.classify(["b"]))
    assert predictor.traces == [{"x-request-id": "r-1", "traceparent": headers["traceparent"]}, {}]


def test_fully_cached_request_never_calls_the_predictor(parts):
    cache, predictor, classifier = parts
    run(classifier.classify(["a", "b"]))
    answer = run(classifier.classify(["b", "a", "b"]))
    np.testing.assert_allclose(answer.probs, expected(["b", "a", "b"]), atol=1e-6)
    assert predictor.calls == [["a", "b"]]
    assert cache.gets[-1] == [classifier.keys.key("m1", "b"), classifier.keys.key("m1", "a")]  # one MGET, distinct


def test_mixed_request_forwards_only_misses_and_keeps_order(parts):
    _, predictor, classifier = parts
    run(classifier.classify(["a", "c"]))
    answer = run(classifier.classify(["x", "a", "y", "c", "x"]))
    np.testing.assert_allclose(answer.probs, expected(["x", "a", "y", "c", "x"]), atol=1e-6)
    assert predictor.calls[-1] == ["x", "y"]


def test_pinned_fingerprint_hits_before_any_predictor_call():
    cache, predictor = MemoryCache(), ScriptedPredictor()
    keys = CacheKeys("ns", "sentiment")
    cache.data[keys.key("m1", "a")] = encode_entry(["NEGATIVE", "POSITIVE"], expected(["a"])[0])
    classifier = CachedClassifier(cache, predictor, keys, fingerprint="m1")
    assert classifier.labels is None  # nothing has told them yet
    answer = run(classifier.classify(["a"]))
    np.testing.assert_allclose(answer.probs, expected(["a"]), atol=1e-6)
    assert predictor.calls == [] and answer.labels == ["NEGATIVE", "POSITIVE"] and answer.version == "m1"
    assert classifier.labels == ["NEGATIVE", "POSITIVE"]  # learned from the entry


def test_a_fresh_classifier_answers_cached_texts_from_the_identity_record(parts):
    cache, _, classifier = parts
    run(classifier.classify(["a", "b"]))
    fresh = CachedClassifier(cache, ScriptedPredictor(version="never-called"), classifier.keys)
    answer = run(fresh.classify(["b", "a"]))
    np.testing.assert_allclose(answer.probs, expected(["b", "a"]), atol=1e-6)
    assert fresh.client.calls == [] and answer.version == "m1" and fresh.labels == ["NEGATIVE", "POSITIVE"]


def test_alternating_revisions_keep_both_hit_rates_and_never_mix_rows(parts):
    _, predictor, classifier = parts
    versions = iter(["m1", "m2"] * 50)

    async def alternating(texts, trace=None):  # two revisions behind one address, answering in turn
        predictor.version = next(versions)
        return await ScriptedPredictor.predict(predictor, texts, trace)

    predictor.predict = alternating
    texts = [f"t{i}" for i in range(20)]
    for text in texts:  # warm: each text computed by one of the two models
        answer = run(classifier.classify([text]))
        np.testing.assert_allclose(answer.probs, expected([text], answer.version), atol=1e-6)
    calls = len(predictor.calls)
    for text in texts:  # both identities are live: every text is a hit under the model that computed it
        answer = run(classifier.classify([text]))
        np.testing.assert_allclose(answer.probs, expected([text], answer.version), atol=1e-6)
    assert len(predictor.calls) == calls
    answer = run(classifier.classify(texts[:4]))  # rows of both models in one request: one model answers
    np.testing.assert_allclose(answer.probs, expected(texts[:4], answer.version), atol=1e-6)


def test_model_change_invalidates_old_entries_and_never_mixes_models(parts):
    cache, predictor, classifier = parts
    run(classifier.classify(["a", "b"]))
    predictor.version = "m2"  # the predictor was redeployed with another model
    answer = run(classifier.classify(["a", "new"]))  # "a" hits m1's entry, "new" reveals m2
    np.testing.assert_allclose(answer.probs, expected(["a", "new"], "m2"), atol=1e-6)
    assert answer.version == "m2"
    assert predictor.calls[-1] == ["a", "new"]  # the m1 hit was recomputed by m2
    answer = run(classifier.classify(["b"]))  # m1's entry for "b" is no longer read
    np.testing.assert_allclose(answer.probs, expected(["b"], "m2"), atol=1e-6)
    assert all(":m2:" in k for k in cache.gets[-1])


def test_broken_cache_still_answers_from_the_predictor():
    cache, predictor = MemoryCache(broken=True), ScriptedPredictor()
    classifier = CachedClassifier(cache, predictor, CacheKeys("ns", "sentiment"))
    for _ in range(2):
        answer = run(classifier.classify(["a"]))
        np.testing.assert_allclose(answer.probs, expected(["a"]), atol=1e-6)
    assert len(predictor.calls) == 2


def test_predictor_error_writes_nothing(parts):
    cache, predictor, classifier = parts
    predictor.fail = Unavailable("predictor down")
    with pytest.raises(Unavailable):
        run(classifier.classify(["a"]))
    assert cache.sets == [] and cache.data == {}


def test_foreign_or_corrupt_entries_are_misses(parts):
    cache, predictor, classifier = parts
    run(classifier.classify(["a"]))
    cache.data[classifier.keys.key("m1", "a")] = b"garbage"
    answer = run(classifier.classify(["a"]))
    np.testing.assert_allclose(answer.probs, expected(["a"]), atol=1e-6)
    assert predictor.calls[-1] == ["a"]


def test_keys_hash_the_text_and_name_everything_else():
    keys = CacheKeys("prod", "sentiment")
    key = keys.key("abc123-torch", "I love this movie")
    assert key == (f"prod:sentiment:abc123-torch:{SCHEMA_VERSION}:"
                   + hashlib.sha256(b"I love this movie").hexdigest())
    assert "love" not in key
    assert keys.key("abc123-torch", "a") != keys.key("abc123-torch-int8", "a")
    assert keys.key("f", "\ud800") != keys.key("f", "?")  # lone surrogates hash, never crash


def test_entry_round_trip_and_rejects():
    raw = encode_entry(["NEGATIVE", "POSITIVE"], np.array([0.25, 0.75], np.float32))
    assert decode_entry(raw) == (["NEGATIVE", "POSITIVE"], [0.25, 0.75])
    assert decode_entry(b"[1]") is None
    assert decode_entry(b'[["A"], [0.1, 0.2]]') is None
