"""Render the kustomize overlays the way an operator does."""

from __future__ import annotations

import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest
import yaml

from tests.processes import REPO

KSERVE = REPO / "kserve"
OVERLAYS = ["dev", "prod"]


def render(path: Path) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl not found: install it (apt-get install -y kubernetes-client)")
    result = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, f"kubectl kustomize {path} failed:\n{result.stderr}"
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@cache
def rendered(overlay: str) -> tuple[dict, ...]:
    return tuple(render(KSERVE / "overlays" / overlay))


def find(docs, kind: str, name: str) -> dict:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]
