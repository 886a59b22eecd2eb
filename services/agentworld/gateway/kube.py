"""Kubernetes discovery: watch the pods of EnvPools and keep the gateway's backends in step with them.

Labels and annotations come from the controller (`agentworld_controller.constants`): pods carry
`agentworld.dev/pool=<pool>` (and managed-by=agentworld-controller); `agentworld.dev/draining` marks pods chosen for
scale-down. A Ready pod with an IP becomes backend `<podIP>:<grpc port>`; draining or terminating pods get no new
sessions; a deleted pod's sessions are lost. The gateway writes each pod's session count into its
`agentworld.dev/active-sessions` annotation (what the controller scales on). The annotation `agentworld.dev/endpoint` (HOST:PORT) overrides the
address, for gateways outside the cluster network (port-forwards, kwok test clusters).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .core import Gateway

log = logging.getLogger(__name__)

LABEL_POOL = "agentworld.dev/pool"
LABEL_DRAINING = "agentworld.dev/draining"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "agentworld-controller"
ANN_ENDPOINT = "agentworld.dev/endpoint"
# Published by the gateway on each pod it uses: the sessions the pod hosts (the controller scales on it).
ANN_ACTIVE_SESSIONS = "agentworld.dev/active-sessions"
DEFAULT_PORT = 50051


def pod_selector(pools: Sequence[str] = ()) -> str:
    pool = f"{LABEL_POOL} in ({','.join(pools)})" if pools else LABEL_POOL
    return f"{LABEL_MANAGED_BY}={MANAGED_BY},{pool}"


def pod_address(pod: Any) -> str | None:
    """Where the pod's envd listens, or None while it has no IP."""
    endpoint = (pod.metadata.annotations or {}).get(ANN_ENDPOINT)
    if endpoint:
        return endpoint
    if not pod.status or not pod.status.pod_ip:
        return None
    port = DEFAULT_PORT
    for container in pod.spec.containers or []:
        for cport in container.ports or []:
            if cport.name == "grpc":
                port = cport.container_port
    return f"{pod.status.pod_ip}:{port}"


