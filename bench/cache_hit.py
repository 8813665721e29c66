"""Cache-hit path through the transformer: every request answered from its caches, no predictor call.

bench/k6/mixed.js at 100% hits (one cached sentence, one text per request), `--vus` virtual users
for `--duration` per route, on the local stack; the predictor calls during each run are counted
(they should be none).

    python -m bench.cache_hit [--duration 15s] [--vus 32]
"""

from __future__ import annotations

from bench.common import SENTENCE, add_row, command_line, table, write_result
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
            add_row(rows, {"route": route, **result}, ["route", "requests_per_s", "p50_ms", "p99_ms"])
    print(table(rows, ["route", "vus", "requests_per_s", "p50_ms", "p95_ms", "p99_ms", "failed_requests",
                       "predictor_calls_during_run"]))
    write_result("cache_hit", {"rows": rows, "workers": 1, "sentence": SENTENCE})
    return rows


if __name__ == "__main__":
    command_line(run, __doc__)
