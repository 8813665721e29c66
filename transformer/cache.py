"""The prediction cache: a small async interface, what every Redis tier shares, and the single-node tier.

The cluster tier (`cluster_cache.ClusterPredictionCache`) takes the same `RedisOptions`, keeps the
same fail-open bookkeeping (`FailOpen`, one per shard there) and reads TTLs the same way
(`with_remaining_ttl`), so the two differ only in how keys reach servers.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from . import metrics

log = logging.getLogger(__name__)

REDIS_FAULTS = (TimeoutError, RedisError, OSError)
"""What a Redis call may raise that the cache turns into a miss (asyncio's timeouts are TimeoutError)."""


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


class RedisTier(PredictionCache, Protocol):
    """A Redis tier (one node or a cluster): also each value's remaining TTL, for the near cache's copies."""

    async def get_many_expiring(self, keys: Sequence[str]) -> list[tuple[bytes, float] | None]: ...


class RedisReads:
    """`get_many` and `get_many_expiring` of a Redis tier, over its one `_get(keys, with_ttl)`."""

    async def _get(self, keys: Sequence[str], with_ttl: bool = False) -> list: ...

    async def get_many(self, keys: Sequence[str]) -> list[CacheHit | None]:
        values = await self._get(keys)
        return [None if v is None else CacheHit(v, "redis") for v in values]

    async def get_many_expiring(self, keys: Sequence[str]) -> list[tuple[bytes, float] | None]:
        """Each found value with the seconds it has left in Redis (inf without a TTL), in one round trip
        (per node, for a cluster)."""
        return await self._get(keys, with_ttl=True)


@dataclass(frozen=True)
class RedisOptions:
    """How the transformer talks to Redis, the same for one node and for every node of a cluster."""

    socket_timeout_s: float = 0.1
    connect_timeout_s: float = 0.2
    health_check_interval_s: float = 10
    tcp_keepalive_s: int = 30
    username: str | None = None
    password: str | None = None
    ca_cert: str | None = None
    max_connections: int = 64
    min_pause_s: float = 0.25
    max_pause_s: float = 5.0

    def client_kwargs(self, url: str) -> dict:
        """Keyword arguments for redis-py's `from_url`, single-node or cluster. User and password in the URL
        win over these (redis-py's rule)."""
        # TLS (rediss://) always verifies the certificate and the host name; only the CA bundle is configurable.
        tls = {"ssl_ca_certs": self.ca_cert} if self.ca_cert and url.startswith("rediss://") else {}
        return dict(username=self.username or None, password=self.password or None,
                    socket_timeout=self.socket_timeout_s, socket_connect_timeout=self.connect_timeout_s,
                    socket_keepalive=True, socket_keepalive_options=keepalive_options(self.tcp_keepalive_s),
                    health_check_interval=self.health_check_interval_s, max_connections=self.max_connections, **tls)


def keepalive_options(idle_s: int) -> dict[int, int]:
    """TCP keepalive probes after `idle_s` idle seconds, then every 5 s; a peer gone silent is dropped after 3.

    The probes are traffic to NAT and load balancers that forget idle flows (Azure's Load Balancer, AKS'
    egress, after 4 minutes by default), so a pooled connection is not cut silently while the service idles.
    """
    names = {"TCP_KEEPIDLE": idle_s, "TCP_KEEPINTVL": 5, "TCP_KEEPCNT": 3}
    return {getattr(socket, name): value for name, value in names.items() if hasattr(socket, name)}


class FailOpen:
    """The fail-open bookkeeping of one Redis endpoint: the node, or one shard of a cluster.

    A fault is counted (`sentiment_cache_errors_total{op}`) and logged, and the endpoint is skipped for
    a pause that starts at `min_pause_s` and doubles up to `max_pause_s` while the faults go on, so a
    dead Redis costs requests nothing; the first success after it ends the pause.
    """

    def __init__(self, name: str, min_pause_s: float, max_pause_s: float,
                 clock: Callable[[], float] = time.monotonic):
        self.name = name
        self.min_pause_s = min_pause_s
        self.max_pause_s = max_pause_s
        self.clock = clock
        self.pause_s = 0.0
        self.skip_until = 0.0

    def available(self) -> bool:
        return self.clock() >= self.skip_until

    def skipped(self) -> None:
        metrics.CACHE_ERRORS.labels(op="skipped").inc()

    def succeeded(self) -> None:
        if self.pause_s:
            log.info("%s is reachable again; cache resumed", self.name)
        self.pause_s = 0.0

    def failed(self, op: str, exc: BaseException) -> None:
        metrics.CACHE_ERRORS.labels(op=op).inc()
        self.pause_s = min(self.max_pause_s, max(self.min_pause_s, self.pause_s * 2))
        self.skip_until = self.clock() + self.pause_s
        log.warning("%s: %s failed (%s: %s); serving without it for %.2fs", self.name, op, type(exc).__name__, exc,
                    self.pause_s)


def with_remaining_ttl(values: Sequence[bytes | None], pttls: Sequence[int]) -> list[tuple[bytes, float] | None]:
    """MGET values and each key's PTTL -> (value, seconds left), inf without expiry. PTTL answers -1 for a
    key without expiry and -2 for one gone since the MGET: a miss."""
    return [None if v is None or t == -2 else (v, float("inf") if t == -1 else t / 1000)
            for v, t in zip(values, pttls, strict=True)]


class RedisPredictionCache(RedisReads):
    """One Redis node behind one MGET per lookup and one pipeline per write-back, failing open.

    Faults (down, slow, dropped connections) are treated as misses (`FailOpen`); the next attempt
    after a pause reconnects by itself. Stale pooled connections are caught by redis-py's pool, which
    checks a connection for a close by the server before handing it out, by health checks, and by a
    single immediate retry.
    """

    def __init__(self, url: str, ttl_s: int, options: RedisOptions | None = None):
        options = options or RedisOptions()
        self.ttl_s = ttl_s
        self.client = aioredis.Redis.from_url(
            url, retry=Retry(ExponentialBackoff(cap=0.01, base=0.001), retries=1),
            retry_on_error=[RedisConnectionError, ConnectionResetError, BrokenPipeError], **options.client_kwargs(url))
        self.fail_open = FailOpen("redis", options.min_pause_s, options.max_pause_s)

    async def _get(self, keys: Sequence[str], with_ttl: bool = False) -> list:
        if not keys:
            return []
        if not self.fail_open.available():
            self.fail_open.skipped()
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
        except REDIS_FAULTS as exc:
            self.fail_open.failed("get", exc)
            return [None] * len(keys)
        metrics.REDIS_LATENCY.labels(op="get").observe(time.perf_counter() - start)
        self.fail_open.succeeded()
        return with_remaining_ttl(values, ttls) if with_ttl else values

    async def set_many(self, items: Mapping[str, bytes]) -> None:
        if not items or not self.fail_open.available():
            return
        start = time.perf_counter()
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for key, value in items.items():
                    pipe.set(key, value, ex=self.ttl_s)
                await pipe.execute()
        except REDIS_FAULTS as exc:
            self.fail_open.failed("set", exc)
            return
        metrics.REDIS_LATENCY.labels(op="set").observe(time.perf_counter() - start)
        self.fail_open.succeeded()

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except REDIS_FAULTS:
            return False

    async def close(self) -> None:
        await self.client.aclose()
