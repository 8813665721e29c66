"""The predictor's hot REST routes, answered in front of KServe's FastAPI app (serving.fast_routes).

`POST /v2/models/<name>/infer` (JSON) and `POST /v1/models/<name>:predict` go through the same
model call KServe would make (`Model.__call__`: KServe's `request_*_seconds` metrics, the model's
validation and its 4xx messages) without FastAPI's routing, dependency solving and response
re-validation, which cost more CPU than the forward pass of a short text. The request schema is
KServe's own (`InferenceRequest`), so a malformed body gets the same 422. Requests in the binary
tensor extension (`Inference-Header-Content-Length`), CloudEvents (binary `ce-*` headers, the
`application/cloudevents+json` content type, or a structured event in a JSON body: KServe unwraps
and re-wraps them), gRPC and every other route stay with KServe.
"""

from __future__ import annotations

from typing import Any

from kserve import Model
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferRequest
from kserve.protocol.rest.v2_datamodels import InferenceRequest
from kserve.utils.utils import is_structured_cloudevent
from pydantic import ValidationError

from serving.errors import BadInput, SchemaViolation, Unavailable
from serving.fast_routes import Handler, Headers, PassThrough, Reply
from serving.limits import json_body

KSERVE_ONLY_HEADERS = frozenset({b"inference-header-content-length", b"ce-specversion"})
CLOUDEVENT_CONTENT_TYPE = b"application/cloudevents+json"


def kserve_only(scope: dict) -> bool:
    """Requests KServe's own route must answer: the binary tensor extension and CloudEvents."""
    for name, value in scope["headers"]:
        if name in KSERVE_ONLY_HEADERS or (name == b"content-type" and value.startswith(CLOUDEVENT_CONTENT_TYPE)):
            return True
    return False


def fast_routes(model: Model) -> dict[str, Handler]:
    name = model.name

    async def call(payload: Any, headers: Headers) -> tuple[Any, Headers]:
        """As KServe's routes call the model: with the request's headers (its latency lines name the
        x-request-id), answering the response headers the model set."""
        if not model.ready:
            raise Unavailable(f"model {name} is not ready")
        return await model(payload, headers=headers)

    async def v2_infer(body: bytes, headers: Headers) -> Any:
        try:
            parsed = InferenceRequest.model_validate_json(body)
        except ValidationError as exc:
            raise SchemaViolation.from_errors(
                [{**e, "loc": ("body", *e.get("loc", ()))} for e in exc.errors()]) from None
        try:
            request = InferRequest.from_inference_request(parsed, name)
        except InvalidInput as exc:
            raise BadInput(str(exc)) from None
        response, response_headers = await call(request, headers)
        rest, _ = response.to_rest()
        return Reply(rest, response_headers) if response_headers else rest

    async def v1_predict(body: bytes, headers: Headers) -> Any:
        payload = json_body(body)
        if isinstance(payload, dict) and is_structured_cloudevent(payload):
            raise PassThrough
        response, response_headers = await call(payload, headers)
        return Reply(response, response_headers) if response_headers else response

    return {f"/v2/models/{name}/infer": v2_infer, f"/v1/models/{name}:predict": v1_predict}
