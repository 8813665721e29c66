"""Cache-hit path through the transformer: every request answered from its caches, no predictor call.

bench/k6/mixed.js at 100% hits (one cached sentence, one text per request), `--vus` virtual users
for `--duration` per route, on the local stack; the predictor calls during each run are counted
(they should be none).

    python -m bench.cache_hit [--duration 15s] [--vus 32]
"""

from __future__ import annotations

import argparse

from bench.common import SENTENCE, table, write_result
from bench.driver import k6, warm
from bench.stack import local_stack
from harness.clients import metric

ROUTES = ("/v1/models/sentiment:predict", "/bulk-predict")


def run(duration: str = "15s", vus: int = 32) -> list[dict]:
    rows = []
    with local_stack() as (_, _predictor, transformer):
        for route in ROUTES:
            url = f"{transformer.url}{route}"
            warm(url, [SENTENCE])
            k6(url, [SENTENCE], [], "3s", hit_ratio=1.0, vus=vus)  # warm-up
            misses_before = metric(transformer, "sentiment_cache_misses_total")
            result = k6(url, [SENTENCE], [], duration, hit_ratio=1.0, vus=vus)
            result["predictor_calls_during_run"] = metric(transformer, "sentiment_cache_misses_total") - misses_before
            rows.append({"route": route, **result})
            print(table(rows[-1:], ["route", "requests_per_s", "p50_ms", "p99_ms"]), flush=True)
    print(table(rows, ["route", "vus", "requests_per_s", "p50_ms", "p95_ms", "p99_ms", "failed_requests",
                       "predictor_calls_during_run"]))
    write_result("cache_hit", {"rows": rows, "workers": 1, "sentence": SENTENCE})
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", default="15s")
    parser.add_argument("--vus", type=int, default=32)
    args = parser.parse_args()
    run(args.duration, args.vus)
