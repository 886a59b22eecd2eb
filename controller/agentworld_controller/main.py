"""Process entry: run the controller with a /healthz + /metrics endpoint until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from agentworld_controller.client import load_api_client
from agentworld_controller.controller import Controller


def _metrics_text(m: dict[str, object]) -> str:
    lines = []
    for k, v in m.items():
        if isinstance(v, dict):
            lines += [f'agentworld_controller_{k}{{verb="{verb}"}} {n}' for verb, n in v.items()]
        else:
            lines.append(f"agentworld_controller_{k} {v}")
    return "\n".join(lines) + "\n"


def serve_metrics(ctl: Controller, host: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server API
            if self.path.startswith("/healthz") or self.path.startswith("/readyz"):
                ok = ctl.healthy()
                body, code, ctype = (b"ok\n" if ok else b"not ready\n"), (200 if ok else 503), "text/plain"
            elif self.path.startswith("/metrics.json"):
                body, code, ctype = json.dumps(ctl.metrics()).encode(), 200, "application/json"
            elif self.path.startswith("/metrics"):
                body, code, ctype = _metrics_text(ctl.metrics()).encode(), 200, "text/plain; version=0.0.4"
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


def run(kubeconfig: str | None = None, namespace: str | None = None, workers: int = 4, create_concurrency: int = 32,
        resync_s: float = 30.0, watch_timeout_s: int = 60, metrics_addr: str = "0.0.0.0:8080",
        log_level: str = "INFO") -> None:
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctl = Controller(load_api_client(kubeconfig, pool_size=create_concurrency + 8), namespace=namespace,
                     workers=workers, create_concurrency=create_concurrency, resync_s=resync_s,
                     watch_timeout_s=watch_timeout_s)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    srv = None
    if metrics_addr:
        host, _, port = metrics_addr.rpartition(":")
        srv = serve_metrics(ctl, host or "0.0.0.0", int(port))
    ctl.start()
    stop.wait()
    logging.getLogger(__name__).info("stopping: %s", json.dumps(ctl.metrics()))
    ctl.stop()
    if srv:
        srv.shutdown()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="agentworld-controller", description=__doc__)
    ap.add_argument("--kubeconfig", default=None, help="default: in-cluster config, else $KUBECONFIG/~/.kube/config")
    ap.add_argument("--namespace", default=None, help="watch one namespace (default: all)")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--create-concurrency", type=int, default=32)
    ap.add_argument("--resync-seconds", type=float, default=30.0)
    ap.add_argument("--watch-timeout-seconds", type=int, default=60)
    ap.add_argument("--metrics-addr", default="0.0.0.0:8080", help="host:port for /healthz and /metrics ('' = off)")
    ap.add_argument("--log-level", default="INFO")
    a = ap.parse_args(argv)
    run(a.kubeconfig, a.namespace, a.workers, a.create_concurrency, a.resync_seconds, a.watch_timeout_seconds,
        a.metrics_addr, a.log_level)


if __name__ == "__main__":
    main()
