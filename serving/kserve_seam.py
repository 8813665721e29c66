"""The KServe internals the request paths use, in one place, each exercised at start (serving.startup).

The predictor's fast routes read v2 JSON with KServe's own request schema, leave structured CloudEvents
to KServe as KServe recognises them, and call the model as KServe's routes do; the transformer adds its
fast routes to the OpenAPI document KServe's app serves. Each of those is a KServe internal (a module
path, a helper, the shape of `Model.__call__`'s answer, how KServe's app builds `/openapi.json`); `self_test` in
`serving.startup` sends a request through each before the server starts, so a KServe upgrade that
changes one fails at start with its name. This module imports KServe: settings and tests never do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferRequest, InferResponse
from kserve.protocol.rest.v2_datamodels import InferenceRequest
from kserve.utils.utils import is_structured_cloudevent as _is_structured_cloudevent
from pydantic import ValidationError

from .errors import BadInput, SchemaViolation

Headers = dict[str, str]


def v2_request(body: bytes, model_name: str) -> InferRequest:
    """An Open Inference Protocol JSON body as KServe's v2 route reads it: 422 naming the fields for a
    body its schema refuses (`InferenceRequest`), 400 for inputs KServe cannot decode."""
    try:
        parsed = InferenceRequest.model_validate_json(body)
    except ValidationError as exc:
        raise SchemaViolation.from_errors([{**e, "loc": ("body", *e.get("loc", ()))} for e in exc.errors()]) from None
    try:
        return InferRequest.from_inference_request(parsed, model_name)
    except InvalidInput as exc:
        raise BadInput(str(exc)) from None


def v2_json(response: InferResponse) -> dict[str, Any]:
    """The JSON body KServe's v2 route answers for `response`."""
    body, _ = response.to_rest()
    return body


def is_structured_cloudevent(payload: dict) -> bool:
    """Whether KServe would unwrap `payload` as a structured CloudEvent (then its own route answers it)."""
    return _is_structured_cloudevent(payload)


async def call_model(model: Any, payload: Any, headers: Headers) -> tuple[Any, Headers]:
    """`model(payload, headers=...)` as KServe's routes call it (pre- and post-processing, KServe's
    request_*_seconds metrics, its latency line naming the x-request-id): the answer and the response
    headers the model set."""
    response, response_headers = await model(payload, headers=headers)
    return response, response_headers


def extend_openapi(app: Any, extend: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """Have KServe's app serve `extend(schema)` at `/openapi.json` (and so at `/docs`): the routes the
    fast path answers are not FastAPI routes, so FastAPI's schema alone would not list them. The
    schema is built once, on first use, as FastAPI does."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = extend(build())
        return app.openapi_schema

    app.openapi = openapi
