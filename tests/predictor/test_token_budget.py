"""The token budget and fair scheduling, against real predictor processes (shared MiniLM model).

Over v1, v2 REST and gRPC: a request over --max_request_tokens gets 413 naming its count and the
limit; a queue past --max_queued_tokens gets 429; a short request sent while a maximum-size one
runs is answered within a few of its own forward passes, and the large one stays correct.
"""

from __future__ import annotations

import re
import statistics
import threading
import time
import uuid

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tokenizers import Tokenizer
from tritonclient.utils import InferenceServerException

from harness.clients import keys_in, metric, rows_to_probs
from harness.processes import PredictorProcess, RedisServer, TransformerProcess, wait_until

LONG = "a long sentence about a film " * 100  # 600 words: truncated to 512 tokens
SHORT = "I love this movie"


@pytest.fixture(scope="module")
def budget_predictor(model_dir):
    proc = PredictorProcess(model_dir, extra=["--max_request_tokens", "4096", "--max_queued_tokens", "4096",
                                              "--max_batch_tokens", "512"]).start()
    yield proc
    proc.stop()


def v1(predictor, texts: list[str]) -> httpx.Response:
    return httpx.post(f"{predictor.url}/v1/models/sentiment:predict", json={"instances": texts}, timeout=120)


def test_padding_is_counted_apart_from_the_texts_tokens(budget_predictor, model_dir):
    """One pass of two texts of different lengths: the counter splits its tokens into the texts' own
    and the padding up to the longer one (what bench.triton reads under load)."""
    texts = [SHORT, f"{SHORT} so very much indeed"]
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.no_padding()  # the file may pad a batch to its longest, which is what the counter splits off
    lengths = [len(e.ids) for e in tokenizer.encode_batch(texts)]
    assert lengths[0] < lengths[1] <= 2 * lengths[0]  # within 2x: they share one pass

    def counted(kind: str) -> float:
        return metric(budget_predictor, f'sentiment_predictor_pass_tokens_total{{kind="{kind}"}}')

    text, padding, passes = counted("text"), counted("padding"), metric(budget_predictor,
                                                                         "sentiment_predictor_batch_texts_count")
    assert v1(budget_predictor, texts).status_code == 200
    assert metric(budget_predictor, "sentiment_predictor_batch_texts_count") == passes + 1
    assert counted("text") - text == sum(lengths)
    assert counted("padding") - padding == lengths[1] - lengths[0]


def v1_probs(predictor, texts: list[str]) -> np.ndarray:
    r = v1(predictor, texts)
    assert r.status_code == 200, r.text
    return rows_to_probs(r.json()["predictions"])


OVER = "request has 4,608 tokens after truncation to 512 per text; the limit is 4,096"


def test_request_over_the_token_budget_is_413_on_every_protocol(budget_predictor):
    texts = [LONG] * 9
    r = v1(budget_predictor, texts)
    assert r.status_code == 413
    assert r.json() == {"error": OVER}

    r = httpx.post(f"{budget_predictor.url}/v2/models/sentiment/infer", timeout=60, json={
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [9], "data": texts}]})
    assert r.status_code == 413
    assert r.json() == {"error": OVER}

    client = grpcclient.InferenceServerClient(budget_predictor.grpc_target)
    tensor = grpcclient.InferInput("text", [9], "BYTES")
    tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=np.object_))
    with pytest.raises(InferenceServerException) as err:
        client.infer("sentiment", [tensor])
    assert err.value.status() == "StatusCode.OUT_OF_RANGE"
    assert err.value.message() == OVER

    # At the budget exactly, the same texts are answered.
    probs = v1_probs(budget_predictor, [LONG] * 8)
    np.testing.assert_allclose(probs, np.repeat(probs[:1], 8, axis=0), atol=1e-5)


