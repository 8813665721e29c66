"""`python -m transformer`: parse settings, wire cache and predictor client, start kserve.ModelServer."""

from __future__ import annotations

import sys

import kserve
from kserve import model_server

from predictor.errors import install_error_handlers
from predictor.protocol import labelled
from predictor.serving import BodyLimit, fixed_model_repository, quiet_request_logs, use_uvloop

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
        password=s.redis_password, ca_cert=s.redis_ca_cert)
    client = PredictorClient(s.predictor_host, s.model_name, s.predictor_protocol, s.predictor_use_ssl,
                             deadline_s=s.predictor_deadline_s, attempt_timeout_s=s.predictor_timeout_s)
    classifier = CachedClassifier(cache, client, CacheKeys(s.cache_namespace, s.model_name), s.model_fingerprint,
                                  s.max_inflight)
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

    install_error_handlers(app)
    server = kserve.ModelServer(http_port=args.http_port, grpc_port=args.grpc_port, workers=1)
    fixed_model_repository(server)
    quiet_request_logs(s.log_requests)
    # uvicorn loads the app by import string: put the fast path where it will look.
    fast = FastJsonRoutes(app, {f"/v1/models/{s.model_name}:predict": v1_predict, "/bulk-predict": bulk_predict})
    model_server.app = BodyLimit(fast, s.limits.max_body_bytes)
    use_uvloop()
    server.start([model])


if __name__ == "__main__":
    main()
