"""Fixtures against a real Docker engine: dockerd (started if its socket is dead), the Debian-built base, the runtime
image, three environment images, a running DockerBackend and a docker-registry on loopback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MINI_LIBRARY = Path(os.environ.get("AGENTWORLD_SHARED", REPO.parent / "shared")) / "awm" / "mini_library"
ENV_IDS = ("library_lending_1", "library_lending_2", "library_lending_3")


def _engine_or_fail():
    import docker

    def ping():
        try:
            client = docker.from_env(timeout=600)
            client.ping()
            return client
        except docker.errors.DockerException:
            return None

    client = ping()
    if client is None:
        script = REPO / "tests" / "infra" / "install-docker.sh"
        proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=600)
        client = ping()
        if client is None:
            message = f"no Docker engine and {script} could not start one:\n{proc.stdout}\n{proc.stderr}"
            if os.environ.get("CI") == "true":
                pytest.fail(message)
            pytest.skip(message)
    return client


@pytest.fixture(scope="session")
def docker_client():
    return _engine_or_fail()


@pytest.fixture(scope="session")
def builder(docker_client):
    """Base from Debian packages (cached in the engine by its package-set label) and the runtime, built once."""
    from agentworld.images.build import ImageBuilder

    b = ImageBuilder(docker_client, workers=2, log=lambda m: print(m))
    b.build_runtime()
    return b


def make_bundles(out: Path, ids=ENV_IDS) -> list[Path]:
    """Import mini_library from AWM format, then copies of it under other environment ids."""
    from agentworld.bundle import load_bundle, write_bundle
    from agentworld.bundle.awm_import import import_awm

    staging = out.parent / f"{out.name}-awm"
    imported = list(import_awm(MINI_LIBRARY, staging))
    assert imported, f"import of {MINI_LIBRARY} produced no bundle"
    out.mkdir(parents=True, exist_ok=True)
    dirs = []
    for env_id in ids:
        bundle = load_bundle(imported[0])
        bundle.manifest.id = env_id
        dirs.append(write_bundle(bundle, out))
    shutil.rmtree(staging)
    return dirs


@pytest.fixture(scope="session")
def bundle_dirs(tmp_path_factory) -> list[Path]:
    return make_bundles(tmp_path_factory.mktemp("bundles") / "envs")


@pytest.fixture(scope="session")
def env_images(builder, bundle_dirs):
    return builder.build_all(bundle_dirs, progress=False)


@pytest.fixture(scope="session")
def running(docker_client, builder, env_images, bundle_dirs):
    """Three environment containers, hardened, on an internal network."""
    from agentworld.images.backend import DockerBackend

    crashes = []
    backend = DockerBackend(docker_client, builder=builder, handle_signals=False, on_crash=crashes.append,
                            ready_timeout_s=120)
    try:
        started = backend.start(bundle_dirs)
        yield backend, started
    finally:
        backend.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    """Debian's docker-registry (distribution 2.8) listening on 127.0.0.1 only; yields host:port."""
    import httpx

    exe = shutil.which("docker-registry")
    if exe is None:
        message = "docker-registry is not installed (tests/infra/install-docker.sh installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    root = tmp_path_factory.mktemp("registry")
    port = _free_port()
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log: {level: warn}\n"
        f"storage: {{filesystem: {{rootdirectory: {root / 'data'}}}, delete: {{enabled: true}}}}\n"
        f"http: {{addr: '127.0.0.1:{port}'}}\n"
    )
    log = open(root / "registry.log", "w")
    proc = subprocess.Popen([exe, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://{address}/v2/", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"docker-registry did not come up: {(root / 'registry.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield address
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
