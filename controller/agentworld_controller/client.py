"""Kubernetes API access: config loading, a request-counting ApiClient, raw-JSON helpers."""

from __future__ import annotations

import json
import threading
from collections import Counter
from typing import Any

from kubernetes import client, config


class CountingApiClient(client.ApiClient):
    """Counts every HTTP request by verb, so the benchmark can report how many API calls the controller made."""

    def __init__(self, configuration: client.Configuration | None = None) -> None:
        super().__init__(configuration)
        self.requests: Counter[str] = Counter()
        self._count_lock = threading.Lock()

    def call_api(self, method, url, *args, **kwargs):  # type: ignore[no-untyped-def,override]
        with self._count_lock:
            self.requests[method] += 1
        return super().call_api(method, url, *args, **kwargs)


def load_api_client(kubeconfig: str | None = None, pool_size: int = 64) -> CountingApiClient:
    """In-cluster service account when running as a pod, else the kubeconfig (--kubeconfig, $KUBECONFIG)."""
    cfg = client.Configuration()
    try:
        if kubeconfig:
            raise config.ConfigException("explicit kubeconfig")
        config.load_incluster_config(client_configuration=cfg)
    except config.ConfigException:
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    cfg.connection_pool_maxsize = pool_size
    return CountingApiClient(cfg)


def raw(resp: Any) -> dict[str, Any]:
    """Body of a `_preload_content=False` response, parsed, with its connection returned to the pool."""
    try:
        data = resp.data
        return json.loads(data) if data else {}
    finally:
        resp.release_conn()
