"""The classifier's thread-safe tokenization, read from tokenizer.json without transformers, gives the
Hugging Face tokenizer's own ids."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from transformers import AutoTokenizer

from harness.tiny_model import build_tiny_model
from predictor.classifier import SentimentClassifier
from predictor.model_dir import ModelDir

TEXTS = ["I love this movie", "", "   ", "héllo wörld ﬁ 日本語 🎉 \u200b", "Boring, predictable and far too long.",
         "a long sentence about a film " * 200, "x" * 5000]


def _hf_ids(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    return tokenizer(texts, truncation=True, max_length=max_length, padding=False)["input_ids"]


@pytest.mark.parametrize("name", ["sentiment-minilm-sst2", "distilbert-sst2-tokenizer"])
def test_same_ids_as_the_hugging_face_call(shared_dir, name):
    tokenizer = AutoTokenizer.from_pretrained(shared_dir / "models" / name)
    model = ModelDir.read(shared_dir / "models" / name)
    assert model.pad_id == tokenizer.pad_token_id and model.max_positions == tokenizer.model_max_length
    for max_length in (512, 16):
        encoder = model.encoder(max_length)
        assert [e.ids for e in encoder.encode_batch(TEXTS)] == _hf_ids(tokenizer, TEXTS, max_length)


def test_classifier_encode_truncates_like_the_tokenizer(tmp_path):
    classifier = SentimentClassifier(build_tiny_model(tmp_path), max_length=8)
    texts = ["the movie was great", "the film was terrible and the acting was bad and boring", ""]
    tokenizer = AutoTokenizer.from_pretrained(classifier.model_dir)
    assert [e.ids for e in classifier.encode(texts)] == _hf_ids(tokenizer, texts, 8)
    assert [len(e.ids) for e in classifier.encode(texts)] == [6, 8, 2]


def test_concurrent_encodes_agree(shared_dir):
    tokenizer = AutoTokenizer.from_pretrained(shared_dir / "models" / "sentiment-minilm-sst2")
    encoder = ModelDir.read(shared_dir / "models" / "sentiment-minilm-sst2").encoder(512)
    batches = [[f"{text} {i}" for text in TEXTS] for i in range(64)]
    expected = [_hf_ids(tokenizer, batch, 512) for batch in batches]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda batch: [e.ids for e in encoder.encode_batch(batch)], batches))
    assert got == expected
