"""The transformer as a real process between real clients, a real predictor and a real redis-server."""

from __future__ import annotations

import re
import uuid

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from harness.clients import keys_in, metric, predictor_probs, rows_to_probs, seed_predict
from harness.processes import PredictorProcess, TransformerProcess

TEXTS = ["I love this movie", "This was a terrible waste of time", "Mediocre at best.",
         "A warm, funny and moving film.", "I love this movie"]


@pytest.fixture(scope="module")
def transformer(predictor, redis_server):
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    proc = TransformerProcess(f"127.0.0.1:{predictor.http_port}", redis_server.url,
                              extra=["--cache_namespace", namespace]).start()
    proc.namespace = namespace
    yield proc
    proc.stop()


def test_every_format_matches_the_predictor(transformer, predictor):
    expected = predictor_probs(predictor, TEXTS)
    np.testing.assert_allclose(seed_predict(transformer, TEXTS, "text"), expected, atol=1e-6)
    np.testing.assert_allclose(seed_predict(transformer, TEXTS, "instances"), expected, atol=1e-6)

    r = httpx.post(f"{transformer.url}/bulk-predict", json={"text": TEXTS})
    assert r.status_code == 200
    rows = r.json()["predictions"]
    assert len(rows) == len(TEXTS)
    assert [p["label"] for p in rows[0]] == ["POSITIVE", "NEGATIVE"]  # highest score first
    np.testing.assert_allclose(rows_to_probs(rows), expected, atol=1e-6)

    r = httpx.post(f"{transformer.url}/v2/models/sentiment/infer", json={"inputs": [
        {"name": "text", "datatype": "BYTES", "shape": [len(TEXTS)], "data": TEXTS}]})
    assert r.status_code == 200, r.text
    outputs = {o["name"]: o for o in r.json()["outputs"]}
    assert outputs["labels"]["data"] == ["NEGATIVE", "POSITIVE"]
    np.testing.assert_allclose(np.array(outputs["probabilities"]["data"]).reshape(-1, 2), expected, atol=1e-6)
    assert r.json()["model_version"].endswith("-onnx")  # the default runtime

    client = grpcclient.InferenceServerClient(transformer.grpc_target)
    tensor = grpcclient.InferInput("text", [len(TEXTS)], "BYTES")
    tensor.set_data_from_numpy(np.array([t.encode() for t in TEXTS], dtype=np.object_))
    result = client.infer("sentiment", [tensor])
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, atol=1e-6)
    assert result.as_numpy("labels").tolist() == [b"NEGATIVE", b"POSITIVE"]


def test_health_routes(transformer):
    assert httpx.get(f"{transformer.url}/health").json() == {"status": "healthy"}
    assert httpx.get(f"{transformer.url}/v2/health/ready").json() == {"ready": True}
    assert httpx.get(f"{transformer.url}/v1/models/sentiment").json() == {"name": "sentiment", "ready": True}


def test_mixed_hits_misses_and_duplicates(transformer, predictor, redis_server):
    first = [f"first batch sentence {uuid.uuid4().hex}", f"another good one {uuid.uuid4().hex}"]
    seed_predict(transformer, first)
    hits = metric(transformer, "sentiment_cache_hits_total")
    misses = metric(transformer, "sentiment_cache_misses_total")
    new = f"a brand new sentence {uuid.uuid4().hex}"
    texts = [new, first[1], new, first[0], first[1]]
    np.testing.assert_allclose(seed_predict(transformer, texts), predictor_probs(predictor, texts), atol=1e-6)
    assert metric(transformer, "sentiment_cache_hits_total") - hits == 2  # distinct cached texts
    assert metric(transformer, "sentiment_cache_misses_total") - misses == 1  # `new`, once
    assert len(keys_in(redis_server, transformer.namespace)) >= 3


