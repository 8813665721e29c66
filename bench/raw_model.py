"""Raw offline throughput of the inference core: runtime x batch size x sequence length.

    python -m bench.raw_model [--model distilbert|minilm] [--seconds 5]
"""

from __future__ import annotations

import argparse
import time

from bench.common import MINILM_DIR, distilbert_dir, sentence_of_tokens, table, write_result
from predictor.classifier import SentimentClassifier
from predictor.cpu import read_cpu_flags
from predictor.runtimes import runtimes_here


def throughput(classifier: SentimentClassifier, batch: int, tokens: int, seconds: float) -> float:
    encoded = classifier.encode([sentence_of_tokens(tokens)] * batch)
    classifier.predict_encoded(encoded)  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        classifier.predict_encoded(encoded)
        done += batch
    return done / (time.perf_counter() - start)


def run(model: str = "distilbert", seconds: float = 4, batches=(1, 8, 32), lengths=(16, 64),
        runtimes: tuple[str, ...] | None = None) -> list[dict]:
    model_dir = distilbert_dir() if model == "distilbert" else MINILM_DIR
    rows = []
    for runtime in runtimes or runtimes_here(read_cpu_flags()):
        classifier = SentimentClassifier(model_dir, runtime=runtime)
        for tokens in lengths:
            for batch in batches:
                rows.append({"model": model, "runtime": runtime, "tokens": tokens, "batch": batch,
                             "seq_per_s": throughput(classifier, batch, tokens, seconds)})
                print(table(rows[-1:], list(rows[-1])).splitlines()[-1], flush=True)
    print(table(rows, ["model", "runtime", "tokens", "batch", "seq_per_s"]))
    write_result(f"raw_model_{model}", {"rows": rows, "seconds_per_cell": seconds})
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", choices=("distilbert", "minilm"), default="distilbert")
    parser.add_argument("--seconds", type=float, default=4)
    args = parser.parse_args()
    run(args.model, args.seconds)
