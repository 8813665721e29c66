"""Raw offline throughput of the inference core: runtime x batch size x sequence length.

    python -m bench.raw_model [--model distilbert|minilm] [--seconds 4] [--batches 1,8,32] [--lengths 16,64]
                              [--runtimes torch,torch-int8,onnx,onnx-int8]
"""

from __future__ import annotations

import time

from bench.common import add_row, command_line, model_dir, sentence_of_tokens, table, write_result
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


HERE = runtimes_here(read_cpu_flags())
"""The runtimes this CPU runs (torch-bf16 only with native bf16)."""


def run(model: str = "distilbert", seconds: float = 4, batches=(1, 8, 32), lengths=(16, 64),
        runtimes=HERE) -> list[dict]:
    directory = model_dir(model)
    columns = ["model", "runtime", "tokens", "batch", "seq_per_s"]
    rows = []
    for runtime in runtimes:
        classifier = SentimentClassifier(directory, runtime=runtime)
        for tokens in lengths:
            for batch in batches:
                add_row(rows, {"model": model, "runtime": runtime, "tokens": tokens, "batch": batch,
                               "seq_per_s": throughput(classifier, batch, tokens, seconds)}, columns)
    print(table(rows, columns))
    write_result(f"raw_model_{model}", {"rows": rows, "seconds_per_cell": seconds})
    return rows


if __name__ == "__main__":
    command_line(run, __doc__)
