"""What `--runtime auto` decides for the shared MiniLM on this CPU, how its int8 candidate fares on SST-2 dev
(sentences the calibration set never holds), and what a start-up measurement costs (MiniLM, DistilBERT).

    python -m bench.auto_runtime

Exports MiniLM as the modelcar does (`python -m predictor.export --out`, calibration on 1,000 SST-2
train sentences), then measures fp32 and int8 ONNX on the 872 dev sentences in the same passes and
threads, and times `predictor.calibration.calibrate` on STARTUP_TEXTS calibration texts, which is what
a pod of an unrecorded CPU class does once at start-up. Last, MiniLM and DistilBERT copied with their
weights and exported in place, where torch-bf16 is a candidate (torch and native bf16): the decisions and,
in turns, each candidate's texts/s one text a pass (latency at one client).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import MINILM_DIR, command_line, distilbert_dir, table, write_result
from harness.processes import SHARED
from harness.sst2 import dev_set
from predictor.calibration import STARTUP_TEXTS, calibrate, load_candidates, measure, read_cpu_flags, sst2_sample
from predictor.export import export
from predictor.gate import REFERENCE, cpu_class
from predictor.model_dir import DECISIONS_FILE

TRAIN = SHARED / "data" / "sst2" / "train.tsv"


def startup_seconds(model_dir: Path, texts: list[str]) -> float:
    start = time.monotonic()
    calibrate(model_dir, texts[:STARTUP_TEXTS])
    return round(time.monotonic() - start, 2)


def in_place(source: Path, target: Path, calibration: list[str], single_texts: int = 48) -> dict:
    shutil.copytree(source, target)
    export(target, calibration=calibration)
    decision = json.loads((target / DECISIONS_FILE).read_text())["decisions"][cpu_class(read_cpu_flags())]
    classifiers = load_candidates(target, None, None, target / "cache")
    singles = [[e] for e in classifiers[REFERENCE].encode(calibration[:single_texts])]
    seconds = dict.fromkeys(classifiers, 0.0)
    for timed in (False, True):  # the first round builds each width's kernels (torch)
        for batch in singles:
            for name, c in classifiers.items():
                start = time.perf_counter()
                c.predict_encoded(batch)
                seconds[name] += (time.perf_counter() - start) * timed
    print(f"{source.name} in place: {decision['runtime']} ({decision['reason']}: {decision['detail']}); one text a "
          f"pass: " + ", ".join(f"{n} {len(singles) / s:.0f}/s" for n, s in seconds.items()))
    return {"decision": decision, "batch1_texts_per_s": {n: round(len(singles) / s, 1) for n, s in seconds.items()}}


def run() -> dict:
    calibration = sst2_sample(TRAIN)
    cpu_key = cpu_class(read_cpu_flags())
    with tempfile.TemporaryDirectory() as tmp:
        minilm = Path(tmp) / "minilm"
        export(MINILM_DIR, minilm, calibration=calibration)
        recorded = json.loads((minilm / DECISIONS_FILE).read_text())["decisions"][cpu_key]
        texts, gold = dev_set()
        classifiers = load_candidates(minilm, None, None, Path(tmp) / "cache")
        on_dev = measure(classifiers, texts)
        positive = classifiers["onnx"].labels.index("POSITIVE")
        rows = [{"set": "calibration (1,000 SST-2 train)", **c} for c in recorded["candidates"]]
        for c in on_dev:
            probs = np.concatenate([classifiers[c.runtime].predict(texts[i:i + 32]) for i in range(0, len(texts), 32)])
            accuracy = float(((probs.argmax(axis=1) == positive) == (gold == 1)).mean())
            rows.append({"set": "SST-2 dev (872)", **c.__dict__, "dev_accuracy": round(accuracy, 4)})
        minilm_startup = startup_seconds(minilm, calibration)
        distilbert = Path(tmp) / "distilbert"
        export(distilbert_dir(), distilbert)
        distilbert_startup = startup_seconds(distilbert, calibration)
        with_weights = {m: in_place(d, Path(tmp) / f"{m}-in-place", calibration)
                        for m, d in (("minilm", MINILM_DIR), ("distilbert_random", distilbert_dir()))}
    print(f"CPU class {cpu_key}: --runtime auto chose {recorded['runtime']} ({recorded['reason']}: "
          f"{recorded['detail']})")
    print(table(rows, ["set", "runtime", "agreement", "mean_abs_diff", "texts_per_s", "dev_accuracy"]))
    print(f"start-up measurement on {STARTUP_TEXTS} texts: MiniLM {minilm_startup} s, "
          f"DistilBERT {distilbert_startup} s")
    result = {"model": "sentiment-minilm-sst2", "cpu_class": cpu_key, "decision": recorded, "rows": rows,
              "startup_texts": STARTUP_TEXTS, "startup_seconds": {"minilm": minilm_startup,
                                                                  "distilbert_random": distilbert_startup},
              "in_place": with_weights}
    write_result("auto_runtime", result)
    return result


if __name__ == "__main__":
    command_line(run, __doc__)
