"""The near cache: bounds by entries and bytes, LRU order, TTL, and the two-tier cache in front of Redis
(unit tests, then real redis-server, predictor and transformer processes)."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import tracemalloc
import uuid

import numpy as np
import pytest

from harness.clients import keys_in, metric, predictor_probs, seed_predict
from harness.processes import RedisServer, TransformerProcess, wait_until
from transformer.cache import CacheHit
from transformer.near_cache import MEMORY, REDIS, NearCache, TieredPredictionCache, entry_bytes


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def key(i: int) -> str:
    return f"ns:sentiment:fp:s1:{hashlib.sha256(str(i).encode()).hexdigest()}"


VALUE = b'[["NEGATIVE","POSITIVE"],[0.125,0.875]]'


def test_entry_bound_evicts_least_recently_used():
    cache = NearCache(max_entries=3, max_bytes=1 << 20)
    for i in range(3):
        cache.put(key(i), VALUE, 60)
    assert cache.get(key(0)) == VALUE  # 0 is now the most recently used
    cache.put(key(3), VALUE, 60)
    assert len(cache) == 3
    assert cache.get(key(1)) is None  # the least recently used went first
    assert [cache.get(key(i)) for i in (0, 2, 3)] == [VALUE] * 3


def test_byte_bound_and_accounting():
    per_entry = entry_bytes(key(0), VALUE)
    cache = NearCache(max_entries=1000, max_bytes=per_entry * 5 + per_entry // 2)
    for i in range(20):
        cache.put(key(i), VALUE, 60)
        assert cache.bytes <= cache.max_bytes
    assert len(cache) == 5 and cache.bytes == 5 * per_entry
    assert all(cache.get(key(i)) == VALUE for i in range(15, 20))
    cache.put(key(19), VALUE + b" ", 60)  # replacing an entry re-counts it, never twice
    assert len(cache) == 5 and cache.bytes == 4 * per_entry + entry_bytes(key(19), VALUE + b" ")
    cache.put(key(99), b"x" * cache.max_bytes, 60)  # larger than the whole cache: not kept, nothing evicted
    assert cache.get(key(99)) is None and len(cache) == 5


def test_ttl_and_expired_entries_free_their_bytes():
    clock = Clock()
    cache = NearCache(max_entries=10, max_bytes=1 << 20, clock=clock)
    cache.put(key(0), VALUE, 10)
    cache.put(key(1), VALUE, 30)
    cache.put(key(2), VALUE, 0)  # already expired: not kept
    assert len(cache) == 2
    clock.now += 9.999
    assert cache.get(key(0)) == VALUE
    clock.now += 0.001
    assert cache.get(key(0)) is None  # at its deadline it is gone
    assert len(cache) == 1 and cache.bytes == entry_bytes(key(1), VALUE)
    clock.now += 20
    assert cache.get(key(1)) is None and cache.bytes == 0


def test_bytes_bound_holds_against_the_allocator():
    """The counted bytes are what the process really holds: tracemalloc agrees within the dict's slack."""
    limit = 2 << 20
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        cache = NearCache(max_entries=10**9, max_bytes=limit)
        for i in range(40_000):  # keys and values made here are owned by the cache alone
            cache.put(key(i), VALUE + str(i).encode(), 60)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert cache.bytes <= limit
    assert len(cache) < 40_000  # the bound evicted
    assert 0.75 * cache.bytes <= held <= 1.3 * limit, (held, cache.bytes)


def test_rejects_an_empty_bound():
    with pytest.raises(ValueError):
        NearCache(0, 100)
    with pytest.raises(ValueError):
        NearCache(100, 0)


