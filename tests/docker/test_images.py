"""Images and the Docker backend against a real engine: build, skip, run hardened, drive a session, push and pull."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from agentworld.bundle import compute_content_hash, load_bundle, write_bundle

pytestmark = pytest.mark.timeout(900)


def test_base_image_is_python_from_debian_packages(builder, docker_client):
    from agentworld.images.base import BASE_IMAGE, LABEL_PACKAGES

    image = docker_client.images.get(BASE_IMAGE)
    assert image.labels.get(LABEL_PACKAGES), "the base records the Debian package set it was made from"
    # one imported layer: no registry image underneath
    assert len(image.attrs["RootFS"]["Layers"]) == 1
    out = docker_client.containers.run(BASE_IMAGE, ["python3", "-c", "import sys, sqlite3; print(sys.version_info[:2])"],
                                       remove=True, network_disabled=True)
    assert out.strip() == f"{sys.version_info[:2]}".encode(), "the base's Python must match the host-built wheels"


def test_env_images_are_small_labelled_layers_over_runtime(builder, env_images, bundle_dirs, docker_client):
    runtime = docker_client.images.get(builder.runtime_image)
    runtime_layers = runtime.attrs["RootFS"]["Layers"]
    assert [i.env_id for i in env_images] == [load_bundle(d).env_id for d in bundle_dirs]
    for img, bundle_dir in zip(env_images, bundle_dirs, strict=True):
        bundle = load_bundle(bundle_dir)
        image = docker_client.images.get(img.image)
        labels = image.labels
        assert labels["dev.agentworld.env-id"] == bundle.env_id
        assert labels["dev.agentworld.content-hash"] == compute_content_hash(bundle)
        assert labels["org.opencontainers.image.title"] == bundle.manifest.title
        assert labels["org.opencontainers.image.version"] == compute_content_hash(bundle)
        layers = image.attrs["RootFS"]["Layers"]
        assert layers[: len(runtime_layers)] == runtime_layers and len(layers) == len(runtime_layers) + 1
        assert 0 < img.added_bytes <= 1_000_000, f"{img.env_id} adds {img.added_bytes} bytes over the runtime"
        assert image.attrs["Config"]["User"] == "10001:10001"
        assert image.attrs["Config"]["Healthcheck"]["Test"][-2:] == ["agentworld.images.healthcheck", "127.0.0.1:50051"]


def test_second_build_skips_unchanged_and_rebuilds_changed(builder, bundle_dirs, tmp_path):
    from agentworld.images.build import write_index

    dirs = []
    for d in bundle_dirs:  # a private copy: this test edits one bundle
        bundle = load_bundle(d)
        dirs.append(write_bundle(bundle, tmp_path / "envs"))
    first = builder.build_all(dirs, progress=False)
    assert all(r.skipped for r in first), "same bundles, same runtime: nothing to build"

    changed = load_bundle(dirs[2])
    changed.manifest.title += f" (edited {uuid.uuid4().hex[:8]})"  # new content: no image of an earlier run matches
    write_bundle(changed, tmp_path / "envs")
    second = builder.build_all(dirs, progress=False)
    assert [r.skipped for r in second] == [True, True, False]
    assert second[2].content_hash == compute_content_hash(load_bundle(dirs[2])) != first[2].content_hash

    index = write_index(second, tmp_path / "envs" / "images.json", builder.runtime_image, builder.runtime_id)
    data = json.loads(index.read_text())
    assert set(data["envs"]) == {r.env_id for r in second}
    entry = data["envs"][second[2].env_id]
    assert entry["image"] == second[2].image and entry["image_id"].startswith("sha256:") and entry["size"] > 0


def test_suite_image_serves_many_envs(builder, bundle_dirs, docker_client):
    suite = builder.build_suite(bundle_dirs, "library_suite")
    image = docker_client.images.get(suite.image)
    assert image.labels["dev.agentworld.env-ids"].split(",") == sorted(load_bundle(d).env_id for d in bundle_dirs)
    listing = docker_client.containers.run(suite.image, ["-c", "import os; print(sorted(os.listdir('/bundles')))"],
                                           entrypoint="python", remove=True, network_disabled=True)
    assert listing.strip().decode() == str(sorted(load_bundle(d).env_id for d in bundle_dirs))
    assert builder.build_suite(bundle_dirs, "library_suite").skipped


def test_session_over_grpc_into_container(running, bundle_dirs):
    from agentworld.client import EnvClient

    backend, started = running
    assert [b.env_ids for b in started] == [[load_bundle(d).env_id] for d in bundle_dirs]
    bundle = load_bundle(bundle_dirs[1])
    task = next(t for t in bundle.tasks if t.kind == "mutation")
    target = started[1]
    with EnvClient(target.address) as client:
        assert [e.env_id for e in client.list_envs()] == [bundle.env_id]
        with client.create_session(bundle.env_id, task_id=task.id) as session:
            assert {t["name"] for t in session.tools} >= {step.tool for step in task.solution}
            before = session.verify()
            assert before.outcome != "complete"
            for step in task.solution:
                result = session.call_tool(step.tool, step.arguments)
                assert not result.is_error, result.content
            verdict = session.verify()
            assert verdict.outcome == "complete" and verdict.reward == 1.0, verdict
        # in the hardened container (non-root, no capabilities) the kernel layers that need no privileges hold
        layers = client.get_stats().sandbox_layers
        assert {"no_new_privs", "landlock", "seccomp", "rlimits"} <= set(layers), layers
    assert backend.crashes == []


def test_containers_are_hardened(running, docker_client):
    backend, started = running
    for b in started:
        attrs = docker_client.api.inspect_container(b.container_id)  # what `docker inspect` shows
        host = attrs["HostConfig"]
        assert attrs["Config"]["User"] == "10001:10001"
        assert host["ReadonlyRootfs"] is True
        assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd")
        assert "no-new-privileges" in host["SecurityOpt"]
        assert host["Privileged"] is False
        assert host["Memory"] == 512 * 1024 * 1024 and host["NanoCpus"] == 1_000_000_000 and host["PidsLimit"] == 256
        assert "/tmp" in host["Tmpfs"]
        assert not any(host.get("PortBindings") or {}), "nothing is published on a host interface"
        networks = attrs["NetworkSettings"]["Networks"]
        assert list(networks) == [f"agentworld-{backend.id}"]
        net = docker_client.api.inspect_network(f"agentworld-{backend.id}")
        assert net["Internal"] is True, "internal network: Docker gives it no route out"
        assert net["Options"].get("com.docker.network.bridge.enable_icc") == "false"
        assert attrs["Config"]["Labels"]["dev.agentworld.managed"] == "true"
        assert attrs["Config"]["Labels"]["dev.agentworld.backend"] == backend.id

        container = docker_client.containers.get(b.container_id)
        uid = container.exec_run(["id", "-u"]).output.decode().strip()
        assert uid == "10001"
        # the root filesystem really is read-only for the process; /tmp (tmpfs) is writable
        probe = "import os\ntry:\n open('/opt/x','w')\nexcept OSError as e: print('ro', e.errno)\n" \
                "open('/tmp/x','w').write('ok'); print('tmp ok')"
        out = container.exec_run(["python", "-c", probe]).output.decode()
        assert "ro 30" in out or "ro 13" in out, out
        assert "tmp ok" in out
        # effective capabilities of the serving process are empty
        status = container.exec_run(["cat", "/proc/1/status"]).output.decode()
        cap_eff = next(line for line in status.splitlines() if line.startswith("CapEff"))
        assert cap_eff.split()[1] == "0000000000000000"
        no_new = next(line for line in status.splitlines() if line.startswith("NoNewPrivs"))
        assert no_new.split()[1] == "1"


def test_crash_is_reported(running, builder, docker_client):
    from agentworld.images.backend import DockerBackend
    from agentworld.images.errors import ContainerCrashed

    # A container that exits during startup fails start() with its exit code and logs (the runtime has no bundles).
    seen = []
    with DockerBackend(docker_client, handle_signals=False, on_crash=seen.append, ready_timeout_s=60) as backend:
        with pytest.raises(ContainerCrashed) as info:
            backend.start_images([(builder.runtime_image, ["nothing"])])
        assert info.value.exit_code == 2 and "no bundles" in info.value.logs
        assert seen and seen[0].exit_code == 2

    # A serving container that dies later is found by the monitor, with its exit code.
    backend, started = running
    victim = started[2]
    docker_client.containers.get(victim.container_id).kill()
    deadline = time.monotonic() + 20
    while not backend.crashes and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [c.container_id for c in backend.crashes] == [victim.container_id]
    assert backend.crashes[0].exit_code == 137 and backend.crashes[0].env_ids == victim.env_ids


def _backend_process(env_images, tmp_path):
    script = tmp_path / "up.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        from agentworld.images.backend import DockerBackend
        backend = DockerBackend(ready_timeout_s=120)
        backend.start_images([({env_images[0].image!r}, [{env_images[0].env_id!r}])])
        print(backend.id, flush=True)
        time.sleep(300)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    backend_id = proc.stdout.readline().strip()
    assert backend_id, proc.stderr.read()
    return proc, {"label": f"dev.agentworld.backend={backend_id}"}


def test_ctrl_c_removes_containers_and_network(builder, env_images, docker_client, tmp_path):
    proc, label = _backend_process(env_images, tmp_path)
    assert len(docker_client.containers.list(all=True, filters=label)) == 1
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    assert docker_client.containers.list(all=True, filters=label) == []
    assert docker_client.networks.list(filters=label) == []


def test_prune_removes_what_a_killed_process_left(builder, env_images, docker_client, tmp_path):
    from agentworld.images.backend import prune_stale

    proc, label = _backend_process(env_images, tmp_path)
    proc.kill()  # SIGKILL: no handler, no atexit
    proc.wait(timeout=30)
    assert len(docker_client.containers.list(all=True, filters=label)) == 1
    assert prune_stale(docker_client) >= 2
    assert docker_client.containers.list(all=True, filters=label) == []
    assert docker_client.networks.list(filters=label) == []


def test_push_to_and_pull_from_local_registry(builder, env_images, registry, docker_client, tmp_path):
    import httpx

    from agentworld.images.build import EnvImage, write_index

    pushed = [EnvImage(**{**img.__dict__}) for img in env_images[:1]]
    builder.push(pushed, registry)
    img = pushed[0]
    assert img.pushed.startswith(f"{registry}/") and img.digest.startswith("sha256:")
    repo, _, tag = img.pushed.partition(f"{registry}/")[2].rpartition(":")
    catalog = httpx.get(f"http://{registry}/v2/_catalog").json()["repositories"]
    assert repo in catalog
    manifest = httpx.head(f"http://{registry}/v2/{repo}/manifests/{tag}",
                          headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    assert manifest.status_code == 200 and manifest.headers["Docker-Content-Digest"] == img.digest

    docker_client.images.remove(img.pushed)  # only the registry tag; the local image stays
    pulled = docker_client.images.pull(f"{registry}/{repo}", tag=tag)
    assert pulled.id == img.image_id
    assert f"{registry}/{repo}@{img.digest}" in pulled.attrs["RepoDigests"]

    index = write_index(pushed, tmp_path / "images.json")
    entry = json.loads(index.read_text())["envs"][img.env_id]
    assert entry["image"] == img.pushed and entry["digest"] == img.digest


def test_cli_build_writes_index_and_skips(builder, env_images, bundle_dirs, tmp_path):
    """`agentworld images build` end to end (a fresh process: runtime rebuilt from cache, all envs unchanged)."""
    index = tmp_path / "index.json"
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("agentworld")), "images", "build", str(bundle_dirs[0].parent),
         "--index", str(index), "--workers", "2"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(index.read_text())
    assert set(data["envs"]) == {img.env_id for img in env_images}
    assert data["runtime"]["image"] == builder.runtime_image


def _connect_from(container, ip: str, port: int) -> str:
    probe = (f"import socket\ntry:\n socket.create_connection(({ip!r}, {port}), timeout=2); print('connected')\n"
             "except OSError as e: print('blocked', type(e).__name__)")
    return container.exec_run(["python", "-c", probe]).output.decode().strip()


def test_no_egress_and_no_host_access(running, builder, docker_client):
    """From an environment container, neither a server on another (routed) network nor the host is reachable."""
    import socket as pysocket

    backend, started = running
    assert backend.host_guard, "run as root: the host INPUT guard must be installed"
    env_container = docker_client.containers.get(started[0].container_id)
    outside_net = docker_client.networks.create(f"agentworld-outside-{backend.id}", driver="bridge",
                                                labels={"dev.agentworld.managed": "true"})
    outside = None
    listener = pysocket.create_server(("0.0.0.0", 0))
    try:
        outside = docker_client.containers.run(
            builder.runtime_image, ["-m", "http.server", "8080"], entrypoint="python", detach=True,
            network=outside_net.name, labels={"dev.agentworld.managed": "true"})
        outside.reload()
        outside_ip = outside.attrs["NetworkSettings"]["Networks"][outside_net.name]["IPAddress"]
        deadline = time.monotonic() + 30
        while True:  # positive control: the outside server is up and reachable from the host
            try:
                pysocket.create_connection((outside_ip, 8080), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "outside test server did not start"
                time.sleep(0.2)
        assert _connect_from(env_container, outside_ip, 8080).startswith("blocked")

        gateway = docker_client.api.inspect_network(f"agentworld-{backend.id}")["IPAM"]["Config"][0]["Gateway"]
        host_port = listener.getsockname()[1]
        pysocket.create_connection((gateway, host_port), timeout=1).close()  # control: the host can reach it
        assert _connect_from(env_container, gateway, host_port).startswith("blocked")
    finally:
        listener.close()
        if outside is not None:
            outside.remove(force=True)
        outside_net.remove()
