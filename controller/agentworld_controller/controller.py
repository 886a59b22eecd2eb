"""The EnvPool controller: informers feed a work queue; workers reconcile one pool at a time.

Correctness across restarts comes from deterministic pod names (`<pool>-<ordinal>`: a repeated create gets 409, never
a duplicate), from ownership by controller reference (adopting labelled orphans), and from reconciling only after the
caches have synced. A periodic resync re-queues every pool, so a lost event or a silent watch costs at most one period.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from agentworld_controller import resources
from agentworld_controller.client import CountingApiClient, raw
from agentworld_controller.constants import (
    ANN_DRAIN_DEADLINE,
    FIELD_MANAGER,
    GROUP,
    LABEL_DRAINING,
    LABEL_MANAGED_BY,
    LABEL_POOL,
    MANAGED_BY,
    PLURAL,
    VERSION,
)
from agentworld_controller.informer import Informer, Key, wait_synced
from agentworld_controller.plan import AutoscaleMemory, Plan, plan
from agentworld_controller.podview import PodView, pod_view
from agentworld_controller.spec import InvalidSpec, PoolSpec, parse_spec
from agentworld_controller.workqueue import WorkQueue

log = logging.getLogger(__name__)
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
EXPECTATION_TTL_S = 60.0


def _pool_view(obj: dict[str, Any]) -> dict[str, Any]:
    obj.get("metadata", {}).pop("managedFields", None)
    return obj


@dataclasses.dataclass
class PoolState:
    """In-memory bookkeeping per pool (rebuilt from the cluster after a restart)."""

    expected: dict[str, float] = dataclasses.field(default_factory=dict)  # created, not yet seen: name -> expiry
    deleted: dict[str, float] = dataclasses.field(default_factory=dict)  # deleted, maybe still cached
    ensured: tuple[str, int] | None = None  # (uid, generation) whose Service/NetworkPolicy/PDB are applied
    autoscale: AutoscaleMemory = dataclasses.field(default_factory=AutoscaleMemory)
    errors: list[str] = dataclasses.field(default_factory=list)
    last_status_write: float = 0.0
    last_status: dict[str, Any] | None = None
    last_scale_time: str | None = None


@dataclasses.dataclass
class Stats:
    reconciles: int = 0
    pods_created: int = 0
    pods_deleted: int = 0
    pods_drained: int = 0
    status_writes: int = 0
    errors: int = 0


class Controller:
    def __init__(self, api: CountingApiClient, *, namespace: str | None = None, workers: int = 4,
                 create_concurrency: int = 32, resync_s: float = 30.0, watch_timeout_s: int = 60,
                 status_interval_s: float = 1.0, max_creates_per_sync: int = 64) -> None:
        self.api = api
        self.namespace = namespace
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.net = client.NetworkingV1Api(api)
        self.policy = client.PolicyV1Api(api)
        self.workers = workers
        self.resync_s = resync_s
        self.status_interval_s = status_interval_s
        self.max_creates_per_sync = max_creates_per_sync
        self.stats = Stats()
        self.queue = WorkQueue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._pods_by_pool: dict[Key, dict[str, PodView]] = {}
        self._state: dict[Key, PoolState] = {}
        self._creator = ThreadPoolExecutor(max_workers=create_concurrency, thread_name_prefix="create")
        selector = f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_POOL}"
        if namespace:
            list_pods = lambda **kw: self.core.list_namespaced_pod(namespace, **kw)  # noqa: E731
            list_pools = lambda **kw: self.custom.list_namespaced_custom_object(  # noqa: E731
                GROUP, VERSION, namespace, PLURAL, **kw)
        else:
            list_pods = self.core.list_pod_for_all_namespaces
            list_pools = lambda **kw: self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, **kw)  # noqa: E731
        self.pools: Informer[dict[str, Any]] = Informer("envpools", list_pools, _pool_view, self._on_pool,
                                                        watch_timeout_s=watch_timeout_s)
        self.pods: Informer[PodView] = Informer("pods", list_pods, pod_view, self._on_pod, label_selector=selector,
                                                watch_timeout_s=watch_timeout_s)

    # -- events -------------------------------------------------------------------------------------------------
    def _on_pool(self, etype: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        if etype == "DELETED":
            with self._lock:
                self._state.pop(key, None)
            return
        if old is not None and etype != "SYNC":
            # Our own status writes come back as events; only spec/metadata changes need a reconcile.
            if old.get("metadata", {}).get("generation") == obj["metadata"].get("generation") and \
                    old.get("metadata", {}).get("deletionTimestamp") == obj["metadata"].get("deletionTimestamp"):
                return
        self.queue.add(key)

    def _on_pod(self, etype: str, pod: PodView, old: PodView | None) -> None:
        key = (pod.namespace, pod.pool)
        with self._lock:
            pods = self._pods_by_pool.setdefault(key, {})
            if etype == "DELETED":
                if pods.get(pod.name) is not None and pods[pod.name].uid == pod.uid:
                    pods.pop(pod.name, None)
            else:
                pods[pod.name] = pod
            st = self._state.get(key)
            if st is not None:
                st.expected.pop(pod.name, None)
                if etype == "DELETED" or pod.deleting:
                    st.deleted.pop(pod.name, None)
        if old is not None and etype != "DELETED" and old == pod:
            return  # nothing the controller looks at changed
        self.queue.add(key)

    # -- reconcile ----------------------------------------------------------------------------------------------
    def _state_for(self, key: Key) -> PoolState:
        with self._lock:
            return self._state.setdefault(key, PoolState())

    def reconcile(self, key: Key) -> None:
        pool = self.pools.get(key)
        if pool is None or pool["metadata"].get("deletionTimestamp"):
            return  # the garbage collector removes what we own (ownerReferences)
        self.stats.reconciles += 1
        st = self._state_for(key)
        try:
            spec = parse_spec(pool.get("spec"))
        except InvalidSpec as exc:
            self._write_status(key, pool, st, {"conditions": [{"type": "Degraded", "status": "True",
                                                               "reason": "InvalidSpec", "message": str(exc)}]},
                               force=True)
            return
        st.errors = []
        uid, gen = pool["metadata"]["uid"], pool["metadata"].get("generation", 0)
        if st.ensured != (uid, gen):
            self._ensure_children(pool, spec, st)
        template = resources.pod_template(spec)
        thash = resources.template_hash(template)
        now_m = time.monotonic()
        with self._lock:
            cached = list(self._pods_by_pool.get(key, {}).values())
            st.expected = {n: t for n, t in st.expected.items() if t > now_m}
            st.deleted = {n: t for n, t in st.deleted.items() if t > now_m}
            pending = set(st.expected)
            deleted = dict(st.deleted)
        pods = [dataclasses.replace(p, deleting=True, ready=False) if p.name in deleted else p for p in cached]
        p = plan(pool, spec, pods, thash, pending=pending, mem=st.autoscale,
                 selector=resources.selector_string(key[1]), errors=st.errors)
        more = len(p.create) > self.max_creates_per_sync
        if more:  # bounded work per sync: other pools (and status updates) get a worker in between
            p.create = p.create[: self.max_creates_per_sync]
        self._execute(key, pool, spec, template, thash, p, pods, st)
        if st.errors:
            p.status["conditions"] = [c if c["type"] != "Degraded" else {
                **c, "status": "True", "reason": "ApiErrors", "message": "; ".join(sorted(set(st.errors))[:3])}
                for c in p.status["conditions"]]
        if p.scale_to is not None:
            st.last_scale_time = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        last_scale = st.last_scale_time or (pool.get("status") or {}).get("lastScaleTime")
        if last_scale:
            p.status["lastScaleTime"] = last_scale
        wait = self._write_status(key, pool, st, p.status)
        delays = [d for d in (p.requeue_after, wait, 5.0 if st.errors else None, 0.0 if more else None)
                  if d is not None]
        if delays:
            self.queue.add_after(key, max(0.05, min(delays)))

    def _ensure_children(self, pool: dict[str, Any], spec: PoolSpec, st: PoolState) -> None:
        """Server-side apply: one idempotent call per object creates it or converges it to the spec."""
        ns, name = pool["metadata"]["namespace"], pool["metadata"]["name"]
        kw = {"field_manager": FIELD_MANAGER, "force": True, "_content_type": APPLY, "_preload_content": False}
        try:
            raw(self.core.patch_namespaced_service(name, ns, resources.build_service(pool, spec), **kw))
            raw(self.net.patch_namespaced_network_policy(name, ns, resources.build_network_policy(pool, spec), **kw))
            raw(self.policy.patch_namespaced_pod_disruption_budget(name, ns, resources.build_pdb(pool, spec), **kw))
            st.ensured = (pool["metadata"]["uid"], pool["metadata"].get("generation", 0))
        except ApiException as exc:
            st.errors.append(f"applying Service/NetworkPolicy/PodDisruptionBudget: {exc.status} {exc.reason}")
            self.stats.errors += 1

    def _execute(self, key: Key, pool: dict[str, Any], spec: PoolSpec, template: dict[str, Any], thash: str,
                 p: Plan, pods: list[PodView], st: PoolState) -> None:
        ns, name = key
        by_name = {x.name: x for x in pods}
        if p.scale_to is not None:
            log.info("autoscaling %s/%s to %d replicas (%s sessions)", ns, name, p.scale_to,
                     p.status.get("activeSessions"))
            self._call(st, "scale", lambda: raw(self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, ns, PLURAL, name, {"spec": {"replicas": p.scale_to}}, _content_type=MERGE,
                _preload_content=False)))
        for pod in p.adopt:
            body = {"metadata": {"ownerReferences": [resources.owner_reference(pool)]}}
            self._call(st, f"adopt {pod}", lambda pod=pod, body=body: raw(self.core.patch_namespaced_pod(
                pod, ns, body, _content_type=MERGE, _preload_content=False)))
        for pod in p.undrain:
            body = {"metadata": {"labels": {LABEL_DRAINING: None}, "annotations": {ANN_DRAIN_DEADLINE: None}}}
            self._call(st, f"undrain {pod}", lambda pod=pod, body=body: raw(self.core.patch_namespaced_pod(
                pod, ns, body, _content_type=MERGE, _preload_content=False)))
        deadline = (datetime.now(UTC) + timedelta(seconds=spec.drain_grace_period_seconds)).strftime(
            "%Y-%m-%dT%H:%M:%SZ")
        for pod in p.drain:
            body = {"metadata": {"labels": {LABEL_DRAINING: "true"}, "annotations": {ANN_DRAIN_DEADLINE: deadline}}}
            if self._call(st, f"drain {pod}", lambda pod=pod, body=body: raw(self.core.patch_namespaced_pod(
                    pod, ns, body, _content_type=MERGE, _preload_content=False))):
                self.stats.pods_drained += 1
        if p.drain:
            log.info("draining %d pod(s) of %s/%s until %s", len(p.drain), ns, name, deadline)
        futures = []
        for pod in p.delete:
            uid = by_name[pod].uid if pod in by_name else None
            futures.append(self._creator.submit(self._delete_pod, st, ns, pod, uid))
        for f in futures:
            f.result()
        if p.create:
            self._create_pods(st, pool, template, thash, p.create)

    def _call(self, st: PoolState, what: str, fn: Any) -> bool:
        try:
            fn()
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            st.errors.append(f"{what}: {exc.status} {exc.reason}")
            self.stats.errors += 1
            return False

    def _delete_pod(self, st: PoolState, ns: str, pod: str, uid: str | None) -> None:
        body = {"preconditions": {"uid": uid}} if uid else None
        if self._call(st, f"delete {pod}", lambda: raw(self.core.delete_namespaced_pod(
                pod, ns, body=body, _preload_content=False))):
            self.stats.pods_deleted += 1
            with self._lock:
                st.deleted[pod] = time.monotonic() + EXPECTATION_TTL_S

    def _create_pods(self, st: PoolState, pool: dict[str, Any], template: dict[str, Any], thash: str,
                     names: list[str]) -> None:
        """Slow start (16, 32, 64, ...) like the ReplicaSet controller: a spec the API rejects fails once, not 1000x."""
        ns = pool["metadata"]["namespace"]
        with self._lock:
            for n in names:
                st.expected[n] = time.monotonic() + EXPECTATION_TTL_S
        batch, i = 16, 0
        while i < len(names):
            chunk = names[i:i + batch]
            results = list(self._creator.map(lambda n: self._create_pod(st, pool, template, thash, n), chunk))
            i += len(chunk)
            if not all(results):
                with self._lock:
                    for n in names[i:]:
                        st.expected.pop(n, None)
                return
            batch *= 2
        log.info("created %d pod(s) for %s/%s", len(names), ns, pool["metadata"]["name"])

    def _create_pod(self, st: PoolState, pool: dict[str, Any], template: dict[str, Any], thash: str,
                    name: str) -> bool:
        ns = pool["metadata"]["namespace"]
        body = resources.build_pod(pool, template, thash, name)
        try:
            raw(self.core.create_namespaced_pod(ns, body, _preload_content=False))
            self.stats.pods_created += 1
            return True
        except ApiException as exc:
            if exc.status == 409:
                return True  # exists (created by us before a restart, not yet in the cache): the cache will show it
            with self._lock:
                st.expected.pop(name, None)
            st.errors.append(f"create pod {name}: {exc.status} {_message(exc)}")
            self.stats.errors += 1
            return False

    def _write_status(self, key: Key, pool: dict[str, Any], st: PoolState, status: dict[str, Any],
                      force: bool = False) -> float | None:
        """Patch status when it changed, at most once per status_interval_s per pool; returns a delay to retry."""
        current = {k: (pool.get("status") or {}).get(k) for k in status}
        if status == current or status == st.last_status:
            return None
        since = time.monotonic() - st.last_status_write
        if not force and since < self.status_interval_s:
            return self.status_interval_s - since
        ns, name = key
        try:
            raw(self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, ns, PLURAL, name, {"status": status}, _content_type=MERGE, _preload_content=False))
            st.last_status, st.last_status_write = status, time.monotonic()
            self.stats.status_writes += 1
        except ApiException as exc:
            if exc.status != 404:
                self.stats.errors += 1
                log.warning("status of %s/%s: %s %s", ns, name, exc.status, exc.reason)
                return 1.0
        return None

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def _worker(self) -> None:
        while not self._stop.is_set():
            key = self.queue.get(timeout=1.0)
            if key is None:
                continue
            try:
                self.reconcile(key)  # type: ignore[arg-type]
            except Exception:  # noqa: BLE001 - one bad pool must not kill a worker
                log.exception("reconcile %s failed; retrying", key)
                self.stats.errors += 1
                self.queue.add_after(key, 2.0)
            finally:
                self.queue.done(key)

    def _resync(self) -> None:
        while not self._stop.wait(self.resync_s):
            for pool in self.pools.items():
                self.queue.add((pool["metadata"]["namespace"], pool["metadata"]["name"]))

    def start(self, sync_timeout_s: float = 60.0) -> None:
        self._threads += [self.pools.start(self._stop), self.pods.start(self._stop)]
        if not wait_synced([self.pools, self.pods], sync_timeout_s):
            raise TimeoutError("informer caches did not sync; is the API server reachable and the CRD installed?")
        for i in range(self.workers):
            t = threading.Thread(target=self._worker, name=f"worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._resync, name="resync", daemon=True)
        t.start()
        self._threads.append(t)
        log.info("controller started: %d pools, %d pods cached", len(self.pools), len(self.pods))

    def healthy(self) -> bool:
        return self.pools.synced.is_set() and self.pods.synced.is_set() and all(t.is_alive() for t in self._threads)

    def stop(self) -> None:
        self._stop.set()
        self.queue.shutdown()
        self._creator.shutdown(wait=False, cancel_futures=True)

    def metrics(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self.stats), "api_requests": dict(self.api.requests),
                "api_requests_total": sum(self.api.requests.values()), "pools": len(self.pools),
                "pods": len(self.pods), "queue_depth": len(self.queue)}


def _message(exc: ApiException) -> str:
    try:
        return json.loads(exc.body or "{}").get("message") or str(exc.reason)
    except ValueError:
        return str(exc.reason)
