"""Thin KServe adapter: v1 dicts and v2 InferRequests in, labelled probabilities out."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import numpy as np
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from kserve import Model

from .batcher import BatchQueue
from .classifier import SentimentClassifier
from .errors import BadInput
from .inputs import check_texts, json_body, texts_from_tensor
from .settings import PredictorSettings

log = logging.getLogger(__name__)

TEXT_INPUT = "text"
PROBABILITIES_OUTPUT = "probabilities"
LABELS_OUTPUT = "labels"


class SentimentPredictor(Model):
    """Serves a sequence classifier on v1 (`instances`) and v2 (a BYTES tensor of texts)."""

    def __init__(self, settings: PredictorSettings):
        super().__init__(settings.model_name)
        self.settings = settings
        self.classifier: SentimentClassifier | None = None
        self.batcher: BatchQueue | None = None

    def load(self) -> bool:
        s = self.settings
        self.classifier = SentimentClassifier(s.model_dir, runtime=s.runtime, max_length=s.max_length,
                                              threads=s.threads)
        # Warm-up at the largest batch so the first real request pays no one-off costs.
        self.classifier.predict(["warm-up sentence for the first forward pass"] * s.max_batch_size)
        self.batcher = BatchQueue(self.classifier, s.max_batch_size, s.max_wait_ms, s.max_queued_texts)
        self.batcher.start()
        log.info("model %s loaded from %s: labels=%s version=%s runtime=%s", self.name, s.model_dir,
                 self.classifier.labels, self.classifier.version, s.runtime)
        self.ready = True
        return self.ready

    def stop(self) -> None:
        if self.batcher is not None:
            self.batcher.stop()
        self.ready = False

    @property
    def labels(self) -> list[str]:
        return self.classifier.labels

    @property
    def version(self) -> str:
        return self.classifier.version

    def get_input_types(self) -> list[dict]:
        return [{"name": TEXT_INPUT, "datatype": "BYTES", "shape": [-1]}]

    def get_output_types(self) -> list[dict]:
        return [
            {"name": PROBABILITIES_OUTPUT, "datatype": "FP32", "shape": [-1, len(self.labels)]},
            {"name": LABELS_OUTPUT, "datatype": "BYTES", "shape": [len(self.labels)]},
        ]

    def validate(self, payload: Any) -> Any:
        # `predict` validates every input itself, with messages naming the field and the limit.
        return payload

    async def predict(self, payload: Any, headers: dict[str, str] | None = None,
                      response_headers: dict[str, str] | None = None) -> dict | InferResponse:
        if isinstance(payload, InferRequest):
            return await self._predict_v2(payload)
        payload = json_body(payload)
        if not isinstance(payload, dict):
            raise BadInput(f"request body must be a JSON object with 'instances', got {type(payload).__name__}")
        texts = check_texts(payload.get("instances"), "instances", self.settings.limits)
        probs = await self.batcher.submit(texts)
        return {"predictions": labelled(probs, self.labels), "model_version": self.version}

    async def _predict_v2(self, request: InferRequest) -> InferResponse:
        tensor = _text_input(request)
        if tensor.datatype != "BYTES":
            raise BadInput(f"input '{tensor.name}' must have datatype BYTES, got {tensor.datatype}")
        try:
            array = tensor.as_numpy()
        except Exception as exc:  # ragged or mismatched data/shape
            raise BadInput(f"input '{tensor.name}' does not match its shape {tensor.shape}: {exc}") from None
        texts = texts_from_tensor(array, tensor.name, self.settings.limits)
        probs = await self.batcher.submit(texts)
        # gRPC answers in raw_output_contents, which every OIP client (Triton's included) reads;
        # REST answers in JSON.
        binary = request.from_grpc
        probabilities = InferOutput(PROBABILITIES_OUTPUT, list(probs.shape), "FP32")
        probabilities.set_data_from_numpy(probs, binary_data=binary)
        labels = InferOutput(LABELS_OUTPUT, [len(self.labels)], "BYTES")
        labels.set_data_from_numpy(np.array(self.labels, dtype=np.object_), binary_data=binary)
        return InferResponse(response_id=request.id or str(uuid.uuid4()), model_name=self.name,
                             model_version=self.version, infer_outputs=[probabilities, labels])


def _text_input(request: InferRequest):
    if not request.inputs:
        raise BadInput("request has no inputs; send one BYTES input named 'text' of shape [N]")
    if len(request.inputs) == 1:
        return request.inputs[0]
    for tensor in request.inputs:
        if tensor.name == TEXT_INPUT:
            return tensor
    names = [t.name for t in request.inputs]
    raise BadInput(f"request has {len(names)} inputs {names}; send exactly one, or one named 'text'")


def labelled(probs: np.ndarray, labels: list[str]) -> list[list[dict[str, Any]]]:
    """Per text, every label with its probability, highest first."""
    out = []
    for row in probs.tolist():
        pairs = sorted(zip(labels, row, strict=True), key=lambda p: p[1], reverse=True)
        out.append([{"label": label, "score": score} for label, score in pairs])
    return out
