"""Forward-pass cost against padded tokens per pass, to choose --max_batch_tokens.

For pairs of shapes holding 512 and 1,024 padded tokens (16x32 / 32x32, 4x128 / 8x128,
2x256 / 4x256, 1x512 / 2x512), the time of one pass and tokens/s, measured in interleaved
rounds so machine noise hits every shape alike. If 1,024-token passes do not buy tokens/s,
512 is the better cap: it halves how long a pass makes every other request wait.

    python -m bench.batch_tokens [--models minilm,distilbert] [--runtime onnx] [--rounds 4]
"""

from __future__ import annotations

import time

from bench.common import command_line, model_dir, sentence_of_tokens, table, write_result
from predictor.classifier import SentimentClassifier

SHAPES = ((16, 32), (32, 32), (4, 128), (8, 128), (2, 256), (4, 256), (1, 512), (2, 512))


def run(models=("minilm", "distilbert"), runtime: str = "onnx", rounds: int = 4, seconds: float = 0.6) -> list[dict]:
    rows = []
    for model in models:
        classifier = SentimentClassifier(model_dir(model), runtime=runtime)
        encoded = {shape: classifier.encode([sentence_of_tokens(shape[1])] * shape[0]) for shape in SHAPES}
        spent = dict.fromkeys(SHAPES, 0.0)
        passes = dict.fromkeys(SHAPES, 0)
        for _ in range(rounds):
            for shape, batch in encoded.items():
                classifier.predict_encoded(batch)  # warm this shape
                start = time.perf_counter()
                while time.perf_counter() - start < seconds or passes[shape] == 0:
                    classifier.predict_encoded(batch)
                    passes[shape] += 1
                spent[shape] += time.perf_counter() - start
        for shape, batch in encoded.items():
            texts = shape[0]
            padded = texts * len(batch[0].ids)
            pass_s = spent[shape] / passes[shape]
            rows.append({"model": model, "runtime": runtime, "texts": texts, "tokens": len(batch[0].ids),
                         "padded_tokens": padded, "pass_ms": 1000 * pass_s, "tokens_per_s": padded / pass_s})
        print(table([r for r in rows if r["model"] == model],
                    ["model", "texts", "tokens", "padded_tokens", "pass_ms", "tokens_per_s"]), flush=True)
    write_result("batch_tokens", {"rows": rows, "rounds": rounds})  # the CPU too, as every result
    return rows


if __name__ == "__main__":
    command_line(run, __doc__)
