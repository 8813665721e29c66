"""The cache-then-predictor flow, independent of KServe."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Protocol

import numpy as np

from serving.errors import Overloaded

from . import metrics
from .cache import PredictionCache
from .identity import ModelIdentity, choose, decode_record, encode_record, live
from .keys import CacheKeys
from .shapes import Predictions, decode_entry, encode_entry
from .trace_headers import trace_context

log = logging.getLogger(__name__)


class Predictor(Protocol):
    async def predict(self, texts: list[str], trace: dict[str, str] | None = None) -> Predictions: ...


class CachedClassifier:
    """Answers texts from the cache where it can and from the predictor for the rest.

    One MGET for all of a request's distinct texts (under each live model identity: `identity.live`),
    one predictor call for the misses, one pipelined write-back. Each response comes from one model
    identity and reports it; a new model never reads the old model's entries (keys hold the fingerprint).
    """

    def __init__(self, cache: PredictionCache, client: Predictor, keys: CacheKeys,
                 fingerprint: str | None = None, max_inflight: int = 512,
                 clock: Callable[[], float] = time.monotonic):
        self.cache = cache
        self.client = client
        self.keys = keys
        self.clock = clock
        # fingerprint -> when the predictor first and last answered with it; one given by flag ranks below
        # any the predictor or the identity record names.
        self._seen: dict[str, tuple[float, float]] = {fingerprint: (-math.inf, -math.inf)} if fingerprint else {}
        self._labels: dict[str, tuple[str, ...]] = {}
        # Whether the predictor, the identity record or a flag has told us a model: a fingerprint given by
        # flag (a rollout that names its model) wins over the record another pod wrote for the old one.
        self._answered = fingerprint is not None
        self.max_inflight = max_inflight
        self.inflight = 0

    @property
    def labels(self) -> list[str] | None:
        """The newest known model's labels, or None before anything told them."""
        newest = live(self._seen, self.clock())[:1]
        labels = self._labels.get(newest[0]) if newest else None
        return list(labels) if labels else None

    async def classify(self, texts: list[str], headers: dict[str, str] | None = None) -> Predictions:
        """Probabilities for `texts` in order; Overloaded (429) past `max_inflight` concurrent requests.
        A predictor call carries the trace context of `headers`, the request's (transformer.trace_headers)."""
        if self.inflight >= self.max_inflight:
            raise Overloaded(f"transformer busy: {self.inflight} requests in flight; the limit is "
                             f"{self.max_inflight}; retry later")
        self.inflight += 1
        metrics.INFLIGHT.inc()
        try:
            return await self._classify(texts, trace_context(headers))
        finally:
            self.inflight -= 1
            metrics.INFLIGHT.dec()

    async def _classify(self, texts: list[str], trace: dict[str, str]) -> Predictions:
        unique = list(dict.fromkeys(texts))
        if not self._answered:
            await self._read_identity_record()
        fingerprints = live(self._seen, self.clock())
        found = await self._lookup(fingerprints, unique) if fingerprints else {}
        chosen = choose(fingerprints, {fp: len(rows) for fp, rows in found.items()}, len(unique)) \
            if fingerprints else None
        rows = found.get(chosen, {})
        writes: dict[str, bytes] = {}
        misses = [t for t in unique if t not in rows]
        if misses:
            answer = await self._predict(misses, writes, trace)
            computed = dict(zip(misses, answer.probs.tolist(), strict=True))
            rows = {t: cached for t, cached in found.get(answer.version, {}).items()
                    if t not in computed and cached[0] == tuple(answer.labels)}
            if len(rows) + len(computed) < len(unique):
                # Another revision answered than the one whose entries we hold (a canary, a rollout):
                # one call for every text gives an answer from a single model.
                answer = await self._predict(unique, writes, trace)
                rows, computed = {}, dict(zip(unique, answer.probs.tolist(), strict=True))
            chosen, labels = answer.version, answer.labels
            writes[self.keys.identity_key()] = encode_record(ModelIdentity(chosen, tuple(labels)))
            await self.cache.set_many(writes)
        else:
            computed, labels = {}, list(self._labels[chosen])
        for _, _, tier in rows.values():
            metrics.CACHE_HITS.labels(tier=tier).inc()
        by_text = {t: probs for t, (_, probs, _) in rows.items()} | computed
        return Predictions(np.array([by_text[t] for t in texts], dtype=np.float32), labels, chosen)

    async def _lookup(self, fingerprints: list[str], texts: list[str]) -> dict[str, dict[str, tuple]]:
        """Per fingerprint, the texts found under it: (labels, probs, tier), in one MGET for all."""
        hits = await self.cache.get_many([self.keys.key(fp, t) for fp in fingerprints for t in texts])
        found: dict[str, dict[str, tuple]] = {}
        for i, fp in enumerate(fingerprints):
            rows = found[fp] = {}
            for text, hit in zip(texts, hits[i * len(texts):(i + 1) * len(texts)], strict=True):
                entry = decode_entry(hit.value) if hit is not None else None
                if entry is None:
                    continue
                labels = tuple(entry[0])
                # One fingerprint, one set of labels (the fingerprint covers config.json); a fingerprint
                # given by flag learns them from its first entry.
                if self._labels.setdefault(fp, labels) == labels:
                    rows[text] = (labels, entry[1], hit.tier)
        return found

    async def _predict(self, texts: list[str], writes: dict[str, bytes], trace: dict[str, str]) -> Predictions:
        """The predictor's answer for `texts`, remembered as a live identity and queued for the cache."""
        answer = await self.client.predict(texts, trace)
        metrics.CACHE_MISSES.inc(len(texts))
        now = self.clock()
        first = self._seen.get(answer.version, (now, now))[0]
        if first == -math.inf or answer.version not in self._seen:
            first = now
            log.info("predictor answers with model %s (labels %s)", answer.version, answer.labels)
        self._seen[answer.version] = (first, now)
        self._labels[answer.version] = tuple(answer.labels)
        self._answered = True
        writes.update({self.keys.key(answer.version, t): encode_entry(answer.labels, row)
                       for t, row in zip(texts, answer.probs, strict=True)})
        return answer

    async def _read_identity_record(self) -> None:
        """Learn the model the predictor last answered with from the cache (written by any transformer),
        so a fresh process answers cached texts while the predictor sleeps."""
        [hit] = await self.cache.get_many([self.keys.identity_key()])
        identity = decode_record(hit.value if hit is not None else None)
        if identity is None:
            return
        now = self.clock()
        self._seen.setdefault(identity.fingerprint, (now, now))
        if identity.labels:
            self._labels.setdefault(identity.fingerprint, identity.labels)
        self._answered = True
        log.info("cache says the predictor serves model %s (labels %s)", identity.fingerprint, identity.labels)
