"""Cold start as a user meets it: exec -> first correct answer, each image's root filesystem under bubblewrap
(uid 1000, read-only root, /tmp and the model the only mounts), alternating in one run: the predictor images
(torch-free, torch) on MiniLM and DistilBERT (random weights: the production model's cost), each export as the
modelcar ships it, the first v1 answer checked against the export in-process, and each start's phases from its
log; the transformer image, answering /bulk-predict from Redis with its predictor scaled to zero.

    python -m bench.cold_start [--repeats 3]      # after `make images`
"""

from __future__ import annotations

import re
import statistics
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np

from bench.common import CACHE, SENTENCE, command_line, exported, table, write_result
from harness import images
from harness.processes import PredictorProcess, RedisServer, ServerProcess, TransformerProcess, free_port
from harness.sandbox import Sandbox, built_image

PREDICTOR_IMAGES = {"torch-free": f"sentiment-predictor:{images.VERSION}",
                    "torch": f"sentiment-predictor-torch:{images.VERSION}"}
TRANSFORMER_IMAGE = f"sentiment-transformer:{images.VERSION}"
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) ")
PHASES = {"model_loaded_s": "predictor.model INFO [model.py:load():", "serving_s": "Uvicorn running on"}


def first_answer(ref: str, args: list[str], mounts: dict[str, tuple[Path, bool]], route: str,
                 body: dict) -> tuple[dict[str, float], dict]:
    """Exec the image's ENTRYPOINT with `args` (replacing CMD) in its own root filesystem and post
    `body` to `route` until it answers 200: the seconds from exec to that answer and to each start-up
    phase its log shows, and the answer."""
    port = free_port()
    with ExitStack() as stack:
        image = built_image(ref, stack)
        if image is None:
            raise SystemExit(f"image {ref} is not built: run `make images` first")
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        sandbox = Sandbox("cold-start", 1000, 1000, image.workdir, {"/tmp": (tmp, False), **mounts}, image.root)
        argv = image.entrypoint(["--model_name=sentiment", f"--http_port={port}", f"--grpc_port={free_port()}", *args])
        process = stack.enter_context(ServerProcess(f"cold-{ref.split(':')[0]}", sandbox.wrap(argv),
                                                    image.env, inherit_env=False))
        answers: list[tuple[float, httpx.Response]] = []

        def answered() -> bool:
            response = httpx.post(f"http://127.0.0.1:{port}{route}", json=body, timeout=5)
            answers.append((time.monotonic(), response))  # when the answer came, not when it was asked
            return response.status_code == 200

        started, start = time.time(), time.monotonic()  # wall clock to compare with the log's
        process.start().wait_ready(answered, timeout=300, interval=0.01)
        log = process.log()
    at, response = answers[-1]
    return {"first_answer_s": at - start, **phases(log, started)}, response.json()


def phases(log: str, started_wall: float) -> dict[str, float]:
    """Seconds from exec to each start-up milestone, read from the process' own log lines."""
    found = {}
    for line in log.splitlines():
        m = LOG_TIME.match(line)
        for name, marker in PHASES.items():
            if m and marker in line and name not in found:
                found[name] = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp() - started_wall
    return found


def predictor_once(ref: str, model_dir: Path, expected: np.ndarray) -> dict:
    timings, body = first_answer(ref, ["--model_dir=/mnt/models"], {"/mnt/models": (model_dir, True)},
                                 "/v1/models/sentiment:predict", {"instances": [SENTENCE]})
    row = {label["label"]: label["score"] for label in body["predictions"][0]}
    labels = body["labels"]
    if not np.allclose([row[label] for label in labels], expected, atol=1e-4):
        raise AssertionError(f"{ref}: first answer {row} differs from {dict(zip(labels, expected, strict=True))}")
    return timings


def transformer_once(redis: RedisServer) -> dict:
    """The transformer's first answer, from Redis: nothing listens at its predictor address (scaled to zero)."""
    timings, body = first_answer(TRANSFORMER_IMAGE, [f"--predictor_host=127.0.0.1:{free_port()}",
                                                        "--predictor_deadline_s=5", f"--redis_url={redis.url}",
                                                        "--near_cache_entries=0"], {},
                                    "/bulk-predict", {"text": [SENTENCE]})
    assert body["predictions"][0][0]["label"] in ("POSITIVE", "NEGATIVE")
    return {"first_answer_s": timings["first_answer_s"]}


def seed_cache(redis: RedisServer, model_dir: Path) -> None:
    """Put the sentence in Redis through a real predictor and transformer (the first pod)."""
    with (PredictorProcess(model_dir).start() as predictor,
          TransformerProcess(f"127.0.0.1:{predictor.http_port}", redis.url).start() as transformer):
        httpx.post(f"{transformer.url}/bulk-predict", json={"text": [SENTENCE]}, timeout=60).raise_for_status()


def medians(runs: list[dict]) -> dict:
    """Each start-up figure's median over `runs` (NaN where a log did not show a phase), and the
    slowest first answer."""
    keys = dict.fromkeys(key for r in runs for key in r)
    return {**{key: statistics.median(r.get(key, float("nan")) for r in runs) for key in keys},
            "first_answer_s_max": max(r["first_answer_s"] for r in runs)}


def run(repeats: int = 3) -> list[dict]:
    models = {model: exported(model) for model in ("minilm", "distilbert")}  # as the modelcar holds them
    from predictor.classifier import SentimentClassifier

    expected = {name: SentimentClassifier(path, runtime="onnx", onnx_cache_dir=CACHE / "unused").predict([SENTENCE])[0]
                for name, path in models.items()}
    samples: dict[tuple[str, str], list[dict]] = {}
    for _ in range(repeats):  # alternating, so both images see the same machine
        for model, path in models.items():
            for image, ref in PREDICTOR_IMAGES.items():
                samples.setdefault((image, model), []).append(predictor_once(ref, path, expected[model]))
    with RedisServer().start() as redis:
        seed_cache(redis, models["minilm"])
        transformer = [transformer_once(redis) for _ in range(repeats)]

    rows = [{"image": image, "model": model, "repeats": repeats, **medians(runs)}
            for (image, model), runs in samples.items()]
    rows.append({"image": "transformer", "model": "(cache hit, predictor at zero)", "repeats": repeats,
                 **medians(transformer)})
    first = {(r["image"], r["model"]): r["first_answer_s"] for r in rows}
    ratios = {model: first[("torch", model)] / first[("torch-free", model)] for model in models}
    sizes = {ref: images.size_bytes(ref) for ref in [*PREDICTOR_IMAGES.values(), TRANSFORMER_IMAGE]}
    print(table(rows, ["image", "model", "first_answer_s", "first_answer_s_max", "model_loaded_s", "serving_s"]))
    print(f"torch image over torch-free, to the first answer: {ratios}; image sizes: {sizes}")
    write_result("cold_start", {"rows": rows, "torch_over_torch_free": ratios, "image_bytes": sizes})
    return rows


if __name__ == "__main__":
    command_line(run, __doc__)
