"""A local Python base image made from Debian packages, for air-gapped hosts where no registry can be pulled from.

apt resolves python3's dependency closure against an empty dpkg status (so the choice of alternatives is apt's own),
`apt-get download` fetches the .debs through the host's configured Debian mirror (cached), they are unpacked into a
merged-/usr root filesystem without running maintainer scripts, and the tree is `docker import`ed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from agentworld.images.errors import ImageBuildError
from agentworld.images.paths import cache_dir

BASE_IMAGE = "agentworld/python-base:local"
# libstdc++6: grpcio and other C++ extension wheels link it (python:3.11-slim has it too).
BASE_PACKAGES = ("python3", "dash", "coreutils", "base-files", "libstdc++6")
LABEL_PACKAGES = "dev.agentworld.base-packages"
_MERGED_DIRS = ("bin", "sbin", "lib", "lib64")
_PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
_GROUP = "root:x:0:\nnogroup:x:65534:\n"


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ImageBuildError(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
    return proc.stdout


def resolve_packages(packages: tuple[str, ...] = BASE_PACKAGES) -> list[tuple[str, str]]:
    """(name, version) of every package an empty system needs to install `packages`, as apt's solver picks them."""
    with tempfile.NamedTemporaryFile() as empty_status:
        cmd = ["apt-get", "-s", "-o", f"Dir::State::status={empty_status.name}", "install",
               "--no-install-recommends", *packages]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 and "Unable to locate" in proc.stderr:
            _run(["apt-get", "update", "-qq"])  # package lists were never fetched on this machine
            proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ImageBuildError(f"apt could not resolve {' '.join(packages)}: {proc.stderr.strip()[-800:]}")
    resolved = []
    for line in proc.stdout.splitlines():
        if line.startswith("Inst "):  # "Inst libc6 (2.36-9+deb12u14 Debian:12.12/stable [amd64])"
            parts = line.split()
            resolved.append((parts[1], parts[2].lstrip("(")))
    if not resolved:
        raise ImageBuildError("apt resolved no packages; is this a Debian host with apt sources configured?")
    return sorted(resolved)


def packages_fingerprint(resolved: list[tuple[str, str]]) -> str:
    return hashlib.sha256("\n".join(f"{n}={v}" for n, v in resolved).encode()).hexdigest()[:16]


def download_debs(resolved: list[tuple[str, str]], dest: Path) -> list[Path]:
    """Fetch the .debs into dest (kept as a cache: only missing versions are downloaded)."""
    dest.mkdir(parents=True, exist_ok=True)
    have = {p.name for p in dest.glob("*.deb")}
    wanted = [f"{n}={v}" for n, v in resolved if not any(h.startswith(f"{n}_") and _deb_version(h) == v for h in have)]
    if wanted:
        _run(["apt-get", "download", "-q", *wanted], cwd=dest)
    debs = []
    for name, version in resolved:
        match = [p for p in dest.glob(f"{name}_*.deb") if _deb_version(p.name) == version]
        if not match:
            raise ImageBuildError(f"apt-get download did not produce {name} {version} in {dest}")
        debs.append(match[0])
    return debs


def _deb_version(filename: str) -> str:
    # apt-get download escapes ':' (epochs) as %3a in file names
    return filename.split("_")[1].replace("%3a", ":") if filename.count("_") >= 2 else ""


def unpack_rootfs(debs: list[Path], root: Path) -> None:
    """Unpack debs into a merged-/usr tree (as bookworm's debootstrap makes) and add what postinst scripts would."""
    (root / "usr").mkdir(parents=True)
    for d in _MERGED_DIRS:
        (root / "usr" / d).mkdir(exist_ok=True)
        (root / d).symlink_to(f"usr/{d}")
    for deb in debs:
        fsys = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
        tar = subprocess.run(["tar", "-x", "--keep-directory-symlink", "-C", str(root)], stdin=fsys.stdout,
                             capture_output=True)
        fsys.wait()
        if fsys.returncode or tar.returncode:
            raise ImageBuildError(f"unpacking {deb.name} failed: {tar.stderr.decode()[-400:]}")
    sh = root / "usr/bin/sh"
    if not sh.exists():
        sh.symlink_to("dash")
    etc = root / "etc"
    etc.mkdir(exist_ok=True)
    (etc / "passwd").write_text(_PASSWD)
    (etc / "group").write_text(_GROUP)
    for d in ("tmp", "var/tmp"):
        (root / d).mkdir(parents=True, exist_ok=True)
        os.chmod(root / d, 0o1777)
    for d in ("root", "proc", "sys", "dev", "run"):
        (root / d).mkdir(exist_ok=True)
    if shutil.which("ldconfig"):
        subprocess.run(["ldconfig", "-r", str(root)], capture_output=True)


def build_base_image(
    client=None, tag: str = BASE_IMAGE, force: bool = False, log: Callable[[str], None] = print
) -> str:
    """Build (or reuse, when the resolved package set is unchanged) the local base; returns the image id."""
    import docker

    client = client or docker.from_env()
    resolved = resolve_packages()
    fingerprint = packages_fingerprint(resolved)
    if not force:
        try:
            existing = client.images.get(tag)
            if (existing.labels or {}).get(LABEL_PACKAGES) == fingerprint:
                log(f"base {tag} is up to date ({len(resolved)} Debian packages, {fingerprint})")
                return existing.id
        except docker.errors.ImageNotFound:
            pass
    log(f"downloading {len(resolved)} Debian packages")
    debs = download_debs(resolved, cache_dir() / "base-debs")
    with tempfile.TemporaryDirectory(prefix="aw-base-") as tmp:
        root = Path(tmp) / "rootfs"
        log(f"unpacking into {root}")
        unpack_rootfs(debs, root)
        tarball = Path(tmp) / "rootfs.tar"
        _run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(tarball), "."])
        repository, _, image_tag = tag.rpartition(":")
        changes = [
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "ENV LANG=C.UTF-8",
            f"LABEL {LABEL_PACKAGES}={fingerprint}",
            "LABEL org.opencontainers.image.title=agentworld-python-base",
            'CMD ["python3"]',
        ]
        log(f"docker import -> {tag}")
        client.api.import_image_from_file(str(tarball), repository=repository, tag=image_tag, changes=changes)
    image = client.images.get(tag)
    check = client.containers.run(image.id, ["python3", "-c", "import sqlite3, ssl, venv; print('ok')"], remove=True,
                                  network_disabled=True)
    if b"ok" not in check:
        raise ImageBuildError(f"base image {tag} cannot run python3: {check!r}")
    return image.id
