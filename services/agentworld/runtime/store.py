"""envd's state directory: every session's database lives in a file here, so it outlives any worker.

    <state>/images/<id>.db      immutable images: templates, fork points, snapshots, restored data (envd only)
    <state>/envs/<key>/<t>.db   a session's own writable copy, made at its first tool call (the sandbox writes here)
    <state>/root/               an empty mount point for the sandbox's minimal root

Sessions are copy-on-write over images: creating, resetting, restoring and forking a session only points it at an
image; its own copy is made when a tool call needs it (a file copy of the image, ~100 us for AWM-sized databases).
The directory is on tmpfs when /dev/shm has room, so none of this touches a disk.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from agentworld.runtime import database

STATE_PREFIX = "agentworld-envd-"
_MIN_SHM_FREE = 1 << 30  # use /dev/shm when it has at least this much room (Docker gives it 64 MiB)


@dataclass(eq=False)
class Image:
    """An immutable database file. Permanent images (templates) are never deleted nor counted against the budget."""

    path: str
    size: int
    permanent: bool = False
    refs: int = 0
    hash: str | None = None

    def state_hash(self) -> str:
        if self.hash is None:
            self.hash = database.hash_file(self.path)
        return self.hash


def default_state_root() -> Path:
    """tmpfs (/dev/shm) when it is big enough, else the temporary directory (a tmpfs in our containers)."""
    shm = Path("/dev/shm")
    try:
        stat = os.statvfs(shm)
        if os.access(shm, os.W_OK | os.X_OK) and stat.f_bavail * stat.f_frsize >= _MIN_SHM_FREE:
            return shm
    except OSError:
        pass
    return Path(tempfile.gettempdir())


def free_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


class StateStore:
    """Files under one state directory. `owner` is the (uid, gid) the sandbox runs as, when envd is root."""

    def __init__(self, root: Path | None = None, owner: tuple[int, int] | None = None) -> None:
        base = root or default_state_root()
        _sweep_stale(base)
        self.root = Path(tempfile.mkdtemp(prefix=f"{STATE_PREFIX}{os.getpid()}-", dir=base))
        self.root.chmod(0o711)
        self.owner = owner
        self.images_dir = self._dir("images", 0o700)
        self.envs_dir = self._dir("envs", 0o711, owned=True)
        self.sandbox_root = self._dir("root", 0o755)

    def _dir(self, name: str, mode: int, owned: bool = False) -> Path:
        path = self.root / name
        path.mkdir(mode=mode)
        path.chmod(mode)
        if owned and self.owner is not None:
            os.chown(path, *self.owner)
        return path

    # ------------------------------------------------------------------------------------------- images
    def image_from_bytes(self, data: bytes, *, permanent: bool = False) -> Image:
        path = self.images_dir / f"{secrets.token_hex(16)}.db"
        with open(path, "wb") as f:
            f.write(data)
        path.chmod(0o444)
        return Image(str(path), len(data), permanent)

    def image_from_file(self, source: str) -> Image:
        path = self.images_dir / f"{secrets.token_hex(16)}.db"
        shutil.copyfile(source, path)
        path.chmod(0o444)
        return Image(str(path), path.stat().st_size)

    def release(self, image: Image) -> None:
        """Drop one reference; the file goes with the last one (templates stay)."""
        image.refs -= 1
        if image.refs <= 0 and not image.permanent:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(image.path)

    # ----------------------------------------------------------------------------------- session files
    def own_copy(self, image: Image, env_key: str) -> str:
        """A writable copy of `image` in the environment's directory, under a fresh unguessable name."""
        path = self.envs_dir / env_key / f"{secrets.token_hex(16)}.db"
        shutil.copyfile(image.path, path)
        path.chmod(0o600)
        if self.owner is not None:
            os.chown(path, *self.owner)
        return str(path)

    @staticmethod
    def remove_file(path: str) -> None:
        for victim in (path, database.journal_path(path)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(victim)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _sweep_stale(base: Path) -> None:
    """Remove state directories of envd processes that died without cleaning up (SIGKILL, OOM)."""
    for path in base.glob(f"{STATE_PREFIX}*-*"):
        pid = path.name[len(STATE_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(path, ignore_errors=True)
