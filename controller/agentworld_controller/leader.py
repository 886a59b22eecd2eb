"""Leader election through a coordination.k8s.io/v1 Lease: of the controller's replicas, only the holder reconciles.

The same protocol as client-go's leaderelection package, in one small loop:

- A candidate takes the Lease when it has no holder, or when its record has not changed for leaseDurationSeconds.
  That is measured on this process's monotonic clock from the moment it first saw the current record, never by
  comparing renewTime with this node's wall clock, so clocks that disagree between nodes cannot make two leaders.
  (A candidate that just started therefore waits one lease duration before taking a lease someone else holds.)
- Every write carries the resourceVersion that was just read (a JSON merge patch with metadata.resourceVersion is a
  precondition on the API server): of two candidates racing for the same record, one wins and the other gets
  409 Conflict and stays a standby.
- The leader renews every retry period. When it has not managed to renew for renew_deadline (shorter than the lease
  duration, so it stops before anyone else may start) it stops leading: on_stopped_leading runs and the process is
  expected to exit and restart clean, as client-go controllers do, rather than to resume with half-stopped workers.
- On a clean stop the leader releases the Lease (no holder, leaseDurationSeconds 1), so the standby takes over on its
  next retry instead of a lease duration later.

Failover after a leader dies: within leaseDurationSeconds of its last renewal, plus up to one retry period.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from agentworld_controller.client import raw
from agentworld_controller.constants import LEASE_DURATION_S, RENEW_DEADLINE_S, RETRY_PERIOD_S

__all__ = ["LeaderElector"]

log = logging.getLogger(__name__)
MERGE = "application/merge-patch+json"


def _micro_time(t: datetime) -> str:
    """metav1.MicroTime's wire format (exactly six fractional digits; isoformat() drops them when they are zero)."""
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(self, api: client.ApiClient, namespace: str, name: str, identity: str, *,
                 lease_duration_s: int = LEASE_DURATION_S, renew_deadline_s: float = RENEW_DEADLINE_S,
                 retry_period_s: float = RETRY_PERIOD_S, on_started_leading: Callable[[], None] = lambda: None,
                 on_stopped_leading: Callable[[], None] = lambda: None, release_on_stop: bool = True) -> None:
        if not lease_duration_s > renew_deadline_s > retry_period_s > 0:
            raise ValueError(f"need lease duration ({lease_duration_s}) > renew deadline ({renew_deadline_s}) > "
                             f"retry period ({retry_period_s}) > 0")
        self.leases = client.CoordinationV1Api(api)
        self.namespace, self.name, self.identity = namespace, name, identity
        self.lease_duration_s = int(lease_duration_s)
        self.renew_deadline_s = renew_deadline_s
        self.retry_period_s = retry_period_s
        self.on_started_leading = on_started_leading
        self.on_stopped_leading = on_stopped_leading
        self.release_on_stop = release_on_stop
        self.is_leader = False
        self.holder = ""  # the holder in the last record seen ("" = none)
        self._observed: dict[str, Any] | None = None  # that record's spec
        self._observed_at = 0.0  # monotonic time it was first seen

    # -- one attempt ----------------------------------------------------------------------------------------------
    def try_acquire_or_renew(self, timeout_s: float | None = None) -> bool:
        """One round trip or two: read the Lease and, if it is free or ours, write ourselves into it. True = we hold
        it now. Never raises for API errors: they count as a failed attempt."""
        timeout_s = timeout_s or self.renew_deadline_s
        try:
            lease = self._read(timeout_s)
            if lease is None:
                lease = self._create(timeout_s)
                if lease is None:
                    return False  # another candidate created it first
            spec = lease.get("spec") or {}
            self._observe(spec)
            ours = spec.get("holderIdentity") == self.identity
            if self.holder and not ours and not self._expired(spec):
                return False
            now = _micro_time(datetime.now(UTC))
            # A change of holder is a transition; the first holder of a new Lease is not.
            transitions = spec.get("leaseTransitions")
            transitions = 0 if transitions is None else transitions + (0 if ours else 1)
            written = raw(self.leases.patch_namespaced_lease(self.name, self.namespace, {
                "metadata": {"resourceVersion": lease["metadata"]["resourceVersion"]},
                "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": self.lease_duration_s,
                         "acquireTime": spec.get("acquireTime") if ours else now, "renewTime": now,
                         "leaseTransitions": transitions},
            }, _content_type=MERGE, _preload_content=False, _request_timeout=timeout_s))
        except ApiException as exc:
            if exc.status == 409:
                log.debug("lease %s/%s: conflict, another candidate wrote it first", self.namespace, self.name)
            else:
                log.warning("lease %s/%s: %s %s", self.namespace, self.name, exc.status, exc.reason)
            return False
        except Exception as exc:  # noqa: BLE001 - connection errors and timeouts: a failed attempt, retried
            log.warning("lease %s/%s: %s", self.namespace, self.name, exc)
            return False
        if not ours:
            log.info("acquired lease %s/%s as %s (transition %d)", self.namespace, self.name, self.identity,
                     written["spec"].get("leaseTransitions", 0))
        self._observe(written["spec"])
        return True

    def _read(self, timeout_s: float) -> dict[str, Any] | None:
        try:
            return raw(self.leases.read_namespaced_lease(self.name, self.namespace, _preload_content=False,
                                                         _request_timeout=timeout_s))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _create(self, timeout_s: float) -> dict[str, Any] | None:
        """An empty (holder-less) Lease, taken by the same merge patch as any free one."""
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace}, "spec": {}}
        try:
            return raw(self.leases.create_namespaced_lease(self.namespace, body, _preload_content=False,
                                                           _request_timeout=timeout_s))
        except ApiException as exc:
            if exc.status == 409:
                return None
            raise

    def _observe(self, spec: dict[str, Any]) -> None:
        if spec != self._observed:
            self._observed, self._observed_at = spec, time.monotonic()
            holder = spec.get("holderIdentity") or ""
            if holder != self.holder:
                log.info("lease %s/%s: holder %s", self.namespace, self.name, holder or "(none)")
            self.holder = holder

    def _expired(self, spec: dict[str, Any]) -> bool:
        duration = spec.get("leaseDurationSeconds") or self.lease_duration_s
        return time.monotonic() > self._observed_at + duration

    def release(self) -> bool:
        """Give the Lease up if we hold it (clean shutdown): the standby acquires it on its next attempt."""
        try:
            lease = self._read(self.renew_deadline_s)
            spec = (lease or {}).get("spec") or {}
            if lease is None or spec.get("holderIdentity") != self.identity:
                return False
            now = _micro_time(datetime.now(UTC))
            raw(self.leases.patch_namespaced_lease(self.name, self.namespace, {
                "metadata": {"resourceVersion": lease["metadata"]["resourceVersion"]},
                "spec": {"holderIdentity": None, "leaseDurationSeconds": 1, "renewTime": now, "acquireTime": now},
            }, _content_type=MERGE, _preload_content=False, _request_timeout=self.renew_deadline_s))
        except Exception as exc:  # noqa: BLE001 - best effort: the lease then expires on its own
            log.warning("releasing lease %s/%s: %s", self.namespace, self.name, exc)
            return False
        log.info("released lease %s/%s", self.namespace, self.name)
        return True

    # -- the loop -------------------------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Campaign until this process leads, then lead until `stop` is set (release, return) or a renewal deadline
        passes (on_stopped_leading, return: the caller exits)."""
        while not self.try_acquire_or_renew():
            # Jitter keeps two standbys that started together from polling in lock step.
            if stop.wait(self.retry_period_s * random.uniform(1.0, 1.2)):
                return
        renewed = time.monotonic()
        self.is_leader = True
        # In a thread of its own: starting the controller (cache sync) must not hold up the renewals.
        threading.Thread(target=self.on_started_leading, name="leading", daemon=True).start()
        stopped = self._renew(stop, renewed)
        self.is_leader = False
        if not stopped:
            log.error("lease %s/%s: not renewed for %.1fs; no longer the leader", self.namespace, self.name,
                      self.renew_deadline_s)
        self.on_stopped_leading()
        if stopped and self.release_on_stop:
            self.release()

    def _renew(self, stop: threading.Event, renewed: float) -> bool:
        """Renew every retry period; True when `stop` was set, False when the renew deadline passed."""
        while True:
            left = renewed + self.renew_deadline_s - time.monotonic()
            if left <= 0:
                return False
            if stop.wait(min(self.retry_period_s, left)):
                return True
            started = time.monotonic()
            left = renewed + self.renew_deadline_s - started
            if left > 0 and self.try_acquire_or_renew(timeout_s=left):
                renewed = started