def test_queue_full_of_tokens_is_429_and_metrics_count_it(budget_predictor):
    rejected = metric(budget_predictor, 'sentiment_predictor_rejected_total{reason="queue_full"}')
    too_large = metric(budget_predictor, 'sentiment_predictor_rejected_total{reason="too_many_tokens"}')
    passes = metric(budget_predictor, "sentiment_predictor_batch_texts_count")
    results: dict[str, httpx.Response] = {}
    first = threading.Thread(target=lambda: results.update(first=v1(budget_predictor, [LONG] * 8)))
    first.start()  # 4,096 tokens: one text per pass of at most 512 padded tokens
    wait_until(lambda: metric(budget_predictor, "sentiment_predictor_queued_tokens") > 0, 30, "tokens queued")
    r = v1(budget_predictor, [LONG] * 8)
    first.join()
    assert r.status_code == 429, r.text
    assert r.headers["retry-after"] == "1"
    assert re.fullmatch(r"server busy: [\d,]+ tokens queued, the queue limit is 4,096 tokens; retry later",
                        r.json()["error"]), r.json()
    assert results["first"].status_code == 200
    assert v1(budget_predictor, [LONG] * 9).status_code == 413

    assert metric(budget_predictor, 'sentiment_predictor_rejected_total{reason="queue_full"}') == rejected + 1
    assert metric(budget_predictor, 'sentiment_predictor_rejected_total{reason="too_many_tokens"}') == too_large + 1
    assert metric(budget_predictor, "sentiment_predictor_batch_texts_count") >= passes + 8
    count = metric(budget_predictor, "sentiment_predictor_batch_tokens_count")
    assert count > 0
    # Every pass held at most --max_batch_tokens padded tokens.
    assert metric(budget_predictor, 'sentiment_predictor_batch_tokens_bucket{le="512.0"}') == count
    assert metric(budget_predictor, "sentiment_predictor_queued_texts") == 0
    assert metric(budget_predictor, "sentiment_predictor_queued_tokens") == 0


def test_transformer_passes_the_413_through_and_caches_nothing(budget_predictor):
    redis = RedisServer().start()
    namespace = f"budget-{uuid.uuid4().hex[:6]}"
    transformer = TransformerProcess(f"127.0.0.1:{budget_predictor.http_port}", redis.url,
                                     extra=["--cache_namespace", namespace]).start()
    try:
        texts = [f"{i} {LONG}" for i in range(9)]  # distinct: the transformer sends each text once
        r = httpx.post(f"{transformer.url}/v1/models/sentiment:predict", json={"text": texts}, timeout=60)
        assert r.status_code == 413
        assert r.json()["error"] == f"predictor: {OVER}"
        assert keys_in(redis, namespace) == []
    finally:
        transformer.stop()
        redis.stop()


def _timed(predictor, texts: list[str]) -> tuple[float, np.ndarray]:
    start = time.monotonic()
    probs = v1_probs(predictor, texts)
    return time.monotonic() - start, probs


def test_short_request_beside_a_maximum_size_one_waits_a_few_passes(model_dir):
    """Defaults: a request just under the budget (16,384 tokens) runs as 32 passes of 512 tokens."""
    predictor = PredictorProcess(model_dir).start()
    try:
        for _ in range(2):  # warm both shapes
            _timed(predictor, [SHORT])
            _timed(predictor, [LONG])
        short_alone = statistics.median(_timed(predictor, [SHORT])[0] for _ in range(5))
        pass_alone = statistics.median(_timed(predictor, [LONG])[0] for _ in range(3))  # one full pass
        bound = max(10 * short_alone, 3 * pass_alone)

        large = [f"{i} {LONG}" for i in range(31)] + ["a short one to stay under the budget"]
        result: dict[str, tuple[float, np.ndarray, float]] = {}

        def send_large() -> None:
            elapsed, probs = _timed(predictor, large)
            result["large"] = (elapsed, probs, time.monotonic())

        thread = threading.Thread(target=send_large)
        thread.start()
        wait_until(lambda: metric(predictor, "sentiment_predictor_queued_tokens") > 0, 30, "large request queued")
        waited, probs = _timed(predictor, [SHORT])
        short_done = time.monotonic()
        thread.join()
        large_elapsed, large_probs, large_done = result["large"]

        assert waited <= bound, (f"short request took {waited:.2f}s beside the large one; alone {short_alone:.3f}s, "
                                 f"one full pass {pass_alone:.3f}s, bound {bound:.2f}s")
        assert short_done < large_done
        assert large_elapsed > bound, "the large request was too quick for this test to mean anything"
        np.testing.assert_allclose(probs, v1_probs(predictor, [SHORT]), atol=1e-5)
        assert large_probs.shape == (len(large), 2)
        np.testing.assert_allclose(large_probs, v1_probs(predictor, large), atol=1e-5)  # the same, alone
    finally:
        predictor.stop()
