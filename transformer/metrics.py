"""Prometheus metrics of the transformer, served on KServe's /metrics next to its own.

Every label value known in advance has its series from the start (Prometheus' instrumentation
advice): a series that appears only with the first error leaves dashboards saying "No data" and
gives a `rate()` nothing to work from. The predictor client declares its own error kinds.
"""

from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram

from serving.errors import HTTP_STATUSES
from serving.fast_routes import CLIENT_CLOSED_REQUEST, Observer

CACHE_HITS = Counter("sentiment_cache_hits_total", "Texts answered from the cache, by tier (memory, redis).",
                     ["tier"])
for _tier in ("memory", "redis"):
    CACHE_HITS.labels(tier=_tier)
CACHE_MISSES = Counter("sentiment_cache_misses_total", "Texts sent to the predictor.")
CACHE_ERRORS = Counter("sentiment_cache_errors_total",
                       "Cache operations that failed (get, set) or were skipped while Redis was failing.", ["op"])
for _op in ("get", "set", "skipped"):
    CACHE_ERRORS.labels(op=_op)
REDIS_LATENCY = Histogram("sentiment_redis_latency_seconds", "Latency of successful Redis round trips.", ["op"],
                          buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25))
for _op in ("get", "set"):
    REDIS_LATENCY.labels(op=_op)
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


def request_observer(routes: Iterable[str]) -> Observer:
    """`observe_request`, with the series of `routes` declared for every status they can answer."""
    for route in routes:
        REQUEST_LATENCY.labels(route=route)
        for status in (200, CLIENT_CLOSED_REQUEST, *HTTP_STATUSES):
            REQUESTS.labels(route=route, status=str(status))
    return observe_request
