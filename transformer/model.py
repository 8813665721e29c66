"""Thin KServe adapter for the caching transformer."""

from __future__ import annotations

from typing import Any

from kserve import Model
from kserve.protocol.infer_type import InferRequest, InferResponse

from predictor.protocol import input_types, labelled, output_types, texts_from_v2, v2_response

from .caching import CachedClassifier
from .settings import TransformerSettings
from .shapes import texts_from_json


class SentimentTransformer(Model):
    """Seed `{"text": [...]}` and v1 `{"instances": [...]}` on the v1 route; v2 REST and gRPC."""

    def __init__(self, settings: TransformerSettings, classifier: CachedClassifier):
        super().__init__(settings.model_name)
        self.settings = settings
        self.classifier = classifier
        self.ready = True

    def load(self) -> bool:
        self.ready = True
        return self.ready

    def get_input_types(self) -> list[dict]:
        return input_types()

    def get_output_types(self) -> list[dict]:
        return output_types(len(self.classifier.labels or ["NEGATIVE", "POSITIVE"]))

    def validate(self, payload: Any) -> Any:
        return payload  # validated with field-naming messages below

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        return payload

    async def predict(self, payload: Any, headers: dict[str, str] | None = None,
                      response_headers: dict[str, str] | None = None) -> dict | InferResponse:
        if isinstance(payload, InferRequest):
            answer = await self.classifier.classify(texts_from_v2(payload, self.settings.limits))
            return v2_response(payload, self.name, answer.version, answer.probs, answer.labels)
        answer = await self.classifier.classify(texts_from_json(payload, self.settings.limits))
        return {"predictions": labelled(answer.probs, answer.labels)}

    async def postprocess(self, result: Any, headers: dict[str, str] | None = None,
                          response_headers: dict[str, str] | None = None) -> Any:
        return result
