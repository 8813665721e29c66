"""Small httpx helpers shared by the transformer tests."""

from __future__ import annotations

import httpx
import numpy as np

from transformer.keys import CacheKeys

LABELS = ("NEGATIVE", "POSITIVE")


def rows_to_probs(rows: list[list[dict]]) -> np.ndarray:
    """[[{"label", "score"}, ...], ...] -> array [N, 2] in (NEGATIVE, POSITIVE) order."""
    return np.array([[next(p["score"] for p in row if p["label"] == lab) for lab in LABELS] for row in rows])


def seed_predict(server, texts: list[str], field: str = "text") -> np.ndarray:
    r = httpx.post(f"{server.url}/v1/models/sentiment:predict", json={field: texts}, timeout=90)
    assert r.status_code == 200, r.text
    return rows_to_probs(r.json()["predictions"])


def predictor_probs(predictor, texts: list[str]) -> np.ndarray:
    return seed_predict(predictor, texts, field="instances")


def predictor_answers(predictor, texts, chunk: int = 200) -> dict[str, np.ndarray]:
    """The predictor's own probabilities for every distinct text, asked directly in chunks."""
    ordered, truth = sorted(set(texts)), {}
    for start in range(0, len(ordered), chunk):
        part = ordered[start:start + chunk]
        truth.update(zip(part, predictor_probs(predictor, part), strict=True))
    return truth


def metric(server, name: str) -> float:
    """Sum of a Prometheus sample family on the server's /metrics (0 if absent)."""
    total = 0.0
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            sample, value = line.rsplit(" ", 1)
            if sample == name or sample.startswith(name + "{"):
                total += float(value)
    return total


def keys_in(redis_server, namespace: str) -> list[bytes]:
    """The prediction entries under `namespace` (not the model-identity record, transformer/identity.py)."""
    client = redis_server.client()
    try:
        identity = CacheKeys(namespace, "sentiment").identity_key().encode()
        return sorted(k for k in client.scan_iter(match=f"{namespace}:*", count=1000) if k != identity)
    finally:
        client.close()
