"""The original app's contract, tested the way one of its clients would use it: httpx, the real stack.

The original (FastAPI + Pydantic): `POST /bulk-predict` with `SentimentRequest(text: list[str])`
answers `SentimentResponse(predictions: list[list[Sentiment(label, score)]])`, 422 for any other
body; `GET /health` -> `{"status": "healthy"}`; Swagger UI at `/docs`.
"""

from __future__ import annotations

import uuid

import httpx
import pytest

from harness.processes import TransformerProcess

LABELS = {"POSITIVE", "NEGATIVE"}


@pytest.fixture(scope="module")
def app(predictor, redis_server):
    proc = TransformerProcess(f"127.0.0.1:{predictor.http_port}", redis_server.url,
                              extra=["--cache_namespace", f"contract-{uuid.uuid4().hex[:8]}"]).start()
    yield proc
    proc.stop()


def bulk_predict(app, body) -> httpx.Response:
    return httpx.post(f"{app.url}/bulk-predict", json=body, timeout=60)


def test_bulk_predict_answers_every_label_per_text_highest_first(app):
    r = bulk_predict(app, {"text": ["example 1", "I love this movie", "This was a terrible waste of time"]})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert list(body) == ["predictions"]
    predictions = body["predictions"]
    assert len(predictions) == 3
    for row in predictions:
        assert [set(p) for p in row] == [{"label", "score"}] * 2
        assert {p["label"] for p in row} == LABELS
        scores = [p["score"] for p in row]
        assert all(isinstance(s, float) and 0 <= s <= 1 for s in scores)
        assert scores == sorted(scores, reverse=True)
        assert sum(scores) == pytest.approx(1, abs=1e-5)
    assert predictions[1][0]["label"] == "POSITIVE" and predictions[1][0]["score"] > 0.9
    assert predictions[2][0]["label"] == "NEGATIVE" and predictions[2][0]["score"] > 0.9


def test_rows_follow_the_input_order(app):
    texts = ["A warm, funny and moving film.", "Dull and lifeless.", "A warm, funny and moving film."]
    forward = bulk_predict(app, {"text": texts}).json()["predictions"]
    backward = bulk_predict(app, {"text": texts[::-1]}).json()["predictions"]
    assert backward == forward[::-1]
    assert forward[0] == forward[2]
    assert forward[0][0]["label"] != forward[1][0]["label"]


def test_an_empty_list_is_a_valid_request(app):
    r = bulk_predict(app, {"text": []})
    assert (r.status_code, r.json()) == (200, {"predictions": []})


def test_unknown_fields_are_ignored_as_pydantic_does(app):
    r = bulk_predict(app, {"text": ["I love this movie"], "lang": "en"})
    assert r.status_code == 200 and r.json()["predictions"][0][0]["label"] == "POSITIVE"


@pytest.mark.parametrize(("body", "loc"), [
    ({"text": "x"}, ["body", "text"]),
    ({"text": [1, 2]}, ["body", "text", 0]),
    ({"txt": ["I love this movie"]}, ["body", "text"]),
    ([1, 2], ["body"]),
    ({"text": None}, ["body", "text"]),
    ({"text": [["nested"]]}, ["body", "text", 0]),
])
def test_schema_violations_are_422_with_fastapi_style_detail(app, body, loc):
    r = bulk_predict(app, body)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail[0]["loc"] == loc
    assert {"loc", "msg", "type"} <= set(detail[0])
    assert "input" not in detail[0]  # texts are never echoed
    assert r.json()["error"].startswith("request does not match the schema: ")


def test_malformed_json_is_422(app):
    r = httpx.post(f"{app.url}/bulk-predict", content=b'{"text": ["unfinished', timeout=10,
                   headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert r.json()["detail"][0]["type"] == "json_invalid"


def test_limits_are_413_naming_the_limit(app):
    r = bulk_predict(app, {"text": ["x"] * 257})
    assert (r.status_code, r.json()) == (413, {"error": "'text' has 257 items; the limit is 256 per request"})


def test_health(app):
    r = httpx.get(f"{app.url}/health")
    assert (r.status_code, r.json()) == (200, {"status": "healthy"})


@pytest.mark.parametrize(("method", "path", "status"), [
    ("POST", "/predict", 404), ("POST", "/bulk_predict", 404), ("GET", "/nothing-here", 404),
    ("GET", "/bulk-predict", 405),
])
def test_unknown_routes_and_methods(app, method, path, status):
    r = httpx.request(method, f"{app.url}{path}", json={"text": ["x"]})
    assert r.status_code == status, r.text


def test_docs_and_openapi_describe_the_routes(app):
    docs = httpx.get(f"{app.url}/docs")
    assert docs.status_code == 200 and "swagger-ui" in docs.text and "/openapi.json" in docs.text
    spec = httpx.get(f"{app.url}/openapi.json").json()
    schemas = spec["components"]["schemas"]

    def body_schema(operation: dict) -> dict:
        return schemas[operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]]

    def answer_schema(operation: dict) -> dict:
        ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        return schemas[ref.rsplit("/", 1)[1]]

    bulk = spec["paths"]["/bulk-predict"]["post"]
    assert body_schema(bulk)["properties"]["text"] == {
        "type": "array", "items": {"type": "string"}, "title": "Text",
        "description": "texts to classify (an empty list gives an empty answer)"}
    assert body_schema(bulk)["required"] == ["text"]
    assert set(answer_schema(bulk)["properties"]) == {"predictions"}
    assert set(schemas["Sentiment"]["properties"]) == {"label", "score"}
    assert {"200", "413", "422"} <= set(bulk["responses"])
    v1 = spec["paths"]["/v1/models/sentiment:predict"]["post"]
    assert set(body_schema(v1)["properties"]) == {"instances", "text"}
    assert set(answer_schema(v1)["properties"]) == {"predictions"}
    assert "get" in spec["paths"]["/health"]
