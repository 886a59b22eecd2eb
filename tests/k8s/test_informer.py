"""The controller's informer on a real API server: watches that time out are re-established without losing events."""

from __future__ import annotations

import threading
import time
from typing import Any

from kubernetes import client

from agentworld_controller.informer import Informer

from .helpers import wait_for


def test_informer_survives_watch_timeouts_and_sees_later_events(cluster: Any, api: Any, namespace: str) -> None:
    core = client.CoreV1Api(api)
    seen: list[tuple[str, str]] = []
    inf: Informer[str] = Informer(
        "configmaps", lambda **kw: core.list_namespaced_config_map(namespace, **kw),
        lambda o: o["metadata"]["name"], lambda etype, name, old: seen.append((etype, name)),
        label_selector="t=informer", watch_timeout_s=1)
    stop = threading.Event()
    inf.start(stop)
    try:
        assert inf.synced.wait(20)
        time.sleep(2.5)  # at least two server-side watch timeouts have passed
        core.create_namespaced_config_map(namespace, {"metadata": {"name": "a", "labels": {"t": "informer"}}})
        core.create_namespaced_config_map(namespace, {"metadata": {"name": "other"}})  # filtered out
        wait_for(lambda: inf.get((namespace, "a")) == "a", "configmap in the cache", 20)
        core.delete_namespaced_config_map("a", namespace)
        wait_for(lambda: ("DELETED", "a") in seen, "delete event", 20)
        assert inf.get((namespace, "a")) is None and inf.get((namespace, "other")) is None
        assert inf.relists == 1  # timeouts resumed from the last resourceVersion, no relist
    finally:
        stop.set()
