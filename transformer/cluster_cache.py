"""The Redis Cluster tier: keys routed by hash slot, each shard failing open on its own.

Keys carry no hash tag, so they spread over every slot and every shard. A lookup groups its keys
by slot (MGET takes the keys of one slot only), sends one pipeline per node, all at once, and
reads each slot's values from its own reply: a shard that is down, slow or failing over costs its
own keys (misses), never the others'. redis-py's `mget_nonatomic` is not used for that reason: it
sends every node's commands through one pipeline that raises as a whole when one node fails, and
its retry closes the connections of every node, including those other requests are reading from.

Each shard has its own `FailOpen`: a dead master is skipped for a pause, as the single-node cache
skips a dead Redis, while the other shards keep answering. A pause is per node address; when a
replica takes over, its slots move to another address, which is not paused, so the keys come
back as soon as the slot map is read again. The slot map is re-read (CLUSTER SLOTS through the
URL's endpoint) after a shard faults, at most once a second while one is paused, and at once when
a node answers MOVED (a failover or a resharding), after which those keys are asked again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    MaxConnectionsError,
    MovedError,
    RedisClusterException,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError

from . import metrics
from .cache import REDIS_FAULTS, FailOpen, RedisOptions, RedisReads, with_remaining_ttl

log = logging.getLogger(__name__)

FAULTS = (*REDIS_FAULTS, RedisClusterException)
"""What a cluster call may raise that the cache turns into misses (redis-py's cluster errors are not RedisErrors)."""

REDIRECTS = (MovedError, AskError, TryAgainError)
"""Answers that mean "the slot is elsewhere (or moving) now": read the slot map again, not a fault."""

REREAD_WHILE_PAUSED_S = 1.0
"""How often the slot map is re-read while a shard is paused, to notice a replica that took over."""


def by_slot(keys: Sequence[str]) -> dict[int, list[int]]:
    """Positions of `keys` grouped by hash slot, in order (one MGET per slot)."""
    slots: dict[int, list[int]] = {}
    for i, key in enumerate(keys):
        slots.setdefault(key_slot(key.encode()), []).append(i)
    return slots


class Redirected(Exception):
    """A node answered MOVED/ASK/TRYAGAIN: its slot map entry is out of date."""


class ClusterPredictionCache(RedisReads):
    """`RedisTier` over a Redis Cluster (`--redis_cluster`): per-slot MGETs, per-node pipelines, per-shard fail-open.

    `nodes_at_url_host`: reach every node at the URL's host name, keeping the port the cluster reports,
    for services whose nodes report addresses their TLS certificate does not name (Azure Cache for
    Redis: every shard of a cache is on its host name, on its own port).
    """

    def __init__(self, url: str, ttl_s: int, options: RedisOptions | None = None, nodes_at_url_host: bool = False):
        options = options or RedisOptions()
        self.ttl_s = ttl_s
        self.min_pause_s, self.max_pause_s = options.min_pause_s, options.max_pause_s
        # One try per pipeline: redis-py retries a failed cluster pipeline by closing every node's connections.
        # The cache's own budget for one round: a connection and a reply.
        self.deadline_s = options.connect_timeout_s + options.socket_timeout_s
        host = urlsplit(url).hostname
        self.client = RedisCluster.from_url(
            url, retry=Retry(NoBackoff(), 0),
            # A cache serves what it can: a partial slot map still routes the covered slots.
            require_full_coverage=False,
            # Rediscover through the URL's endpoint (a configuration or discovery endpoint, or a Service
            # over the nodes), which keeps answering while the nodes behind it are replaced.
            dynamic_startup_nodes=False,
            address_remap=(lambda address: (host, address[1])) if nodes_at_url_host else None,
            **options.client_kwargs(url))
        self.discovery = FailOpen("redis cluster discovery", self.min_pause_s, self.max_pause_s)
        self.shards: dict[str, FailOpen] = {}
        self._mapped = False
        self._discovering: asyncio.Task | None = None
        self._rereading: asyncio.Task | None = None
        self._reread_at = float("-inf")

    def _shard(self, node: ClusterNode) -> FailOpen:
        shard = self.shards.get(node.name)
        if shard is None:
            shard = self.shards[node.name] = FailOpen(f"redis node {node.name}", self.min_pause_s, self.max_pause_s)
        return shard

    async def _get(self, keys: Sequence[str], with_ttl: bool = False) -> list:
        found: list = [None] * len(keys)
        if not keys or not await self._discovered("get"):
            return found
        start = time.perf_counter()

        def commands(slot_keys: list[str]) -> list[tuple]:
            return [("MGET", *slot_keys), *(("PTTL", key) for key in slot_keys)] if with_ttl else [("MGET", *slot_keys)]

        def store(positions: list[int], replies: list) -> None:
            values = replies[0]
            if with_ttl:
                values = with_remaining_ttl(values, replies[1:])
            for i, value in zip(positions, values, strict=True):
                found[i] = value

        faults = await self._each_node("get", keys, by_slot(keys), commands, store)
        if not faults:
            metrics.REDIS_LATENCY.labels(op="get").observe(time.perf_counter() - start)
        return found

    async def set_many(self, items: Mapping[str, bytes]) -> None:
        if not items or not await self._discovered("set", count_skip=False):
            return
        keys = list(items)
        start = time.perf_counter()

        def commands(slot_keys: list[str]) -> list[tuple]:
            return [("SET", key, items[key], "EX", self.ttl_s) for key in slot_keys]

        faults = await self._each_node("set", keys, by_slot(keys), commands, lambda positions, replies: None,
                                       count_skip=False)
        if not faults:
            metrics.REDIS_LATENCY.labels(op="set").observe(time.perf_counter() - start)

    async def _discovered(self, op: str, count_skip: bool = True) -> bool:
        """Whether the slot map is known. The first reading (CLUSTER SLOTS, and COMMAND for redis-py's key
        parser: a large reply) runs in the background: a request waits for it up to the cache's budget and
        misses if it is still under way, without cancelling it."""
        if self._mapped:  # afterwards redis-py's pipelines read the map again themselves if it is dropped
            return True
        if not self.discovery.available():
            if count_skip:
                self.discovery.skipped()
            return False
        if self._discovering is None:
            self._discovering = asyncio.create_task(self._discover(op))
        try:
            async with asyncio.timeout(self.deadline_s):
                return await asyncio.shield(self._discovering)
        except TimeoutError:
            return False

    async def _discover(self, op: str) -> bool:
        try:
            await self.client.initialize()
        except FAULTS as exc:
            self.discovery.failed(op, exc)
            return False
        finally:
            self._discovering = None
        self._mapped = True
        self.discovery.succeeded()
        return True

    async def _each_node(self, op: str, keys: Sequence[str], slots: dict[int, list[int]], commands, store,
                         count_skip: bool = True) -> int:
        """Send each slot's `commands` to the node that owns it, one pipeline per node, all nodes at once, and
        `store` each slot's replies. Slots whose node answered MOVED are sent once more after the slot map
        is read again. All of it within the cache's budget (`deadline_s`); returns how many nodes (or
        unmapped slots) faulted, were skipped or ran out of time."""
        deadline = asyncio.get_running_loop().time() + self.deadline_s
        faults = 0
        for attempt in (1, 2):
            by_node: dict[str, tuple[ClusterNode, list[int]]] = {}
            for slot, positions in slots.items():
                try:
                    node = self.client.get_node_from_key(keys[positions[0]])
                except SlotNotCoveredError:  # a partial slot map: these keys miss until it is read again
                    metrics.CACHE_ERRORS.labels(op=op).inc()
                    self._reread_soon()
                    faults += 1
                    continue
                by_node.setdefault(node.name, (node, []))[1].append(slot)
            outcomes = await asyncio.gather(*(
                self._on_node(op, node, [[keys[i] for i in slots[s]] for s in node_slots], commands, deadline,
                              count_skip)
                for node, node_slots in by_node.values()))
            redirected: dict[int, list[int]] = {}
            for (_, node_slots), outcome in zip(by_node.values(), outcomes, strict=True):
                if isinstance(outcome, Redirected):
                    redirected.update((s, slots[s]) for s in node_slots)
                elif isinstance(outcome, list):
                    for s, replies in zip(node_slots, outcome, strict=True):
                        store(slots[s], replies)
                else:
                    faults += 1
            if not redirected:
                return faults
            if attempt == 2 or not await self._reread(deadline):
                metrics.CACHE_ERRORS.labels(op=op).inc()
                return faults + 1
            slots = redirected
        raise AssertionError("unreachable")

    async def _on_node(self, op: str, node: ClusterNode, slot_keys: list[list[str]], commands, deadline: float,
                       count_skip: bool) -> list[list] | Redirected | None:
        """One pipeline of every slot's `commands` to `node`: each slot's replies, `Redirected`, or None after
        a fault (counted, logged and paused by the shard's `FailOpen`)."""
        shard = self._shard(node)
        if not shard.available():
            if count_skip:
                shard.skipped()
            self._reread_soon()
            return None
        groups = [commands(keys) for keys in slot_keys]
        try:
            async with asyncio.timeout_at(deadline):
                replies = await self._pipeline(node, [c for group in groups for c in group])
        except Redirected as redirect:
            return redirect
        except FAULTS as exc:
            shard.failed(op, exc)
            self._reread_soon()
            return None
        shard.succeeded()
        out, at = [], 0
        for group in groups:
            out.append(replies[at:at + len(group)])
            at += len(group)
        return out

    async def _pipeline(self, node: ClusterNode, commands: list[tuple]) -> list:
        """Replies to `commands`, sent to `node` in one pipeline; the first error is raised.

        A connection error on the first try is, most likely, a pooled connection the server closed
        while it sat idle (its `timeout`, Azure's 10 minutes): redis-py's cluster pool hands those out
        without the check its single-node pool makes, so the node's idle connections are dropped and
        the commands are sent once more, on a new connection.
        """
        for attempt in (1, 2):
            pipe = self.client.pipeline()
            for args in commands:
                pipe.execute_command(*args)
            try:
                replies = await self._execute(pipe)
            except RedisConnectionError as exc:
                if attempt == 2 or isinstance(exc, MaxConnectionsError):
                    raise
                await self._drop_idle_connections(node)
                continue
            error = next((r for r in replies if isinstance(r, Exception)), None)
            if isinstance(error, RedisConnectionError) and attempt == 1:
                await self._drop_idle_connections(node)
                continue
            if isinstance(error, REDIRECTS):
                raise Redirected(str(error))
            if error is not None:
                raise error
            return replies
        raise AssertionError("unreachable")

    @staticmethod
    async def _execute(pipe) -> list:
        try:
            return await pipe.execute(raise_on_error=False, allow_redirections=False)
        except RuntimeError as exc:
            # uvloop (the servers' event loop) raises this, not a ConnectionError, when it writes to a pooled
            # connection whose transport was closed under it (its node killed: "the handler is closed"), and
            # redis-py passes it through. It is a lost connection like any other: resent, then a fault.
            raise RedisConnectionError(f"connection lost: {exc}") from exc

    @staticmethod
    async def _drop_idle_connections(node: ClusterNode) -> None:
        # What redis-py itself does to a node after a connection error (RedisCluster._execute_command).
        node.update_active_connections_for_reconnect()
        await node.disconnect_free_connections()

    async def _reread(self, deadline: float) -> bool:
        """Read the slot map again (one reading at a time; callers wait for the one under way, until `deadline`).
        Whether it was read in time."""
        if self._rereading is None:
            self._rereading = asyncio.create_task(self._read_slot_map())
        try:
            async with asyncio.timeout_at(deadline):
                return await asyncio.shield(self._rereading)
        except TimeoutError:
            return False

    def _reread_soon(self) -> None:
        """Read the slot map again in the background, at most once every `REREAD_WHILE_PAUSED_S`."""
        if self._rereading is None and time.monotonic() - self._reread_at >= REREAD_WHILE_PAUSED_S:
            self._rereading = asyncio.create_task(self._read_slot_map())

    async def _read_slot_map(self) -> bool:
        try:
            for attempt in (1, 2):  # the endpoint's pooled connection may have been closed while idle
                try:
                    # redis-py re-reads the map itself only after its own retries, which this cache turns off.
                    await self.client.nodes_manager.initialize()
                    return True
                except FAULTS as exc:
                    if attempt == 2:
                        log.info("redis cluster: reading the slot map failed (%s: %s); keeping the last one",
                                 type(exc).__name__, exc)
            return False
        finally:
            self._reread_at = time.monotonic()
            self._rereading = None

    async def ping(self) -> bool:
        """Every master answers."""
        try:
            await self.client.initialize()
            return bool(await self.client.ping(target_nodes=RedisCluster.PRIMARIES))
        except FAULTS:
            return False

    async def close(self) -> None:
        for task in (self._discovering, self._rereading):
            if task is not None:
                task.cancel()
        await self.client.aclose()
