"""The original app, rebuilt from its description, as the benchmarks' baseline.

FastAPI; a `transformers` text-classification pipeline called once per request (`top_k=None`, so
every label); fastapi-cache2's Redis backend caching each whole response for 60 s.
`POST /bulk-predict {"text": [...]}` -> `{"predictions": [[{label, score}, ...], ...]}` and
`GET /health`, exactly the contract this project keeps.

Two readings of "caching whole responses", both measured (`ORIGINAL_CACHE`):

- `as_written` (default): `@cache(expire=60)` on the POST endpoint, as the description and
  fastapi-cache2's documentation have it. fastapi-cache2 0.2 caches GET requests only, so this
  caches nothing and every request runs the pipeline, which matches the ~82 req/s the original
  team reported for a 95%-hit test far better than a working cache would.
- `working`: the decorated function takes the request's texts instead of the request, so
  fastapi-cache2 caches POSTs too (key: a hash of the texts, the same whole-payload key). This
  is the description as intended: a stronger baseline.

In both, the pipeline runs in FastAPI's thread pool (fastapi-cache2 runs a decorated synchronous
function there), so it never blocks cache hits on the event loop: not a strawman.

    ORIGINAL_MODEL_DIR=... ORIGINAL_REDIS_URL=redis://127.0.0.1:6379/1 ORIGINAL_CACHE=as_written \\
        python -m uvicorn bench.original_app:create_app --factory --port 8090
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi_cache import FastAPICache
from fastapi_cache.backends.redis import RedisBackend
from fastapi_cache.decorator import cache
from pydantic import BaseModel
from redis import asyncio as aioredis

CACHE_PREFIX = "original-app"


class SentimentRequest(BaseModel):
    text: list[str]


class Sentiment(BaseModel):
    label: str
    score: float


class SentimentResponse(BaseModel):
    predictions: list[list[Sentiment]]


CACHE_MODES = ("as_written", "working")


def create_app(model_dir: str | None = None, redis_url: str | None = None, cache_mode: str | None = None) -> FastAPI:
    from transformers import pipeline

    model_dir = model_dir or os.environ["ORIGINAL_MODEL_DIR"]
    redis_url = redis_url or os.environ.get("ORIGINAL_REDIS_URL", "redis://127.0.0.1:6379/1")
    cache_mode = cache_mode or os.environ.get("ORIGINAL_CACHE", "as_written")
    if cache_mode not in CACHE_MODES:
        raise ValueError(f"ORIGINAL_CACHE must be one of {CACHE_MODES}, got {cache_mode!r}")
    classifier = pipeline("text-classification", model=model_dir, tokenizer=model_dir, top_k=None)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        FastAPICache.init(RedisBackend(aioredis.from_url(redis_url)), prefix=CACHE_PREFIX)
        yield

    app = FastAPI(title=f"Original sentiment app (baseline, cache {cache_mode})", lifespan=lifespan)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "healthy"}

    if cache_mode == "as_written":
        @app.post("/bulk-predict", response_model=SentimentResponse)
        @cache(expire=60)
        def bulk_predict(request: SentimentRequest) -> dict[str, Any]:
            return {"predictions": classifier(request.text) if request.text else []}

        return app

    @cache(expire=60)
    def predict(texts: tuple[str, ...]) -> dict[str, Any]:
        return {"predictions": classifier(list(texts))}

    @app.post("/bulk-predict", response_model=SentimentResponse)
    async def bulk_predict_cached(request: SentimentRequest) -> dict[str, Any]:
        if not request.text:
            return {"predictions": []}
        return await predict(tuple(request.text))

    return app
