"""The transformer's JSON routes: the one implementation of each, and their documentation.

`POST /bulk-predict` is the original app's contract, exactly (FastAPI + Pydantic:
`SentimentRequest(text: list[str])` -> `SentimentResponse(predictions: list[list[Sentiment]])`,
422 for anything else). `POST /v1/models/<name>:predict` follows KServe's v1 conventions (400 for
bad input) and also takes the original body `{"text": [...]}`. Both are answered by the fast path
(`serving.fast_routes.FastJsonRoutes`); `/openapi.json` and `/docs` describe them all the same.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from pydantic.json_schema import models_json_schema
from starlette.requests import Request

from serving.errors import SchemaViolation
from serving.fast_routes import Handler, Headers
from serving.limits import TextLimits, check_texts
from serving.protocol import labelled

from .caching import CachedClassifier
from .shapes import texts_from_json


class SentimentRequest(BaseModel):
    """The original app's request body."""

    text: list[str] = Field(description="texts to classify (an empty list gives an empty answer)")


class Sentiment(BaseModel):
    label: str = Field(description="a label of the model, e.g. POSITIVE")
    score: float = Field(description="its softmax probability")


class SentimentResponse(BaseModel):
    """Per text, every label with its probability, highest first; the scores of a row sum to 1."""

    predictions: list[list[Sentiment]]


class V1Request(BaseModel):
    """KServe v1: `instances`, or the original app's `text` (exactly one of them)."""

    instances: list[str] | None = Field(None, description="texts to classify (KServe v1)")
    text: list[str] | None = Field(None, description="texts to classify (the original app's field)")


class HealthResponse(BaseModel):
    status: str = "healthy"


class ErrorResponse(BaseModel):
    error: str = Field(description="what is wrong, naming the field and the limit")


_REQUEST = TypeAdapter(SentimentRequest)


class JsonRoutes:
    """The route table: path -> handler of the raw body, answering a JSON-serialisable value."""

    def __init__(self, classifier: CachedClassifier, model_name: str, limits: TextLimits):
        self.classifier = classifier
        self.limits = limits
        self.v1_path = f"/v1/models/{model_name}:predict"

    def table(self) -> dict[str, Handler]:
        return {self.v1_path: self.v1_predict, "/bulk-predict": self.bulk_predict}

    async def v1_predict(self, body: bytes, headers: Headers | None = None) -> dict[str, Any]:
        """`{"text": [...]}` or `{"instances": [...]}` -> `{"predictions": [...]}`; 400 for bad input."""
        answer = await self.classifier.classify(texts_from_json(body, self.limits), headers)
        return {"predictions": labelled(answer.probs, answer.labels)}

    async def bulk_predict(self, body: bytes, headers: Headers | None = None) -> dict[str, Any]:
        """The original contract: 422 unless the body is `{"text": list[str]}`; 413 past the limits."""
        try:
            texts = _REQUEST.validate_json(body).text
        except ValidationError as exc:
            raise SchemaViolation.from_errors([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None
        if not texts:
            return {"predictions": []}
        answer = await self.classifier.classify(check_texts(texts, "text", self.limits), headers)
        return {"predictions": labelled(answer.probs, answer.labels)}


def install_routes(app: Any, model_name: str) -> None:
    """`GET /health`, `GET /docs` and the fast routes' entries in `/openapi.json` on KServe's app."""
    @app.get("/health", response_model=HealthResponse, tags=["original app"])
    async def health() -> dict[str, str]:
        """Liveness, as the original app answered it; Redis and the predictor need not be up."""
        return {"status": "healthy"}

    install_offline_docs(app)
    from serving import kserve_seam  # imports KServe: only a serving process calls this

    kserve_seam.extend_openapi(app, lambda schema: _with_fast_routes(schema, model_name))


DOCS_ASSETS = "/docs/assets"


def install_offline_docs(app: Any) -> None:
    """`GET /docs`: Swagger UI with its JavaScript, CSS and icon served from `/docs/assets`.

    FastAPI's default page loads them from a public CDN, which leaves `/docs` blank in a cluster
    without egress. The files come from the pinned `fastapi-offline` wheel (Swagger UI 5, which
    renders FastAPI's OpenAPI 3.1); only its `static/` directory is used, since KServe builds the
    app. URLs are relative to the ASGI root_path, so the page also works behind a path prefix.
    """
    from importlib.resources import files

    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    static = files("fastapi_offline") / "static"
    missing = [n for n in ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png") if not (static / n).is_file()]
    if missing:  # a fastapi-offline upgrade that moved its files fails here, at start-up
        raise RuntimeError(f"fastapi-offline no longer ships {missing} in {static}")
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(static)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request):
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}/openapi.json", title="Sentiment transformer",
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
            # Swagger UI would otherwise send the spec to validator.swagger.io for its badge.
            swagger_ui_parameters={"validatorUrl": None})


def _with_fast_routes(schema: dict[str, Any], model_name: str) -> dict[str, Any]:
    _, defs = models_json_schema([(m, "validation") for m in (SentimentRequest, SentimentResponse, V1Request,
                                                             ErrorResponse)],
                                 ref_template="#/components/schemas/{model}")
    schema.setdefault("components", {}).setdefault("schemas", {}).update(defs["$defs"])

    def ref(name: str) -> dict[str, Any]:
        return {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}}

    errors = {
        "413": {"description": "more texts than max_texts, a text longer than max_chars, or a body over "
                               "max_body_bytes", **ref("ErrorResponse")},
        "429": {"description": "overloaded; retry after Retry-After seconds", **ref("ErrorResponse")},
        "503": {"description": "the predictor could not be reached in time", **ref("ErrorResponse")},
    }
    schema["paths"]["/bulk-predict"] = {"post": {
        "tags": ["original app"], "summary": "Bulk Predict", "operationId": "bulk_predict",
        "description": "The original app's contract: every label per text, highest score first.",
        "requestBody": {"required": True, **ref("SentimentRequest")},
        "responses": {"200": {"description": "predictions in input order", **ref("SentimentResponse")},
                      "422": {"description": "the body is not {\"text\": [string, ...]}",
                              **ref("ErrorResponse")}, **errors}}}
    schema["paths"][f"/v1/models/{model_name}:predict"] = {"post": {
        "tags": ["V1"], "summary": "Predict (KServe v1)", "operationId": "v1_predict",
        "description": "KServe v1 `{\"instances\": [...]}`, or the original `{\"text\": [...]}`.",
        "requestBody": {"required": True, **ref("V1Request")},
        "responses": {"200": {"description": "predictions in input order", **ref("SentimentResponse")},
                      "400": {"description": "malformed JSON, a missing, empty or non-string field",
                              **ref("ErrorResponse")}, **errors}}}
    # KServe's templated v1 route is answered by the fast path for this model; other names get 404.
    return schema