def test_metrics_have_samples_after_requests(transformer):
    route = "/v1/models/sentiment:predict"
    requests = metric(transformer, f'sentiment_requests_total{{route="{route}",status="200"}}')
    seed_predict(transformer, [f"metrics please {uuid.uuid4().hex}"])
    seed_predict(transformer, ["metrics please, again"] * 2)
    httpx.post(f"{transformer.url}/bulk-predict", json={"text": "not a list"})
    httpx.post(f"{transformer.url}/v2/models/sentiment/infer", json={"inputs": [
        {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["v2 for KServe's own metrics"]}]})
    assert metric(transformer, f'sentiment_requests_total{{route="{route}",status="200"}}') == requests + 2
    assert metric(transformer, 'sentiment_requests_total{route="/bulk-predict",status="422"}') >= 1
    assert metric(transformer, f'sentiment_request_duration_seconds_count{{route="{route}"}}') >= requests + 2
    for name in ("sentiment_cache_hits_total", "sentiment_cache_misses_total",
                 "sentiment_redis_latency_seconds_count", "sentiment_predictor_latency_seconds_count",
                 "request_predict_seconds_count"):
        assert metric(transformer, name) > 0, name


V1_BAD = [
    ({"text": "not a list"}, 400, "'text' must be a list of strings, got str"),
    ({"text": []}, 400, "'text' must contain at least one string"),
    ({"text": ["ok", 5]}, 400, "'text[1]' must be a string, got int"),
    ({"text": [None]}, 400, "'text[0]' must be a string, got null"),
    ({"texts": ["typo"]}, 400, "request must have 'text'"),
    ({"text": ["a"], "instances": ["b"]}, 400, "not both"),
    ({"text": ["x"] * 257}, 413, "has 257 items; the limit is 256 per request"),
    ({"text": ["x" * 10_001]}, 413, "'text[0]' has 10001 characters; the limit is 10000"),
    (["a"], 400, "must be a JSON object"),
]
BULK_BAD = [  # the original app's contract: FastAPI + Pydantic's 422, our limits' 413
    ({"text": "not a list"}, 422, "body.text: Input should be a valid array"),
    ({"text": ["ok", 5]}, 422, "body.text.1: Input should be a valid string"),
    ({"text": [None]}, 422, "body.text.0: Input should be a valid string"),
    ({"texts": ["typo"]}, 422, "body.text: Field required"),
    (["a"], 422, "body: Input should be an object"),
    ({"text": ["x"] * 257}, 413, "has 257 items; the limit is 256 per request"),
    ({"text": ["x" * 10_001]}, 413, "'text[0]' has 10001 characters; the limit is 10000"),
]


@pytest.mark.parametrize(("route", "body", "status", "message"),
                         [("/v1/models/sentiment:predict", *case) for case in V1_BAD]
                         + [("/bulk-predict", *case) for case in BULK_BAD])
def test_bad_input_is_4xx_and_writes_nothing(transformer, redis_server, route, body, status, message):
    before = keys_in(redis_server, transformer.namespace)
    r = httpx.post(f"{transformer.url}{route}", json=body)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]
    assert keys_in(redis_server, transformer.namespace) == before


@pytest.mark.parametrize(("route", "status", "message"), [
    ("/v1/models/sentiment:predict", 400, "request body is not valid JSON"),
    ("/bulk-predict", 422, "body: Invalid JSON"),
])
def test_malformed_json(transformer, route, status, message):
    r = httpx.post(f"{transformer.url}{route}", content=b'{"text": [', headers={"content-type": "application/json"})
    assert r.status_code == status
    assert message in r.json()["error"]


def test_predictor_4xx_passes_through_and_is_not_cached(transformer, redis_server):
    # The session predictor allows 2000 characters; the transformer allows 10000.
    before = keys_in(redis_server, transformer.namespace)
    r = httpx.post(f"{transformer.url}/v1/models/sentiment:predict", json={"text": ["y" * 3000]})
    assert r.status_code == 413
    assert r.json()["error"] == "predictor: 'text[0]' has 3000 characters; the limit is 2000"
    assert keys_in(redis_server, transformer.namespace) == before


def _predictor_host(predictor, protocol: str) -> str:
    return f"127.0.0.1:{predictor.grpc_port if protocol == 'grpc-v2' else predictor.http_port}"


