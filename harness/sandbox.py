"""Bubblewrap sandboxes and the images they run, shared by the pod rehearsal (tests/kserve) and the
cold-start benchmark (bench/cold_start.py).

A sandbox runs one container's process as its uid, on a read-only root filesystem (a built image's own,
harness.images, or this machine's) with only the given directories mounted, all capabilities dropped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from harness import images

BWRAP = shutil.which("bwrap")


def bwrap_problem() -> str | None:
    """Why bubblewrap cannot sandbox a process as uid 1000 here (no user namespaces), or None when it can."""
    assert BWRAP is not None, "bwrap not found: apt-get install -y bubblewrap (make system-deps installs it)"
    probe = subprocess.run([BWRAP, "--ro-bind", "/", "/", "--unshare-user", "--uid", "1000", "--gid", "1000", "true"],
                           capture_output=True, text=True, timeout=30)
    return None if probe.returncode == 0 else f"bwrap cannot create a user namespace here: {probe.stderr.strip()}"


@dataclass(frozen=True)
class Image:
    """What a container image contributes on this machine: its ENTRYPOINT/CMD, WORKDIR, ENV and USER."""

    entrypoint: Callable[[list[str]], list[str]]
    """Maps the args (the container's, or CMD) to the command line run here."""
    cmd: list[str]
    workdir: str
    env: dict[str, str]
    user: int | None
    tools: Callable[[Mapping[int, int]], dict[str, str]] = lambda ports: {}
    """Scripts put first on PATH (for Redis: its binaries, moved to the rehearsal's port)."""
    files: dict[str, Path] = field(default_factory=dict)
    """The image's software: path in the container -> directory on this machine (mounted read-only)."""
    root: Path = Path("/")
    """The root filesystem: a built image's own (harness.images), or this machine's."""


def local_reference(reference: str) -> str:
    """Our image's name as `make images` tags it: `ghcr.io/example/sentiment-model:x` -> `sentiment-model:x`."""
    return reference.removeprefix("oci://").rsplit("/", 1)[-1]


def built_image(reference: str, stack: ExitStack) -> Image | None:
    """A built image of ours (`make images`), from its own config and root filesystem, or None if not built."""
    local = local_reference(reference)
    if not local.startswith("sentiment-") or not images.exists(local):
        return None
    root = stack.enter_context(images.root_filesystem(local))
    config = images.config(local)
    entrypoint, cmd = config.get("Entrypoint") or [], config.get("Cmd") or []
    env = dict(item.split("=", 1) for item in config.get("Env") or [])
    user = config.get("User")
    return Image(lambda args: [*entrypoint, *args], cmd, config.get("WorkingDir") or "/", env,
                 int(user.split(":")[0]) if user else None, root=root)


@dataclass
class Sandbox:
    """A bubblewrap sandbox for one container: uid, read-only root, the given mounts, no capabilities."""

    hostname: str
    uid: int
    gid: int
    workdir: str
    mounts: dict[str, tuple[Path, bool]]
    """mount path -> (directory on this machine, read-only)."""
    root: Path = Path("/")
    """The root filesystem, mounted read-only: a built image's, or this machine's."""
    userns_fd: int | None = None
    """A user namespace to join (another container of the same pod's) instead of a new one."""

    @property
    def pass_fds(self) -> tuple[int, ...]:
        """What a process running `wrap(...)` must inherit."""
        return () if self.userns_fd is None else (self.userns_fd,)

    def wrap(self, argv: list[str]) -> list[str]:
        userns = ["--userns", str(self.userns_fd)] if self.userns_fd is not None else ["--unshare-user"]
        args = [BWRAP, "--die-with-parent", *userns, "--uid", str(self.uid), "--gid", str(self.gid),
                "--unshare-ipc", "--unshare-uts", "--hostname", self.hostname, "--cap-drop", "ALL", "--tmpfs", "/"]
        # The root is this machine's, read-only, entry by entry, so that mount points the host lacks
        # (/data, /mnt/models) can be made: a top-level directory holding one starts empty instead.
        own = {path for path in self.mounts if len(Path(path).parts) == 2}
        fresh = {"/" + Path(path).parts[1] for path in self.mounts
                 if path not in own and not (self.root / path.lstrip("/")).exists()}
        tmpfs = ["/"]
        for entry in sorted(self.root.iterdir()):
            name = "/" + entry.name
            if name in ("/proc", "/dev") or name in own or name in fresh:
                continue
            args += ["--symlink", os.readlink(entry), name] if entry.is_symlink() else ["--ro-bind", str(entry), name]
        for top in sorted(fresh):
            args += ["--tmpfs", top]
            tmpfs.append(top)
        args += ["--proc", "/proc", "--dev", "/dev"]
        for path, (source, read_only) in sorted(self.mounts.items()):
            args += ["--ro-bind" if read_only else "--bind", str(source), path]
        for path in tmpfs:
            args += ["--remount-ro", path]
        return [*args, "--chdir", self.workdir, "--", *argv]
