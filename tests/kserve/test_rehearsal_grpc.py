"""Pod rehearsal of components/grpc: the predictor-only InferenceService `sentiment-grpc`, started from the
rendered prod+grpc manifests (its image and modelcar when built), answers Open Inference Protocol gRPC on
its h2c port with the same model as the main predictor."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from harness.sandbox import bwrap_problem
from tests.kserve.rehearsal import Rehearsal
from tests.kserve.rendering import rendered_setup

pytestmark = pytest.mark.timeout(420)

TEXTS = ["I love this movie", "This was a terrible waste of time"]


@pytest.fixture(scope="module")
def grpc_pod(tmp_path_factory, exported_model):
    problem = bwrap_problem()
    if problem:
        pytest.skip(problem)
    rehearsal = Rehearsal(list(rendered_setup("prod+grpc")), tmp_path_factory.mktemp("rehearsal-grpc"))
    try:
        pod = rehearsal.component("sentiment-grpc", "predictor", models=exported_model)
        pod.wait_ready(300)
        yield pod
    finally:
        rehearsal.stop()


def _infer(target: str):
    client = grpcclient.InferenceServerClient(target)
    text = grpcclient.InferInput("text", [len(TEXTS)], "BYTES")
    text.set_data_from_numpy(np.array([t.encode() for t in TEXTS], dtype=object))
    result = client.infer("sentiment", [text])
    return result.as_numpy("probabilities"), [b.decode() for b in result.as_numpy("labels")], \
        result.get_response().model_version


def test_the_grpc_component_answers_oip_grpc_on_its_h2c_port(grpc_pod, predictor):
    assert grpc_pod.container["ports"] == [{"name": "h2c", "containerPort": 8081, "protocol": "TCP"}]
    probs, labels, version = _infer(f"127.0.0.1:{grpc_pod.port('h2c')}")
    expected, expected_labels, expected_version = _infer(predictor.grpc_target)
    assert labels == expected_labels == ["NEGATIVE", "POSITIVE"]
    assert version == expected_version  # the modelcar's export carries the shared model's fingerprint
    np.testing.assert_allclose(probs, expected, atol=1e-4)
    assert grpc_pod.probe("livenessProbe")  # tcpSocket on the serving port, as Knative rewrites it
