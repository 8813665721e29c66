"""Pod rehearsal of dev with components/runtime: the predictor pod KServe builds from the ServingRuntime
and `predictor.model` (tests/kserve/kserve_merge.py), its modelcar's model reached through the
/mnt/models symlink, and the transformer in front, then a prediction through both. Needs bubblewrap
(make system-deps) and the shared model, which stands in for the modelcar image's /models."""

from __future__ import annotations

import re
import subprocess
from types import SimpleNamespace

import httpx
import pytest

from harness.sandbox import bwrap_problem
from tests.kserve.rehearsal import MODELCAR_ROOT, MODELS_MOUNT, Rehearsal
from tests.kserve.rendering import rendered_setup

pytestmark = pytest.mark.timeout(420)

TEXTS = ["I love this movie", "This was a terrible waste of time"]
COLD_START_S = 300


@pytest.fixture(scope="module")
def pods(tmp_path_factory, exported_model):
    problem = bwrap_problem()  # fails when bwrap is missing: make system-deps installs it
    if problem:
        pytest.skip(problem)
    docs = list(rendered_setup("dev+runtime"))
    rehearsal = Rehearsal(docs, tmp_path_factory.mktemp("rehearsal-runtime"))
    try:
        redis_pod = rehearsal.deployment("sentiment-redis")
        # The modelcar image's sidecar when `make images` built it; else the export stands in for its /models.
        predictor = rehearsal.component("sentiment", "predictor", models=exported_model)
        transformer = rehearsal.component("sentiment", "transformer")
        for pod in (redis_pod, predictor, transformer):
            pod.wait_ready(COLD_START_S)
        yield SimpleNamespace(predictor=predictor, transformer=transformer, all=[redis_pod, predictor, transformer],
                              sidecars=rehearsal.sidecars)
    finally:
        rehearsal.stop()


def test_prediction_through_the_transformer_and_the_runtime_predictor(pods):
    response = httpx.post(f"{pods.transformer.url()}/bulk-predict", json={"text": TEXTS}, timeout=60)
    assert response.status_code == 200, response.text
    rows = response.json()["predictions"]
    assert [row[0]["label"] for row in rows] == ["POSITIVE", "NEGATIVE"]
    assert all(row[0]["score"] > 0.9 for row in rows)


def test_the_predictor_runs_the_merged_container(pods):
    predictor = pods.predictor
    # {{.Name}} rendered to the InferenceService's name, and KServe's env on top of the runtime's.
    assert "--model_name=sentiment" in predictor.argv and "--model_dir=/mnt/models" in predictor.argv
    assert predictor.env["INFERENCE_SERVICE_NAME"] == "sentiment"
    assert predictor.env["MODEL_INIT_MODE"] == "async"
    assert predictor.container["readinessProbe"]["httpGet"]["path"] == "/v2/models/sentiment/ready"
    # /mnt/models is the modelcar's symlink, as in the cluster; the model behind it is read-only.
    script = f"readlink {MODELS_MOUNT}; ls {MODELS_MOUNT}/config.json; touch {MODELS_MOUNT}/x 2>&1"
    out = subprocess.run(predictor.sandbox.wrap(["sh", "-c", script]), capture_output=True, text=True,
                         timeout=30, pass_fds=predictor.sandbox.pass_fds).stdout.splitlines()
    # The sidecar's root filesystem through the shared process namespace, or the stand-in's mount.
    target = r"/proc/\d+/root/models" if pods.sidecars else re.escape(f"{MODELCAR_ROOT}/models")
    assert re.fullmatch(target, out[0]) and out[1] == f"{MODELS_MOUNT}/config.json", out
    assert "Read-only file system" in out[2]


def test_pods_stay_up_and_write_only_to_declared_volumes(pods):
    for pod in pods.all:
        assert pod.process.alive, f"{pod.name} exited:\n{pod.process.log()[-3000:]}"
        if "livenessProbe" in pod.container:
            assert pod.probe("livenessProbe"), f"{pod.name}: liveness probe fails"
        assert pod.write_errors() == [], f"{pod.name} tried to write outside its volumes"
