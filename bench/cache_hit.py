"""Cache hits through the transformer (k6 at 100% hits, one text per request, 200 SST-2 dev sentences):
the near cache as shipped on both JSON routes, then the near cache off, so every hit is a Redis read, on
one redis-server and with `--redis_cluster` on a local 3-master Redis Cluster, in one run. Each row counts
where its texts were answered from (the near cache, Redis, the predictor) and the Redis calls that failed
open. Everything shares this machine's cores: the rows compare the sides, they are not capacity.

    python -m bench.cache_hit [--duration 15s] [--vus 32]
"""

from __future__ import annotations

from contextlib import ExitStack

from bench.common import CO_LOCATED_PREDICTOR, MINILM_DIR, add_row, command_line, table, write_result
from bench.driver import k6, warm
from harness.clients import metric
from harness.processes import PredictorProcess, RedisClusterServers, RedisServer, TransformerProcess
from harness.sst2 import sentences

V1, NO_NEAR_CACHE = "/v1/models/sentiment:predict", ["--near_cache_entries", "0"]
SIDES = (("near cache", [], (V1, "/bulk-predict")), ("one Redis node", NO_NEAR_CACHE, (V1,)),
         ("3-master Redis Cluster", [*NO_NEAR_CACHE, "--redis_cluster"], (V1,)))
ANSWERED = {"near_cache_hits": 'sentiment_cache_hits_total{tier="memory"}',
            "redis_hits": 'sentiment_cache_hits_total{tier="redis"}',
            "predictor_calls": "sentiment_cache_misses_total", "cache_errors": "sentiment_cache_errors_total"}
COLUMNS = ["cache", "route", "requests", "requests_per_s", "p50_ms", "p95_ms", "p99_ms", "failed_requests",
           *ANSWERED]


def answered(transformer: TransformerProcess) -> dict[str, float]:
    return {name: metric(transformer, series) for name, series in ANSWERED.items()}


def run(duration: str = "15s", vus: int = 32) -> list[dict]:
    hot, rows = sentences("dev.tsv", 200), []
    with ExitStack() as running:
        predictor = running.enter_context(PredictorProcess(MINILM_DIR, extra=CO_LOCATED_PREDICTOR).start())
        single, cluster = running.enter_context(RedisServer().start()), RedisClusterServers(replicas=0)
        running.callback(cluster.stop)
        cluster.start()
        for cache, extra, routes in SIDES:
            redis_url = cluster.url() if "--redis_cluster" in extra else single.url
            with TransformerProcess(f"127.0.0.1:{predictor.http_port}", redis_url, extra=extra).start() as server:
                for route in routes:
                    url = f"{server.url}{route}"
                    warm(url, hot)
                    warm(url, hot)  # the second pass reads the fingerprint's keys back: every text a hit
                    k6(url, hot, [], "3s", hit_ratio=1.0, vus=vus)  # warm-up
                    before = answered(server)
                    row = {"target": f"{cache}, {route}", "cache": cache, "route": route,
                           **k6(url, hot, [], duration, hit_ratio=1.0, vus=vus)}
                    add_row(rows, {**row, **{k: round(v - before[k]) for k, v in answered(server).items()}}, COLUMNS)
    print(table(rows, COLUMNS))
    write_result("cache_hit", {"rows": rows})
    for row in rows:  # One text per request: each from a cache or the predictor. A Redis call over
        # --redis_socket_timeout_ms (100) fails open (cache_errors): a miss, and that node skipped for 0.25 s.
        assert row["near_cache_hits"] + row["redis_hits"] + row["predictor_calls"] == row["requests"], row
    return rows


if __name__ == "__main__":
    command_line(run, __doc__)
