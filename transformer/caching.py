"""The cache-then-predictor flow, independent of KServe."""

from __future__ import annotations

import logging
from typing import Protocol

import numpy as np

from serving.errors import Overloaded

from . import metrics
from .cache import PredictionCache
from .keys import CacheKeys
from .shapes import Predictions, decode_entry, encode_entry

log = logging.getLogger(__name__)


class Predictor(Protocol):
    async def predict(self, texts: list[str]) -> Predictions: ...


class CachedClassifier:
    """Answers texts from the cache where it can and from the predictor for the rest.

    One MGET for all of a request's distinct texts, one predictor call for the misses, one
    pipelined write-back. Keys carry the fingerprint the predictor last reported, so a new model
    never reads the old model's entries.
    """

    def __init__(self, cache: PredictionCache, client: Predictor, keys: CacheKeys,
                 fingerprint: str | None = None, max_inflight: int = 512):
        self.cache = cache
        self.client = client
        self.keys = keys
        self.fingerprint = fingerprint
        self.labels: list[str] | None = None
        self.max_inflight = max_inflight
        self.inflight = 0

    async def classify(self, texts: list[str]) -> Predictions:
        """Probabilities for `texts` in order; Overloaded (429) past `max_inflight` concurrent requests."""
        if self.inflight >= self.max_inflight:
            raise Overloaded(f"transformer busy: {self.inflight} requests in flight; the limit is "
                             f"{self.max_inflight}; retry later")
        self.inflight += 1
        metrics.INFLIGHT.inc()
        try:
            return await self._classify(texts)
        finally:
            self.inflight -= 1
            metrics.INFLIGHT.dec()

    async def _classify(self, texts: list[str]) -> Predictions:
        unique = list(dict.fromkeys(texts))
        found: dict[str, list[float]] = {}
        fingerprint = self.fingerprint
        if fingerprint is not None:
            values = await self.cache.get_many([self.keys.key(fingerprint, t) for t in unique])
            for text, hit in zip(unique, values, strict=True):
                entry = decode_entry(hit.value) if hit is not None else None
                if entry is not None and entry[0] == self.labels:
                    found[text] = entry[1]
                    metrics.CACHE_HITS.labels(tier=hit.tier).inc()
        misses = [t for t in unique if t not in found]
        metrics.CACHE_MISSES.inc(len(misses))
        if misses:
            answer = await self.client.predict(misses)
            if answer.version != fingerprint or answer.labels != self.labels:
                log.info("predictor reports model %s (was %s); caching under the new fingerprint",
                         answer.version, fingerprint)
                self.fingerprint, self.labels = answer.version, answer.labels
                if found:  # entries of the previous model must not mix into this answer
                    misses, found = unique, {}
                    answer = await self.client.predict(misses)
            await self.cache.set_many({self.keys.key(answer.version, t): encode_entry(answer.labels, row)
                                       for t, row in zip(misses, answer.probs, strict=True)})
            found.update(zip(misses, answer.probs.tolist(), strict=True))
        probs = np.array([found[t] for t in texts], dtype=np.float32)
        return Predictions(probs, list(self.labels), self.fingerprint)
