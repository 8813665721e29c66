"""Thin KServe adapter for the caching transformer: the Open Inference Protocol (v2 REST and gRPC).

The JSON routes (v1 and /bulk-predict) are answered in front of KServe (`routes`, `serving.fast_routes`).
"""

from __future__ import annotations

from typing import Any

from kserve import Model
from kserve.protocol.infer_type import InferRequest, InferResponse

from serving.errors import BadInput
from serving.limits import TextLimits
from serving.protocol import input_types, output_types, texts_from_v2, v2_response

from .caching import CachedClassifier


class SentimentTransformer(Model):
    """v2 REST and gRPC: one BYTES input of texts -> probabilities and labels, from the cache or the predictor."""

    def __init__(self, name: str, limits: TextLimits, classifier: CachedClassifier):
        super().__init__(name)
        self.limits = limits
        self.classifier = classifier
        self.ready = True

    def load(self) -> bool:
        self.ready = True
        return self.ready

    def stop(self) -> None:
        """KServe's stop hook, called once HTTP has drained (gRPC may still be draining): the pools stay
        open for those requests, and `close` shuts them after the last one (serving.startup.serve)."""
        self.ready = False

    async def close(self) -> None:
        """Close the predictor client and the cache's connection pool."""
        try:
            await self.classifier.client.close()
        finally:
            await self.classifier.cache.close()

    def get_input_types(self) -> list[dict]:
        return input_types()

    def get_output_types(self) -> list[dict]:
        labels = self.classifier.labels  # None until the predictor or the cache's identity record told them
        return output_types(len(labels) if labels else -1)

    def validate(self, payload: Any) -> Any:
        return payload  # validated with field-naming messages in `predict`

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        return payload

    async def predict(self, payload: Any, headers: dict[str, str] | None = None,
                      response_headers: dict[str, str] | None = None) -> InferResponse:
        if not isinstance(payload, InferRequest):
            raise BadInput(f"send an Open Inference Protocol request, or JSON to /v1/models/{self.name}:predict")
        answer = await self.classifier.classify(texts_from_v2(payload, self.limits), headers)
        return v2_response(payload, self.name, answer.version, answer.probs, answer.labels)

    async def postprocess(self, result: Any, headers: dict[str, str] | None = None,
                          response_headers: dict[str, str] | None = None) -> Any:
        return result
