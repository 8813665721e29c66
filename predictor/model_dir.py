"""What a Hugging Face model directory holds, read without torch or transformers.

The predictor needs three things from it: the config (labels, position limit) as JSON, the fast
tokenizer (`tokenizer.json`, with `tokenizers`), and the model's fingerprint. A directory written by
`python -m predictor.export --out` also ships the ONNX exports and an export manifest carrying the
fingerprint of the model it was exported from, so a pod serving it reads no PyTorch weights at all
and hashes only its small files at start-up.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
# What transformers reads from a model directory: the config, the tokenizer's files (whichever the
# tokenizer class uses) and one set of weights. Everything else in a Hugging Face snapshot (README,
# .gitattributes, other frameworks' weights, the storage initializer's `.cache/huggingface` download
# metadata with its timestamps) does not change the model.
TOKENIZER_FILES = (TOKENIZER_JSON, TOKENIZER_CONFIG, "special_tokens_map.json", "added_tokens.json",
                   "vocab.txt", "vocab.json", "merges.txt", "tokenizer.model", "spiece.model",
                   "sentencepiece.bpe.model")
# transformers' own order for a local directory (modeling_utils._get_resolved_checkpoint_files):
# safetensors, sharded safetensors, then the pickled PyTorch formats.
WEIGHTS_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")
ONNX_FP32 = "model.onnx"
ONNX_INT8 = "model-int8-per-channel.onnx"
CALIBRATION_FILE = "calibration.jsonl"
"""Texts `--runtime auto` judges the quantized candidates on (predictor.calibration), one JSON object a line."""
DECISIONS_FILE = "runtime-decisions.json"
"""The runtime `auto` chose per CPU class, with the measured figures (predictor.calibration)."""
EXPORT_MANIFEST = "sentiment-export.json"
"""Written by `predictor.export` beside the files it exports: the source model's fingerprint, and each
file's size and hash (the calibration set and the recorded decisions included)."""
HASHED_AT_START_BYTES = 4 << 20
"""Files of an export up to this size (config, tokenizer) are re-hashed against the manifest at every
start; larger ones (the ONNX models: 90-270 MB) are checked by size, as the image layer holding them is immutable."""
NO_MAX_LENGTH = int(1e30)
"""What transformers writes as `model_max_length` when a tokenizer has none (VERY_LARGE_INTEGER)."""


@dataclass(frozen=True)
class ModelDir:
    """A model directory's config and tokenizer settings, as the predictor uses them."""

    path: Path
    labels: list[str]
    max_positions: int
    """Most tokens one text may have: the model's position embeddings, capped by the tokenizer's limit."""
    truncation_side: str
    pad_id: int

    @classmethod
    def read(cls, path: str | Path) -> ModelDir:
        path = Path(path)
        if not (path / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"no Hugging Face model at {path} (config.json missing)")
        if not (path / TOKENIZER_JSON).is_file():
            raise FileNotFoundError(f"no fast tokenizer at {path} ({TOKENIZER_JSON} missing): save the model's "
                                    "tokenizer with a fast (Rust) tokenizer, e.g. AutoTokenizer.save_pretrained")
        config = json.loads((path / CONFIG_FILE).read_text())
        tok_config = _json_or_empty(path / TOKENIZER_CONFIG)
        id2label = config.get("id2label") or {str(i): f"LABEL_{i}" for i in range(config.get("num_labels", 2))}
        labels = [id2label[str(i)] for i in range(len(id2label))]
        model_max = tok_config.get("model_max_length") or NO_MAX_LENGTH
        max_positions = min(config.get("max_position_embeddings", 512), int(model_max))
        vocab = Tokenizer.from_file(str(path / TOKENIZER_JSON))
        pad_token = tok_config.get("pad_token")
        pad_token = pad_token.get("content") if isinstance(pad_token, dict) else pad_token
        pad_id = vocab.token_to_id(pad_token) if pad_token else None
        return cls(path, labels, max_positions, tok_config.get("truncation_side", "right"),
                   pad_id if pad_id is not None else config.get("pad_token_id") or 0)

    def encoder(self, max_length: int) -> Tokenizer:
        """The fast tokenizer, truncating to `max_length` tokens per text and never padding.

        It is configured once and never mutated afterwards, so threads may call `encode_batch` on it at
        once (it releases the GIL while it works); the Hugging Face wrapper re-applies truncation to
        its shared Rust object on every call, which fails ("Already borrowed") under concurrency.
        """
        encoder = Tokenizer.from_file(str(self.path / TOKENIZER_JSON))
        encoder.enable_truncation(max_length, direction=self.truncation_side)
        encoder.no_padding()
        return encoder


def _json_or_empty(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


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
        raise FileNotFoundError(f"no model weights in {model_dir} (looked for {', '.join(WEIGHTS_FILES)}, "
                                f"{ONNX_FP32})")
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
        _hash_contents(digest, path)
    return digest.hexdigest()[:16]


def _hash_contents(digest, path: Path):
    """Feed `path`'s bytes to `digest` a MiB at a time (weights are hundreds of MB)."""
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest


def file_sha256(path: Path) -> str:
    return _hash_contents(hashlib.sha256(), path).hexdigest()


def write_manifest(export_dir: Path, model_fingerprint: str) -> None:
    """Record the source model's fingerprint and every exported file's size and hash."""
    files = {p.name: {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
             for p in sorted(export_dir.iterdir()) if p.is_file() and p.name != EXPORT_MANIFEST}
    (export_dir / EXPORT_MANIFEST).write_text(json.dumps({"fingerprint": model_fingerprint, "files": files},
                                                         indent=1) + "\n")


def model_fingerprint(model_dir: Path) -> str:
    """The fingerprint of the model served from `model_dir`.

    An export directory (a manifest and no PyTorch weights) carries the fingerprint of the model it was
    exported from, so serving the export keys the cache as serving the original did, without hashing
    hundreds of MB at every start. Its files must still be the ones the manifest lists (sizes, and hashes
    of the small files); otherwise, and for any other directory, the files are hashed.
    """
    model_dir = Path(model_dir)
    manifest_path = model_dir / EXPORT_MANIFEST
    if not manifest_path.is_file() or any((model_dir / name).is_file() for name in WEIGHTS_FILES):
        return fingerprint(model_dir)
    manifest = json.loads(manifest_path.read_text())
    for name, meta in manifest["files"].items():
        path = model_dir / name
        problem = (f"{name} is missing" if not path.is_file() else
                   f"{name} has {path.stat().st_size} bytes, the manifest says {meta['bytes']}"
                   if path.stat().st_size != meta["bytes"] else
                   f"{name} differs from the manifest's hash"
                   if meta["bytes"] <= HASHED_AT_START_BYTES and file_sha256(path) != meta["sha256"] else None)
        if problem:
            log.warning("%s does not match %s (%s); hashing the model files instead", model_dir, EXPORT_MANIFEST,
                        problem)
            return fingerprint(model_dir)
    return manifest["fingerprint"]
