"""components/runtime: a ServingRuntime for the predictor image and `sentiment` served through it.
The checks see the pod spec KServe would build (tests/kserve/kserve_merge.py, with sources): the
same container as the raw-container default, admitted by Knative (test_knative_admission), with the
model fetched by a modelcar; the pod itself is rehearsed in test_rehearsal."""

from __future__ import annotations

import copy

import pytest
import yaml

from harness.readme import readme_section
from tests.kserve.kserve_merge import (
    CONTAINER,
    MODELCAR,
    PROVISION_VOLUME,
    merge_runtime_container,
    predictor_pod_spec,
    replace_placeholders,
    storage_uri,
    strategic_merge,
    with_storage,
)
from tests.kserve.rendering import OVERLAYS, find, rendered, rendered_setup
from tests.kserve.test_manifests import validate

PRODUCTION_MODEL = "oci://ghcr.io/example/sentiment-model:distilbert-sst2-714eb0f"
RUNTIME_SETUPS = ["dev+runtime", "prod+runtime", "prod+runtime+grpc+jwt"]


def isvc(docs) -> dict:
    return find(docs, "InferenceService", "sentiment")


@pytest.mark.parametrize("setup", RUNTIME_SETUPS)
def test_runtime_setups_render_and_validate_strictly(setup):
    docs = rendered_setup(setup)
    for doc in docs:
        validate(doc)
    [runtime] = [d for d in docs if d["kind"] == "ServingRuntime"]
    assert runtime["metadata"]["namespace"] == isvc(docs)["metadata"]["namespace"]  # namespaced, not cluster-wide


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_predictor_is_a_model_of_the_runtime(overlay):
    svc = isvc(rendered_setup(f"{overlay}+runtime"))
    predictor = svc["spec"]["predictor"]
    assert "containers" not in predictor
    model = predictor["model"]
    assert set(model) == {"modelFormat", "runtime", "storageUri", "protocolVersion", "resources"}
    # The overlay's own modelcar (kserve/base's, or dev's), moved from the raw container's STORAGE_URI.
    raw = isvc(rendered(overlay))["spec"]["predictor"]["containers"][0]["env"]
    assert model["storageUri"] == next(e["value"] for e in raw if e["name"] == "STORAGE_URI")
    if overlay == "prod":
        assert model["storageUri"] == PRODUCTION_MODEL
    # The protocol KServe wires the predictor for is the one the transformer speaks to it.
    transformer_args = svc["spec"]["transformer"]["containers"][0]["args"]
    assert f"--predictor_protocol={model['protocolVersion']}" in transformer_args
    # Triton's runtime auto-selects `onnx` (and KServe's others claim their framework names).
    assert model["modelFormat"]["name"] not in {"onnx", "pytorch", "huggingface", "triton", "tensorflow"}
    runtime = find(rendered_setup(f"{overlay}+runtime"), "ServingRuntime", model["runtime"])
    assert model["modelFormat"] in [{k: f[k] for k in ("name", "version")} for f in
                                    runtime["spec"]["supportedModelFormats"]]
    # The transformer in front is the raw-container default's, untouched.
    assert svc["spec"]["transformer"] == isvc(rendered(overlay))["spec"]["transformer"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kserve_builds_the_same_predictor_container_as_the_raw_default(overlay):
    """Security context, probes, resources (the overlay's), args, ports, mounts: all as today's."""
    raw = isvc(rendered(overlay))["spec"]["predictor"]
    [expected] = copy.deepcopy(raw["containers"])
    expected["env"] = [e for e in expected["env"] if e["name"] != "STORAGE_URI"]  # storageUri instead
    expected["env"].append({"name": "INFERENCE_SERVICE_NAME", "value": "sentiment"})  # KServe adds it to any
    pod = predictor_pod_spec(rendered_setup(f"{overlay}+runtime"), isvc(rendered_setup(f"{overlay}+runtime")))
    [container] = pod["containers"]
    assert container == expected
    assert {k: v for k, v in pod.items() if k != "containers"} == \
        {k: raw[k] for k in ("automountServiceAccountToken", "volumes")}


def test_the_runtime_uses_kserve_templating_for_the_model_name():
    runtime = find(rendered_setup("prod+runtime"), "ServingRuntime", "sentiment-predictor")
    text = yaml.safe_dump(runtime)
    assert "--model_name={{.Name}}" in text and "/v2/models/{{.Name}}/ready" in text
    assert "sentiment/ready" not in text  # nothing hard-codes the InferenceService's name


def test_the_modelcar_brings_the_production_model():
    docs = rendered_setup("prod+runtime")
    svc = isvc(docs)
    pod = with_storage(predictor_pod_spec(docs, svc), storage_uri(svc, predictor_pod_spec(docs, svc)))
    assert [c["name"] for c in pod["containers"]] == [CONTAINER, MODELCAR]
    modelcar = pod["containers"][1]
    assert modelcar["image"] == PRODUCTION_MODEL.removeprefix("oci://")
    assert pod["shareProcessNamespace"] is True
    kserve = pod["containers"][0]
    assert {"name": PROVISION_VOLUME, "mountPath": "/mnt", "readOnly": False} in kserve["volumeMounts"]
    assert {"name": "MODEL_INIT_MODE", "value": "async"} in kserve["env"]
    assert "--model_dir=/mnt/models" in kserve["args"]


def test_a_download_uri_gets_the_storage_initializer_instead():
    svc = isvc(rendered_setup("prod+hf-download"))
    pod = {k: v for k, v in svc["spec"]["predictor"].items() if k in ("containers", "volumes")}
    injected = with_storage(pod, storage_uri(svc, pod))
    [init] = injected["initContainers"]
    assert init["name"] == "storage-initializer" and init["args"][1] == "/mnt/models"
    assert init["args"][0].startswith("hf://")
    assert {"name": PROVISION_VOLUME, "mountPath": "/mnt/models", "readOnly": True} in \
        injected["containers"][0]["volumeMounts"]


def test_strategic_merge_and_args_follow_kserve():
    runtime = {"name": CONTAINER, "image": "img", "args": ["--a=1"],
               "env": [{"name": "X", "value": "1"}, {"name": "Y", "valueFrom": {"secretKeyRef": {"name": "s",
                                                                                                "key": "k"}}}],
               "resources": {"limits": {"cpu": "2", "memory": "1Gi"}}}
    model = {"args": ["--b=2"], "env": [{"name": "Y", "value": "literal"}, {"name": "Z", "value": "3"}],
             "resources": {"limits": {"cpu": "1"}}}
    merged = merge_runtime_container(runtime, model)
    assert merged["args"] == ["--a=1", "--b=2"]  # concatenated, not replaced
    assert merged["env"] == [{"name": "X", "value": "1"}, {"name": "Y", "value": "literal"},
                             {"name": "Z", "value": "3"}]
    assert merged["resources"] == {"limits": {"cpu": "1", "memory": "1Gi"}}  # merged key by key
    assert merged["image"] == "img" and merged["name"] == CONTAINER
    assert strategic_merge({"volumes": [{"name": "a", "emptyDir": {}}]},
                           {"volumes": [{"name": "a", "emptyDir": {"sizeLimit": "1Gi"}}, {"name": "b"}]},
                           {"volumes": "name"}) == {"volumes": [{"name": "a", "emptyDir": {"sizeLimit": "1Gi"}},
                                                                {"name": "b"}]}


def test_placeholders_render_like_kserve_and_unknown_actions_are_refused():
    meta = {"name": "sentiment", "namespace": "ns", "labels": {"team": "nlp"}}
    container = {"args": ["--model_name={{.Name}}", "--ns={{ .Namespace }}", "--team={{.Labels.team}}"]}
    assert replace_placeholders(container, meta)["args"] == ["--model_name=sentiment", "--ns=ns", "--team=nlp"]
    with pytest.raises(AssertionError, match="not modelled"):
        replace_placeholders({"args": ["{{.Spec.Predictor}}"]}, meta)


def test_a_runtime_that_does_not_serve_the_format_is_refused():
    docs = [copy.deepcopy(d) for d in rendered_setup("prod+runtime")]
    find(docs, "ServingRuntime", "sentiment-predictor")["spec"]["supportedModelFormats"][0]["name"] = "onnx"
    with pytest.raises(AssertionError, match="does not serve"):
        predictor_pod_spec(docs, isvc(docs))


def test_readme_says_when_to_choose_the_runtime():
    section = readme_section("**ServingRuntime (opt-in).**")
    assert "kserve/components/runtime" in section and "raw-container" in section
    assert PRODUCTION_MODEL in section
