"""EnvPool scale benchmark on kwok fake nodes: N pools x M pods, time until every pod is Ready.

Runs a real control plane (etcd, kube-apiserver, kube-scheduler, kube-controller-manager, kwok) on loopback, starts
the controller as a separate process, applies the pools at once and measures: time to all Ready, pods/s end to end,
the controller's CPU seconds and peak RSS, the API requests it made (and all components' requests as the API server
counts them). Baseline in the same run: the same cluster creating pods directly (no controller) with the same
concurrency, i.e. the ceiling the cluster itself allows. Prints one JSON object on stdout.

    .venv/bin/python bench/k8s_scale.py                    # 100 pools x 100 pods = 10,000 pods
    .venv/bin/python bench/k8s_scale.py --quick            # 10 pools x 20 pods
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "controller"))

import psutil  # noqa: E402
from kubernetes import client, config  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402

from agentworld_controller import resources  # noqa: E402
from agentworld_controller.client import raw  # noqa: E402
from agentworld_controller.constants import GROUP, PLURAL, VERSION  # noqa: E402
from agentworld_controller.localcluster import KWOK_SCHEDULING, LocalCluster, die_with_parent  # noqa: E402
from agentworld_controller.spec import parse_spec  # noqa: E402

console = Console(stderr=True)


def _api(cluster: LocalCluster) -> client.ApiClient:
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(cluster.kubeconfig), client_configuration=cfg)
    cfg.connection_pool_maxsize = 64
    return client.ApiClient(cfg)


def _namespace(cluster: LocalCluster, ns: str) -> None:
    cluster.kubectl("create", "namespace", ns)
    end = time.monotonic() + 60
    while cluster.kubectl("get", "sa", "default", "-n", ns, check=False).returncode != 0:
        if time.monotonic() > end:
            raise TimeoutError(f"no default service account in {ns}")
        time.sleep(0.2)


def _apiserver_requests(cluster: LocalCluster) -> int:
    """Sum of apiserver_request_total over every client (controller, scheduler, kwok, controller-manager, bench)."""
    assert cluster.workdir
    ctx = ssl.create_default_context(cafile=str(cluster.workdir / "ca.crt"))
    ctx.load_cert_chain(str(cluster.workdir / "admin.crt"), str(cluster.workdir / "admin.key"))
    with urllib.request.urlopen(f"{cluster.server}/metrics", context=ctx, timeout=30) as r:  # noqa: S310 - loopback
        text = r.read().decode()
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("apiserver_request_total{")))


def _pool_doc(i: int, ns: str, pods: int) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "EnvPool", "metadata": {"name": f"pool-{i}", "namespace": ns},
            "spec": {"image": "agentworld/env-bench:1", "replicas": pods, "sessionsPerPod": 64,
                     "scheduling": KWOK_SCHEDULING}}


def _count_ready_pools(custom: client.CustomObjectsApi, ns: str) -> tuple[int, int]:
    items = raw(custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, _preload_content=False))["items"]
    ready = sum((p.get("status") or {}).get("readyReplicas", 0) for p in items)
    return ready, len(items)


def _ready_pods(core: client.CoreV1Api, ns: str) -> int:
    items = raw(core.list_namespaced_pod(ns, _preload_content=False))["items"]
    return sum(1 for p in items if any(c["type"] == "Ready" and c["status"] == "True"
                                       for c in (p.get("status") or {}).get("conditions", [])))


def baseline(cluster: LocalCluster, api: client.ApiClient, n: int, concurrency: int, timeout_s: float) -> dict[str, Any]:
    """The cluster's own ceiling: create n pods directly with `concurrency` parallel calls, wait until Ready."""
    ns = "baseline"
    _namespace(cluster, ns)
    core = client.CoreV1Api(api)
    spec = parse_spec({"image": "agentworld/env-bench:1", "scheduling": KWOK_SCHEDULING})
    template = resources.pod_template(spec)
    fake_pool = {"metadata": {"name": "direct", "namespace": ns, "uid": "0"}}

    def create(i: int) -> None:
        body = resources.build_pod(fake_pool, template, "base", f"direct-{i}")
        body["metadata"].pop("ownerReferences")
        raw(core.create_namespaced_pod(ns, body, _preload_content=False))

    t0 = time.monotonic()
    with Progress(TextColumn("baseline (direct creates)"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console) as prog:
        task = prog.add_task("", total=n)
        with ThreadPoolExecutor(concurrency) as ex:
            list(ex.map(create, range(n)))
        created = time.monotonic() - t0
        while (ready := _ready_pods(core, ns)) < n:
            prog.update(task, completed=ready)
            if time.monotonic() - t0 > timeout_s:
                raise TimeoutError(f"baseline: {ready}/{n} ready after {timeout_s}s")
            time.sleep(1.0)
        prog.update(task, completed=n)
    elapsed = time.monotonic() - t0
    return {"pods": n, "time_to_all_created_s": round(created, 2), "time_to_all_ready_s": round(elapsed, 2),
            "pods_per_s": round(n / elapsed, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pools", type=int, default=100)
    ap.add_argument("--pods", type=int, default=100, help="pods per pool")
    ap.add_argument("--quick", action="store_true", help="10 pools x 20 pods")
    ap.add_argument("--workers", type=int, default=4, help="controller reconcile workers")
    ap.add_argument("--create-concurrency", type=int, default=32)
    ap.add_argument("--baseline-pods", type=int, default=None, help="default: min(total, 2000); 0 to skip")
    ap.add_argument("--timeout", type=float, default=900.0)
    a = ap.parse_args()
    if a.quick:
        a.pools, a.pods = 10, 20
    total = a.pools * a.pods
    base_n = min(total, 2000) if a.baseline_pods is None else a.baseline_pods
    node_pods = 1000
    nodes = max(2, math.ceil((total + base_n) * 1.1 / node_pods))
    console.print(f"starting control plane with {nodes} kwok nodes ...")
    with LocalCluster(nodes=nodes, node_pods=node_pods, scheduler_qps=5000) as cluster:
        api = _api(cluster)
        cluster.kubectl("apply", "-f", str(ROOT / "helm" / "agentworld" / "crds"))
        cluster.kubectl("wait", "--for=condition=Established", "crd/envpools.agentworld.dev", "--timeout=60s")
        base = baseline(cluster, api, base_n, a.create_concurrency, a.timeout) if base_n else None

        ns = "bench"
        _namespace(cluster, ns)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        log = tempfile.NamedTemporaryFile(prefix="aw-controller-", suffix=".log", delete=False)  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "agentworld_controller", f"--kubeconfig={cluster.kubeconfig}",
             f"--metrics-addr=127.0.0.1:{port}", f"--workers={a.workers}",
             f"--create-concurrency={a.create_concurrency}", "--log-level=WARNING"],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT / "controller")},
            preexec_fn=die_with_parent)
        try:
            result = _measure(a, cluster, api, ns, proc, port, log.name, total, nodes, base)
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(20)
    print(json.dumps(result))


