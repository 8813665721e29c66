"""Per-sentence cache keys: never whole payloads, headers or request ids."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

SCHEMA_VERSION = "s1"
"""Version of what a cache entry holds; bump it when `CachedPrediction`'s encoding changes."""


@dataclass(frozen=True)
class CacheKeys:
    """Builds `namespace:model:fingerprint:schema:sha256(text)` keys."""

    namespace: str
    model_name: str

    def key(self, fingerprint: str, text: str) -> str:
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        return f"{self.namespace}:{self.model_name}:{fingerprint}:{SCHEMA_VERSION}:{digest}"

    def identity_key(self) -> str:
        """The record of the model the predictor last answered with (transformer.identity)."""
        return f"{self.namespace}:{self.model_name}:identity:{SCHEMA_VERSION}"
