"""SST-2 dev accuracy with the shared MiniLM: of each runtime this CPU runs, with agreement with fp32 torch
(`rows`); what `--runtime auto`'s gate measured on the default calibration set of an export and the same
measurement on dev, which the calibration set never holds (`gate`); and through a predictor process on
that export, `--runtime onnx` and `auto`, every sentence over v1 (`served`). One-off measurements of the
gate's cost and of bf16: docs/decisions/auto-runtime.md.

    python -m bench.accuracy [--sentences 872]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import httpx
import numpy as np

from bench.common import MINILM_DIR, command_line, table, write_result
from harness.processes import PredictorProcess
from harness.sst2 import dev_set
from predictor.calibration import load_candidates, measure, read_decisions
from predictor.classifier import SentimentClassifier
from predictor.cpu import read_cpu_flags
from predictor.export import default_calibration, export
from predictor.gate import cpu_class
from predictor.runtimes import runtimes_here


def probabilities(classifier: SentimentClassifier, texts: list[str]) -> np.ndarray:
    return np.concatenate([classifier.predict(texts[i:i + 32]) for i in range(0, len(texts), 32)])


def run(sentences: int = 872) -> dict:
    texts, gold = dev_set()
    texts, gold = texts[:sentences], gold[:sentences]  # fewer for a smoke run
    torch = SentimentClassifier(MINILM_DIR, runtime="torch")
    reference, positive = probabilities(torch, texts), torch.labels.index("POSITIVE")
    rows = []
    for runtime in runtimes_here(read_cpu_flags()):
        probs = reference if runtime == "torch" else probabilities(SentimentClassifier(MINILM_DIR, runtime), texts)
        rows.append({"runtime": runtime, "accuracy": float(((probs.argmax(axis=1) == positive) == (gold == 1)).mean()),
                     "label_agreement_with_torch": float((probs.argmax(axis=1) == reference.argmax(axis=1)).mean()),
                     "max_abs_prob_diff": float(np.abs(probs - reference).max()),
                     "mean_abs_prob_diff": float(np.abs(probs - reference).mean())})
    print(table(rows, list(rows[0])))
    cpu_key = cpu_class(read_cpu_flags())
    with tempfile.TemporaryDirectory() as tmp:
        minilm = Path(tmp) / "minilm"
        export(MINILM_DIR, minilm, calibration=default_calibration(MINILM_DIR))  # as the modelcar's export
        decision = read_decisions(minilm)["decisions"][cpu_key]
        gate = [{"set": f"calibration ({decision['texts']:,} SST-2 train)", **c} for c in decision["candidates"]]
        on_dev = measure(load_candidates(minilm, None, None, Path(tmp) / "cache"), texts)
        gate += [{"set": f"SST-2 dev ({len(texts)})", **c.__dict__} for c in on_dev]
        print(f"CPU class {cpu_key}: --runtime auto chose {decision['runtime']} ({decision['reason']}: "
              f"{decision['detail']})")
        print(table(gate, ["set", "runtime", "agreement", "mean_abs_diff", "texts_per_s"]))
        served = [served_accuracy(minilm, runtime, texts, gold) for runtime in ("onnx", "auto")]
    print(table(served, list(served[0])))
    result = {"model": "sentiment-minilm-sst2", "sentences": len(texts), "rows": rows, "cpu_class": cpu_key,
              "decision": decision, "gate": gate, "served": served}
    write_result("accuracy", result)
    return result


def served_accuracy(model_dir: Path, runtime: str, texts: list[str], gold: np.ndarray) -> dict:
    with PredictorProcess(model_dir, extra=["--runtime", runtime]).start() as server:
        url = f"{server.url}/v1/models/sentiment:predict"
        answers = [httpx.post(url, json={"instances": texts[i:i + 32]}, timeout=60).json()
                   for i in range(0, len(texts), 32)]
    positive = [max(row, key=lambda r: r["score"])["label"] == "POSITIVE"
                for answer in answers for row in answer["predictions"]]
    return {"runtime": runtime, "model_version": answers[0]["model_version"],
            "accuracy": float((np.array(positive) == (gold == 1)).mean())}


if __name__ == "__main__":
    command_line(run, __doc__)
