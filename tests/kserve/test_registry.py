"""The registry knob: one line in an overlay moves every image of ours (containers, the ServingRuntime,
the modelcar's oci:// URI) to another registry, in every setup, with or without each component."""

from __future__ import annotations

import shutil

import pytest
import yaml

from harness.processes import REPO
from harness.readme import readme_section
from tests.kserve.rendering import KSERVE, OVERLAYS, find, render_setup, rendered_setup

DEFAULT = "ghcr.io/example"
SETUPS = [*OVERLAYS, "dev+runtime", "prod+grpc", "prod+runtime+grpc+jwt+monitoring", "prod+hf-download"]
KNOB = "registry=ghcr.io/example"


def our_images(docs) -> list[str]:
    """Every image reference of ours in the output: containers, ServingRuntimes, model URIs."""
    found = []
    for doc in docs:
        if doc["kind"] == "InferenceService":
            for component in doc["spec"].values():
                found += [c["image"] for c in component.get("containers", [])]
                found += [e["value"] for c in component.get("containers", []) for e in c.get("env", [])
                          if e["name"] == "STORAGE_URI" and e["value"].startswith("oci://")]
                if "model" in component:
                    found.append(component["model"]["storageUri"])
        elif doc["kind"] == "ServingRuntime":
            found += [c["image"] for c in doc["spec"]["containers"]]
    return found


@pytest.fixture(scope="module")
def moved(tmp_path_factory):
    """Every setup rendered from a copy of kserve/ (and observability/, which monitoring includes)
    whose overlays say registry=myregistry.azurecr.io/ml."""
    work = tmp_path_factory.mktemp("registry")
    shutil.copytree(KSERVE, work / "kserve")
    shutil.copytree(REPO / "observability", work / "observability")
    for overlay in OVERLAYS:
        kustomization = work / "kserve" / "overlays" / overlay / "kustomization.yaml"
        text = kustomization.read_text()
        assert text.count(KNOB) == 1, f"{overlay}: the registry knob is not one line"
        kustomization.write_text(text.replace(KNOB, "registry=myregistry.azurecr.io/ml"))
    return {setup: render_setup(setup, work, work / "kserve") for setup in SETUPS}


@pytest.mark.parametrize("setup", SETUPS)
def test_one_line_moves_every_image_of_ours(moved, setup):
    docs = moved[setup]
    assert DEFAULT not in yaml.safe_dump_all(docs)
    assert not [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] in ("images", "oci-scheme")]
    images = our_images(docs)
    assert images and all(i.removeprefix("oci://").startswith("myregistry.azurecr.io/ml/sentiment-")
                          for i in images), images
    # Only the registry changed: the same images, tags and URIs as by default.
    assert [i.replace("myregistry.azurecr.io/ml/", f"{DEFAULT}/") for i in images] == \
        our_images(rendered_setup(setup))


def test_images_of_others_stay_where_they_are(moved):
    for setup, docs in moved.items():
        [redis] = find(docs, "Deployment", "sentiment-redis")["spec"]["template"]["spec"]["containers"]
        assert redis["image"].startswith("redis:"), setup


def test_the_modelcar_uri_keeps_its_scheme_and_tag(moved):
    svc = find(moved["prod+runtime+grpc+jwt+monitoring"], "InferenceService", "sentiment")
    assert svc["spec"]["predictor"]["model"]["storageUri"] == \
        "oci://myregistry.azurecr.io/ml/sentiment-model:distilbert-sst2-714eb0f"
    for setup, name, tag in (("prod", "sentiment", "distilbert-sst2-714eb0f"),
                             ("prod+grpc", "sentiment-grpc", "distilbert-sst2-714eb0f"),
                             ("dev", "sentiment", "sentiment-minilm-sst2")):
        predictor = find(moved[setup], "InferenceService", name)["spec"]["predictor"]
        [uri] = [e["value"] for e in predictor["containers"][0]["env"] if e["name"] == "STORAGE_URI"]
        assert uri == f"oci://myregistry.azurecr.io/ml/sentiment-model:{tag}", (setup, name)
    [runtime] = [d for d in moved["dev+runtime"] if d["kind"] == "ServingRuntime"]
    assert runtime["spec"]["containers"][0]["image"] == "myregistry.azurecr.io/ml/sentiment-predictor:0.1.0"


def test_readme_shows_the_change():
    section = readme_section("**Your registry.**")
    assert KNOB in section and "kserve/components/registry" in section
