"""A clean scale-down: SIGTERM while a maximum-size request runs, against a real predictor process.

Knative and Kubernetes stop a pod with SIGTERM and kill it 30 s later (the default grace period).
KServe 0.21 first lets uvicorn drain its HTTP connections, then calls the model's `stop()` on the
event loop, then stops gRPC with its own grace period: so a REST request is finished before the
model hears of the stop, while a gRPC request is still being computed when it does.
"""

from __future__ import annotations

import signal
import threading
import time

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from harness.clients import metric, rows_to_probs
from harness.processes import PredictorProcess, wait_until

LONG = "a long sentence about a film " * 100  # 600 words: truncated to 512 tokens
DISTINCT = [f"{i} {LONG}" for i in range(4)]
LARGE = DISTINCT * 8  # 32 texts of 512 tokens: 16,384, the default --max_request_tokens
GRACE_S = 30  # Kubernetes' default terminationGracePeriodSeconds


def v1_probs(predictor: PredictorProcess, texts: list[str]) -> np.ndarray:
    r = httpx.post(f"{predictor.url}/v1/models/sentiment:predict", json={"instances": texts}, timeout=120)
    assert r.status_code == 200, r.text
    return rows_to_probs(r.json()["predictions"])


def grpc_probs(predictor: PredictorProcess, texts: list[str]) -> np.ndarray:
    client = grpcclient.InferenceServerClient(predictor.grpc_target)
    tensor = grpcclient.InferInput("text", [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=np.object_))
    try:
        return client.infer("sentiment", [tensor], client_timeout=120).as_numpy("probabilities")
    finally:
        client.close()


@pytest.mark.parametrize("send", [v1_probs, grpc_probs], ids=["rest", "grpc"])
def test_sigterm_lets_a_maximum_size_request_finish_and_exits_0_in_time(model_dir, send):
    predictor = PredictorProcess(model_dir).start()
    try:
        expected = np.tile(v1_probs(predictor, DISTINCT), (8, 1))  # the same texts, before the stop
        answer: dict[str, object] = {}

        def send_large() -> None:
            try:
                answer["probs"] = send(predictor, LARGE)
            except Exception as exc:  # reported by the assertion below
                answer["error"] = exc
            answer["at"] = time.monotonic()

        thread = threading.Thread(target=send_large)
        thread.start()
        # Under way, 32 passes of one text each: stop it halfway, so it still has 16 passes to run
        # (all 32 take 8 s on 2 idle cores, but 25 s on a busy shared machine).
        wait_until(lambda: 0 < metric(predictor, "sentiment_predictor_queued_tokens") <= len(LARGE) * 512 // 2, 120,
                   "the large request half computed")
        predictor.proc.send_signal(signal.SIGTERM)
        terminated = time.monotonic()
        thread.join(GRACE_S)
        code = predictor.proc.wait(max(0.1, terminated + GRACE_S - time.monotonic()))
        exited = time.monotonic()
    finally:
        predictor.stop()
    assert "error" not in answer, f"the request in flight failed: {answer.get('error')}\n{predictor.log()[-3000:]}"
    np.testing.assert_allclose(answer["probs"], expected, atol=1e-5)
    assert code == 0, predictor.log()[-3000:]
    assert exited - terminated < GRACE_S
    assert answer["at"] < exited
