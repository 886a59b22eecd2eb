"""Fixtures: a real kube-apiserver (etcd, controller-manager, scheduler, kwok fake nodes) on loopback, the chart
installed with helm, and the EnvPool controller running as the chart's service account (so its RBAC is tested)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from .helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "agentworld"
RELEASE_NS = "agentworld-system"
CONTROLLER_SA = "agentworld-controller"  # helm release "agentworld" -> fullname "agentworld"


def _require_infra(msg: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{msg} (CI=true: infrastructure must be installed by tests/infra/install-k8s.sh)")
    pytest.skip(msg)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Any]:
    from agentworld_controller.localcluster import LocalCluster, MissingBinaries

    try:
        c = LocalCluster(nodes=3, node_pods=500)
    except MissingBinaries as exc:
        _require_infra(str(exc))
    with c:
        yield c


@pytest.fixture(scope="session")
def chart(cluster: Any) -> dict[str, Any]:
    """`helm install` the chart (CRDs from crds/, RBAC, gateway objects); the controller Deployment is off because
    there is no kubelet to run it: the test runs the controller process itself, as the chart's ServiceAccount."""
    cp = subprocess.run([cluster.bin("helm"), "install", "agentworld", str(CHART), "--namespace", RELEASE_NS,
                         "--create-namespace", "--kubeconfig", str(cluster.kubeconfig), "--wait=false",
                         "--set", "controller.enabled=true"], capture_output=True, text=True, timeout=120)
    assert cp.returncode == 0, cp.stderr
    cluster.kubectl("wait", "--for=condition=Established", "crd/envpools.agentworld.dev", "--timeout=60s")
    return {"release": "agentworld", "namespace": RELEASE_NS}


class ControllerProcess:
    """The controller as a separate process (restartable), authenticated as the chart's ServiceAccount."""

    def __init__(self, cluster: Any, kubeconfig: Path, log_path: Path, extra_args: Sequence[str] = ()) -> None:
        self.cluster, self.kubeconfig, self.log_path = cluster, kubeconfig, log_path
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.returncode: int | None = None  # of the last process, once stopped

    def start(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agentworld_controller", f"--kubeconfig={self.kubeconfig}",
             f"--metrics-addr=127.0.0.1:{self.port}", "--resync-seconds=5", "--watch-timeout-seconds=20",
             "--log-level=INFO", *self.extra_args], stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        end = time.monotonic() + 30
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"controller exited: {self.log_path.read_text()[-3000:]}")
            try:
                if self.metrics().get("pools") is not None and self.healthy():
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"controller not healthy: {self.log_path.read_text()[-3000:]}")

    def _get(self, path: str) -> bytes:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:  # noqa: S310
            return r.read()

    def healthy(self) -> bool:
        try:
            return self._get("/healthz") == b"ok\n"
        except OSError:
            return False

    def metrics(self) -> dict[str, Any]:
        return json.loads(self._get("/metrics.json"))

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (a crashed process or a lost node)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.returncode = self.proc.returncode if self.proc else None
        self.proc = None

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.returncode = self.proc.returncode if self.proc else None
        self.proc = None


@pytest.fixture(scope="session")
def controller(cluster: Any, chart: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        ControllerProcess]:
    ns = chart["namespace"]
    ident = cluster.identity(f"system:serviceaccount:{ns}:{CONTROLLER_SA}",
                             groups=("system:serviceaccounts", f"system:serviceaccounts:{ns}"))
    ctl = ControllerProcess(cluster, ident.kubeconfig, tmp_path_factory.mktemp("controller") / "controller.log")
    ctl.start()
    yield ctl
    ctl.stop()
    if os.environ.get("AGENTWORLD_K8S_SHOW_LOG"):
        print(ctl.log_path.read_text())


@pytest.fixture(scope="session")
def api(cluster: Any) -> Any:
    from kubernetes import client, config

    cfg = client.Configuration()
    config.load_kube_config(config_file=str(cluster.kubeconfig), client_configuration=cfg)
    return client.ApiClient(cfg)


@pytest.fixture
def namespace(cluster: Any) -> Iterator[str]:
    ns = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", ns)
    # The ServiceAccount admission plugin needs the namespace's default SA (created by kube-controller-manager).
    wait_for(lambda: cluster.kubectl("get", "sa", "default", "-n", ns, check=False).returncode == 0,
             "default service account", 30)
    yield ns
    cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
