"""The original app, rebuilt from its description, as the benchmarks' baseline.

FastAPI; a `transformers` text-classification pipeline called once per request (`top_k=None`, so
every label); fastapi-cache2's Redis backend caching each whole response for 60 s, keyed on the
request's texts. `POST /bulk-predict {"text": [...]}` -> `{"predictions": [[{label, score}, ...], ...]}`
and `GET /health`, exactly the contract this project keeps.

One deviation, forced by the library: fastapi-cache2 0.2 never caches a request other than GET when
the decorator sees the request, so the decorated function takes the texts instead (the key is then
built from them: the same whole-payload key). The pipeline runs in FastAPI's thread pool, as
fastapi-cache2 runs a decorated synchronous function, so a miss does not block cache hits on the
event loop: the friendliest reading of the description, not a strawman.

    ORIGINAL_MODEL_DIR=... ORIGINAL_REDIS_URL=redis://127.0.0.1:6379/1 \\
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


def create_app(model_dir: str | None = None, redis_url: str | None = None) -> FastAPI:
    from transformers import pipeline

    model_dir = model_dir or os.environ["ORIGINAL_MODEL_DIR"]
    redis_url = redis_url or os.environ.get("ORIGINAL_REDIS_URL", "redis://127.0.0.1:6379/1")
    classifier = pipeline("text-classification", model=model_dir, tokenizer=model_dir, top_k=None)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        FastAPICache.init(RedisBackend(aioredis.from_url(redis_url)), prefix=CACHE_PREFIX)
        yield

    app = FastAPI(title="Original sentiment app (baseline)", lifespan=lifespan)

    @cache(expire=60)
    def predict(texts: tuple[str, ...]) -> dict[str, Any]:
        return {"predictions": classifier(list(texts))}

    @app.post("/bulk-predict", response_model=SentimentResponse)
    async def bulk_predict(request: SentimentRequest) -> dict[str, Any]:
        if not request.text:
            return {"predictions": []}
        return await predict(tuple(request.text))

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "healthy"}

    return app
