"""Process entry: run the controller with a /healthz + /metrics endpoint until SIGTERM/SIGINT.

With --leader-elect, replicas compete for a Lease (agentworld_controller.leader) and only the leader starts the
controller's informers and workers; a standby serves /healthz (it is alive) and reports `leader 0` in its metrics.
A leader that loses its Lease exits with status 1, so that it restarts as a clean standby.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import threading
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from agentworld_controller.client import load_api_client
from agentworld_controller.constants import (
    ENV_CONTROLLER_POD_NAME,
    ENV_CONTROLLER_POD_NAMESPACE,
    LEASE_DURATION_S,
    LEASE_NAME,
    RENEW_DEADLINE_S,
    RETRY_PERIOD_S,
)
from agentworld_controller.controller import Controller
from agentworld_controller.leader import LeaderElector

log = logging.getLogger(__name__)
SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def _metrics_text(m: dict[str, object]) -> str:
    lines = []
    for k, v in m.items():
        if isinstance(v, dict):
            lines += [f'agentworld_controller_{k}{{verb="{verb}"}} {n}' for verb, n in v.items()]
        else:
            lines.append(f"agentworld_controller_{k} {v}")
    return "\n".join(lines) + "\n"


def serve_metrics(healthy: Callable[[], bool], metrics: Callable[[], dict[str, Any]], host: str,
                  port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server API
            if self.path.startswith("/healthz") or self.path.startswith("/readyz"):
                ok = healthy()
                body, code, ctype = (b"ok\n" if ok else b"not ready\n"), (200 if ok else 503), "text/plain"
            elif self.path.startswith("/metrics.json"):
                body, code, ctype = json.dumps(metrics()).encode(), 200, "application/json"
            elif self.path.startswith("/metrics"):
                body, code, ctype = _metrics_text(metrics()).encode(), 200, "text/plain; version=0.0.4"
            else:
                body, code, ctype = b"not found\n", 404, "text/plain"
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    srv = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=srv.serve_forever, name="metrics", daemon=True).start()
    return srv


def default_namespace() -> str:
    """The Lease's namespace: the pod's own ($POD_NAMESPACE, else its service account's), else "default"."""
    if ns := os.environ.get(ENV_CONTROLLER_POD_NAMESPACE):
        return ns
    try:
        return SA_NAMESPACE_FILE.read_text().strip() or "default"
    except OSError:
        return "default"


def default_identity() -> str:
    """Unique per process: a restarted container never mistakes its predecessor's Lease for its own."""
    return f"{os.environ.get(ENV_CONTROLLER_POD_NAME) or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def run(kubeconfig: str | None = None, namespace: str | None = None, workers: int = 4, create_concurrency: int = 32,
        resync_s: float = 30.0, watch_timeout_s: int = 60, metrics_addr: str = "0.0.0.0:8080",
        log_level: str = "INFO", *, leader_elect: bool = False, leader_election_namespace: str | None = None,
        leader_election_id: str = LEASE_NAME, leader_election_identity: str | None = None,
        lease_duration_s: int = LEASE_DURATION_S, renew_deadline_s: float = RENEW_DEADLINE_S,
        retry_period_s: float = RETRY_PERIOD_S) -> None:
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctl = Controller(load_api_client(kubeconfig, pool_size=create_concurrency + 8), namespace=namespace,
                     workers=workers, create_concurrency=create_concurrency, resync_s=resync_s,
                     watch_timeout_s=watch_timeout_s)
    stop = threading.Event()
    failed = threading.Event()  # lost the Lease, or could not start while leading: exit 1
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    elector: LeaderElector | None = None
    campaign: threading.Thread | None = None
    if leader_elect:
        def lead() -> None:
            try:
                ctl.start()
            except Exception:  # noqa: BLE001 - a leader that cannot start exits, and a standby takes over
                log.exception("controller failed to start")
                failed.set()
                stop.set()

        def stop_leading() -> None:
            ctl.stop()
            if not stop.is_set():
                log.error("lost the leader lease: exiting, to restart as a standby")
                failed.set()
                stop.set()

        # Its own connection pool: a burst of pod creates must never delay a renewal.
        elector = LeaderElector(load_api_client(kubeconfig, pool_size=2),
                                leader_election_namespace or default_namespace(), leader_election_id,
                                leader_election_identity or default_identity(), lease_duration_s=lease_duration_s,
                                renew_deadline_s=renew_deadline_s, retry_period_s=retry_period_s,
                                on_started_leading=lead, on_stopped_leading=stop_leading)
        campaign = threading.Thread(target=elector.run, args=(stop,), name="leader-election", daemon=True)

    def healthy() -> bool:
        if elector is None:
            return ctl.healthy()
        # A standby is healthy while it campaigns, so that liveness probes leave it alone.
        return campaign is not None and campaign.is_alive() and (not elector.is_leader or ctl.healthy())

    def metrics() -> dict[str, Any]:
        return {**ctl.metrics(), "leader": 1 if elector is None or elector.is_leader else 0}

    srv = None
    if metrics_addr:
        host, _, port = metrics_addr.rpartition(":")
        srv = serve_metrics(healthy, metrics, host or "0.0.0.0", int(port))
    if elector is None or campaign is None:
        ctl.start()
    else:
        log.info("campaigning for lease %s/%s as %s", elector.namespace, elector.name, elector.identity)
        campaign.start()
    stop.wait()
    log.info("stopping: %s", json.dumps(metrics()))
    if campaign is not None:
        campaign.join(renew_deadline_s + 5)  # stops the controller, then releases the Lease
    else:
        ctl.stop()
    if srv:
        srv.shutdown()
    if failed.is_set():
        raise SystemExit(1)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="agentworld-controller", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kubeconfig", default=None, help="default: in-cluster config, else $KUBECONFIG/~/.kube/config")
    ap.add_argument("--namespace", default=None, help="watch one namespace (default: all)")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--create-concurrency", type=int, default=32)
    ap.add_argument("--resync-seconds", type=float, default=30.0)
    ap.add_argument("--watch-timeout-seconds", type=int, default=60)
    ap.add_argument("--metrics-addr", default="0.0.0.0:8080", help="host:port for /healthz and /metrics ('' = off)")
    ap.add_argument("--log-level", default="INFO")
    le = ap.add_argument_group("leader election (several replicas, one active)")
    le.add_argument("--leader-elect", action="store_true", help="reconcile only while holding the Lease")
    le.add_argument("--leader-election-namespace", default=None,
                    help=f"the Lease's namespace (default: ${ENV_CONTROLLER_POD_NAMESPACE}, else the service "
                         "account's namespace, else 'default')")
    le.add_argument("--leader-election-id", default=LEASE_NAME, help="the Lease's name")
    le.add_argument("--leader-election-identity", default=None,
                    help=f"this candidate's holderIdentity (default: ${ENV_CONTROLLER_POD_NAME} or the hostname, "
                         "plus a random suffix)")
    le.add_argument("--leader-election-lease-seconds", type=int, default=LEASE_DURATION_S,
                    help="a standby takes over this long after the leader's last renewal")
    le.add_argument("--leader-election-renew-deadline-seconds", type=float, default=RENEW_DEADLINE_S,
                    help="a leader that could not renew for this long stops (must be < the lease duration)")
    le.add_argument("--leader-election-retry-seconds", type=float, default=RETRY_PERIOD_S,
                    help="interval between renewals and between attempts to acquire")
    return ap


def main(argv: list[str] | None = None) -> None:
    a = build_parser().parse_args(argv)
    run(a.kubeconfig, a.namespace, a.workers, a.create_concurrency, a.resync_seconds, a.watch_timeout_seconds,
        a.metrics_addr, a.log_level, leader_elect=a.leader_elect,
        leader_election_namespace=a.leader_election_namespace, leader_election_id=a.leader_election_id,
        leader_election_identity=a.leader_election_identity, lease_duration_s=a.leader_election_lease_seconds,
        renew_deadline_s=a.leader_election_renew_deadline_seconds,
        retry_period_s=a.leader_election_retry_seconds)


if __name__ == "__main__":
    main()
