"""`python -m transformer`: parse settings, wire cache, predictor client and routes, serve (serving.startup)."""

from __future__ import annotations

import sys

from serving.fast_routes import FastJsonRoutes
from serving.settings import parse_settings
from serving.startup import serve

from . import metrics
from .cache import RedisPredictionCache
from .caching import CachedClassifier
from .cluster_cache import ClusterPredictionCache
from .keys import CacheKeys
from .model import SentimentTransformer
from .near_cache import NearCache, TieredPredictionCache
from .predictor_client import PredictorClient
from .routes import JsonRoutes, install_routes
from .settings import TransformerSettings


def main(argv: list[str] | None = None) -> None:
    from kserve import model_server  # parses argv at import; keep it out of module import time

    s = parse_settings(TransformerSettings, sys.argv[1:] if argv is None else argv, "python -m transformer",
                       "Sentiment transformer: Redis cache in front of the predictor (KServe model server).",
                       parent=model_server.parser)
    if s.redis_cluster:
        cache = ClusterPredictionCache(s.redis_url, s.cache_ttl_s, s.redis_options(),
                                       nodes_at_url_host=s.redis_cluster_nodes_at_url_host)
    else:
        cache = RedisPredictionCache(s.redis_url, s.cache_ttl_s, s.redis_options())
    if s.near_cache_entries > 0 and s.near_cache_bytes > 0:
        cache = TieredPredictionCache(NearCache(s.near_cache_entries, s.near_cache_bytes), cache, s.cache_ttl_s)
    client = PredictorClient(s.predictor_host, s.model_name, s.predictor_protocol, s.predictor_use_ssl,
                             deadline_s=s.predictor_deadline_s, attempt_timeout_s=s.predictor_request_timeout_seconds)
    classifier = CachedClassifier(cache, client, CacheKeys(s.cache_namespace, s.model_name), s.model_fingerprint,
                                  s.max_inflight)
    routes = JsonRoutes(classifier, s.model_name, s.limits)

    def wrap(app):
        install_routes(app, s.model_name)
        table = routes.table()
        return FastJsonRoutes(app, table, metrics.request_observer(table))

    transformer = SentimentTransformer(s.model_name, s.limits, classifier)
    serve(transformer, s, wrap, close=transformer.close)


if __name__ == "__main__":
    main()
