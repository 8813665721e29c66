"""Request and response shapes of the transformer's JSON routes, and the cache entry encoding."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from serving.errors import BadInput
from serving.limits import TextLimits, check_texts, json_body


@dataclass(frozen=True)
class Predictions:
    """Probabilities [N, num_labels] in `labels` order, from the model with fingerprint `version`."""

    probs: np.ndarray
    labels: list[str]
    version: str


def texts_from_json(body: Any, limits: TextLimits) -> list[str]:
    """Texts of `{"text": [...]}` (the original API) or `{"instances": [...]}` (KServe v1)."""
    body = json_body(body)
    if not isinstance(body, dict):
        raise BadInput(f"request body must be a JSON object with 'text' (a list of strings), "
                       f"got {type(body).__name__}")
    if "text" in body and "instances" in body:
        raise BadInput("send either 'text' or 'instances', not both")
    field = "instances" if "instances" in body else "text"
    if field not in body:
        raise BadInput("request must have 'text': a non-empty list of strings")
    return check_texts(body[field], field, limits)


def encode_entry(labels: list[str], probs: np.ndarray) -> bytes:
    """One cached prediction: the labels and their probabilities, in id2label order."""
    return orjson.dumps([labels, probs.tolist()])


def decode_entry(raw: bytes) -> tuple[list[str], list[float]] | None:
    """The entry, or None when it is not one we wrote (treated as a miss)."""
    try:
        labels, probs = orjson.loads(raw)
    except (orjson.JSONDecodeError, ValueError, TypeError):
        return None
    if not isinstance(labels, list) or not isinstance(probs, list) or len(labels) != len(probs):
        return None
    return labels, probs
