"""Cache hits through a Redis Cluster (3 masters) and through one Redis node, in the same run, with k6.

One predictor (the shared MiniLM model) and, one after the other, two transformers with the near cache
off, so every hit is a Redis read: one on a single redis-server, one with `--redis_cluster` on a local
3-master cluster (harness.RedisClusterServers, no replicas). The same hot sentences are cached in each,
then bench/k6/mixed.js runs at 100% hits, one text per request, `--vus` virtual users for `--duration`
per side. Every k6 request is checked to have been a Redis hit (the transformer's hit counter).
Everything shares this machine's cores: the figures compare the two sides, they are not capacity.

    python -m bench.cluster_cache [--duration 10s] [--vus 10]
"""

from __future__ import annotations

import json
from contextlib import ExitStack

from bench.common import MINILM_DIR, add_row, command_line, table, write_result
from bench.driver import k6, warm
from harness.clients import metric
from harness.processes import PredictorProcess, RedisClusterServers, RedisServer, TransformerProcess
from harness.sst2 import sentences

COLUMNS = ["target", "requests", "requests_per_s", "p50_ms", "p95_ms", "p99_ms", "max_ms", "failed_requests",
           "redis_hits"]
REDIS_HITS = 'sentiment_cache_hits_total{tier="redis"}'


def run(duration: str = "10s", vus: int = 10) -> dict:
    hot, cold = sentences("dev.tsv", 200), sentences("train.tsv", 10)
    rows = []
    with ExitStack() as running:
        predictor = running.enter_context(PredictorProcess(MINILM_DIR).start())
        single = running.enter_context(RedisServer().start())
        cluster = RedisClusterServers(replicas=0)
        running.callback(cluster.stop)
        cluster.start()
        for target, url, extra in (("one node", single.url, []),
                                   ("cluster, 3 masters", cluster.url(), ["--redis_cluster"])):
            with TransformerProcess(f"127.0.0.1:{predictor.http_port}", url,
                                    extra=[*extra, "--near_cache_entries", "0"]).start() as transformer:
                endpoint = f"{transformer.url}/v1/models/sentiment:predict"
                warm(endpoint, hot)
                warm(endpoint, hot)  # the second pass reads the fingerprint's keys back: every text a hit
                hits = metric(transformer, REDIS_HITS)
                row = {"target": target, **k6(endpoint, hot, cold, duration, hit_ratio=1.0, vus=vus)}
                row["redis_hits"] = metric(transformer, REDIS_HITS) - hits
                assert row["redis_hits"] == row["requests"], row  # each request one text, each a Redis hit
                add_row(rows, row, COLUMNS)
    print(table(rows, COLUMNS))
    one, many = rows
    summary = {"one_node_hits_per_s": one["requests_per_s"], "cluster_hits_per_s": many["requests_per_s"],
               "cluster_vs_one_node_hits_per_s": many["requests_per_s"] / one["requests_per_s"],
               "one_node_p99_ms": one["p99_ms"], "cluster_p99_ms": many["p99_ms"]}
    print(json.dumps(summary, indent=2))
    write_result("cluster_cache", {
        "description": "k6 bench/k6/mixed.js at 100% hits, one text per request, against a transformer on one "
                       "redis-server and then on a local 3-master Redis Cluster (--redis_cluster), near cache off, "
                       "one after the other in one run; shared MiniLM predictor, everything on this machine's cores",
        "summary": summary, "series": rows})
    return summary


if __name__ == "__main__":
    command_line(run, __doc__)
