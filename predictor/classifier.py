"""The inference core: tokenize -> forward -> softmax, with no KServe imports."""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer
from transformers import AutoConfig, AutoTokenizer
from transformers.utils import logging as hf_logging

from .runtimes import ONNX_FP32, ONNX_INT8, RUNTIMES, load_backend

log = logging.getLogger(__name__)
DEFAULT_ONNX_CACHE = Path(tempfile.gettempdir()) / "sentiment-onnx"


@dataclass(frozen=True)
class Encoded:
    """Token ids of one text, unpadded."""

    ids: list[int]


class SentimentClassifier:
    """A Hugging Face sequence classifier loaded from a model directory.

    `encode` is thread-safe (callers tokenize concurrently, off the worker); `predict_encoded`
    is not: exactly one thread (the batcher's worker) calls it.
    """

    def __init__(self, model_dir: str | Path, runtime: str = "torch", max_length: int | None = None,
                 threads: int | None = None, onnx_cache_dir: str | Path = DEFAULT_ONNX_CACHE):
        self.model_dir = Path(model_dir)
        if not (self.model_dir / "config.json").is_file():
            raise FileNotFoundError(f"no Hugging Face model at {self.model_dir} (config.json missing)")
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
        hf_logging.disable_progress_bar()
        self.runtime = runtime
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        config = AutoConfig.from_pretrained(self.model_dir)
        self.labels: list[str] = [config.id2label[i] for i in range(config.num_labels)]
        model_max = min(getattr(config, "max_position_embeddings", 512), self.tokenizer.model_max_length)
        self.max_length = min(max_length, model_max) if max_length else model_max
        self.pad_id = self.tokenizer.pad_token_id or 0
        self._encoder = _truncating_encoder(self.tokenizer, self.max_length)
        model_hash = fingerprint(self.model_dir)
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


def _truncating_encoder(tokenizer, max_length: int) -> Tokenizer:
    """A private copy of the Rust tokenizer with truncation set once, so `encode` never mutates it.

    Calling the Hugging Face tokenizer re-applies truncation settings to its shared Rust object on
    every call, which fails ("Already borrowed") when two threads tokenize at once. `encode_batch`
    on an unchanging copy gives the same ids (tested) and releases the GIL while it works.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError(f"{type(tokenizer).__name__} has no fast (Rust) tokenizer; add a tokenizer.json")
    encoder = Tokenizer.from_str(backend.to_str())
    encoder.enable_truncation(max_length, direction=tokenizer.truncation_side)
    encoder.no_padding()
    return encoder


# What transformers reads from a model directory: the config, the tokenizer's files (whichever the
# tokenizer class uses) and one set of weights. Everything else in a Hugging Face snapshot (README,
# .gitattributes, other frameworks' weights, the storage initializer's `.cache/huggingface` download
# metadata with its timestamps) does not change the model.
CONFIG_FILE = "config.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.txt", "vocab.json", "merges.txt", "tokenizer.model", "spiece.model",
                   "sentencepiece.bpe.model")
# transformers' own order for a local directory (modeling_utils._get_resolved_checkpoint_files):
# safetensors, sharded safetensors, then the pickled PyTorch formats.
WEIGHTS_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")


def model_files(model_dir: Path) -> list[Path]:
    """The files that define the model in `model_dir`: config, tokenizer files, and the weights transformers loads.

    A directory holding only a shipped ONNX export (no PyTorch weights) is defined by that export.
    """
    files = [model_dir / CONFIG_FILE, *(model_dir / name for name in TOKENIZER_FILES)]
    return [f for f in files if f.is_file()] + _weights_files(model_dir)


def _weights_files(model_dir: Path) -> list[Path]:
    explicit = json.loads((model_dir / CONFIG_FILE).read_text()).get("transformers_weights")
    for name in (explicit,) if explicit else WEIGHTS_FILES:
        path = model_dir / name
        if path.is_file():
            if not name.endswith(".index.json"):
                return [path]
            shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
            return [path, *(model_dir / shard for shard in shards)]
    shipped = [model_dir / name for name in (ONNX_FP32, ONNX_INT8) if (model_dir / name).is_file()]
    if not shipped:
        raise FileNotFoundError(f"no model weights in {model_dir} (looked for {', '.join(WEIGHTS_FILES)})")
    return shipped


def fingerprint(model_dir: Path) -> str:
    """A short hash of the files that define the model (`model_files`); changes whenever the model does.

    Stable across pods: the storage initializer's download metadata, other weight formats and shipped
    ONNX exports (derived from the weights) are left out.
    """
    model_dir = Path(model_dir)
    digest = hashlib.sha256()
    for path in model_files(model_dir):
        digest.update(str(path.relative_to(model_dir)).encode())
        digest.update(path.stat().st_size.to_bytes(8, "big"))
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()[:16]
