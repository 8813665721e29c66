"""Render the kustomize overlays (and overlays with opt-in components) the way an operator does."""

from __future__ import annotations

import os
import subprocess
import tempfile
from functools import cache
from pathlib import Path

import pytest
import yaml

from harness.processes import REPO
from tests.kserve.kubectl import find_kubectl

KSERVE = REPO / "kserve"
OVERLAYS = ["dev", "prod"]


def kubectl() -> str:
    found = find_kubectl()
    if found is None:
        pytest.fail("no kubectl with kustomize v5 (Debian's kubernetes-client is too old): "
                    "`python -m tests.kserve.kubectl` installs one into the virtualenv, as `make install` does")
    return found


def render(path: Path) -> list[dict]:
    result = subprocess.run([kubectl(), "kustomize", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, f"kubectl kustomize {path} failed:\n{result.stderr}"
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@cache
def rendered(overlay: str) -> tuple[dict, ...]:
    return tuple(render(KSERVE / "overlays" / overlay))


# The knobs an operator's overlay sets for a component, as its README section shows them.
COMPONENT_KNOBS = {
    # components/jwt: Microsoft Entra ID (v2.0 tokens) of an example tenant.
    "jwt": {"name": "jwt", "literals": [
        "issuer=https://login.microsoftonline.com/00000000-0000-0000-0000-00000000cafe/v2.0",
        "jwksUri=https://login.microsoftonline.com/00000000-0000-0000-0000-00000000cafe/discovery/v2.0/keys",
        "audience=11111111-2222-3333-4444-555555555555",
    ], "options": {"disableNameSuffixHash": True,
                   "annotations": {"config.kubernetes.io/local-config": "true"}}},
}


def write_overlay(directory: Path, overlay: str, components: list[str], namespace: str,
                  kserve: Path = KSERVE) -> Path:
    """An overlay of the operator's own, outside the repository: `overlay` plus `components`, with
    the knobs those components need (COMPONENT_KNOBS), on the tree `kserve` (a copy, to change knobs).

    Kustomize refuses absolute paths to other kustomizations, so they are written relative.
    """
    directory.mkdir(parents=True, exist_ok=True)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(kserve / "overlays" / overlay, directory)],
        "components": [os.path.relpath(kserve / "components" / c, directory) for c in components],
        "namespace": namespace,
    }
    knobs = [COMPONENT_KNOBS[c] for c in components if c in COMPONENT_KNOBS]
    if knobs:
        kustomization["configMapGenerator"] = knobs
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return directory


@cache
def rendered_prod_with_grpc() -> tuple[dict, ...]:
    return rendered_setup("prod+grpc")


@cache
def rendered_setup(setup: str) -> tuple[dict, ...]:
    """`<overlay>[+<component>...]`, e.g. `prod+jwt+grpc`, rendered as an operator's overlay would be."""
    overlay, *components = setup.split("+")
    if not components:
        return rendered(overlay)
    with tempfile.TemporaryDirectory() as tmp:
        return tuple(render_setup(setup, Path(tmp)))


def render_setup(setup: str, work: Path, kserve: Path = KSERVE) -> list[dict]:
    """`setup` rendered from the tree `kserve`, its operator's overlay written under `work`."""
    overlay, *components = setup.split("+")
    if not components:
        return render(kserve / "overlays" / overlay)
    return render(write_overlay(work / setup.replace("+", "-"), overlay, components, f"sentiment-{overlay}", kserve))


def find(docs, kind: str, name: str) -> dict:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]
