"""Prometheus metrics of the transformer, served on KServe's /metrics next to its own."""

from prometheus_client import Counter, Gauge, Histogram

CACHE_HITS = Counter("sentiment_cache_hits_total", "Texts answered from the cache, by tier (memory, redis).",
                     ["tier"])
for _tier in ("memory", "redis"):  # both series exist from the start, so rates and sums never lack one
    CACHE_HITS.labels(tier=_tier)
CACHE_MISSES = Counter("sentiment_cache_misses_total", "Texts sent to the predictor.")
CACHE_ERRORS = Counter("sentiment_cache_errors_total",
                       "Cache operations that failed (get, set) or were skipped while Redis was failing.", ["op"])
REDIS_LATENCY = Histogram("sentiment_redis_latency_seconds", "Latency of successful Redis round trips.", ["op"],
                          buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25))
PREDICTOR_LATENCY = Histogram("sentiment_predictor_latency_seconds",
                              "Latency of predictor calls, retries included.",
                              buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
PREDICTOR_ERRORS = Counter("sentiment_predictor_errors_total", "Failed predictor attempts by kind.", ["kind"])
REQUESTS = Counter("sentiment_requests_total", "Requests answered by the JSON routes, by route and status.",
                   ["route", "status"])
REQUEST_LATENCY = Histogram("sentiment_request_duration_seconds",
                            "Time to answer a JSON route request, body read included.", ["route"],
                            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
                                     30, 60))
INFLIGHT = Gauge("sentiment_inflight_requests", "Requests being answered (cache lookup or predictor call) right now.")


def observe_request(route: str, status: int, seconds: float) -> None:
    """One answered request of a JSON route (serving.fast_routes)."""
    REQUESTS.labels(route=route, status=str(status)).inc()
    REQUEST_LATENCY.labels(route=route).observe(seconds)
