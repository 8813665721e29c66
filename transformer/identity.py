"""Which models' cache entries a request may be answered from: the model identities seen serving.

A model identity is the fingerprint the predictor reports with every answer (`model_version`) and its
labels. Cache keys hold the fingerprint, so entries of different models never collide; the question is
which fingerprints to look up. During a canary or a rollout two predictor revisions answer alternately:
looking up only the one seen last would discard the other's hits at every switch. So both stay live while
they alternate (`live`), and a request is answered from one identity alone (never mixed rows).

Identities outlive the process through a record in the cache (`CacheKeys.identity_key`), written with
every write-back: a fresh transformer reads it before its first lookup, so cached sentences are answered
without waking a predictor that scaled to zero. Policy only: plain data in, plain data out.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

LIVE_WINDOW_S = 600.0
"""An alternating identity not seen from the predictor for this long (and not the newest) is no longer
looked up: a finished canary stops costing lookups; one that answers misses every few minutes stays live."""


@dataclass(frozen=True)
class ModelIdentity:
    """A model as the cache knows it. `labels` is None for a fingerprint given by flag, until an entry or
    an answer tells them."""

    fingerprint: str
    labels: tuple[str, ...] | None = None


def live(seen: dict[str, tuple[float, float]], now: float, window_s: float = LIVE_WINDOW_S) -> list[str]:
    """The fingerprints to look up, newest first, from when each was first and last seen.

    The newest always. Another only while two revisions alternate: it answered again after the newest
    first appeared (a canary, a rollout under way), and within `window_s`. After a plain rollout the old
    model never answers again, so its entries are not read once the new one has answered.
    """
    ordered = sorted(seen, key=lambda fp: seen[fp][1], reverse=True)
    if not ordered:
        return []
    newest_since = seen[ordered[0]][0]
    return [ordered[0], *(fp for fp in ordered[1:] if seen[fp][1] > newest_since and now - seen[fp][1] <= window_s)]


def choose(live_fingerprints: list[str], found: dict[str, int], wanted: int) -> str:
    """The fingerprint a request is answered from: the first (newest) whose entries cover all `wanted`
    texts, else the one with the most entries found (the newest among equals), whose misses the
    predictor then computes."""
    for fp in live_fingerprints:
        if found.get(fp, 0) == wanted:
            return fp
    return max(live_fingerprints, key=lambda fp: found.get(fp, 0))  # max keeps the first of equals


def encode_record(identity: ModelIdentity) -> bytes:
    return orjson.dumps({"fingerprint": identity.fingerprint, "labels": list(identity.labels or ())})


def decode_record(raw: bytes | None) -> ModelIdentity | None:
    """The identity in a record, or None for a missing or foreign one."""
    try:
        record = orjson.loads(raw) if raw else None
        return ModelIdentity(str(record["fingerprint"]), tuple(map(str, record["labels"])) or None)
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
