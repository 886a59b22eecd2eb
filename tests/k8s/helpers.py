"""Small readers for the k8s tests (raw JSON through the kubernetes client; kubectl for user-facing actions)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import yaml
from kubernetes import client

from agentworld_controller.constants import GROUP, PLURAL, VERSION
from agentworld_controller.localcluster import KWOK_SCHEDULING


def pool_manifest(name: str, namespace: str, **spec: Any) -> str:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "EnvPool", "metadata": {"name": name, "namespace": namespace},
            "spec": {"image": "agentworld/env-mini-library:test", "replicas": 2, "sessionsPerPod": 8,
                     "scheduling": KWOK_SCHEDULING, **spec}}
    body["spec"] = {k: v for k, v in body["spec"].items() if v is not None}  # None drops a field
    return yaml.safe_dump(body)


def pods(api: client.ApiClient, namespace: str, pool: str, *, include_deleting: bool = False) -> list[dict[str, Any]]:
    resp = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=f"agentworld.dev/pool={pool}",
                                                     _preload_content=False)
    items = json.loads(resp.data)["items"]
    return [p for p in items if include_deleting or not p["metadata"].get("deletionTimestamp")]


def ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in (pod.get("status") or {}).get("conditions", []))


def pool(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    resp = client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                                                     _preload_content=False)
    return json.loads(resp.data)


def condition(obj: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == ctype), None)


def set_sessions(api: client.ApiClient, namespace: str, pod: str, n: int) -> None:
    """What envd/the gateway does on a real cluster: publish the pod's session count in its annotation."""
    client.CoreV1Api(api).patch_namespaced_pod(
        pod, namespace, {"metadata": {"annotations": {"agentworld.dev/active-sessions": str(n)}}},
        _content_type="application/merge-patch+json")


def wait_for(pred: Callable[[], Any], what: str, timeout_s: float = 30.0, interval_s: float = 0.2) -> Any:
    end = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < end:
        last = pred()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last: {last!r})")
