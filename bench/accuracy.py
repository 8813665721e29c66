"""SST-2 dev accuracy of each runtime with the real shared model, and agreement with fp32 torch; then
through the served stack: a predictor process on an export of the model (`--runtime onnx`, and
`--runtime auto` with the decision the export recorded for this CPU), every sentence over v1.

    python -m bench.accuracy
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import httpx
import numpy as np

from bench.common import MINILM_DIR, command_line, table, write_result
from harness.processes import PredictorProcess
from harness.sst2 import dev_set
from predictor.classifier import SentimentClassifier
from predictor.cpu import read_cpu_flags
from predictor.export import default_calibration, export
from predictor.runtimes import runtimes_here


def probabilities(runtime: str, texts: list[str]) -> tuple[np.ndarray, list[str]]:
    classifier = SentimentClassifier(MINILM_DIR, runtime=runtime)
    probs = np.concatenate([classifier.predict(texts[i:i + 32]) for i in range(0, len(texts), 32)])
    return probs, classifier.labels


def run() -> list[dict]:
    texts, gold = dev_set()
    reference, labels = probabilities("torch", texts)
    positive = labels.index("POSITIVE")
    rows = []
    for runtime in runtimes_here(read_cpu_flags()):
        probs = reference if runtime == "torch" else probabilities(runtime, texts)[0]
        predicted = probs.argmax(axis=1)
        rows.append({"runtime": runtime, "accuracy": float(((predicted == positive) == (gold == 1)).mean()),
                     "label_agreement_with_torch": float((predicted == reference.argmax(axis=1)).mean()),
                     "max_abs_prob_diff": float(np.abs(probs - reference).max()),
                     "mean_abs_prob_diff": float(np.abs(probs - reference).mean())})
    print(table(rows, list(rows[0])))
    served = served_accuracy(texts, gold)
    print(table(served, list(served[0])))
    write_result("accuracy", {"model": "sentiment-minilm-sst2", "sentences": len(texts), "rows": rows,
                              "served": served})
    return rows


def served_accuracy(texts: list[str], gold: np.ndarray) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # The calibration set `python -m predictor.export` ships by default: `auto` decides on it.
        export(MINILM_DIR, Path(tmp) / "minilm", calibration=default_calibration(MINILM_DIR))
        for runtime in ("onnx", "auto"):
            with PredictorProcess(Path(tmp) / "minilm", extra=["--runtime", runtime]).start() as server:
                url = f"{server.url}/v1/models/sentiment:predict"
                answers = [httpx.post(url, json={"instances": texts[i:i + 32]}, timeout=60).json()
                           for i in range(0, len(texts), 32)]
            positive = [max(row, key=lambda r: r["score"])["label"] == "POSITIVE"
                        for answer in answers for row in answer["predictions"]]
            rows.append({"runtime": runtime, "model_version": answers[0]["model_version"],
                         "accuracy": float((np.array(positive) == (gold == 1)).mean())})
    return rows


if __name__ == "__main__":
    command_line(run, __doc__)
