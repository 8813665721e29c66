"""The images, built from the Dockerfiles as written, and their root filesystems for the tests.

    python -m harness.images build [--only NAME ...]   # what `make images` runs
    python -m harness.images sizes

With a Docker engine, `docker build`; otherwise Debian's buildah (`buildah bud --isolation chroot`, as
root). When the base image (`python:3.11-slim-bookworm`) is neither present nor pullable (no registry
reachable), a stand-in is made from Debian's own packages with mmdebstrap: bookworm's python3 (3.11)
with venv and pip's CA bundle, and the `python` command the Dockerfiles call. Build-time only: the host's
CA certificates are mounted for pip (never copied into an image) and, where this machine keeps the CPU
torch wheel on disk, its folder, so pip finds torch there instead of the PyTorch index.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from harness.processes import MODEL_DIR, REPO

VERSION = "0.1.0"
BASE = "python:3.11-slim-bookworm"
TORCH_WHEELS = Path(os.environ.get("TORCH_WHEELS", "/opt/wheels"))
"""Where this machine keeps the CPU torch wheel (pip's find-links here)."""
STAND_IN_PACKAGES = "python3,python3-venv,python-is-python3,ca-certificates"
MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")


@dataclass(frozen=True)
class ImageSpec:
    """One image of ours: its name (the manifests' repository), Dockerfile and build context."""

    name: str
    dockerfile: str
    tag: str = VERSION
    context: Path = REPO
    build_args: tuple[tuple[str, str], ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.tag}"


def model_tag(model_dir: Path) -> str:
    """The modelcar's tag: the model directory's name (`sentiment-model:sentiment-minilm-sst2`)."""
    return model_dir.resolve().name


def specs(model_dir: Path = MODEL_DIR) -> list[ImageSpec]:
    """Every image, in build order (the modelcar's export stage runs in the torch image)."""
    torch_args = (("TORCH_PIP_ARGS", "--find-links /wheels"),) if _local_torch_wheel() else ()
    return [
        ImageSpec("sentiment-predictor-torch", "Dockerfile.predictor-torch", build_args=torch_args),
        ImageSpec("sentiment-predictor", "Dockerfile.predictor"),
        ImageSpec("sentiment-transformer", "Dockerfile.transformer"),
        ImageSpec("sentiment-model", "Dockerfile.model", tag=model_tag(model_dir), context=model_dir,
                  build_args=(("EXPORTER", f"sentiment-predictor-torch:{VERSION}"),)),
    ]


def _local_torch_wheel() -> bool:
    return any(TORCH_WHEELS.glob("torch-2.13.0+cpu-*.whl"))


@cache
def docker_engine() -> bool:
    """Whether a Docker engine answers here (a `docker` client alone is not enough)."""
    docker = shutil.which("docker")
    return bool(docker) and subprocess.run([docker, "info"], capture_output=True, timeout=30).returncode == 0


def tool() -> str:
    """`docker` where an engine answers, else `buildah`."""
    if docker_engine():
        return "docker"
    if shutil.which("buildah"):
        return "buildah"
    raise SystemExit("no Docker engine and no buildah: apt-get install -y buildah (make images installs it)")


def exists(ref: str) -> bool:
    cli = "docker" if docker_engine() else "buildah"
    command = [cli, "image", "inspect", ref] if cli == "docker" else ["buildah", "inspect", "--type", "image", ref]
    return subprocess.run(command, capture_output=True).returncode == 0


def ensure_base(ref: str = BASE) -> str:
    """`ref` present locally: pulled, or else a stand-in made from Debian's packages. Says which."""
    cli = tool()
    if exists(ref):
        return "present"
    if subprocess.run([cli, "pull", ref], capture_output=True, timeout=600).returncode == 0:
        return "pulled"
    with tempfile.TemporaryDirectory() as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        subprocess.run(["mmdebstrap", "--variant=minbase", f"--include={STAND_IN_PACKAGES}",
                        "--aptopt=Acquire::Check-Valid-Until \"false\"", "bookworm", str(rootfs), MIRROR],
                       check=True, capture_output=True, timeout=1200)
        # What the official image sets and our Dockerfiles rely on: PATH, a UTF-8 locale, CMD python3.
        changes = ["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "ENV LANG=C.UTF-8",
                   'CMD ["python3"]']
        importer = "podman" if cli == "buildah" else "docker"
        subprocess.run([importer, "import", *(a for c in changes for a in ("--change", c)), str(rootfs), ref],
                       check=True, capture_output=True, timeout=600)
    return "stand-in (mmdebstrap bookworm)"


def build(spec: ImageSpec) -> float:
    """Build one image as its Dockerfile says; the seconds it took."""
    cli = tool()
    args = [a for name, value in spec.build_args for a in ("--build-arg", f"{name}={value}")]
    if cli == "docker":
        command = ["docker", "build", "-f", str(REPO / spec.dockerfile), "-t", spec.ref, *args, str(spec.context)]
    else:
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]  # buildah's default exceeds the hard limit here
        volumes = ["-v", "/etc/ssl/certs:/etc/ssl/certs:ro"]
        if _local_torch_wheel():
            volumes += ["-v", f"{TORCH_WHEELS}:/wheels:ro"]
        command = ["buildah", "bud", "--isolation", "chroot", "--ulimit", f"nofile={nofile}:{nofile}", *volumes,
                   "--layers", "-f", str(REPO / spec.dockerfile), "-t", spec.ref, *args, str(spec.context)]
    start = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"building {spec.ref} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return time.monotonic() - start


