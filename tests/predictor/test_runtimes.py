"""The fast runtimes against fp32 torch with the real shared model on all 872 SST-2 dev sentences.

Documented tolerances (README, Performance): onnx equals torch within 1e-4 in every probability;
onnx-int8 agrees on at least 98.5% of labels with a mean absolute probability difference under
0.03, and loses no more than 1 point of accuracy. torch-int8 (per-tensor) is looser: at least 94%
label agreement, at most 3 points of accuracy.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.accuracy import dev_set
from predictor.classifier import SentimentClassifier


@pytest.fixture(scope="module")
def dev(model_dir, shared_dir):
    del shared_dir
    return dev_set()


def probabilities(model_dir, runtime, texts, cache_dir):
    classifier = SentimentClassifier(model_dir, runtime=runtime, onnx_cache_dir=cache_dir)
    return np.concatenate([classifier.predict(texts[i : i + 64]) for i in range(0, len(texts), 64)])


@pytest.fixture(scope="module")
def reference(model_dir, dev, tmp_path_factory):
    return probabilities(model_dir, "torch", dev[0], tmp_path_factory.mktemp("onnx"))


def accuracy(probs, gold):
    return float(((probs.argmax(axis=1) == 1) == (gold == 1)).mean())


def test_onnx_fp32_matches_torch(model_dir, dev, reference, tmp_path_factory):
    probs = probabilities(model_dir, "onnx", dev[0], tmp_path_factory.mktemp("onnx"))
    np.testing.assert_allclose(probs, reference, atol=1e-4)


@pytest.mark.parametrize(("runtime", "min_agreement", "max_mean_diff", "max_accuracy_loss"),
                         [("onnx-int8", 0.985, 0.03, 0.01), ("torch-int8", 0.94, 0.06, 0.03)])
def test_int8_runtimes_stay_close(model_dir, dev, reference, tmp_path_factory, runtime, min_agreement,
                                  max_mean_diff, max_accuracy_loss):
    texts, gold = dev
    probs = probabilities(model_dir, runtime, texts, tmp_path_factory.mktemp("onnx"))
    assert (probs.argmax(axis=1) == reference.argmax(axis=1)).mean() >= min_agreement
    assert np.abs(probs - reference).mean() <= max_mean_diff
    assert accuracy(probs, gold) >= accuracy(reference, gold) - max_accuracy_loss
