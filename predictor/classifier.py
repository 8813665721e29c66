"""The inference core: tokenize -> forward -> softmax, with no KServe, torch or transformers imports
(the torch runtimes import torch themselves, when chosen)."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .model_dir import ModelDir, model_fingerprint
from .runtimes import RUNTIMES, load_backend

log = logging.getLogger(__name__)
DEFAULT_ONNX_CACHE = Path(tempfile.gettempdir()) / "sentiment-onnx"


@dataclass(frozen=True)
class Encoded:
    """Token ids of one text, unpadded."""

    ids: list[int]


class SentimentClassifier:
    """A Hugging Face sequence classifier loaded from a model directory.

    `encode` and `predict_encoded` are thread-safe: callers tokenize concurrently, off the batcher's
    workers, and each of the batcher's workers runs its own forward passes (ONNX Runtime and torch
    take concurrent calls on one model).
    """

    def __init__(self, model_dir: str | Path, runtime: str = "torch", max_length: int | None = None,
                 threads: int | None = None, onnx_cache_dir: str | Path = DEFAULT_ONNX_CACHE):
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
        self.model = ModelDir.read(model_dir)
        self.model_dir = self.model.path
        self.runtime = runtime
        self.labels: list[str] = self.model.labels
        self.max_length = min(max_length, self.model.max_positions) if max_length else self.model.max_positions
        self.pad_id = self.model.pad_id
        self._encoder = self.model.encoder(self.max_length)
        model_hash = model_fingerprint(self.model_dir)
        self.version = f"{model_hash}-{runtime}"
        self._forward = load_backend(runtime, self.model_dir, model_hash, threads, Path(onnx_cache_dir))

    def encode(self, texts: list[str]) -> list[Encoded]:
        """Tokenize without padding, truncating each text to `max_length` tokens (thread-safe)."""
        return [Encoded(e.ids) for e in self._encoder.encode_batch(texts)]

    def predict_encoded(self, batch: list[Encoded]) -> np.ndarray:
        """Softmax probabilities [len(batch), num_labels] for one padded forward pass."""
        width = max(len(e.ids) for e in batch)
        ids = np.full((len(batch), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, e in enumerate(batch):
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = 1
        return self._forward(ids, mask)

    def predict(self, texts: list[str]) -> np.ndarray:
        """Probabilities for `texts` in one forward pass (no batching queue)."""
        return self.predict_encoded(self.encode(texts))
