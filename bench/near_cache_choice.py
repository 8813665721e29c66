"""Why the near cache is ours and not redis-py's client-side caching: the cost of one cached lookup.

redis-py offers server-assisted client-side caching (RESP3 `CLIENT TRACKING`, `cache_config=`),
but only on the synchronous client (redis 8.1: `redis.asyncio.Redis` takes no `cache_config`).
The transformer is asynchronous, so it could use it only from a thread (`asyncio.to_thread`) or by
blocking the event loop on every miss. This measures one lookup of one key (the k6 mix: one text
per request), all hits, on uvloop:

- `redis MGET (async)`: the transformer without a near cache;
- a thread hop around a dictionary lookup: the least any synchronous client-side cache costs
  when used from the event loop;
- `redis-py client-side cache`, in a thread and on the loop (not usable as is: a miss would block
  the loop for a network round trip), when the server allows it: redis-py refuses client-side
  caching with servers before Redis 7.4 (the manifests run 7.2, Debian 12 ships 7.0);
- `near cache (TieredPredictionCache)`: the near cache as the transformer calls it.

    python -m bench.near_cache_choice [--lookups 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import time

import redis
import uvloop
from redis.cache import CacheConfig

from bench.common import table, write_result
from harness.processes import RedisServer
from transformer.cache import RedisPredictionCache
from transformer.near_cache import NearCache, TieredPredictionCache

VALUE = b'[["NEGATIVE","POSITIVE"],[0.0012999999999999678,0.9987000226974487]]'


def keys(n: int) -> list[str]:
    return [f"bench:sentiment:fp:s1:{hashlib.sha256(str(i).encode()).hexdigest()}" for i in range(n)]


async def timed(lookup, hot: list[str], lookups: int) -> dict:
    for key in hot:  # warm every tier
        await lookup(key)
    samples = []
    for i in range(lookups):
        start = time.perf_counter()
        value = await lookup(hot[i % len(hot)])
        samples.append(time.perf_counter() - start)
        assert value is not None
    samples.sort()
    return {"lookups_per_s": lookups / sum(samples), "p50_us": samples[len(samples) // 2] * 1e6,
            "p99_us": samples[int(len(samples) * 0.99)] * 1e6}


async def measure(url: str, lookups: int) -> list[dict]:
    hot = keys(200)
    seed = redis.Redis.from_url(url)
    seed.mset(dict.fromkeys(hot, VALUE))
    seed.close()
    rows = []

    far = RedisPredictionCache(url, ttl_s=3600)

    async def mget(key):
        return (await far.get_many([key]))[0]

    rows.append({"lookup": "redis MGET (async)", **await timed(mget, hot, lookups)})

    # The floor of any synchronous client-side cache used from the event loop: a thread hop around
    # a dictionary lookup (what redis-py's cache does on a local hit, minus its locking).
    local = dict.fromkeys(hot, VALUE)

    async def thread_hop(key):
        return await asyncio.to_thread(local.get, key)

    rows.append({"lookup": "thread hop around a dict lookup (floor of a sync client cache)",
                 **await timed(thread_hop, hot, lookups)})

    try:
        tracking = redis.Redis.from_url(url, protocol=3, cache_config=CacheConfig(max_size=10_000))
        tracking.ping()
    except redis.RedisError as exc:  # redis-py refuses servers before 7.4
        rows.append({"lookup": "redis-py client-side cache", "refused": f"{type(exc).__name__}: {exc}"})
    else:
        async def in_thread(key):
            return await asyncio.to_thread(tracking.get, key)

        async def on_loop(key):
            return tracking.get(key)

        rows.append({"lookup": "redis-py client-side cache, in a thread", **await timed(in_thread, hot, lookups)})
        rows.append({"lookup": "redis-py client-side cache, on the loop", **await timed(on_loop, hot, lookups)})
        tracking.close()

    tiered = TieredPredictionCache(NearCache(100_000, 64 << 20), far, ttl_s=3600)

    async def near(key):
        return (await tiered.get_many([key]))[0]

    rows.append({"lookup": "near cache (TieredPredictionCache)", **await timed(near, hot, lookups)})
    await far.close()
    return rows


def run(lookups: int = 20_000) -> list[dict]:
    server = RedisServer().start()
    try:
        version = server.client().info("server")["redis_version"]
        rows = uvloop.run(measure(server.url, lookups))
    finally:
        server.stop()
    print(f"redis-server {version}, redis-py {redis.__version__}")
    print(table(rows, ["lookup", "lookups_per_s", "p50_us", "p99_us", "refused"]))
    write_result("near_cache_choice", {
        "description": "one cached lookup of one key, all hits, uvloop, local redis-server; see the module docstring",
        "redis_server": version, "redis_py": redis.__version__, "rows": rows, "lookups": lookups})
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lookups", type=int, default=20_000)
    run(parser.parse_args().lookups)
