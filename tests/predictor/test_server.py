"""The predictor as a real process, called over v1 REST, v2 REST and v2 gRPC."""

from __future__ import annotations

import threading

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from harness.sst2 import dev_set

POSITIVE = "I love this movie"
NEGATIVE = "This was a terrible waste of time"
TEXTS = [POSITIVE, NEGATIVE, "The plot was fine, I guess.", "An absolute masterpiece of modern cinema!",
         "Boring, predictable and far too long."]


def v1(predictor, body, **kw) -> httpx.Response:
    return httpx.post(f"{predictor.url}/v1/models/sentiment:predict", json=body, timeout=60, **kw)


def v2(predictor, inputs) -> httpx.Response:
    return httpx.post(f"{predictor.url}/v2/models/sentiment/infer", json={"inputs": inputs}, timeout=60)


def v1_probs(predictor, texts) -> np.ndarray:
    """v1 predictions re-ordered into id2label order, as an array [N, 2]."""
    r = v1(predictor, {"instances": texts})
    assert r.status_code == 200, r.text
    rows = r.json()["predictions"]
    return np.array([[next(p["score"] for p in row if p["label"] == lab) for lab in ("NEGATIVE", "POSITIVE")]
                     for row in rows])


def grpc_infer(predictor, texts, datatype="BYTES"):
    client = grpcclient.InferenceServerClient(predictor.grpc_target)
    tensor = grpcclient.InferInput("text", [len(texts)], datatype)
    tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=np.object_))
    return client.infer("sentiment", [tensor])


def test_obvious_sentences_get_the_obvious_label(predictor):
    r = v1(predictor, {"instances": [POSITIVE, NEGATIVE]})
    assert r.status_code == 200
    pos, neg = r.json()["predictions"]
    assert pos[0]["label"] == "POSITIVE" and pos[0]["score"] > 0.9
    assert neg[0]["label"] == "NEGATIVE" and neg[0]["score"] > 0.9


def test_v1_lists_all_labels_sorted_by_score_summing_to_one(predictor):
    for row in v1(predictor, {"instances": TEXTS}).json()["predictions"]:
        assert {p["label"] for p in row} == {"POSITIVE", "NEGATIVE"}
        scores = [p["score"] for p in row]
        assert scores == sorted(scores, reverse=True)
        assert sum(scores) == pytest.approx(1.0, abs=1e-6)


def test_batched_equals_one_at_a_time(predictor):
    batched = v1_probs(predictor, TEXTS)
    single = np.concatenate([v1_probs(predictor, [t]) for t in TEXTS])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_concurrent_requests_each_get_their_own_answer(predictor):
    expected = {t: v1_probs(predictor, [t])[0] for t in TEXTS}
    results: dict[int, np.ndarray] = {}

    def call(i: int) -> None:
        results[i] = v1_probs(predictor, [TEXTS[i % len(TEXTS)]])[0]

    threads = [threading.Thread(target=call, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, probs in results.items():
        np.testing.assert_allclose(probs, expected[TEXTS[i % len(TEXTS)]], atol=1e-5)
    assert len(results) == 40


def test_v1_v2_rest_and_grpc_agree(predictor):
    expected = v1_probs(predictor, TEXTS)
    r = v2(predictor, [{"name": "text", "datatype": "BYTES", "shape": [len(TEXTS)], "data": TEXTS}])
    assert r.status_code == 200, r.text
    outputs = {o["name"]: o for o in r.json()["outputs"]}
    assert outputs["probabilities"]["shape"] == [len(TEXTS), 2]
    assert outputs["probabilities"]["datatype"] == "FP32"
    assert outputs["labels"]["data"] == ["NEGATIVE", "POSITIVE"]
    rest = np.array(outputs["probabilities"]["data"]).reshape(len(TEXTS), 2)
    np.testing.assert_allclose(rest, expected, atol=1e-6)

    result = grpc_infer(predictor, TEXTS)
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, atol=1e-6)
    assert result.as_numpy("labels").tolist() == [b"NEGATIVE", b"POSITIVE"]
    assert result.get_response().model_version == r.json()["model_version"]


def test_v2_accepts_any_single_input_name_and_nx1_shape(predictor):
    expected = v1_probs(predictor, [POSITIVE, NEGATIVE])
    r = v2(predictor, [{"name": "sentences", "datatype": "BYTES", "shape": [2, 1], "data": [POSITIVE, NEGATIVE]}])
    assert r.status_code == 200, r.text
    probs = np.array(r.json()["outputs"][0]["data"]).reshape(2, 2)
    np.testing.assert_allclose(probs, expected, atol=1e-6)


def test_metadata_declares_the_real_tensors(predictor):
    meta = httpx.get(f"{predictor.url}/v2/models/sentiment").json()
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
                               {"name": "labels", "datatype": "BYTES", "shape": [2]}]
    # The runtime serving (the default, named by --runtime) and the model version its answers carry.
    version = httpx.post(f"{predictor.url}/v1/models/sentiment:predict", json={"instances": ["ok"]}).json()[
        "model_version"]
    assert (meta["platform"], meta["versions"]) == ("onnx", [version]) and version.endswith("-onnx")
    grpc_meta = grpcclient.InferenceServerClient(predictor.grpc_target).get_model_metadata("sentiment")
    assert [o.name for o in grpc_meta.outputs] == ["probabilities", "labels"]
    assert grpc_meta.platform == "onnx"


