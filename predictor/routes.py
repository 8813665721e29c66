"""The predictor's hot REST routes, answered in front of KServe's FastAPI app (serving.fast_routes).

`POST /v2/models/<name>/infer` (JSON) and `POST /v1/models/<name>:predict` go through the same
model call KServe would make (`Model.__call__`: KServe's `request_*_seconds` metrics, the model's
validation and its 4xx messages) without FastAPI's routing, dependency solving and response
re-validation, which cost more CPU than the forward pass of a short text. The request schema is
KServe's own (`InferenceRequest`), so a malformed body gets the same 422; every KServe internal this
takes is in `serving.kserve_seam`, exercised at start. Requests in the binary
tensor extension (`Inference-Header-Content-Length`), CloudEvents (binary `ce-*` headers, the
`application/cloudevents+json` content type, or a structured event in a JSON body: KServe unwraps
and re-wraps them), gRPC and every other route stay with KServe.
"""

from __future__ import annotations

from typing import Any

from kserve import Model

from serving.errors import Unavailable
from serving.fast_routes import Handler, Headers, PassThrough, Reply
from serving.kserve_seam import call_model, is_structured_cloudevent, v2_json, v2_request
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
        if not model.ready:
            raise Unavailable(f"model {name} is not ready")
        return await call_model(model, payload, headers)

    async def v2_infer(body: bytes, headers: Headers) -> Any:
        response, response_headers = await call(v2_request(body, name), headers)
        return Reply(v2_json(response), response_headers) if response_headers else v2_json(response)

    async def v1_predict(body: bytes, headers: Headers) -> Any:
        payload = json_body(body)
        if isinstance(payload, dict) and is_structured_cloudevent(payload):
            raise PassThrough
        response, response_headers = await call(payload, headers)
        return Reply(response, response_headers) if response_headers else response

    return {f"/v2/models/{name}/infer": v2_infer, f"/v1/models/{name}:predict": v1_predict}