def pod_ready(pod: Any) -> bool:
    conditions = (pod.status.conditions if pod.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def pod_draining(pod: Any) -> bool:
    return LABEL_DRAINING in (pod.metadata.labels or {}) or pod.metadata.deletion_timestamp is not None


@dataclass
class PodRef:
    address: str
    namespace: str
    name: str
    published: int | None = None  # the active-sessions value last written on the pod


class KubernetesSource:
    """Backends from EnvPool pods, found by list+watch on the API server (kubeconfig or in-cluster credentials)."""

    name = "kubernetes"

    def __init__(
        self,
        namespace: str | None = None,
        pools: Sequence[str] = (),
        *,
        api_client: Any = None,
        add_wait_s: float = 60.0,
        publish_interval_s: float = 2.0,
    ) -> None:
        self.namespace = namespace
        self.selector = pod_selector(pools)
        self.api_client = api_client
        self.add_wait_s = add_wait_s
        self.publish_interval_s = publish_interval_s
        self._pods: dict[str, PodRef] = {}  # by pod uid
        self._adding: dict[str, asyncio.Task[None]] = {}
        self._stop = threading.Event()

    def _core_api(self) -> Any:
        from kubernetes import client, config

        if self.api_client is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            return client.CoreV1Api()
        return client.CoreV1Api(self.api_client)

    def _watch_thread(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[tuple[str, Any]]) -> None:
        """Blocking list+watch (the kubernetes client is synchronous); events go to the loop through `queue`."""

        def put(kind: str, obj: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, obj))

        try:
            from kubernetes import watch
            from kubernetes.client.exceptions import ApiException

            api = self._core_api()
        except Exception as exc:  # e.g. no usable kubeconfig: fail the source loudly instead of never becoming ready
            put("FAILED", exc)
            return
        # The API methods themselves (not wrappers): Watch.stream reads their docstrings to type the events.
        lister, args = (
            (api.list_namespaced_pod, (self.namespace,)) if self.namespace else (api.list_pod_for_all_namespaces, ())
        )

        while not self._stop.is_set():
            try:
                listing = lister(*args, label_selector=self.selector)
                put("SYNC", listing.items)
                version = listing.metadata.resource_version
                w = watch.Watch()
                for event in w.stream(lister, *args, label_selector=self.selector, resource_version=version,
                                      timeout_seconds=10):
                    if self._stop.is_set():
                        w.stop()
                        break
                    put(event["type"], event["object"])
            except ApiException as exc:
                if exc.status != 410:  # 410 Gone: our resource version expired; list again
                    log.warning("pod watch failed (%s); retrying", exc.reason)
                    self._stop.wait(1.0)
            except Exception as exc:  # network errors: keep trying until stopped
                if self._stop.is_set():
                    break
                log.warning("pod watch error: %r; retrying", exc)
                self._stop.wait(1.0)

    async def _add(self, gateway: Gateway, uid: str, address: str, name: str, draining: bool) -> None:
        try:
            await gateway.add_backend(address, name, wait_s=self.add_wait_s, draining=draining)
        except (TimeoutError, OSError) as exc:
            log.error("pod %s (%s) not added: %s", name, address, exc)
            self._pods.pop(uid, None)
        finally:
            self._adding.pop(uid, None)

    async def _publish_loop(self, gateway: Gateway) -> None:
        """Write each pod's session count into its annotation when it changed (best effort)."""
        from kubernetes.client.exceptions import ApiException

        api = await asyncio.to_thread(self._core_api)
        while True:
            await asyncio.sleep(self.publish_interval_s)
            for ref in list(self._pods.values()):
                backend = gateway.registry.backends.get(ref.address)
                if backend is None or backend.load == ref.published:
                    continue
                value = backend.load
                body = {"metadata": {"annotations": {ANN_ACTIVE_SESSIONS: str(value)}}}
                try:
                    await asyncio.to_thread(api.patch_namespaced_pod, ref.name, ref.namespace, body)
                    ref.published = value
                except ApiException as exc:
                    if exc.status != 404:
                        log.warning("could not annotate pod %s/%s: %s", ref.namespace, ref.name, exc.reason)

    async def _apply(self, gateway: Gateway, kind: str, pod: Any) -> None:
        uid, name = pod.metadata.uid, f"{pod.metadata.namespace}/{pod.metadata.name}"
        address = pod_address(pod)
        known = self._pods.get(uid)
        if kind == "DELETED" or address is None:
            if known is not None:
                self._pods.pop(uid, None)
                task = self._adding.pop(uid, None)
                if task is not None:
                    task.cancel()
                await gateway.remove_backend(known.address, f"pod {name} was deleted")
            return
        if known is None:
            if pod_ready(pod) and not pod.metadata.deletion_timestamp:
                self._pods[uid] = PodRef(address, pod.metadata.namespace, pod.metadata.name)
                self._adding[uid] = asyncio.ensure_future(self._add(gateway, uid, address, name, pod_draining(pod)))
            return
        if known.address in gateway.registry.backends:
            gateway.set_draining(known.address, pod_draining(pod) or not pod_ready(pod))

    async def run(self, gateway: Gateway, ready: asyncio.Event) -> None:
        # Import the (lazily importing) kubernetes client here, once, before any other thread touches it:
        # concurrent first imports of it deadlock in importlib.
        import kubernetes.client.exceptions
        import kubernetes.config
        import kubernetes.watch  # noqa: F401

        _ = kubernetes.client.CoreV1Api, kubernetes.client.ApiClient, kubernetes.config.load_kube_config  # lazy names

        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        thread = threading.Thread(target=self._watch_thread, args=(loop, queue), name="k8s-pod-watch", daemon=True)
        self._stop.clear()
        thread.start()
        publisher = asyncio.ensure_future(self._publish_loop(gateway))
        try:
            while True:
                kind, obj = await queue.get()
                if kind == "FAILED":
                    raise RuntimeError(f"cannot watch pods: {type(obj).__name__}: {obj}") from obj
                if kind == "SYNC":  # a fresh listing: forget pods that vanished while we were not watching
                    present = {p.metadata.uid for p in obj}
                    for uid in [u for u in self._pods if u not in present]:
                        ref = self._pods.pop(uid)
                        await gateway.remove_backend(ref.address, f"pod {ref.namespace}/{ref.name} no longer listed")
                    for pod in obj:
                        await self._apply(gateway, "ADDED", pod)
                    if self._adding:
                        await asyncio.wait(list(self._adding.values()), timeout=self.add_wait_s)
                    ready.set()
                else:
                    await self._apply(gateway, kind, obj)
        finally:
            self._stop.set()
            publisher.cancel()
            for task in self._adding.values():
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.to_thread(thread.join, 1.0)  # a daemon; it exits at its next event or timeout