def test_ready_endpoints(predictor):
    assert httpx.get(f"{predictor.url}/v2/health/ready").json() == {"ready": True}
    assert httpx.get(f"{predictor.url}/v2/models/sentiment/ready").json()["ready"] is True
    assert httpx.get(f"{predictor.url}/v1/models/sentiment").json() == {"name": "sentiment", "ready": True}
    assert grpcclient.InferenceServerClient(predictor.grpc_target).is_model_ready("sentiment")


V1_BAD = [
    ({}, 400, "'instances' is required"),
    ({"instances": []}, 400, "'instances' must contain at least one string"),
    ({"instances": "text"}, 400, "'instances' must be a list of strings, got str"),
    ({"instances": None}, 400, "'instances' is required"),
    ({"instances": ["ok", 3]}, 400, "'instances[1]' must be a string, got int"),
    ({"instances": ["ok", None]}, 400, "'instances[1]' must be a string, got null"),
    ({"instances": [["nested"]]}, 400, "'instances[0]' must be a string, got list"),
    ({"instances": ["x"] * 65}, 413, "has 65 items; the limit is 64 per request"),
    ({"instances": ["x" * 2001]}, 413, "'instances[0]' has 2001 characters; the limit is 2000"),
    (["not", "an", "object"], 400, "must be a JSON object"),
]


@pytest.mark.parametrize(("body", "status", "message"), V1_BAD)
def test_v1_bad_input(predictor, body, status, message):
    r = v1(predictor, body)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


@pytest.mark.parametrize("content_type", ["application/json", "text/plain"])
def test_v1_malformed_json(predictor, content_type):
    r = httpx.post(f"{predictor.url}/v1/models/sentiment:predict", content=b'{"instances": [',
                   headers={"content-type": content_type})
    assert r.status_code == 400
    assert "request body is not valid JSON" in r.json()["error"]


V2_BAD = [
    ([{"name": "text", "datatype": "FP32", "shape": [1], "data": [1.0]}], 400, "must have datatype BYTES, got FP32"),
    ([{"name": "text", "datatype": "BYTES", "shape": [3], "data": ["a"]}], 400, "does not match its shape [3]"),
    ([{"name": "text", "datatype": "BYTES", "shape": [1, 2], "data": ["a", "b"]}], 400, "must have shape [N]"),
    ([{"name": "text", "datatype": "BYTES", "shape": [0], "data": []}], 400, "must contain at least one string"),
    ([{"name": "a", "datatype": "BYTES", "shape": [1], "data": ["x"]},
      {"name": "b", "datatype": "BYTES", "shape": [1], "data": ["y"]}], 400, "send exactly one, or one named 'text'"),
    ([{"name": "text", "datatype": "BYTES", "shape": [65], "data": ["x"] * 65}], 413, "the limit is 64"),
    ([], 400, "request has no inputs"),
]


@pytest.mark.parametrize(("inputs", "status", "message"), V2_BAD)
def test_v2_bad_input(predictor, inputs, status, message):
    r = v2(predictor, inputs)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


V2_SCHEMA = [
    ({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1]}]}, ["body", "inputs", 0, "data"], "missing"),
    ({"inputs": "text"}, ["body", "inputs"], "list_type"),
    ({"text": ["a"]}, ["body", "inputs"], "missing"),
    (["a"], ["body"], "model_type"),
]


@pytest.mark.parametrize(("body", "loc", "kind"), V2_SCHEMA)
def test_v2_body_outside_the_schema_is_422_naming_the_field(predictor, body, loc, kind):
    r = httpx.post(f"{predictor.url}/v2/models/sentiment/infer", json=body)
    assert r.status_code == 422, r.text
    assert {"loc": loc, "type": kind} == {k: r.json()["detail"][0][k] for k in ("loc", "type")}
    assert ".".join(map(str, loc)) in r.json()["error"]


