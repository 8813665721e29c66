"""Thin KServe adapter: v1 dicts and v2 InferRequests in, labelled probabilities out."""

from __future__ import annotations

import logging
from typing import Any

from kserve import Model
from kserve.protocol.infer_type import InferRequest, InferResponse

from serving.errors import BadInput
from serving.limits import check_texts, json_body
from serving.protocol import input_types, output_types, texts_from_v2, v1_response, v2_response

from .batcher import BatchQueue
from .calibration import RuntimeChoice
from .classifier import SentimentClassifier
from .loading import LoadedModel, load_model
from .metrics import RUNTIME_INFO
from .settings import PredictorSettings

log = logging.getLogger(__name__)


class SentimentPredictor(Model):
    """Serves a sequence classifier on v1 (`instances`) and v2 (a BYTES tensor of texts)."""

    def __init__(self, settings: PredictorSettings):
        super().__init__(settings.model_name)
        self.settings = settings
        self.classifier: SentimentClassifier | None = None
        self.batcher: BatchQueue | None = None
        self.runtime_choice: RuntimeChoice | None = None

    def load(self, loaded: LoadedModel | None = None) -> bool:
        """Serve `loaded` (the model `python -m predictor` loaded while KServe was imported), or load it now."""
        s = self.settings
        loaded = loaded or load_model(s)
        plan = loaded.plan
        log.info("forward passes: %d at once, %d thread(s) each (%s)", plan.passes, plan.threads, plan.source)
        self.classifier = loaded.classifier
        self.batcher = BatchQueue(self.classifier, s.max_batch_size, s.max_wait_ms, s.max_queued_texts,
                                  max_batch_tokens=s.max_batch_tokens, max_request_tokens=s.max_request_tokens,
                                  max_queued_tokens=s.max_queued_tokens, workers=plan.passes)
        self.batcher.start()
        choice = self.runtime_choice = loaded.runtime
        RUNTIME_INFO.labels(choice.runtime, choice.decision.reason, choice.source, choice.cpu_class).set(1)
        log.info("model %s loaded from %s: labels=%s version=%s %s", self.name, s.model_dir,
                 self.classifier.labels, self.classifier.version, choice.describe())
        self.ready = True
        return self.ready

    def stop(self) -> None:
        """Refuse new requests (503) and let the accepted ones finish; returns at once.

        On SIGTERM KServe calls this on the event loop, after uvicorn has drained its HTTP
        connections and before it stops gRPC with a grace period that waits for the calls in
        flight: those still need the loop and the workers to get their answers.
        """
        if self.batcher is not None:
            self.batcher.stop()
        self.ready = False

    @property
    def labels(self) -> list[str]:
        return self.classifier.labels

    @property
    def version(self) -> str:
        return self.classifier.version

    @property
    def platform(self) -> str:
        """The v2 metadata's `platform` (serving.startup fills it in): the runtime serving, and why."""
        choice = self.runtime_choice
        if choice is None:
            return ""
        return choice.runtime if choice.source == "flag" else (
            f"{choice.runtime} (--runtime auto: {choice.decision.reason}, decided at {choice.source} for CPU class "
            f"{choice.cpu_class})")

    def get_input_types(self) -> list[dict]:
        return input_types()

    def get_output_types(self) -> list[dict]:
        return output_types(len(self.labels))

    def validate(self, payload: Any) -> Any:
        # `predict` validates every input itself, with messages naming the field and the limit.
        return payload

    async def predict(self, payload: Any, headers: dict[str, str] | None = None,
                      response_headers: dict[str, str] | None = None) -> dict | InferResponse:
        if isinstance(payload, InferRequest):
            texts = texts_from_v2(payload, self.settings.limits)
            probs = await self.batcher.submit(texts)
            return v2_response(payload, self.name, self.version, probs, self.labels)
        payload = json_body(payload)
        if not isinstance(payload, dict):
            raise BadInput(f"request body must be a JSON object with 'instances', got {type(payload).__name__}")
        texts = check_texts(payload.get("instances"), "instances", self.settings.limits)
        probs = await self.batcher.submit(texts)
        return v1_response(probs, self.labels, self.version)
