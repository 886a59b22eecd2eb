"""Kubernetes discovery: watch the pods of EnvPools and keep the gateway's backends in step with them.

Names, labels and annotations are the controller's (`agentworld_controller.constants`), and so is the watch: the
controller's informer (paged lists, server and client timeouts, relist with backoff). A Ready pod with an IP becomes
backend `<podIP>:<grpc port>` (the `agentworld.dev/endpoint` annotation overrides it, for gateways outside the
cluster network); draining or terminating pods get no new sessions; a deleted pod's sessions are lost. The gateway
writes each pod's session count into its `agentworld.dev/active-sessions` annotation (what the controller scales on).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agentworld_controller.constants import (
    ANN_ACTIVE_SESSIONS,
    ANN_ENDPOINT,
    DEFAULT_GRPC_PORT,
    GRPC_PORT_NAME,
    LABEL_DRAINING,
    POOL_SELECTOR,
)
from agentworld_controller.informer import Informer

from .core import Gateway

log = logging.getLogger(__name__)


def pod_selector(pools: Sequence[str] = ()) -> str:
    return f"{POOL_SELECTOR} in ({','.join(pools)})" if pools else POOL_SELECTOR


@dataclass(frozen=True, slots=True)
class PodBackend:
    """What the gateway needs of a pod (from its raw JSON, as the informer hands it over)."""

    uid: str
    namespace: str
    name: str
    address: str | None  # None while the pod has no IP
    ready: bool
    draining: bool  # marked for scale-down, or terminating

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def pod_backend(obj: dict[str, Any]) -> PodBackend:
    meta, spec, status = obj.get("metadata", {}), obj.get("spec") or {}, obj.get("status") or {}
    address = (meta.get("annotations") or {}).get(ANN_ENDPOINT)
    if not address and status.get("podIP"):
        port = next((p["containerPort"] for c in spec.get("containers") or [] for p in c.get("ports") or []
                     if p.get("name") == GRPC_PORT_NAME), DEFAULT_GRPC_PORT)
        address = f"{status['podIP']}:{port}"
    deleting = bool(meta.get("deletionTimestamp"))
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    return PodBackend(uid=meta.get("uid", ""), namespace=meta.get("namespace", ""), name=meta.get("name", ""),
                      address=address or None, ready=ready and not deleting,
                      draining=LABEL_DRAINING in (meta.get("labels") or {}) or deleting)


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
        watch_timeout_s: int = 60,
    ) -> None:
        self.namespace = namespace
        self.selector = pod_selector(pools)
        self.api_client = api_client
        self.add_wait_s = add_wait_s
        self.publish_interval_s = publish_interval_s
        self.watch_timeout_s = watch_timeout_s
        self._pods: dict[str, PodRef] = {}  # by pod uid
        self._adding: dict[str, asyncio.Task[None]] = {}

    def _core_api(self) -> Any:
        from kubernetes import client, config

        if self.api_client is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            return client.CoreV1Api()
        return client.CoreV1Api(self.api_client)

    def _informer(self, api: Any, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[tuple[str, PodBackend]]
                  ) -> Informer[PodBackend]:
        """The controller's informer over the pool pods; its events (on its thread) go to the loop via `queue`."""
        if self.namespace:
            namespace = self.namespace
            lister: Any = lambda **kw: api.list_namespaced_pod(namespace, **kw)  # noqa: E731
        else:
            lister = api.list_pod_for_all_namespaces

        def changed(kind: str, pod: PodBackend, _old: PodBackend | None) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, pod))

        return Informer("gateway-pods", lister, pod_backend, changed, label_selector=self.selector,
                        watch_timeout_s=self.watch_timeout_s)

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

    async def _apply(self, gateway: Gateway, kind: str, pod: PodBackend) -> None:
        known = self._pods.get(pod.uid)
        if kind == "DELETED" or pod.address is None:
            if known is not None:
                self._pods.pop(pod.uid, None)
                task = self._adding.pop(pod.uid, None)
                if task is not None:
                    task.cancel()
                await gateway.remove_backend(known.address, f"pod {pod.key} was deleted")
            return
        if known is None:
            if pod.ready:
                self._pods[pod.uid] = PodRef(pod.address, pod.namespace, pod.name)
                self._adding[pod.uid] = asyncio.ensure_future(
                    self._add(gateway, pod.uid, pod.address, pod.key, pod.draining))
            return
        if known.address in gateway.registry.backends:
            gateway.set_draining(known.address, pod.draining or not pod.ready)

    async def run(self, gateway: Gateway, ready: asyncio.Event) -> None:
        # Import the (lazily importing) kubernetes client here, once, before any other thread touches it:
        # concurrent first imports of it deadlock in importlib.
        import kubernetes.client.exceptions
        import kubernetes.config  # noqa: F401

        _ = kubernetes.client.CoreV1Api, kubernetes.client.ApiClient, kubernetes.config.load_kube_config  # lazy names
        try:
            api = await asyncio.to_thread(self._core_api)
        except Exception as exc:  # e.g. no usable kubeconfig: fail loudly instead of never becoming ready
            raise RuntimeError(f"cannot watch pods: {type(exc).__name__}: {exc}") from exc
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, PodBackend | None]] = asyncio.Queue()
        informer = self._informer(api, loop, queue)  # type: ignore[arg-type]
        stop = threading.Event()
        thread = informer.start(stop)

        def first_listing_done() -> None:  # queued after that listing's events (same thread, in order)
            while not informer.synced.wait(0.5):
                if stop.is_set():
                    return
            loop.call_soon_threadsafe(queue.put_nowait, ("SYNCED", None))

        threading.Thread(target=first_listing_done, name="gateway-pods-synced", daemon=True).start()
        publisher = asyncio.ensure_future(self._publish_loop(gateway))
        try:
            while True:
                kind, pod = await queue.get()
                if pod is not None:
                    await self._apply(gateway, kind, pod)
                    continue
                if self._adding:
                    await asyncio.wait(list(self._adding.values()), timeout=self.add_wait_s)
                ready.set()
        finally:
            stop.set()
            publisher.cancel()
            for task in self._adding.values():
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.to_thread(thread.join, 1.0)  # a daemon; it exits at its next event or timeout
