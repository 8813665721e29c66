"""Cache-hit path through the transformer: every request answered from Redis, no predictor call.

    python -m bench.cache_hit [--seconds 15] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import json

import httpx

from bench.common import SENTENCE, hey, table, write_result
from bench.stack import local_stack


def run(seconds: int = 15, concurrency: int = 32) -> list[dict]:
    rows = []
    with local_stack() as (_, _predictor, transformer):
        body = json.dumps({"text": [SENTENCE]})
        r = httpx.post(f"{transformer.url}/v1/models/sentiment:predict", content=body)  # fills the cache
        assert r.status_code == 200, r.text
        for route in ("/v1/models/sentiment:predict", "/bulk-predict"):
            hey(f"{transformer.url}{route}", body, concurrency, 3)  # warm-up
            misses_before = _metric(transformer, "sentiment_cache_misses_total")
            result = hey(f"{transformer.url}{route}", body, concurrency, seconds)
            result["predictor_calls_during_run"] = _metric(transformer, "sentiment_cache_misses_total") - \
                misses_before
            rows.append({"route": route, **result})
            print(table(rows[-1:], ["route", "requests_per_s", "p50_ms", "p99_ms"]), flush=True)
    print(table(rows, ["route", "concurrency", "requests_per_s", "p50_ms", "p95_ms", "p99_ms", "statuses",
                       "predictor_calls_during_run"]))
    write_result("cache_hit", {"rows": rows, "workers": 1, "sentence": SENTENCE})
    return rows


def _metric(server, name: str) -> float:
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    run(args.seconds, args.concurrency)
