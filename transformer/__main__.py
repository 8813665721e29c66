"""`python -m transformer`: parse settings, wire cache and predictor client, start kserve.ModelServer."""

from __future__ import annotations

import asyncio
import logging
import sys

import kserve
import uvloop
from kserve import model_server

from predictor.errors import ServiceError, service_error_handler
from predictor.protocol import labelled

from .cache import RedisPredictionCache
from .caching import CachedClassifier
from .fast_routes import FastJsonRoutes
from .keys import CacheKeys
from .model import SentimentTransformer
from .predictor_client import PredictorClient
from .settings import build_parser, settings_from
from .shapes import texts_from_json


def main(argv: list[str] | None = None) -> None:
    args = build_parser(model_server.parser).parse_args(argv if argv is not None else sys.argv[1:])
    s = settings_from(args)
    cache = RedisPredictionCache(
        s.redis_url, s.cache_ttl_s, socket_timeout_s=s.redis_socket_timeout_s,
        connect_timeout_s=s.redis_connect_timeout_s, health_check_interval_s=s.redis_health_check_interval_s,
        password=s.redis_password)
    client = PredictorClient(s.predictor_host, s.model_name, s.predictor_protocol, s.predictor_use_ssl,
                             deadline_s=s.predictor_deadline_s, attempt_timeout_s=s.predictor_timeout_s)
    classifier = CachedClassifier(cache, client, CacheKeys(s.cache_namespace, s.model_name), s.model_fingerprint)
    model = SentimentTransformer(s, classifier)

    async def v1_predict(body: bytes) -> dict:
        """Seed `{"text": [...]}` or v1 `{"instances": [...]}` -> `{"predictions": [...]}`."""
        answer = await classifier.classify(texts_from_json(body, s.limits))
        return {"predictions": labelled(answer.probs, answer.labels)}

    async def bulk_predict(body: bytes) -> list:
        """The original API: `{"text": [...]}` -> a bare list of label/score lists."""
        answer = await classifier.classify(texts_from_json(body, s.limits))
        return labelled(answer.probs, answer.labels)

    app = model_server.app

    @app.get("/health")
    async def health() -> dict[str, str]:
        """The original liveness route; Redis and the predictor are not required to be up."""
        return {"status": "healthy"}

    app.add_exception_handler(ServiceError, service_error_handler)
    server = kserve.ModelServer(http_port=args.http_port, grpc_port=args.grpc_port, workers=1)
    quiet_request_logs(s.log_requests)
    # uvicorn loads the app by import string: put the fast path where it will look.
    model_server.app = FastJsonRoutes(app, {f"/v1/models/{s.model_name}:predict": v1_predict,
                                            "/bulk-predict": bulk_predict}, s.limits.max_body_bytes)
    use_uvloop()
    server.start([model])


def use_uvloop() -> None:
    """KServe serves from asyncio.run(), which creates its loop from the policy: make that uvloop.

    KServe also asks for the current loop first (to configure it), so give the thread one.
    """
    uvloop.install()
    asyncio.set_event_loop(asyncio.new_event_loop())


def quiet_request_logs(log_requests: bool) -> None:
    """Per-request access and timing lines cost more than a cache hit; the mesh logs requests anyway."""
    if not log_requests:
        for name in ("uvicorn.access", "kserve.trace"):
            logging.getLogger(name).setLevel(logging.WARNING)


if __name__ == "__main__":
    main()