def _measure(a: argparse.Namespace, cluster: LocalCluster, api: client.ApiClient, ns: str,
             proc: subprocess.Popen[bytes], port: int, log_name: str, total: int, nodes: int,
             base: dict[str, Any] | None) -> dict[str, Any]:
    """Create the pools, wait for every pod to be Ready, and collect the figures."""
    ps = psutil.Process(proc.pid)

    def metrics() -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics.json", timeout=5) as r:  # noqa: S310
            return json.loads(r.read())

    end = time.monotonic() + 60
    while True:
        try:
            if metrics():
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"controller did not start: {Path(log_name).read_text()[-2000:]}") from None
            time.sleep(0.2)
    cpu0 = sum(ps.cpu_times()[:2])
    req0 = _apiserver_requests(cluster)
    custom = client.CustomObjectsApi(api)
    rss_peak = 0
    t0 = time.monotonic()
    with ThreadPoolExecutor(8) as ex:  # like `kubectl apply` of all pools, without kubectl's per-object GETs
        list(ex.map(lambda i: raw(custom.create_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, _pool_doc(i, ns, a.pods), _preload_content=False)), range(a.pools)))
    created_at = None
    with Progress(TextColumn(f"{a.pools} pools x {a.pods} pods"), BarColumn(),
                  TextColumn("{task.completed}/{task.total} ready"), TimeElapsedColumn(), console=console) as prog:
        task = prog.add_task("", total=total)
        while True:
            ready, _ = _count_ready_pools(custom, ns)
            rss_peak = max(rss_peak, ps.memory_info().rss)
            m = metrics()
            if created_at is None and m["pods_created"] >= total:
                created_at = time.monotonic() - t0
            prog.update(task, completed=ready)
            if ready >= total:
                break
            if proc.poll() is not None:
                raise RuntimeError(f"controller died: {Path(log_name).read_text()[-2000:]}")
            if time.monotonic() - t0 > a.timeout:
                raise TimeoutError(f"{ready}/{total} ready after {a.timeout}s")
            time.sleep(0.5)
    elapsed = time.monotonic() - t0
    cpu = sum(ps.cpu_times()[:2]) - cpu0
    m = metrics()
    verified = _ready_pods(client.CoreV1Api(api), ns)
    requests_all = _apiserver_requests(cluster) - req0
    rate = total / elapsed
    result = {
        "benchmark": "k8s_scale",
        "pools": a.pools,
        "pods_per_pool": a.pods,
        "total_pods": total,
        "kwok_nodes": nodes,
        "time_to_all_created_s": round(created_at or elapsed, 2),
        "time_to_all_ready_s": round(elapsed, 2),
        "pods_per_s": round(rate, 1),
        "target_pods_per_s": 100,
        "meets_target": rate >= 100,
        "ready_pods_verified": verified,
        "controller": {
            "cpu_s": round(cpu, 2),
            "cpu_cores_avg": round(cpu / elapsed, 2),
            "rss_peak_mb": round(rss_peak / 2**20, 1),
            "workers": a.workers,
            "create_concurrency": a.create_concurrency,
            "api_requests_total": m["api_requests_total"],
            "api_requests": m["api_requests"],
            "api_requests_per_pod": round(m["api_requests_total"] / total, 2),
            "status_writes": m["status_writes"],
            "reconciles": m["reconciles"],
            "errors": m["errors"],
        },
        "apiserver_requests_all_clients": requests_all,
        "baseline_direct_creates": base,
        "vs_baseline": round(rate / base["pods_per_s"], 2) if base else None,
        "cpu_count": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    return result


if __name__ == "__main__":
    main()
