"""The inference core: tokenize -> forward -> softmax, with no KServe imports."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

log = logging.getLogger(__name__)

Runtime = Literal["torch", "torch-int8"]
RUNTIMES: tuple[str, ...] = ("torch", "torch-int8")


@dataclass(frozen=True)
class Encoded:
    """Token ids of one text, unpadded."""

    ids: list[int]


class SentimentClassifier:
    """A Hugging Face sequence classifier loaded from a model directory.

    Not thread-safe: exactly one thread (the batcher's worker) calls `predict_encoded`.
    """

    def __init__(self, model_dir: str | Path, runtime: Runtime = "torch", max_length: int | None = None,
                 threads: int | None = None):
        self.model_dir = Path(model_dir)
        if not (self.model_dir / "config.json").is_file():
            raise FileNotFoundError(f"no Hugging Face model at {self.model_dir} (config.json missing)")
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
        if threads:
            torch.set_num_threads(threads)
        self.runtime = runtime
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        model = AutoModelForSequenceClassification.from_pretrained(self.model_dir)
        model.eval()
        if runtime == "torch-int8":
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        self.model = model
        config = model.config
        self.labels: list[str] = [config.id2label[i] for i in range(config.num_labels)]
        model_max = min(getattr(config, "max_position_embeddings", 512), self.tokenizer.model_max_length)
        self.max_length = min(max_length, model_max) if max_length else model_max
        self.pad_id = self.tokenizer.pad_token_id or 0
        self.version = f"{fingerprint(self.model_dir)}-{runtime}"

    def encode(self, texts: list[str]) -> list[Encoded]:
        """Tokenize without padding, truncating each text to `max_length` tokens."""
        out = self.tokenizer(texts, truncation=True, max_length=self.max_length, padding=False,
                             return_attention_mask=False, return_token_type_ids=False)
        return [Encoded(ids) for ids in out["input_ids"]]

    def predict_encoded(self, batch: list[Encoded]) -> np.ndarray:
        """Softmax probabilities [len(batch), num_labels] for one padded forward pass."""
        width = max(len(e.ids) for e in batch)
        ids = np.full((len(batch), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, e in enumerate(batch):
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = 1
        with torch.inference_mode():
            logits = self.model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits
            return torch.softmax(logits.float(), dim=-1).numpy()

    def predict(self, texts: list[str]) -> np.ndarray:
        """Probabilities for `texts` in one forward pass (no batching queue)."""
        return self.predict_encoded(self.encode(texts))


def fingerprint(model_dir: Path) -> str:
    """A short hash of every file in the model directory; changes whenever the model does."""
    digest = hashlib.sha256()
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(model_dir)).encode())
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()[:16]