class FakeRedis:
    """The Redis tier's interface, with remaining TTLs and an on/off switch."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.data: dict[str, tuple[bytes, float]] = {}  # key -> (value, deadline)
        self.down = False
        self.lookups: list[list[str]] = []

    async def get_many_expiring(self, keys):
        self.lookups.append(list(keys))
        if self.down:
            return [None] * len(keys)
        out = []
        for k in keys:
            value, deadline = self.data.get(k, (None, 0.0))
            out.append((value, deadline - self.clock()) if value is not None and deadline > self.clock() else None)
        return out

    async def set_many(self, items):
        if not self.down:
            self.data.update({k: (v, self.clock() + 100) for k, v in items.items()})

    async def ping(self):
        return not self.down

    async def close(self):
        pass


def tiered(clock: Clock, ttl_s: float = 100) -> tuple[TieredPredictionCache, FakeRedis]:
    far = FakeRedis(clock)
    return TieredPredictionCache(NearCache(100, 1 << 20, clock=clock), far, ttl_s), far


def test_tiers_answer_in_order_and_redis_hits_are_kept_near():
    clock = Clock()
    cache, far = tiered(clock)
    far.data[key(1)] = (VALUE, clock.now + 50)
    asyncio.run(cache.set_many({key(0): VALUE}))
    assert asyncio.run(cache.get_many([key(0), key(1), key(2)])) == [CacheHit(VALUE, MEMORY),
                                                                       CacheHit(VALUE, REDIS), None]
    assert far.lookups == [[key(1), key(2)]]  # only what the near cache lacked
    assert asyncio.run(cache.get_many([key(1)])) == [CacheHit(VALUE, MEMORY)]
    assert far.lookups[-1] == [key(1), key(2)]  # no further Redis round trip


def test_a_copy_never_outlives_its_redis_entry():
    clock = Clock()
    cache, far = tiered(clock, ttl_s=100)
    far.data[key(1)] = (VALUE, clock.now + 5)  # written long ago: 5 s left in Redis
    assert asyncio.run(cache.get_many([key(1)]))[0].tier == REDIS
    clock.now += 4.9
    assert asyncio.run(cache.get_many([key(1)]))[0].tier == MEMORY
    clock.now += 0.1
    assert asyncio.run(cache.get_many([key(1)])) == [None]  # gone from both at the same moment
    # Written through the cache: the copy's deadline is the configured TTL, from before Redis' own.
    asyncio.run(cache.set_many({key(2): VALUE}))
    clock.now += 99.999
    assert asyncio.run(cache.get_many([key(2)]))[0].tier == MEMORY
    clock.now += 0.001
    assert cache.near.get(key(2)) is None


def test_near_cache_keeps_answering_while_redis_is_down():
    clock = Clock()
    cache, far = tiered(clock)
    asyncio.run(cache.set_many({key(0): VALUE}))
    far.down = True
    assert asyncio.run(cache.get_many([key(0), key(1)])) == [CacheHit(VALUE, MEMORY), None]
    asyncio.run(cache.set_many({key(1): VALUE}))  # Redis drops the write; the near copy keeps its TTL
    assert asyncio.run(cache.get_many([key(1)])) == [CacheHit(VALUE, MEMORY)]


# Real processes: redis-server, the predictor and transformers on free ports.

MEMORY_HITS, REDIS_HITS = 'sentiment_cache_hits_total{tier="memory"}', 'sentiment_cache_hits_total{tier="redis"}'


def digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).hexdigest().encode()


def fresh_texts(n: int = 3) -> list[str]:
    return [f"a near-cache sentence {i} about a decent film {uuid.uuid4().hex}" for i in range(n)]


def test_hits_per_tier_across_two_transformers(predictor, redis_server):
    namespace = f"near-{uuid.uuid4().hex[:8]}"
    first, second = (TransformerProcess(f"127.0.0.1:{predictor.http_port}", redis_server.url,
                                        extra=["--cache_namespace", namespace]) for _ in range(2))
    try:
        first.start()
        second.start()
        texts = fresh_texts()
        expected = predictor_probs(predictor, texts)
        np.testing.assert_allclose(seed_predict(first, texts), expected, atol=1e-6)
        assert metric(first, "sentiment_cache_misses_total") == len(texts)
        np.testing.assert_allclose(seed_predict(first, texts), expected, atol=1e-6)
        assert (metric(first, MEMORY_HITS), metric(first, REDIS_HITS)) == (len(texts), 0)
        # Another pod has nothing in memory: Redis answers once, then its own near cache. (Its first
        # request, a miss, tells it the model fingerprint that the keys carry.)
        seed_predict(second, fresh_texts(1))
        np.testing.assert_allclose(seed_predict(second, texts), expected, atol=1e-6)
        np.testing.assert_allclose(seed_predict(second, texts), expected, atol=1e-6)
        assert (metric(second, MEMORY_HITS), metric(second, REDIS_HITS)) == (len(texts), len(texts))
        assert metric(second, "sentiment_cache_misses_total") == 1
        assert metric(second, "sentiment_cache_hits_total") == 2 * len(texts)  # the tiers add up
    finally:
        first.stop()
        second.stop()


def test_a_near_copy_expires_with_its_redis_entry(predictor, redis_server):
    namespace = f"near-ttl-{uuid.uuid4().hex[:8]}"
    writer, reader = (TransformerProcess(f"127.0.0.1:{predictor.http_port}", redis_server.url,
                                         extra=["--cache_namespace", namespace]) for _ in range(2))
    admin = redis_server.client()
    try:
        writer.start()
        reader.start()
        texts = fresh_texts(1)
        seed_predict(writer, texts)
        seed_predict(reader, fresh_texts(1))  # the reader learns the model fingerprint
        [stored] = [k for k in keys_in(redis_server, namespace) if k.endswith(digest(texts[0]))]
        assert admin.pexpire(stored, 1500)  # as if written long ago: 1.5 s left of the 7 days
        seed_predict(reader, texts)  # a Redis hit, copied into the reader's memory with 1.5 s left
        seed_predict(reader, texts)
        assert (metric(reader, REDIS_HITS), metric(reader, MEMORY_HITS)) == (1, 1)
        wait_until(lambda: admin.exists(stored) == 0, 10, "Redis to expire the entry")
        np.testing.assert_allclose(seed_predict(reader, texts), predictor_probs(predictor, texts), atol=1e-6)
        assert metric(reader, "sentiment_cache_misses_total") == 2  # the near copy expired with it
    finally:
        admin.close()
        writer.stop()
        reader.stop()


def test_near_cache_answers_while_redis_is_down(predictor):
    own = RedisServer().start()
    proc = TransformerProcess(f"127.0.0.1:{predictor.http_port}", own.url, extra=["--cache_namespace", "near-down"])
    try:
        proc.start()
        texts = fresh_texts()
        expected = predictor_probs(predictor, texts)
        seed_predict(proc, texts)
        own.kill()
        np.testing.assert_allclose(seed_predict(proc, texts), expected, atol=1e-6)
        assert metric(proc, MEMORY_HITS) == len(texts)
        fresh = fresh_texts(1)  # new texts still go to the predictor, fail-open
        np.testing.assert_allclose(seed_predict(proc, fresh), predictor_probs(predictor, fresh), atol=1e-6)
        assert metric(proc, "sentiment_cache_errors_total") >= 1
    finally:
        proc.stop()
        own.stop()


def test_near_cache_can_be_turned_off(predictor, redis_server):
    proc = TransformerProcess(f"127.0.0.1:{predictor.http_port}", redis_server.url,
                              extra=["--cache_namespace", f"near-off-{uuid.uuid4().hex[:8]}"],
                              env={"NEAR_CACHE_ENTRIES": "0"})
    try:
        proc.start()
        texts = fresh_texts()
        seed_predict(proc, texts)
        seed_predict(proc, texts)
        assert (metric(proc, MEMORY_HITS), metric(proc, REDIS_HITS)) == (0, len(texts))
    finally:
        proc.stop()
