"""Kubernetes discovery against a real kube-apiserver (kwok nodes make pods Ready without running containers).

kwok pods have fake IPs, so each pod carries the `agentworld.dev/endpoint` annotation pointing at an envd on
loopback; everything else (labels, readiness, draining label, deletion) flows through the real API and watch.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agentworld.bundle import Bundle
from agentworld.client import EnvClient, UnavailableError
from agentworld.gateway import Gateway, RunningGateway, serve_in_thread
from agentworld.gateway.kube import KubernetesSource, pod_selector
from agentworld_controller.constants import ANN_ACTIVE_SESSIONS, ANN_ENDPOINT, LABEL_DRAINING

from ..conftest import missing_infrastructure
from .conftest import ENV

NS = "gw-test"
POOL = "library"


def _wait(what: str, check: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def kube() -> Iterator[tuple[Any, Any, Path]]:
    """A LocalCluster (etcd, kube-apiserver, scheduler, kwok): (ApiClient, CoreV1Api, kubeconfig path)."""
    try:
        from agentworld_controller.localcluster import LocalCluster, MissingBinaries
    except ImportError as exc:
        missing_infrastructure(f"agentworld_controller.localcluster ({exc})")
    try:
        cluster = LocalCluster(nodes=1, node_pods=50)
    except MissingBinaries as exc:
        missing_infrastructure(str(exc))
    from kubernetes import client, config

    with cluster:
        api_client = config.new_client_from_config(str(cluster.kubeconfig))
        core = client.CoreV1Api(api_client)
        core.create_namespace({"metadata": {"name": NS}})
        _wait("default service account", lambda: bool(core.list_namespaced_service_account(NS).items))
        yield api_client, core, Path(cluster.kubeconfig)


def _pod(name: str, endpoint: str, pool: str = POOL) -> dict[str, Any]:
    from agentworld_controller.localcluster import KWOK_SCHEDULING

    return {
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/managed-by": "agentworld-controller", "agentworld.dev/pool": pool},
            "annotations": {ANN_ENDPOINT: endpoint},
        },
        "spec": {
            **KWOK_SCHEDULING,
            "containers": [{"name": "envd", "image": "agentworld/envd:test",
                            "ports": [{"name": "grpc", "containerPort": 50051}]}],
        },
    }


def test_selector_matches_controller_labels() -> None:
    assert pod_selector() == "app.kubernetes.io/managed-by=agentworld-controller,agentworld.dev/pool"
    assert pod_selector(["a", "b"]).endswith("agentworld.dev/pool in (a,b)")


def test_pods_of_envpools_become_backends(kube: tuple[Any, Any, Path], gw_bundle: Bundle) -> None:
    from agentworld.runtime import EnvRuntime, RuntimeConfig
    from agentworld.transport.grpc_server import serve_in_thread as envd_in_thread

    api_client, core, _ = kube
    envds = [envd_in_thread(EnvRuntime([gw_bundle], RuntimeConfig())) for _ in range(3)]
    running: RunningGateway | None = None
    try:
        core.create_namespaced_pod(NS, _pod("envd-a", envds[0].address))
        core.create_namespaced_pod(NS, _pod("envd-b", envds[1].address))
        core.create_namespaced_pod(NS, _pod("other-pool", envds[2].address, pool="elsewhere"))
        source = KubernetesSource(namespace=NS, pools=[POOL], api_client=api_client, publish_interval_s=0.5)
        running = serve_in_thread(Gateway(health_interval_s=0.5), [source])
        registry = running.gateway.registry
        _wait("both pool pods as backends", lambda: len(registry.live()) == 2)
        assert {b.address for b in registry.live()} == {envds[0].address, envds[1].address}

        with EnvClient(running.address) as client:
            sessions = [client.create_session(ENV, "task_1") for _ in range(4)]
            on = {s.session_id: registry.route(s.session_id).address for s in sessions}
            assert sorted(list(on.values()).count(e.address) for e in envds[:2]) == [2, 2]
            # The session count the controller scales on is published on each pod.
            _wait("active-sessions annotations", lambda: all(
                (core.read_namespaced_pod(p, NS).metadata.annotations or {}).get(ANN_ACTIVE_SESSIONS) == "2"
                for p in ("envd-a", "envd-b")), timeout_s=20)

            # The controller marks a pod for scale-down: no new sessions there, old ones keep working.
            core.patch_namespaced_pod("envd-a", NS, {"metadata": {"labels": {LABEL_DRAINING: "true"}}})
            _wait("drain seen", lambda: registry.backends[envds[0].address].draining)
            fresh = [client.create_session(ENV) for _ in range(3)]
            assert {registry.route(s.session_id).address for s in fresh} == {envds[1].address}
            old_a = [s for s in sessions if on[s.session_id] == envds[0].address]
            assert not old_a[0].call_tool("renew_loan", {"loan_id": 1}).is_error

            # A new pod joins; a deleted pod's sessions are lost (UNAVAILABLE naming them), others carry on.
            core.create_namespaced_pod(NS, _pod("envd-c", envds[2].address))
            _wait("third pod as backend", lambda: envds[2].address in registry.backends)
            core.delete_namespaced_pod("envd-b", NS, grace_period_seconds=0)
            _wait("deleted pod removed", lambda: envds[1].address not in registry.backends)
            lost = [s for s in sessions + fresh if on.get(s.session_id, envds[1].address) == envds[1].address]
            for s in lost:
                with pytest.raises(UnavailableError, match=s.session_id):
                    s.state_hash()
            assert old_a[0].verify().outcome == "complete"
            s = client.create_session(ENV)
            assert registry.route(s.session_id).address == envds[2].address  # a is draining, b is gone
    finally:
        if running is not None:
            running.stop()
        for e in envds:
            e.stop()


def test_gateway_command_as_the_chart_runs_it(kube: tuple[Any, Any, Path], envd_address: str, tmp_path: Path) -> None:
    """`agentworld gateway --backend kubernetes --port=N`, namespace from AGENTWORLD_K8S_NAMESPACE (the chart's)."""
    _, core, kubeconfig = kube
    ns = "gw-chart"
    core.create_namespace({"metadata": {"name": ns}})
    _wait("default service account", lambda: bool(core.list_namespaced_service_account(ns).items))
    core.create_namespaced_pod(ns, _pod("envd-shared", envd_address))
    env = {**os.environ, "AGENTWORLD_K8S_NAMESPACE": ns, "KUBECONFIG": str(kubeconfig)}
    stderr = tmp_path / "gateway.stderr"
    with stderr.open("w") as err:  # a file, not a pipe: a chatty child must never block on a full pipe
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "agentworld"), "gateway", "--backend", "kubernetes", "--port=0"],
            stdout=subprocess.PIPE, stderr=err, text=True, env=env,
        )
    try:
        assert proc.stdout is not None
        readable, _, _ = select.select([proc.stdout], [], [], 120)
        line = proc.stdout.readline() if readable else ""
        match = re.search(r"gateway listening on (\S+)", line)
        assert match, f"gateway not listening after 120 s; stderr:\n{stderr.read_text()[-3000:]}"
        with EnvClient(match.group(1)) as client:
            _wait("pod discovered", lambda: client.get_stats().env_ids == [ENV], timeout_s=30)
            with client.create_session(ENV) as session:
                assert session.call_tool("list_branches").json()
        proc.terminate()
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
