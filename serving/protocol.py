"""Wire shapes of the sentiment API, shared by the predictor and the transformer (no torch).

v1: `{"instances": [text, ...]}` -> `{"predictions": [[{"label", "score"}, ...], ...],
"labels": [...], "model_version": "..."}`, each row holding every label, highest score first.
v2: one BYTES input of shape [N] -> FP32 `probabilities` [N, num_labels] in `labels` order,
plus BYTES `labels` [num_labels].
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
from kserve.protocol.infer_type import InferInput, InferOutput, InferRequest, InferResponse

from .errors import BadInput
from .limits import TextLimits, texts_from_tensor

TEXT_INPUT = "text"
PROBABILITIES_OUTPUT = "probabilities"
LABELS_OUTPUT = "labels"


def input_types() -> list[dict]:
    return [{"name": TEXT_INPUT, "datatype": "BYTES", "shape": [-1]}]


def output_types(num_labels: int) -> list[dict]:
    return [
        {"name": PROBABILITIES_OUTPUT, "datatype": "FP32", "shape": [-1, num_labels]},
        {"name": LABELS_OUTPUT, "datatype": "BYTES", "shape": [num_labels]},
    ]


def labelled(probs: np.ndarray, labels: list[str]) -> list[list[dict[str, Any]]]:
    """Per text, every label with its probability, highest first."""
    out = []
    for row in probs.tolist():
        pairs = sorted(zip(labels, row, strict=True), key=lambda p: p[1], reverse=True)
        out.append([{"label": label, "score": score} for label, score in pairs])
    return out


def v1_response(probs: np.ndarray, labels: list[str], version: str) -> dict[str, Any]:
    return {"predictions": labelled(probs, labels), "labels": labels, "model_version": version}


def texts_from_v2(request: InferRequest, limits: TextLimits) -> list[str]:
    """The texts of a v2 request: its only input, or the one named 'text'; BYTES of shape [N]."""
    tensor = _text_input(request)
    if tensor.datatype != "BYTES":
        raise BadInput(f"input '{tensor.name}' must have datatype BYTES, got {tensor.datatype}")
    try:
        array = tensor.as_numpy()
    except Exception as exc:  # ragged or mismatched data/shape
        raise BadInput(f"input '{tensor.name}' does not match its shape {tensor.shape}: {exc}") from None
    return texts_from_tensor(array, tensor.name, limits)


def _text_input(request: InferRequest) -> InferInput:
    if not request.inputs:
        raise BadInput("request has no inputs; send one BYTES input named 'text' of shape [N]")
    if len(request.inputs) == 1:
        return request.inputs[0]
    for tensor in request.inputs:
        if tensor.name == TEXT_INPUT:
            return tensor
    names = [t.name for t in request.inputs]
    raise BadInput(f"request has {len(names)} inputs {names}; send exactly one, or one named 'text'")


def v2_response(request: InferRequest, model_name: str, version: str, probs: np.ndarray,
                labels: list[str]) -> InferResponse:
    # gRPC answers in raw_output_contents, which every OIP client (Triton's included) reads;
    # REST answers in JSON.
    binary = request.from_grpc
    probabilities = InferOutput(PROBABILITIES_OUTPUT, list(probs.shape), "FP32")
    probabilities.set_data_from_numpy(np.asarray(probs, dtype=np.float32), binary_data=binary)
    label_tensor = InferOutput(LABELS_OUTPUT, [len(labels)], "BYTES")
    label_tensor.set_data_from_numpy(np.array(labels, dtype=np.object_), binary_data=binary)
    return InferResponse(response_id=request.id or str(uuid.uuid4()), model_name=model_name,
                         model_version=version, infer_outputs=[probabilities, label_tensor])
