"""The prediction cache: a small async interface and its fail-open Redis implementation."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import NamedTuple, Protocol

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import metrics

log = logging.getLogger(__name__)


class CacheHit(NamedTuple):
    """A cached value and the tier that had it (`memory` or `redis`, the hit counters' label)."""

    value: bytes
    tier: str


class PredictionCache(Protocol):
    """What the transformer needs from a cache. Implementations never raise on backend faults."""

    async def get_many(self, keys: Sequence[str]) -> list[CacheHit | None]: ...

    async def set_many(self, items: Mapping[str, bytes]) -> None: ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


class RedisPredictionCache:
    """Redis behind one MGET per lookup and one pipeline per write-back, failing open.

    Faults (down, slow, dropped connections) are logged, counted and treated as misses. After a
    fault the cache is skipped for a short, growing pause (`min_pause_s`..`max_pause_s`) so a
    dead Redis costs requests nothing; the next attempt reconnects by itself. Stale pooled
    connections are caught by redis-py's health checks and a single immediate retry.
    """

    def __init__(self, url: str, ttl_s: int, socket_timeout_s: float = 0.1, connect_timeout_s: float = 0.2,
                 health_check_interval_s: float = 10, password: str | None = None, ca_cert: str | None = None,
                 min_pause_s: float = 0.25, max_pause_s: float = 5.0, max_connections: int = 64):
        self.ttl_s = ttl_s
        # TLS (rediss://) always verifies the server; only the CA bundle is configurable.
        tls = {"ssl_ca_certs": ca_cert} if ca_cert and url.startswith("rediss://") else {}
        self.client = aioredis.Redis.from_url(
            url,
            password=password or None,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=connect_timeout_s,
            socket_keepalive=True,
            health_check_interval=health_check_interval_s,
            retry=Retry(ExponentialBackoff(cap=0.01, base=0.001), retries=1),
            retry_on_error=[RedisConnectionError, ConnectionResetError, BrokenPipeError],
            max_connections=max_connections,
            **tls,
        )
        self.min_pause_s = min_pause_s
        self.max_pause_s = max_pause_s
        self._pause_s = 0.0
        self._skip_until = 0.0

    def _available(self) -> bool:
        return time.monotonic() >= self._skip_until

    def _succeeded(self) -> None:
        if self._pause_s:
            log.info("redis is reachable again; cache resumed")
        self._pause_s = 0.0

    def _failed(self, op: str, exc: BaseException) -> None:
        metrics.CACHE_ERRORS.labels(op=op).inc()
        self._pause_s = min(self.max_pause_s, max(self.min_pause_s, self._pause_s * 2))
        self._skip_until = time.monotonic() + self._pause_s
        log.warning("redis %s failed (%s: %s); serving without cache for %.2fs", op, type(exc).__name__, exc,
                    self._pause_s)

    async def get_many(self, keys: Sequence[str]) -> list[CacheHit | None]:
        values = await self._get(keys)
        return [None if v is None else CacheHit(v, "redis") for v in values]

    async def get_many_expiring(self, keys: Sequence[str]) -> list[tuple[bytes, float] | None]:
        """Each found value with the seconds it has left in Redis (inf without a TTL), in one round trip."""
        return await self._get(keys, with_ttl=True)

    async def _get(self, keys: Sequence[str], with_ttl: bool = False) -> list:
        if not keys:
            return []
        if not self._available():
            metrics.CACHE_ERRORS.labels(op="skipped").inc()
            return [None] * len(keys)
        start = time.perf_counter()
        try:
            if with_ttl:
                async with self.client.pipeline(transaction=False) as pipe:
                    pipe.mget(keys)
                    for key in keys:
                        pipe.pttl(key)
                    values, *ttls = await pipe.execute()
            else:
                values = await self.client.mget(keys)
        except (TimeoutError, RedisError, OSError, RedisTimeoutError) as exc:
            self._failed("get", exc)
            return [None] * len(keys)
        metrics.REDIS_LATENCY.labels(op="get").observe(time.perf_counter() - start)
        self._succeeded()
        if not with_ttl:
            return values
        # PTTL answers -1 for a key without expiry and -2 for one gone since the MGET (a miss).
        return [None if v is None or t == -2 else (v, float("inf") if t == -1 else t / 1000)
                for v, t in zip(values, ttls, strict=True)]

    async def set_many(self, items: Mapping[str, bytes]) -> None:
        if not items or not self._available():
            return
        start = time.perf_counter()
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for key, value in items.items():
                    pipe.set(key, value, ex=self.ttl_s)
                await pipe.execute()
        except (TimeoutError, RedisError, OSError) as exc:
            self._failed("set", exc)
            return
        metrics.REDIS_LATENCY.labels(op="set").observe(time.perf_counter() - start)
        self._succeeded()

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (TimeoutError, RedisError, OSError):
            return False

    async def close(self) -> None:
        await self.client.aclose()