def size_bytes(ref: str) -> int:
    """The image's size as the image store reports it."""
    cli = "docker" if docker_engine() else "podman"  # podman reads buildah's store
    return int(subprocess.run([cli, "image", "inspect", "--format", "{{.Size}}", ref], capture_output=True,
                              text=True, check=True).stdout)


def config(ref: str) -> dict:
    """The image's config: Entrypoint, Cmd, Env, User, WorkingDir."""
    out = subprocess.run(["buildah", "inspect", "--type", "image", ref], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out)["OCIv1"]["config"]


@contextmanager
def root_filesystem(ref: str) -> Iterator[Path]:
    """The image's root filesystem, mounted (a buildah working container), removed afterwards."""
    container = subprocess.run(["buildah", "from", "--pull-never", ref], capture_output=True, text=True,
                               check=True).stdout.strip()
    try:
        mount = subprocess.run(["buildah", "mount", container], capture_output=True, text=True,
                               check=True).stdout.strip()
        yield Path(mount)
    finally:
        subprocess.run(["buildah", "rm", container], capture_output=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.images", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["build", "sizes"])
    parser.add_argument("--only", nargs="*", help="image names to build (default: all)")
    parser.add_argument("--model_dir", type=Path, default=MODEL_DIR, help="the model the modelcar holds")
    args = parser.parse_args(argv)
    chosen = [s for s in specs(args.model_dir) if not args.only or s.name in args.only]
    if args.command == "build" and any(s.name == "sentiment-model" for s in chosen) and \
            not (args.model_dir / "config.json").is_file():
        raise SystemExit(f"no model at {args.model_dir} for the modelcar: set MODEL_DIR to a Hugging Face model "
                         "directory, or SHARED_DIR to the shared/ directory (its MiniLM is the default)")
    if args.command == "build":
        print(f"base image {BASE}: {ensure_base()}; building with {tool()}", flush=True)
        for spec in chosen:
            print(f"{spec.ref}: built in {build(spec):.0f} s", flush=True)
    for spec in chosen:
        print(f"{spec.ref:45s} {size_bytes(spec.ref) / 1e6:8.0f} MB")


if __name__ == "__main__":
    sys.exit(main())
