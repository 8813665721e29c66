"""Validation of the texts a client sends, shared by the predictor and the transformer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from .errors import BadInput, TooLarge


@dataclass(frozen=True)
class TextLimits:
    """Per-request limits; each violation is reported with the limit's value."""

    max_texts: int = 256
    """Most texts accepted in one request."""
    max_chars: int = 10_000
    """Most characters accepted in one text."""
    max_body_bytes: int = 4 << 20
    """Largest request body accepted, in bytes."""


def check_texts(value: Any, field: str, limits: TextLimits) -> list[str]:
    """Return `value` as a list of texts, or raise a 4xx error naming `field` and the limit."""
    if value is None:
        raise BadInput(f"'{field}' is required and must be a non-empty list of strings")
    if not isinstance(value, list):
        raise BadInput(f"'{field}' must be a list of strings, got {type(value).__name__}")
    if not value:
        raise BadInput(f"'{field}' must contain at least one string")
    if len(value) > limits.max_texts:
        raise TooLarge(f"'{field}' has {len(value)} items; the limit is {limits.max_texts} per request")
    for i, text in enumerate(value):
        if not isinstance(text, str):
            raise BadInput(f"'{field}[{i}]' must be a string, got {_type_name(text)}")
        if len(text) > limits.max_chars:
            raise TooLarge(f"'{field}[{i}]' has {len(text)} characters; the limit is {limits.max_chars}")
    return value


def texts_from_tensor(array: np.ndarray, name: str, limits: TextLimits) -> list[str]:
    """Decode a BYTES tensor of shape [N] (or [N, 1]) into texts, checked against `limits`."""
    if array.ndim == 2 and array.shape[1] == 1:
        array = array.reshape(-1)
    if array.ndim != 1:
        raise BadInput(f"input '{name}' must have shape [N] (or [N, 1]), got {list(array.shape)}")
    texts = []
    for i, item in enumerate(array.tolist()):
        if isinstance(item, bytes):
            try:
                item = item.decode("utf-8")
            except UnicodeDecodeError:
                raise BadInput(f"input '{name}[{i}]' is not valid UTF-8") from None
        texts.append(item)
    return check_texts(texts, f"{name}", limits)


def json_body(payload: Any) -> Any:
    """KServe hands over raw bytes when the client omitted a JSON content type: parse them."""
    if isinstance(payload, (bytes, bytearray)):
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise BadInput(f"request body is not valid JSON: {exc}") from None
    return payload


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__