def test_v2_malformed_json_is_422(predictor):
    r = httpx.post(f"{predictor.url}/v2/models/sentiment/infer", content=b'{"inputs": [',
                   headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert r.json()["detail"][0]["type"] == "json_invalid"


def test_binary_tensor_extension_is_served_too(predictor):
    """Requests in the binary tensor extension (Inference-Header-Content-Length) stay with KServe's
    route, and answer what the JSON route answers."""
    client = httpclient.InferenceServerClient(predictor.url.removeprefix("http://"))
    tensor = httpclient.InferInput("text", [len(TEXTS)], "BYTES")
    tensor.set_data_from_numpy(np.array([t.encode() for t in TEXTS], dtype=np.object_), binary_data=True)
    result = client.infer("sentiment", [tensor])
    np.testing.assert_allclose(result.as_numpy("probabilities"), v1_probs(predictor, TEXTS), atol=1e-6)


CLOUDEVENT = {"specversion": "1.0", "id": "42", "source": "tests", "type": "org.example.predict",
              "time": "2026-11-25T00:00:00Z"}


def test_cloudevents_are_served_as_kserve_serves_them(predictor):
    """A structured event in a JSON body is unwrapped; a binary one (ce-* headers) is answered as an event."""
    r = v1(predictor, {**CLOUDEVENT, "data": {"instances": [POSITIVE]}})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0][0]["label"] == "POSITIVE"
    headers = {f"ce-{k}": v for k, v in CLOUDEVENT.items()}
    r = v1(predictor, {"instances": [NEGATIVE]}, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["ce-specversion"] == "1.0" and r.headers["ce-type"]
    assert r.json()["predictions"][0][0]["label"] == "NEGATIVE"


def test_rest_predictions_count_in_kserve_metrics(predictor):
    """The REST routes answered in front of FastAPI still go through KServe's model call and its metrics."""
    def count() -> float:
        lines = httpx.get(f"{predictor.url}/metrics").text.splitlines()
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines
                   if line.startswith('request_predict_seconds_count{model_name="sentiment"}'))

    before = count()
    v1_probs(predictor, [POSITIVE])
    assert v2(predictor, [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [NEGATIVE]}]).status_code == 200
    assert count() == before + 2


def test_grpc_errors_follow_the_error_table(predictor):
    """413 is OUT_OF_RANGE (told apart from 400's INVALID_ARGUMENT), with the same message as REST."""
    with pytest.raises(InferenceServerException) as err:
        grpc_infer(predictor, ["x" * 2001])
    assert err.value.status() == "StatusCode.OUT_OF_RANGE"
    assert err.value.message() == v2(predictor, [{"name": "text", "datatype": "BYTES", "shape": [1],
                                                 "data": ["x" * 2001]}]).json()["error"]
    client = grpcclient.InferenceServerClient(predictor.grpc_target)
    tensor = grpcclient.InferInput("text", [1], "FP32")
    tensor.set_data_from_numpy(np.array([1.0], dtype=np.float32))
    with pytest.raises(InferenceServerException, match="must have datatype BYTES"):
        client.infer("sentiment", [tensor])


def test_forward_pass_does_not_block_health_checks(predictor):
    """While a maximal request is being computed, the event loop still answers health checks."""
    done = threading.Event()
    statuses: list[int] = []

    def heavy() -> None:  # 32 texts of 362 tokens: within the default budget of 16,384 tokens
        statuses.append(v1(predictor, {"instances": ["a long sentence about a film " * 60] * 32}).status_code)
        done.set()

    thread = threading.Thread(target=heavy)
    thread.start()
    answered_while_busy = 0
    while not done.is_set():
        r = httpx.get(f"{predictor.url}/v2/health/live", timeout=5)
        assert r.status_code == 200
        answered_while_busy += not done.is_set()
    thread.join()
    assert statuses == [200]
    assert answered_while_busy >= 1


def test_sst2_dev_accuracy(predictor, shared_dir):
    """Served end to end, the default fp32 runtime keeps the model's 89.7% (fp32 does not depend on the CPU kind)."""
    del shared_dir
    texts, gold = dev_set()
    assert len(texts) == 872
    correct = 0
    for start in range(0, len(texts), 64):
        r = v1(predictor, {"instances": texts[start : start + 64]})
        assert r.status_code == 200
        for label, pred in zip(gold[start : start + 64], r.json()["predictions"], strict=True):
            correct += (pred[0]["label"] == "POSITIVE") == (label == 1)
    accuracy = correct / len(texts)
    assert accuracy >= 0.885, accuracy