@pytest.mark.parametrize("protocol", ["v1", "grpc-v2"])
def test_other_predictor_protocols_give_the_same_answers(predictor, redis_server, protocol):
    proc = TransformerProcess(_predictor_host(predictor, protocol), redis_server.url, protocol=protocol,
                              extra=["--cache_namespace", f"p-{uuid.uuid4().hex[:8]}"]).start()
    try:
        expected = predictor_probs(predictor, TEXTS)
        np.testing.assert_allclose(seed_predict(proc, TEXTS), expected, atol=1e-6)
        np.testing.assert_allclose(seed_predict(proc, TEXTS), expected, atol=1e-6)  # now from the cache
    finally:
        proc.stop()


@pytest.mark.parametrize("protocol", ["v1", "v2", "grpc-v2"])
def test_a_predictor_error_is_the_same_error_whichever_transport_carried_it(predictor, redis_server, protocol):
    """One error table: a predictor 413 or 404 reaches the client as 413 or 404 over REST and gRPC alike."""
    too_long = TransformerProcess(_predictor_host(predictor, protocol), redis_server.url, protocol=protocol,
                                  extra=["--cache_namespace", f"e-{uuid.uuid4().hex[:8]}"])
    unknown_model = TransformerProcess(_predictor_host(predictor, protocol), redis_server.url, protocol=protocol,
                                       model_name="nosuch", extra=["--predictor_deadline_s", "2"])
    try:
        too_long.start()
        unknown_model.start()
        r = httpx.post(f"{too_long.url}/v1/models/sentiment:predict", json={"text": ["z" * 3000]})
        assert r.status_code == 413, r.text
        # The predictor names its own field: 'instances' on v1, the tensor 'text' on v2.
        assert re.fullmatch(r"predictor: '(instances|text)\[0\]' has 3000 characters; the limit is 2000",
                            r.json()["error"]), r.text
        r = httpx.post(f"{unknown_model.url}/v1/models/nosuch:predict", json={"text": ["who am i"]})
        assert r.status_code == 404, r.text
        assert r.json()["error"].startswith("predictor: ") and "nosuch" in r.json()["error"]
    finally:
        too_long.stop()
        unknown_model.stop()


def test_cached_answers_survive_the_predictor_going_away(model_dir, redis_server):
    predictor = PredictorProcess(model_dir).start()
    transformer = TransformerProcess(f"127.0.0.1:{predictor.http_port}", redis_server.url,
                                     extra=["--cache_namespace", f"c-{uuid.uuid4().hex[:8]}",
                                            "--predictor_deadline_s", "1"]).start()
    try:
        texts = ["Cache me if you can", "Utterly dreadful"]
        first = seed_predict(transformer, texts)
        predictor.stop()
        np.testing.assert_allclose(seed_predict(transformer, texts), first, atol=0)
        np.testing.assert_allclose(seed_predict(transformer, texts[::-1]), first[::-1], atol=0)
        r = httpx.post(f"{transformer.url}/v1/models/sentiment:predict", json={"text": ["not cached yet"]})
        assert r.status_code == 503
        assert "not reachable within 1s" in r.json()["error"]
    finally:
        transformer.stop()
        predictor.stop()


@pytest.mark.parametrize("route", ["/v1/models/sentiment:predict", "/bulk-predict"])
def test_oversize_body_is_413_before_it_is_read(transformer, route):
    r = httpx.post(f"{transformer.url}{route}", content=b"x" * (4 * 1024 * 1024 + 1),
                   headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert r.json()["error"] == f"request body is {4 * 1024 * 1024 + 1} bytes; the limit is {4 * 1024 * 1024}"


def test_other_methods_and_routes_still_reach_kserve(transformer):
    assert httpx.get(f"{transformer.url}/v1/models/sentiment:predict").status_code in (404, 405)
    assert httpx.get(f"{transformer.url}/v2/models/sentiment").json()["inputs"][0]["name"] == "text"
    r = httpx.post(f"{transformer.url}/v1/models/other:predict", json={"text": ["x"]})
    assert r.status_code == 404 and "other does not exist" in r.json()["error"]
